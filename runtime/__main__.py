"""`python -m runtime`: the command line of runtime/cli.py."""

from runtime.setup_hint import exit_missing

try:
    from runtime.cli import main
except ModuleNotFoundError as exc:  # a dependency is not installed for this Python
    raise SystemExit(exit_missing(exc)) from None

raise SystemExit(main())
