import sys

from sidecar.cli import main

sys.exit(main(sys.argv[1:], prog="python -m sidecar"))
