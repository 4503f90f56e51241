"""The fidelity reference: lm_eval's own `hf` model scoring the model dir in-process, with
`datasets.load_dataset` pointed at the same bundles. Nothing of the adapter runs here except
the slug rule (which dir a dataset lives in).

Runs under the vLLM venv's python (it has torch):
    python tests/e2e/hf_reference.py --test-data D --model M --tokenizer T --tasks a,b --out F
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def offline_env(scratch: Path) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    os.environ["HF_HOME"] = str(scratch / "hf")


def redirect_load_dataset(test_data: Path) -> None:
    import datasets

    sys.path.insert(0, str(REPO))
    from tasks.slugs import slug

    def load_dataset(path: str, name: str | None = None, **_: Any) -> Any:
        return datasets.load_from_disk(str(test_data / slug(path, name)))

    datasets.load_dataset = load_dataset
    datasets.disable_caching()  # hellaswag's .map would write next to the (read-only) data


def _loglikelihoods(sample: dict[str, Any]) -> list[float] | None:
    resps = sample.get("filtered_resps") or []
    if resps and isinstance(resps[0], list | tuple) and len(resps[0]) == 2:
        return [float(r[0]) for r in resps]
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--test-data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--limit", type=float)
    ap.add_argument("--gen-kwargs", type=json.loads, help="JSON, as the job spec's gen_kwargs")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    offline_env(Path(tempfile.mkdtemp(prefix="hf-reference-")))
    redirect_load_dataset(args.test_data)

    from lm_eval.evaluator import simple_evaluate
    from lm_eval.utils import handle_non_serializable

    results = simple_evaluate(
        model="hf",
        model_args={
            "pretrained": str(args.model),
            "tokenizer": str(args.tokenizer),
            "dtype": "float32",
            "device": "cpu",
        },
        tasks=args.tasks.split(","),
        limit=args.limit,
        gen_kwargs=args.gen_kwargs,
        batch_size=1,
        log_samples=True,
    )
    assert results is not None
    samples = {
        task: {
            f"{s['doc_id']}/{s['filter']}": {
                "loglikelihoods": _loglikelihoods(s),
                "resps": s["resps"],
                "filtered_resps": s["filtered_resps"],
            }
            for s in rows
        }
        for task, rows in results["samples"].items()
    }
    out = {"results": results["results"], "samples": samples}
    args.out.write_text(json.dumps(out, default=handle_non_serializable, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
