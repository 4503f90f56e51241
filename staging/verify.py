"""`airgap-eval verify`: prove, offline, that a staged tree covers a job.

For every leaf task: its bundle is present (slug or legacy alias), loads with
`datasets.load_from_disk`, holds the splits the task config names, and its files match
manifest.json; the libraries that wrote the tree are not newer (by major) than the ones
installed; the tokenizer loads with local files only. The checks themselves are the run
path's (tasks.datacheck, which the adapter's preflight runs too); this adds the report and
the hashes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from common.layout import MANIFEST_NAME, NLTK_DIR_NAME
from common.manifest import Manifest, mismatches
from tasks.datacheck import (
    TOKENIZER_ITEM,
    Item,
    Status,
    find_bundles,
    read_bundles,
    stage_command,
    tokenizer_dir,
    tokenizer_item,
)
from tasks.index import load_index, resolve_tasks, unknown_tasks_error
from tasks.plan import plan_tasks

_BAD_ORDER: tuple[Status, ...] = ("unknown", "missing", "unreadable", "incompatible", "mismatch")


@dataclass
class VerifyReport:
    test_data: Path
    items: list[Item] = field(default_factory=list)
    fix_command: str | None = None

    @property
    def problems(self) -> list[Item]:
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
    index = load_index(None, includes)
    res = resolve_tasks(tasks, index)
    if res.unknown:  # a typo, not missing data: the same error as run's
        raise unknown_tasks_error(res.unknown, index, "pass --include-path DIR")
    if not res.leaves:
        raise ConfigError(f"{tasks} resolve to no task", "name at least one lm_eval task")
    manifest = (
        Manifest.load(test_data / MANIFEST_NAME) if (test_data / MANIFEST_NAME).is_file() else None
    )
    report = VerifyReport(test_data)

    check = find_bundles(test_data, plan_tasks(res, index), manifest)
    read_bundles(check, manifest)
    report.items += check.items

    tok_dir = tokenizer_dir(test_data, tokenizer, manifest)
    if tokenizer or tok_dir.is_dir() or (manifest and manifest.tokenizer):
        report.items.append(tokenizer_item(tok_dir, manifest))

    if check_hashes:
        _check_hashes(test_data, manifest, report)

    if report.problems:
        bad = [i.task for i in report.problems if i.task != TOKENIZER_ITEM]
        retry = list(dict.fromkeys(bad)) or list(tasks)
        src = manifest.tokenizer if manifest else None
        report.fix_command = stage_command(retry, test_data, src, includes)
    return report


def _check_hashes(test_data: Path, manifest: Manifest | None, report: VerifyReport) -> None:
    """Hash the files under the dirs the job reads (that loaded fine), all at once."""
    items: dict[str, list[Item]] = {}
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
            report.items.append(Item("(nltk data)", top, "mismatch", detail))
