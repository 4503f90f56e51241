"""The Python code a task runs, and the packages it imports that this install lacks.

lm_eval imports a task's `!function` modules (utils, metric and filter functions, task
classes) while building it, and some of those import optional packages (ifeval: langdetect,
immutabledict; leaderboard_math_hard: sympy, math_verify). Read statically (ast, no import:
this runs in the fast verdict, before lm_eval is imported), from each task's `!function`
modules through the modules they import in the same folder or in `lm_eval.tasks`, so a
missing package is named, with lm_eval's extra that brings it, before the first request.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, requires
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tasks.index import LeafTask
from tasks.plan import FunctionRef, leaf_config

# Import names that differ from their distribution's name (lm_eval's extras use these).
_DIST_OF = {"antlr4": "antlr4-python3-runtime", "sklearn": "scikit-learn", "yaml": "pyyaml"}
_META_EXTRAS = {"dev", "tasks", "all"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def function_files(cfg: Any) -> set[Path]:
    """The module files of every `!function` reference in a task config."""
    out: set[Path] = set()
    if isinstance(cfg, FunctionRef) and cfg.base is not None and "." in cfg:
        module = str(cfg).rsplit(".", 1)[0]
        out.add(cfg.base / (module.replace(".", "/") + ".py"))
    elif isinstance(cfg, dict):
        for value in cfg.values():
            out |= function_files(value)
    elif isinstance(cfg, list):
        for value in cfg:
            out |= function_files(value)
    return out


def _optional(handlers: list[ast.ExceptHandler]) -> bool:
    """A `try: import x / except ImportError: <no raise>`: x is optional."""
    for h in handlers:
        names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
        caught = {n.id for n in names if isinstance(n, ast.Name)}
        if h.type is None or caught & {"ImportError", "ModuleNotFoundError", "Exception"}:
            return not any(isinstance(n, ast.Raise) for n in ast.walk(h))
    return False


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(module, level) of every required import, skipping optional and TYPE_CHECKING ones."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and _optional(node.handlers):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, 0) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
            base = f"{node.module}." if node.module else ""  # `from p import x`: x may be a module
            out.extend((base + a.name, node.level) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


@cache
def _lm_eval_root() -> Path | None:
    spec = find_spec("lm_eval")
    return Path(spec.origin).parent.parent if spec and spec.origin else None


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root / dotted.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _file_imports(path: Path) -> tuple[frozenset[str], frozenset[Path]]:
    """Top-level names of the third-party packages a file imports, and the task-code files
    it imports (siblings, relative imports, `lm_eval.tasks.*`)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError):
        return frozenset(), frozenset()
    packages: set[str] = set()
    files: set[Path] = set()
    root = _lm_eval_root()
    for module, level in _imports(tree):
        if level:
            base = path.parent
            for _ in range(level - 1):
                base = base.parent
            if module and (f := _module_file(base, module)):
                files.add(f)
            continue
        top = module.split(".")[0]
        if not top or top in sys.stdlib_module_names:
            continue
        if f := _module_file(path.parent, module):  # a sibling module of the task folder
            files.add(f)
        elif top == "lm_eval":
            if module.startswith("lm_eval.tasks.") and root and (f := _module_file(root, module)):
                files.add(f)
        else:
            packages.add(top)
    return frozenset(packages), frozenset(files)


def imported_packages(entry_files: set[Path]) -> dict[str, set[Path]]:
    """Every third-party top-level package the entry files import, directly or through the
    task code they import -> the entry files that need it."""
    needs: dict[str, set[Path]] = {}
    for entry in entry_files:
        seen: set[Path] = set()
        todo = [entry]
        while todo:
            f = todo.pop()
            if f in seen:
                continue
            seen.add(f)
            packages, files = _file_imports(f)
            for p in packages:
                needs.setdefault(p, set()).add(entry)
            todo.extend(files - seen)
    return needs


@cache
def _extras() -> dict[str, str]:
    """lm_eval's optional distributions (normalised) -> the extra that installs each."""
    try:
        reqs = requires("lm_eval") or []
    except PackageNotFoundError:
        return {}
    out: dict[str, str] = {}
    for req in reqs:
        m = re.match(r"\s*([A-Za-z0-9_.-]+).*extra\s*==\s*['\"]([\w-]+)['\"]", req)
        if m and m.group(2) not in _META_EXTRAS:
            out.setdefault(_norm(m.group(1)), m.group(2))
    return out


def install_hint(package: str) -> str:
    """What installs the import name `package`: lm_eval's extra, else the distribution."""
    dist = _DIST_OF.get(package, package)
    extra = _extras().get(_norm(dist))
    return f"pip install 'lm-eval[{extra}]'" if extra else f"pip install {dist}"


def _findable(package: str) -> bool:
    try:
        return find_spec(package) is not None
    except (ImportError, ValueError):  # a finder that refuses the name
        return False


def missing_packages(leaves: list[LeafTask], index: dict[str, Any]) -> dict[str, list[str]]:
    """Packages the leaves' code imports that this install cannot find -> the tasks."""
    entries: dict[Path, list[str]] = {}
    for leaf in leaves:
        for f in function_files(leaf_config(leaf, index)):
            entries.setdefault(f, []).append(leaf.name)
    missing: dict[str, list[str]] = {}
    for package, files in imported_packages(set(entries)).items():
        if not _findable(package):
            needers = {t for f in files for t in entries[f]}
            missing[package] = sorted(needers)
    return missing


def unsafe_tasks(leaves: list[LeafTask], index: dict[str, Any]) -> list[str]:
    """Leaves whose YAML sets `unsafe_code: true` (they execute model-written code)."""
    return sorted(leaf.name for leaf in leaves if leaf_config(leaf, index).get("unsafe_code"))
