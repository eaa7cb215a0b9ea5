#!/usr/bin/env python3
"""Deploy one environment of gateway.yaml:
`python deploy.py staging [--plan | --status | --rollback | --history]`.

See docs/deploy.md. The work is in the `deployer` package.
"""

import sys

from deployer.cli import main

if __name__ == "__main__":
    sys.exit(main())
