"""What every command says when a dependency is missing: how to set up, never a traceback
and never "a bug in Switchyard". Standard library only, so it works in a Python without any
of Switchyard's dependencies (the situation it describes)."""

from __future__ import annotations

import sys

# The exit code of a command that could not start for a missing dependency (as a usage
# error: nothing was done).
EXIT_SETUP = 2


def missing_dependency(exc: ImportError) -> str:
    """The message for a module that could not be imported (the module's name, this Python,
    and the two ways to set up)."""
    name = exc.name or str(exc)
    return (
        f"error: the Python module '{name}' is missing: Switchyard's dependencies are not "
        f"installed for this Python ({sys.executable}).\n"
        "  Set up with `bash scripts/dev.sh` (the gateway) or `bash scripts/test.sh` (the "
        "tests), then use the virtualenv they make: `source .venv/bin/activate` (or run "
        "`.venv/bin/python ...`)."
    )


def exit_missing(exc: ImportError) -> int:
    """Print the message for `exc` on stderr; the exit code to return."""
    print(missing_dependency(exc), file=sys.stderr)
    return EXIT_SETUP
