"""Task planning: from resolved leaf tasks to the bundles (slugs), splits and assets a job needs.

Read from the task YAMLs (yaml only, no lm_eval import: `lm_eval.tasks` costs ~2 s), so the
run path can check the tree before any heavy import. `staging/` (stage, verify, slugs) plans
with the same functions; the run path never imports `staging/` (import contract).

Python-class tasks (`class: !function task.X`) carry their dataset in class attributes: with
`import_classes` we import the class (never instantiate it: its __init__ downloads) and read
`DATASET_PATH` and `DATASET_NAME`; without, such a task is left to the slugs the staging
manifest recorded for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from common.errors import ConfigError
from tasks.index import LeafTask, Resolution
from tasks.slugs import slug

SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")

_NLTK_RE = re.compile(
    r"""nltk\.(?:download\(\s*|data\.find\(\s*)["'](?:[\w-]+/)?([\w.-]+?)(?:\.zip)?["']"""
)
_EVALUATE_RE = re.compile(r"""evaluate\.load\(\s*["']([\w/.-]+)["']""")


class FunctionRef(str):
    """A `!function x.y` value: the string `x.y`, and the dir of the YAML that wrote it (lm_eval
    imports `x` from there)."""

    base: Path | None = None


class _ConfigLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """lm_eval's YAML dialect read as data: `!function x.y` is a FunctionRef."""

    base: Path | None = None


def _function_ref(loader: _ConfigLoader, node: yaml.Node) -> FunctionRef:
    ref = FunctionRef(loader.construct_scalar(node))
    ref.base = loader.base
    return ref


_ConfigLoader.add_constructor("!function", _function_ref)


def read_task_yaml(path: Path, _seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """A task YAML with its `include`s merged (the including file wins), as lm_eval does."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"include cycle at {path}", "fix the `include:` keys of the task YAMLs")
    loader = _ConfigLoader(path.read_text(encoding="utf-8"))
    loader.base = path.parent
    try:
        cfg = loader.get_single_data()
    finally:
        loader.dispose()
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} is not a YAML mapping", "fix the task YAML")
    includes = cfg.pop("include", None)
    if not includes:
        return cfg
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        merged |= read_task_yaml(path.parent / inc, _seen | {path})
    return merged | cfg


def leaf_config(leaf: LeafTask, index: dict[str, Any]) -> dict[str, Any]:
    """The leaf's own YAML config ({} for a task defined inline in a group)."""
    rec = index["entries"].get(leaf.name) or {}
    return read_task_yaml(Path(rec["yaml"])) if rec.get("yaml") else {}


def required_splits(cfg: dict[str, Any]) -> list[str]:
    """lm_eval indexes every configured split while building the task (even 0-shot)."""
    return sorted({str(cfg[k]) for k in SPLIT_KEYS if cfg.get(k) is not None})


def python_task_fields(yaml_path: Path) -> tuple[str | None, str | None]:
    """DATASET_PATH / DATASET_NAME of a Python-class task, read from the class itself."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cls = load_yaml(yaml_path, resolve_func=True).get("class")
    return getattr(cls, "DATASET_PATH", None), getattr(cls, "DATASET_NAME", None)


@cache
def _folder_assets(folder: Path) -> tuple[frozenset[str], frozenset[str]]:
    """nltk packages and Hub metric modules the Python files beside a task YAML fetch."""
    nltk: set[str] = set()
    metrics: set[str] = set()
    for py in folder.glob("*.py"):
        text = py.read_text(encoding="utf-8", errors="replace")
        nltk.update(_NLTK_RE.findall(text))
        metrics.update(_EVALUATE_RE.findall(text))
    return frozenset(nltk), frozenset(metrics)


@dataclass
class BundleNeed:
    """One dataset bundle: what `load_dataset` is called with, and the splits tasks index."""

    slug: str
    dataset_path: str
    dataset_name: str | None
    dataset_kwargs: dict[str, Any]
    data_files: Any = None  # as the slug was made from it
    tasks: list[str] = field(default_factory=list)
    splits: set[str] = field(default_factory=set)


@dataclass
class TaskPlan:
    resolution: Resolution
    bundles: dict[str, BundleNeed] = field(default_factory=dict)
    task_slugs: dict[str, list[str]] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)  # task -> why
    classes: list[str] = field(default_factory=list)  # Python-class tasks not imported
    nltk: dict[str, list[str]] = field(default_factory=dict)  # package -> tasks
    evaluate: dict[str, list[str]] = field(default_factory=dict)  # metric -> tasks

    @property
    def unknown(self) -> list[str]:
        return self.resolution.unknown


def plan_tasks(
    resolution: Resolution, index: dict[str, Any], *, import_classes: bool = True
) -> TaskPlan:
    """The bundles, splits and assets of the resolved leaves; each YAML is read once."""
    plan = TaskPlan(resolution)
    for leaf in resolution.leaves:
        rec = index["entries"].get(leaf.name) or {}
        path, name, data_files = leaf.dataset_path, leaf.dataset_name, leaf.data_files
        if rec.get("yaml"):  # also for Python-class tasks: squadv2's class loads squad_v2
            nltk, metrics = _folder_assets(Path(rec["yaml"]).parent)
            for pkg in nltk:
                plan.nltk.setdefault(pkg, []).append(leaf.name)
            for metric in metrics:
                plan.evaluate.setdefault(metric, []).append(leaf.name)
        if leaf.python_class:
            if not import_classes:
                plan.classes.append(leaf.name)
                continue
            try:
                path, name = python_task_fields(Path(rec["yaml"]))
            except Exception as e:  # any import error of third-party task code
                plan.unresolved[leaf.name] = f"importing its class failed: {e}"
                continue
        if not path:
            plan.unresolved[leaf.name] = (
                "no dataset_path (a custom_dataset loader or a class setting it at runtime)"
            )
            continue
        cfg = leaf_config(leaf, index)
        kwargs = dict(cfg.get("dataset_kwargs") or {}) | (
            {"data_files": data_files} if data_files else {}
        )
        kwargs.pop("trust_remote_code", None)  # datasets >= 4 refuses it; lm_eval drops it too
        s = slug(path, name, data_files)
        bundle = plan.bundles.setdefault(s, BundleNeed(s, path, name, kwargs, data_files))
        bundle.tasks.append(leaf.name)
        if not leaf.python_class:  # a class's splits live in its code
            bundle.splits.update(required_splits(cfg))
        plan.task_slugs[leaf.name] = [s]
    return plan
