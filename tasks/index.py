"""A prebuilt name -> config-folder index of lm_eval's ~14,700 task configs.

Plain lm_eval scans every YAML at start-up (10-17 s). We scan once (at image build:
`airgap-eval run --build-task-index`, or on first use) and keep, per name, its kind, YAML
path, members and dataset fields. A job then hands lm_eval's public `TaskManager` only the
folders its tasks live in (`include_defaults=False, include_path=[...]`): < 0.5 s.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.errors import ConfigError

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
# Group-config keys that structure a group; any other key of a group is a task override.
_GROUP_KEYS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata", "tag"}


@dataclass(frozen=True)
class LeafTask:
    """A task lm_eval will build, with the dataset fields its `load_dataset` call will get."""

    name: str
    dataset_path: str | None
    dataset_name: str | None
    data_files: Any
    python_class: bool = False  # dataset fields live in a Python class, not in YAML


@dataclass
class Resolution:
    leaves: list[LeafTask] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _lm_eval_dir() -> str:
    from importlib.util import find_spec

    spec = find_spec("lm_eval")  # finds the package without importing it
    return str(Path(spec.origin).parent) if spec and spec.origin else ""


def default_index_path() -> Path:
    """Per lm_eval version AND install dir: the index holds absolute YAML paths, so two venvs
    (or a deleted one) must never share a cached index."""
    if env := os.environ.get("AIRGAP_EVAL_TASK_INDEX"):
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = hashlib.sha256(_lm_eval_dir().encode()).hexdigest()[:8]
    return cache / "airgap-eval" / f"task-index-lm_eval-{_lm_eval_version()}-{where}.json"


def _dataset_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    kwargs = cfg.get("dataset_kwargs") or {}
    return {
        "dataset_path": cfg.get("dataset_path"),
        "dataset_name": cfg.get("dataset_name"),
        "data_files": kwargs.get("data_files") if isinstance(kwargs, dict) else None,
    }


def _entry_record(entry: Any) -> dict[str, Any]:
    from lm_eval.tasks._index import Kind

    rec: dict[str, Any] = {"kind": entry.kind.name}
    if entry.yaml_path is not None:
        rec["yaml"] = str(entry.yaml_path)
    cfg = entry.cfg or {}
    if entry.kind == Kind.TAG:
        rec["members"] = sorted(entry.tags)
    elif entry.kind == Kind.GROUP:
        rec["members"] = cfg.get("task") or []
        rec["overrides"] = {k: v for k, v in cfg.items() if k not in _GROUP_KEYS}
    else:
        rec |= _dataset_fields(cfg)
    return rec


def build_index(
    include_path: list[Path] | None = None, include_defaults: bool = True
) -> dict[str, Any]:
    """Scan configs with lm_eval's own TaskManager (the slow part, done once)."""
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_defaults=include_defaults, include_path=include_path or None)
    entries = {name: _entry_record(e) for name, e in tm.task_index.items()}
    return {"format": INDEX_FORMAT, "lm_eval": _lm_eval_version(), "entries": entries}


def write_index(path: Path, index: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(index, default=str))


def load_index(path: Path | None = None, include_path: list[Path] | None = None) -> dict[str, Any]:
    """The cached index (built and cached, where writable, when absent or stale), with the
    custom task folders of `include_path` merged over it."""
    return merge_include_path(_cached_index(path or default_index_path()), include_path or [])


def _cached_index(path: Path) -> dict[str, Any]:
    try:
        index: dict[str, Any] = json.loads(path.read_text())
        if index.get("format") == INDEX_FORMAT and index.get("lm_eval") == _lm_eval_version():
            return index
        log.info("task index %s is stale; rebuilding", path)
    except FileNotFoundError:
        log.info("no task index at %s; building it once (20-50 s on 2 cores)", path)
    except ValueError:
        log.warning("task index %s is corrupt; rebuilding", path)
    index = build_index()
    try:
        write_index(path, index)
    except OSError as e:
        log.warning("could not cache the task index at %s (%s)", path, e)
    return index


def merge_include_path(index: dict[str, Any], include_path: list[Path]) -> dict[str, Any]:
    """Custom task folders (job spec `include_path`) override built-in names, as in lm_eval."""
    if not include_path:
        return index
    extra = build_index(include_path, include_defaults=False)["entries"]
    return index | {"entries": index["entries"] | extra}


