"""`python -m compiler` — see compiler.cli."""

import gc
import sys

# One run builds a large tree of objects that all live until it exits, and makes next to no
# cyclic garbage: the default thresholds (a collection every 700 allocations) would walk that
# growing tree again and again (a quarter of the time of a large build).
gc.set_threshold(200_000, 30, 30)

from runtime.setup_hint import exit_missing  # noqa: E402  (standard library only)

try:
    from compiler.cli import main
except ModuleNotFoundError as exc:  # a dependency is not installed for this Python
    sys.exit(exit_missing(exc))

sys.exit(main())
