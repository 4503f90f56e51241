"""Plain lm_eval, its own CLI (`lm-eval run ...`), with `datasets.load_dataset` pointed at the
staged bundles (as tests/e2e/hf_reference.py does): the reference for the requests
`airgap-eval run` sends. Nothing of the adapter runs here except the slug rule.

    python tests/e2e/plain_lm_eval.py TEST_DATA <lm-eval run arguments...>
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.hf_reference import offline_env, redirect_load_dataset


def main() -> int:
    test_data, args = Path(sys.argv[1]), sys.argv[2:]
    offline_env(Path(tempfile.mkdtemp(prefix="plain-lm-eval-")))
    redirect_load_dataset(test_data)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", "run", *args]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
