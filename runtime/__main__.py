"""`python -m runtime`: the command line of runtime/cli.py."""

from runtime.cli import main

raise SystemExit(main())
