#!/usr/bin/env python3
"""Deploy one environment of gateway.yaml:
`python deploy.py staging [--plan | --status | --rollback | --history]`.

See docs/deploy.md. The work is in the `deployer` package.
"""

import sys

from runtime.setup_hint import exit_missing

if __name__ == "__main__":
    try:
        from deployer.cli import main
    except ModuleNotFoundError as exc:  # a dependency is not installed for this Python
        sys.exit(exit_missing(exc))
    sys.exit(main())
