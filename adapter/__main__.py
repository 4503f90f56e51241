"""`python -m adapter` == `airgap-eval run`."""

import sys

from adapter.cli import main

sys.exit(main(sys.argv[1:]))
