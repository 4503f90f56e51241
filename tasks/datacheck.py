"""The staged tree against a task plan: one item per leaf task (and the tokenizer).

Two stages, so a job that will fail fails before any heavy import: `find_bundles` only looks
at the tree (slug dir or legacy alias present), `read_bundles` then loads each distinct
bundle dir once with `datasets.load_from_disk` and checks the splits the tasks index. The
run path keeps what it loaded and hands it to the seam (each bundle is read once per run);
`airgap-eval verify` (staging/) reports the same items.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from common.layout import TOKENIZER_DIR_NAME
from common.manifest import Manifest
from tasks.bundles import locate
from tasks.plan import TaskPlan

Status = Literal["ok", "missing", "unreadable", "mismatch", "incompatible", "unknown"]
TOKENIZER_ITEM = "(tokenizer)"
# Files a saved tokenizer dir holds; one of them is enough for the fast look.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass
class Item:
    task: str
    slug: str
    status: Status
    detail: str = ""


@dataclass
class TreeCheck:
    """Items in leaf order; the bundle dir each found task reads, with the splits it needs."""

    items: list[Item] = field(default_factory=list)
    found: dict[Path, list[Item]] = field(default_factory=dict)
    splits: dict[Path, set[str]] = field(default_factory=dict)
    data: dict[Path, Any] = field(default_factory=dict)  # dir -> loaded DatasetDict

    @property
    def problems(self) -> list[Item]:
        return [i for i in self.items if i.status != "ok"]


def _major(v: str | None) -> int | None:
    try:
        return int(str(v).split(".")[0])
    except ValueError:
        return None


def _installed(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def version_problem(manifest: Manifest | None, dist: str) -> str | None:
    """A tree written by a newer major than the one installed may use formats it cannot
    read (datasets 4 writes `List` features; transformers 5 `TokenizersBackend`)."""
    if manifest is None:
        return None
    written, here = manifest.versions.get(dist), _installed(dist)
    w, h = _major(written), _major(here)
    if w is not None and h is not None and w > h:
        return f"written by {dist} {written}, installed {dist} {here}"
    return None


def find_bundles(test_data: Path, plan: TaskPlan, manifest: Manifest | None) -> TreeCheck:
    """Where each leaf's bundle lies (no heavy import, no data read)."""
    check = TreeCheck()
    for leaf in plan.resolution.leaves:
        if slugs := plan.task_slugs.get(leaf.name):
            b = plan.bundles[slugs[0]]
            found = locate(test_data, b.dataset_path, b.dataset_name, b.data_files)
            splits = b.splits
        elif slugs := (manifest.tasks.get(leaf.name) if manifest else None):
            found = locate(test_data, slugs[0])  # a Python task: what stage recorded
            splits = set()
        elif leaf.name in plan.classes:
            continue  # its class was not imported: the seam names its dirs if they lack
        else:
            check.items.append(
                Item(leaf.name, "-", "missing", "dataset unknown (Python task, not staged)")
            )
            continue
        if found.path is None:
            tried = " or ".join(found.tried)
            check.items.append(Item(leaf.name, found.slug, "missing", f"no dir {tried}"))
            continue
        item = Item(leaf.name, found.path.name, "ok")
        check.items.append(item)
        check.found.setdefault(found.path, []).append(item)
        check.splits.setdefault(found.path, set()).update(splits)
    return check


def _load_detail(e: Exception, manifest: Manifest | None) -> tuple[Status, str]:
    text = str(e)
    if "Feature type" in text and "not found" in text:
        feature = text.split("'")[1] if "'" in text else "?"
        import datasets

        written = manifest.versions.get("datasets", "?") if manifest else "?"
        return "incompatible", (
            f"dataset_info.json uses feature type {feature!r} unknown to datasets "
            f"{datasets.__version__} (tree written by datasets {written}); restage with the "
            "datasets version of the adapter image or upgrade datasets"
        )
    return "unreadable", f"{type(e).__name__}: {text[:300]}"


def _read(path: Path, splits: set[str], manifest: Manifest | None) -> tuple[Status, str, Any]:
    import datasets

    try:
        dd = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises ValueError, FileNotFoundError, IndexError, ...
        return (*_load_detail(e, manifest), None)
    have = set(dd.keys()) if isinstance(dd, datasets.DatasetDict) else set()
    if lacking := sorted(s for s in splits if s not in have):
        detail = f"split(s) {', '.join(lacking)} missing (has {', '.join(sorted(have))})"
        return "missing", detail, None
    return "ok", "", dd


def read_bundles(check: TreeCheck, manifest: Manifest | None) -> None:
    """Load each found bundle dir once; mark its items; keep what loaded in `check.data`."""
    datasets_problem = version_problem(manifest, "datasets")
    for path, items in check.found.items():
        status, detail, data = _read(path, check.splits[path], manifest)
        if status == "unreadable" and datasets_problem:
            status, detail = "incompatible", f"{datasets_problem}; {detail}"
        if data is not None:
            check.data[path] = data
        for item in items:
            item.status, item.detail = status, detail


def tokenizer_dir(test_data: Path, tokenizer: str | None, manifest: Manifest | None) -> Path:
    """Where the tokenizer is, or would be (the one rule for run and verify): a dir (absolute
    or under test_data); else the staged tokenizer/ when no name was given, when it was staged
    from that name (an HF id), or when it is there and the manifest names no source; else
    test_data/<name>."""
    staged = test_data / TOKENIZER_DIR_NAME
    if not tokenizer:
        return staged
    for candidate in (Path(tokenizer), test_data / tokenizer):
        if candidate.is_dir():
            return candidate
    staged_for = manifest.tokenizer if manifest else None
    if staged_for == tokenizer or (staged_for is None and staged.is_dir()):
        return staged
    return test_data / tokenizer


def tokenizer_present(path: Path) -> bool:
    return any((path / f).is_file() for f in TOKENIZER_FILES)


def tokenizer_load_error(source: str, local_only: bool = True) -> str | None:
    """Why `AutoTokenizer` cannot load `source` with this transformers, or None."""
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as e:  # transformers raises OSError, ValueError, AttributeError, ...
        return f"{type(e).__name__}: {str(e)[:300]}"
    return None


def tokenizer_item(path: Path, manifest: Manifest | None, load: bool = True) -> Item:
    """The tokenizer item: present (fast), and with `load` loadable by this transformers."""
    if not path.is_dir():
        return Item(TOKENIZER_ITEM, path.name, "missing", f"{path} not found")
    if not load:
        if tokenizer_present(path):
            return Item(TOKENIZER_ITEM, path.name, "ok")
        return Item(TOKENIZER_ITEM, path.name, "missing", f"no tokenizer files in {path}")
    if error := tokenizer_load_error(str(path)):
        status: Status = "unreadable"
        if p := version_problem(manifest, "transformers"):
            status, error = "incompatible", f"{p}; {error}"
        return Item(TOKENIZER_ITEM, path.name, status, error)
    return Item(TOKENIZER_ITEM, path.name, "ok")


def stage_command(
    tasks: Iterable[str], test_data: Path, tokenizer: str | None, include_path: Iterable[Path]
) -> str:
    """The `airgap-eval stage` command that fills in what is missing."""
    parts = ["airgap-eval", "stage", *tasks, "--tokenizer", tokenizer or "HF_ID_OR_DIR"]
    parts += ["--out", str(test_data)]
    for p in include_path:
        parts += ["--include-path", str(p)]
    return shlex.join(parts)
