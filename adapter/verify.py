"""`airgap-eval verify`: prove, offline, that a staged tree covers a job.

For every leaf task: its bundle is present (slug or legacy alias), loads with
`datasets.load_from_disk`, holds the splits the task config names, and its files match
manifest.json; the libraries that wrote the tree are not newer (by major) than the ones
installed; the tokenizer loads with local files only. The adapter's preflight calls
`verify()`: keep the signature stable and the imports light (datasets and transformers are
imported inside the functions that need them).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from adapter.bundles import locate
from adapter.stage import (
    NLTK_DIR_NAME,
    leaf_config,
    load_task_index,
    python_task_fields,
    required_splits,
)
from adapter.taskindex import LeafTask, resolve
from common.errors import ConfigError
from common.layout import MANIFEST_NAME, TOKENIZER_DIR_NAME
from common.manifest import Manifest, mismatches

Status = Literal["ok", "missing", "unreadable", "mismatch", "incompatible", "unknown"]
TOKENIZER_ITEM = "(tokenizer)"
_BAD_ORDER: tuple[Status, ...] = ("unknown", "missing", "unreadable", "incompatible", "mismatch")


@dataclass
class VerifyItem:
    task: str
    slug: str
    status: Status
    detail: str = ""


@dataclass
class VerifyReport:
    test_data: Path
    items: list[VerifyItem] = field(default_factory=list)
    fix_command: str | None = None

    @property
    def problems(self) -> list[VerifyItem]:
        return [i for i in self.items if i.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def worst(self) -> Status:
        found = {i.status for i in self.items}
        return next((s for s in _BAD_ORDER if s in found), "ok")

    def table(self) -> str:
        rows = [("TASK", "SLUG", "STATUS", "DETAIL")]
        rows += [(i.task, i.slug, i.status, i.detail) for i in self.items]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c:<12}  {d}".rstrip() for a, b, c, d in rows)


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


def _leaf_fields(leaf: LeafTask, index: dict[str, Any]) -> tuple[str, str | None, Any] | None:
    """(dataset_path, dataset_name, data_files) of a leaf; None when unknown."""
    if leaf.python_class:
        try:
            path, name = python_task_fields(Path(index["entries"][leaf.name]["yaml"]))
            return (path, name, None) if path else None
        except Exception:  # third-party task code: fall back to what stage recorded
            return None
    return (leaf.dataset_path, leaf.dataset_name, leaf.data_files) if leaf.dataset_path else None


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


def _check_bundle(path: Path, splits: list[str], manifest: Manifest | None) -> tuple[Status, str]:
    import datasets

    try:
        dd = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises ValueError, FileNotFoundError, IndexError, ...
        return _load_detail(e, manifest)
    have = set(dd.keys()) if isinstance(dd, datasets.DatasetDict) else set()
    if lacking := [s for s in splits if s not in have]:
        return "missing", f"split(s) {', '.join(lacking)} missing (has {', '.join(sorted(have))})"
    return "ok", ""


def tokenizer_load_error(source: str, local_only: bool = True) -> str | None:
    """Why `AutoTokenizer` cannot load `source` with this transformers, or None."""
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as e:  # transformers raises OSError, ValueError, AttributeError, ...
        return f"{type(e).__name__}: {str(e)[:300]}"
    return None


def _check_tokenizer(path: Path) -> tuple[Status, str]:
    if not path.is_dir():
        return "missing", f"{path} not found"
    if error := tokenizer_load_error(str(path)):
        return "unreadable", error
    return "ok", ""


def _tokenizer_dir(test_data: Path, tokenizer: str | None, manifest: Manifest | None) -> Path:
    """A dir (absolute or under test_data), else the staged tokenizer/ when it was staged
    from that name (an HF id), else where it would be."""
    staged = test_data / TOKENIZER_DIR_NAME
    if not tokenizer:
        return staged
    for candidate in (Path(tokenizer), test_data / tokenizer):
        if candidate.is_dir():
            return candidate
    if manifest and manifest.tokenizer == tokenizer:
        return staged
    return test_data / tokenizer


def fix_command(
    tasks: Iterable[str], test_data: Path, tokenizer: str | None, include_path: Iterable[Path]
) -> str:
    parts = ["airgap-eval", "stage", *tasks, "--tokenizer", tokenizer or "HF_ID_OR_DIR"]
    parts += ["--out", str(test_data)]
    for p in include_path:
        parts += ["--include-path", str(p)]
    return shlex.join(parts)


def verify(
    test_data: Path,
    tasks: list[str],
    *,
    tokenizer: str | None = None,
    check_hashes: bool = True,
    include_path: Iterable[Path] | None = None,
) -> VerifyReport:
    """Check `test_data` against the leaf tasks of `tasks`. Never touches the network.

    `tokenizer`: a dir (absolute, or relative to test_data) to check; by default
    test_data/tokenizer when the tree has one.
    """
    includes = list(include_path or [])
    index = load_task_index(includes)
    res = resolve(tasks, index)
    if not res.leaves and not res.unknown:
        raise ConfigError(f"{tasks} resolve to no task", "name at least one lm_eval task")
    manifest = (
        Manifest.load(test_data / MANIFEST_NAME) if (test_data / MANIFEST_NAME).is_file() else None
    )
    report = VerifyReport(test_data)
    report.items += [
        VerifyItem(t, "-", "unknown", "not an lm_eval task, group or tag") for t in res.unknown
    ]

    datasets_problem = version_problem(manifest, "datasets")
    checked: dict[Path, tuple[Status, str]] = {}
    for leaf in res.leaves:
        fields = _leaf_fields(leaf, index)
        if fields is not None:
            found = locate(test_data, *fields)
        elif slugs := (manifest.tasks.get(leaf.name) if manifest else None):
            found = locate(test_data, slugs[0])  # a Python task: what stage recorded
        else:
            report.items.append(
                VerifyItem(leaf.name, "-", "missing", "dataset unknown (Python task, not staged)")
            )
            continue
        if found.path is None:
            tried = " or ".join(found.tried)
            report.items.append(VerifyItem(leaf.name, found.slug, "missing", f"no dir {tried}"))
            continue
        if found.path not in checked:
            cfg = {} if leaf.python_class else leaf_config(leaf, index)
            checked[found.path] = _check_bundle(found.path, required_splits(cfg), manifest)
        status, detail = checked[found.path]
        if status == "unreadable" and datasets_problem:
            status, detail = "incompatible", f"{datasets_problem}; {detail}"
        report.items.append(VerifyItem(leaf.name, found.path.name, status, detail))

    tok_dir = _tokenizer_dir(test_data, tokenizer, manifest)
    if tokenizer or tok_dir.is_dir() or (manifest and manifest.tokenizer):
        status, detail = _check_tokenizer(tok_dir)
        if status == "unreadable" and (p := version_problem(manifest, "transformers")):
            status, detail = "incompatible", f"{p}; {detail}"
        report.items.append(VerifyItem(TOKENIZER_ITEM, tok_dir.name, status, detail))

    if check_hashes:
        _check_hashes(test_data, manifest, report)

    if report.problems:
        bad = [
            i.task for i in report.problems if i.task != TOKENIZER_ITEM and i.status != "unknown"
        ]
        retry = list(dict.fromkeys(bad)) or list(tasks)
        src = manifest.tokenizer if manifest else None
        report.fix_command = fix_command(retry, test_data, src, includes)
    return report


def _check_hashes(test_data: Path, manifest: Manifest | None, report: VerifyReport) -> None:
    """Hash the files under the dirs the job reads (that loaded fine), all at once."""
    items: dict[str, list[VerifyItem]] = {}
    for item in report.items:
        if item.status == "ok" and (test_data / item.slug).is_dir():
            items.setdefault(item.slug, []).append(item)

    def flag(top: str, detail: str) -> None:
        for item in items.get(top, []):
            item.status, item.detail = "mismatch", detail

    if manifest is None:
        for top in items:
            flag(top, f"no {MANIFEST_NAME}: nothing to check hashes against")
        return
    wanted = set(items) | {NLTK_DIR_NAME}
    names = [n for n in manifest.files if n.split("/", 1)[0] in wanted]
    listed = {n.split("/", 1)[0] for n in names}
    for top in set(items) - listed:
        flag(top, f"{top}/ is not listed in {MANIFEST_NAME}")
    by_top: dict[str, list[str]] = {}
    for line in mismatches(test_data, manifest, only=names):
        by_top.setdefault(line.split("/", 1)[0], []).append(line)
    for top, lines in sorted(by_top.items()):
        detail = "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else "")
        if top in items:
            flag(top, detail)
        else:  # nltk data: no task row of its own
            report.items.append(VerifyItem("(nltk data)", top, "mismatch", detail))