def _expand(
    spec: str | dict[str, Any],
    entries: dict[str, Any],
    overrides: dict[str, Any],
    out: Resolution,
    seen: set[str],
) -> None:
    if isinstance(spec, dict):
        if "group" in spec:
            name = spec["group"]
            inline = {k: v for k, v in spec.items() if k != "group"}
            if name in entries:
                _expand(name, entries, overrides | inline, out, seen)
            else:  # an inline group: its members are in its own `task` list
                sub = {k: v for k, v in inline.items() if k not in _GROUP_KEYS}
                for member in inline.get("task") or []:
                    _expand(member, entries, overrides | sub, out, seen)
            return
        name = spec.get("task", "")
        item = {k: v for k, v in spec.items() if k != "task"}
        if name not in entries:  # an inline task defined inside a group
            cfg = overrides | item
            out.leaves.append(LeafTask(name, **_dataset_fields(cfg)))
            return
        _expand(name, entries, overrides | item, out, seen)
        return

    rec = entries.get(spec)
    if rec is None:
        matches = sorted(fnmatch.filter(entries, spec)) if any(c in spec for c in "*?[") else []
        if not matches:
            out.unknown.append(spec)
        for m in matches:
            _expand(m, entries, overrides, out, seen)
        return
    if yaml := rec.get("yaml"):
        out.folders.append(Path(yaml).parent)
    kind = rec["kind"]
    if kind in ("TAG", "GROUP"):
        group_overrides = overrides | rec.get("overrides", {})
        for member in rec.get("members", []):
            _expand(member, entries, group_overrides, out, seen)
        return
    if spec in seen:
        return
    seen.add(spec)
    fields = {k: rec.get(k) for k in ("dataset_path", "dataset_name", "data_files")}
    fields |= {k: v for k, v in _dataset_fields(overrides).items() if v is not None}
    out.leaves.append(LeafTask(spec, python_class=kind == "PY_TASK", **fields))


def resolve_tasks(names: list[str], index: dict[str, Any]) -> Resolution:
    """Tasks, groups, tags or glob patterns -> leaf tasks and the config folders they need."""
    out = Resolution()
    seen: set[str] = set()
    for name in names:
        _expand(name, index["entries"], {}, out, seen)
    # A folder whose ancestor is also included would be scanned twice.
    folders = sorted(set(out.folders))
    out.folders = [f for f in folders if not any(p in folders for p in f.parents)]
    return out


# Benchmarks EvalHub's collections name that lm_eval 0.4.13 does not ship (long-context-v1's
# MRCR tasks): they run as custom tasks.
NOT_IN_THIS_LM_EVAL = ("mrcr", "mrcr_*")


def unknown_tasks_error(unknown: list[str], index: dict[str, Any], custom: str) -> ConfigError:
    """The one error for names that are no task, group or tag (run, stage, verify, slugs):
    each with its close matches. `custom`: how this command takes custom task YAMLs."""
    names = list(index["entries"])
    later = [n for n in unknown if any(fnmatch.fnmatch(n, p) for p in NOT_IN_THIS_LM_EVAL)]
    listed = []
    for name in unknown:
        if name in later:
            continue
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
        listed.append(f"{name} (did you mean {' or '.join(close)}?)" if close else name)
    parts = [f"unknown task or group name(s): {', '.join(listed)}"] if listed else []
    if later:
        parts.append(
            f"{', '.join(later)}: no such task in lm_eval {index.get('lm_eval', '')} (EvalHub's "
            "long-context-v1 names it)"
        )
    route = (
        f"{custom} for custom task YAMLs"
        if not later
        else "run it as a custom task: its task YAMLs (and utils) in a folder DIR, staged with "
        "`airgap-eval stage --include-path DIR ...` (which copies DIR to <tree>/tasks/<DIR "
        "name>), and the job's parameters.include_path: [/test_data/tasks/<DIR name>] "
        f"({custom} here)"
    )
    return ConfigError(
        "; ".join(parts),
        ("check the spelling (`lm_eval ls tasks`), or " if listed else "") + route,
    )
