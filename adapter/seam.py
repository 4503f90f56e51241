"""THE one seam where the adapter patches libraries: `datasets.load_dataset` reads staged
bundles, lm_eval's git probe is quiet, its Jinja prompt templates are compiled once, and
transformers reads its model files once at import.

lm_eval's YAML tasks, its Python tasks and task utils all fetch data with
`datasets.load_dataset(path, name, ...)`. Offline, that call becomes
`datasets.load_from_disk(<test_data>/<slug>)` (slug rules: adapter/slugs.py; the legacy
alias is accepted), honouring `split=`. Installed before any task module is imported, so
`from datasets import load_dataset` in a task's utils binds the redirect too.
`datasets.disable_caching()` keeps `.map` caches out of the (read-only) data dir.
lm_eval records the git commit of the working dir by running `git describe`, whose stderr
says `fatal: not a git repository` in every pod: `quiet_git_probe` runs the same probe with
that stderr captured. lm_eval's `utils.apply_template` compiles the task's template string
anew for every document and field (~0.7 ms each: 0.25 s of start-up before the first request
on 50 ARC docs, minutes on a full MMLU); `compile_templates_once` renders the same templates
from a cache of compiled ones. No fork of lm_eval: everything else runs as shipped.
transformers 5 builds its lazy import table by reading all ~1,700 files under
transformers/models twice per process (for the package, then for `transformers.models`: its
cache is keyed by the path as given, a directory then a file, and holds 128 of ~570 dirs);
`share_models_scan` serves the second from the first (0.27 s of start-up here).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import ConfigError, MissingDataError
from tasks.bundles import locate

log = logging.getLogger(__name__)

_SLICE = re.compile(r"^(?P<name>[\w.-]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")
_original: Callable[..., Any] | None = None
_loaded: dict[Path, Any] = {}  # bundle dir -> what preflight already loaded from it


def _select_split(data: Any, split: Any, where: Path) -> Any:
    import datasets

    if split is None or isinstance(data, datasets.Dataset):
        return data
    if isinstance(split, list):
        return [_select_split(data, s, where) for s in split]
    name, rows = str(split), None
    if m := _SLICE.match(name):
        name = m["name"]
        rows = slice(int(m["start"]) if m["start"] else None, int(m["stop"]) if m["stop"] else None)
    if name not in data:
        raise MissingDataError(
            f"bundle {where} has no split {name!r} (it has {sorted(data)})",
            "re-stage the dataset with the installed lm_eval version",
        )
    ds = data[name]
    if rows is not None:
        ds = ds.select(range(len(ds))[rows])
    elif "[" in name:
        raise ConfigError(f"split {split!r} is not supported offline", "use name or name[a:b]")
    return ds


def load_staged(test_data: Path, path: str, name: str | None, data_files: Any) -> tuple[Any, Path]:
    """The staged bundle for (path, name, data_files) (a DatasetDict or Dataset) and its dir."""
    import datasets

    found = locate(test_data, path, name, data_files)
    if found.path is None:
        raise MissingDataError(
            f"dataset {path!r} (name={name!r}) is not staged: none of "
            f"{', '.join(str(test_data / t) for t in found.tried)} exists",
            f"stage it: airgap-eval stage <task> --out DIR, then sync to {test_data}",
        )
    alias = "" if found.path.name == found.slug else f" (legacy alias of {found.slug})"
    log.info("data %s%s -> %s%s", path, f" [{name}]" if name else "", found.path, alias)
    if found.path in _loaded:
        return _loaded[found.path], found.path
    try:
        return datasets.load_from_disk(str(found.path)), found.path
    except Exception as e:
        raise MissingDataError(
            f"bundle {found.path} cannot be read by datasets {datasets.__version__}: "
            f"{type(e).__name__}: {e}",
            "re-stage it (airgap-eval stage) with the datasets version of this image",
        ) from None


def install(test_data: Path, loaded: dict[Path, Any] | None = None) -> None:
    """Redirect `datasets.load_dataset` to the staged bundles (idempotent). `loaded`: the
    bundles preflight read (dir -> DatasetDict), served without reading them again."""
    global _original
    import datasets

    _loaded.update(loaded or {})
    if _original is not None:
        return

    def load_dataset(path: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        # Positional: (path, name, data_dir, data_files, split, ...), as in datasets' signature.
        data_files = kwargs.get("data_files", args[1] if len(args) > 1 else None)
        split = kwargs.get("split", args[2] if len(args) > 2 else None)
        data, where = load_staged(test_data, path, name, data_files)
        return _select_split(data, split, where)

    datasets.disable_caching()
    _original = datasets.load_dataset
    datasets.load_dataset = load_dataset
    log.debug("datasets.load_dataset now reads bundles under %s", test_data)


def _git_commit() -> str | None:
    """lm_eval's get_git_commit_hash, without git's stderr."""
    from lm_eval.loggers.utils import get_commit_from_path

    try:
        probe = subprocess.run(
            ["git", "describe", "--always"], capture_output=True, text=True, check=True
        )
        return probe.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())


def quiet_git_probe() -> None:
    import lm_eval.evaluator

    lm_eval.evaluator.get_git_commit_hash = _git_commit


def compile_templates_once() -> None:
    """lm_eval's `apply_template` with each template string compiled once (idempotent)."""
    import lm_eval.utils

    if getattr(lm_eval.utils.apply_template, "_compiled_once", False):
        return
    compile_template = functools.lru_cache(maxsize=1024)(lm_eval.utils.env.from_string)

    def apply_template(template: str, doc: dict[str, Any]) -> str:
        return compile_template(template).render(**doc)

    apply_template._compiled_once = True  # type: ignore[attr-defined]
    lm_eval.utils.apply_template = apply_template


def share_models_scan() -> None:
    """Import transformers with its scan of transformers/models done once (idempotent; a
    transformers without that scan, or with `transformers.models` already imported, is left
    as it is)."""
    import sys

    import transformers.utils.import_utils as iu

    name = "create_import_structure_from_path"
    scan: Any = getattr(iu, name, None)
    if "transformers.models" in sys.modules or not hasattr(scan, "cache_info"):
        return

    def by_dir(module_path: Any) -> Any:
        # the package's call passed the dir as a Path: the same key finds its cached table
        path = str(module_path)
        return scan(Path(os.path.dirname(path)) if os.path.isfile(path) else module_path)

    setattr(iu, name, by_dir)
    try:
        import transformers.models  # noqa: F401
    finally:
        setattr(iu, name, scan)


def uninstall() -> None:
    global _original
    import datasets

    _loaded.clear()
    if _original is not None:
        datasets.load_dataset = _original
        _original = None
