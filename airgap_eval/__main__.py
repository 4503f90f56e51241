import sys

from airgap_eval.cli import main

sys.exit(main())
