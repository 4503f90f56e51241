"""Metric modules that tasks load with `evaluate.load(name)` (squad_v2, code_eval, rouge...),
staged under <test_data>/evaluate/<name>/, put where evaluate's own offline lookup finds a
module once fetched from the Hub: the HF modules cache (HF_MODULES_CACHE, in the work dir:
/test_data is read-only), as `evaluate_modules/metrics/evaluate-metric--<name>/<hash>/`.
No patch of evaluate or lm_eval: offline, `evaluate.load` falls back to that cache.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from common.layout import EVALUATE_DIR_NAME


def staged_metric(test_data: Path, name: str) -> Path:
    """The script a staged metric module loads from."""
    return test_data / EVALUATE_DIR_NAME / name / f"{name}.py"


def install_metrics(test_data: Path, modules_cache: Path) -> list[str]:
    """Every staged metric module into the modules cache; returns their names."""
    root = test_data / EVALUATE_DIR_NAME
    if not root.is_dir():
        return []
    dynamic = modules_cache / "evaluate_modules"
    names = []
    for src in sorted(p for p in root.iterdir() if staged_metric(test_data, p.name).is_file()):
        files = sorted(f for f in src.iterdir() if f.is_file() and f.name != "__init__.py")
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
        target = dynamic / "metrics" / f"evaluate-metric--{src.name}" / digest.hexdigest()
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, target / f.name)
        for d in (dynamic, dynamic / "metrics", target.parent, target):
            (d / "__init__.py").touch()
        names.append(src.name)
    return names
