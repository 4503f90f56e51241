import sys

from initcontainer.cli import main

sys.exit(main(sys.argv[1:], prog="python -m initcontainer"))
