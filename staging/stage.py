"""`airgap-eval stage`: on a connected machine, write the /test_data tree a job needs.

Tasks and groups resolve to leaf tasks through the prebuilt task index; each distinct
(dataset_path, dataset_name, data_files) is loaded once with `datasets.load_dataset` and saved
under its slug; the tokenizer and the nltk data the tasks' code downloads are saved beside
them; `manifest.json` is written last, and only when every item was staged (it means a complete
tree; a failed run's record stays in `.airgap-eval/`). A rerun only adds what is missing or
broken.

Network: one probe of the Hub first (a Hub that cannot be reached fails every item from it at
once), then each item under `--network-timeout` seconds without progress (common.network);
a line as each item starts and one when it ends; one error at the end names all that failed.

Which bundles, splits and assets: tasks.plan (the run path plans with the same code).
Heavy libraries (datasets, transformers) are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from common.engine import open_storage
from common.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    DeadlineError,
    MissingDataError,
    NotFoundError,
    UnreachableError,
)
from common.layout import (
    EVALUATE_DIR_NAME,
    MANIFEST_NAME,
    NLTK_DIR_NAME,
    STATE_DIR_NAME,
    TASKS_DIR_NAME,
    TOKENIZER_DIR_NAME,
)
from common.logs import register_secret
from common.manifest import FileEntry, Manifest, entries_for, iter_tree, mismatches
from common.network import (
    PROBE_TIMEOUT_S,
    STEP_TIMEOUT_S,
    StepTimeout,
    host_of,
    hub_endpoint,
    probe,
    run_bounded,
)
from common.s3settings import S3Connection, resolve_connection
from common.storage import Copy, Deadline, folder, parse_s3_uri
from tasks.bundles import is_bundle
from tasks.index import load_index, resolve_tasks, unknown_tasks_error
from tasks.plan import BundleNeed, plan_tasks

log = logging.getLogger(__name__)

STAGING_DIR = f"{STATE_DIR_NAME}/staging"
PARTIAL_MANIFEST = f"{STATE_DIR_NAME}/stage-manifest.partial.json"  # a failed run's record
VERSIONED = ("lm_eval", "datasets", "transformers", "tokenizers", "airgap-eval")
# datasets' packaged builders: with local data_files they never touch the network
PACKAGED_BUILDERS = frozenset({"json", "csv", "parquet", "arrow", "text", "pandas", "xml"})
_NETWORK_ERRORS = ("Offline", "Connection", "Timeout", "HTTPError", "NetworkError", "ProxyError")


# --- writing the tree --------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    out = {}
    for dist in VERSIONED:
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _unchanged(out: Path, top: str, manifest: Manifest | None) -> bool:
    """`out/top` exists and matches every manifest entry under it (hashes checked)."""
    if manifest is None or not (out / top).is_dir():
        return False
    names = [n for n in manifest.files if n.startswith(f"{top}/")]
    return bool(names) and not mismatches(out, manifest, only=names)


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _fresh_tmp(out: Path, name: str) -> Path:
    tmp = out / STAGING_DIR / name
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


class GatedError(AuthError):
    """A gated Hub dataset the Hub would not serve (no HF_TOKEN, or one it refused)."""

    def __init__(self, dataset_path: str, configs: list[str], tasks: list[str]) -> None:
        self.dataset_path, self.configs, self.tasks = dataset_path, configs, tasks
        from huggingface_hub import get_token

        hub = hub_endpoint()
        why = (
            "the Hub refused HF_TOKEN for it (its terms not accepted by the token's user?)"
            if get_token()
            else "no HF_TOKEN is set"
        )
        configs_ = f" ({', '.join(configs)})" if configs else ""
        users = f" for {', '.join(tasks[:3])}" + (" ..." if len(tasks) > 3 else "")
        super().__init__(
            f"dataset {dataset_path}{configs_}{users} is gated on the Hub and {why}",
            f"accept its terms at {hub}/datasets/{dataset_path} while logged in, then set "
            "HF_TOKEN to a read token of that account and rerun stage",
        )


def merge_gated(errors: list[AirgapError]) -> list[AirgapError]:
    """One GatedError per dataset (gpqa's three configs share one terms page)."""
    merged: dict[str, GatedError] = {}
    out: list[AirgapError] = []
    for e in errors:
        if not isinstance(e, GatedError):
            out.append(e)
        elif e.dataset_path in merged:
            first = merged[e.dataset_path]
            joined = GatedError(e.dataset_path, first.configs + e.configs, first.tasks + e.tasks)
            out[out.index(first)] = merged[e.dataset_path] = joined
        else:
            merged[e.dataset_path] = e
            out.append(e)
    return out


def _load_error(e: Exception, b: BundleNeed) -> AirgapError:
    what = f"dataset {b.dataset_path!r}" + (f" ({b.dataset_name})" if b.dataset_name else "")
    used_by = f" for {', '.join(b.tasks[:3])}" + (" ..." if len(b.tasks) > 3 else "")
    name = type(e).__name__
    if name == "DatasetNotFoundError" and "gated dataset" in str(e):
        return GatedError(b.dataset_path, [b.dataset_name] if b.dataset_name else [], b.tasks)
    if name in ("DatasetNotFoundError", "FileNotFoundError", "EmptyDatasetError"):
        return NotFoundError(
            f"{what}{used_by} not found: {e}",
            "check dataset_path/dataset_name/data_files of the task; for a gated dataset "
            "accept its terms on the Hub and set HF_TOKEN",
        )
    if _caused_by_network(e):
        return UnreachableError(f"{name}: {_short(e)}")  # Fetcher names the item
    return MissingDataError(f"loading {what}{used_by} failed: {name}: {e}", "see the log above")


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _dir_bytes(*dirs: Path, flat: Path | None = None) -> int:
    """Bytes under these dirs (and directly in `flat`, a shared downloads dir): a download's
    progress, read once a second while it runs."""
    total = 0
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(root, f)).st_size
    with contextlib.suppress(OSError), os.scandir(flat or "/nonexistent") as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                total += entry.stat().st_size if entry.is_file() else 0
    return total


def _hub_cache(kind: str, repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"{kind}--{repo.replace('/', '--')}"


def is_hub_dataset(b: BundleNeed) -> bool:
    """Loaded from the Hub (not a local dir, nor a packaged builder on local files)."""
    if Path(b.dataset_path).exists():
        return False
    # a packaged builder's data_files: local, or URLs on another host (bounded all the same)
    return b.dataset_path not in PACKAGED_BUILDERS


def save_bundle(b: BundleNeed, out: Path, timeout: float | None = None) -> int:
    """load_dataset once, save_to_disk under the slug (atomically). Returns rows written.

    With `timeout`, the load is given up after that many seconds without download progress
    (StepTimeout); the save runs here, so a given-up load never writes into `out`."""
    import datasets

    def load() -> Any:
        return datasets.load_dataset(b.dataset_path, b.dataset_name, **b.dataset_kwargs)

    if timeout is None:
        dd = load()
    else:
        cache = Path(datasets.config.HF_DATASETS_CACHE)
        repo = _hub_cache("datasets", b.dataset_path)
        built = cache / b.dataset_path.replace("/", "___")  # datasets' own cache dir name
        dd = run_bounded(load, timeout, lambda: _dir_bytes(repo, built, flat=cache / "downloads"))
    if not isinstance(dd, datasets.DatasetDict):
        raise MissingDataError(
            f"load_dataset({b.dataset_path!r}) returned {type(dd).__name__}, not a DatasetDict",
            "remove `split`/`streaming` from the task's dataset_kwargs",
        )
    tmp = _fresh_tmp(out, b.slug)
    # An empty split gets no arrow file unless forced to one shard; the bundle then fails
    # to load (IndexError in concat_tables).
    dd.save_to_disk(str(tmp), num_shards={s: 1 for s, d in dd.items() if d.num_rows == 0})
    _replace_dir(tmp, out / b.slug)
    return sum(d.num_rows for d in dd.values())


def save_tokenizer(source: str, out: Path, timeout: float | None = None) -> None:
    from transformers import AutoTokenizer

    def load() -> Any:
        return AutoTokenizer.from_pretrained(source)

    try:
        if timeout is None or Path(source).is_dir():
            tok = load()
        else:
            watched = _hub_cache("models", source)
            tok = run_bounded(load, timeout, lambda: _dir_bytes(watched))
    except StepTimeout:
        raise
    except Exception as e:
        if _caused_by_network(e):
            raise UnreachableError(_short(e)) from e  # Fetcher names the item
        if not isinstance(e, (OSError, ValueError)):
            raise
        raise NotFoundError(
            f"tokenizer {source!r} could not be loaded: {e}",
            "pass a Hugging Face model id this machine can reach (HF_TOKEN for gated ones) "
            "or a local tokenizer dir",
        ) from e
    tmp = _fresh_tmp(out, TOKENIZER_DIR_NAME)
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, out / TOKENIZER_DIR_NAME)


def _caused_by_network(e: BaseException) -> bool:
    """transformers wraps the Hub's connection errors in an OSError ("couldn't connect")."""
    seen: BaseException | None = e
    while seen is not None:
        if any(n in type(seen).__name__ for n in _NETWORK_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return "couldn't connect" in str(e) or "offline mode" in str(e).lower()


def _nltk_search_path() -> list[Path]:
    paths = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    try:
        import nltk

        paths += [Path(p) for p in nltk.data.path]
    except ImportError:
        pass
    return paths


def save_nltk(package: str, out: Path, timeout: float = 60.0) -> None:
    """Copy the package from a local nltk data dir, else download it (bounded in time:
    nltk.download has no timeout of its own and can stall)."""
    dest_root = out / NLTK_DIR_NAME
    for base in _nltk_search_path():
        for found in sorted(base.glob(f"*/{package}")):
            if (
                found.is_dir()
                and found.resolve() != (dest_root / found.parent.name / package).resolve()
            ):
                target = dest_root / found.parent.name / package
                tmp = _fresh_tmp(out, f"nltk-{package}")
                shutil.copytree(found, tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                _replace_dir(tmp, target)
                return
    code = (
        "import sys, nltk; sys.exit(0 if nltk.download(sys.argv[1], download_dir=sys.argv[2], "
        "quiet=True, raise_on_error=True) else 1)"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", code, package, str(dest_root)],
            check=True,
            timeout=timeout,
            capture_output=True,
        )
    except subprocess.TimeoutExpired as e:
        raise StepTimeout(f"no download in {timeout:.0f} s") from e
    except (subprocess.SubprocessError, OSError) as e:
        tail = getattr(e, "stderr", b"") or b""
        lines = tail.decode(errors="replace").strip().splitlines()
        raise UnreachableError(
            f"nltk data {package!r} is neither in a local nltk data dir nor downloadable: "
            + (lines[-1][:200] if lines else str(e)),
            f"run `python -m nltk.downloader {package}` on a connected machine (or set "
            "NLTK_DATA to a dir holding it) and rerun stage",
        ) from e
    for z in dest_root.glob(f"*/{package}.zip"):  # the unzipped copy is what nltk reads
        z.unlink()


@dataclass
class StageResult:
    out: Path
    manifest: Manifest
    written: list[str]  # top-level dirs written this run
    skipped: list[str]  # already present and matching the manifest
    failures: list[AirgapError]


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def copy_task_folder(folder: Path, out: Path) -> bool:
    """A custom task folder (YAMLs, utils) into the tree, where a job's
    `parameters.include_path` names it: <test_data>/tasks/<folder name>. False when the tree
    already holds the same files."""
    target = out / TASKS_DIR_NAME / folder.name
    if target.is_dir() and _files(target) == _files(folder):
        return False
    tmp = _fresh_tmp(out, f"tasks-{folder.name}")
    shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    target.parent.mkdir(parents=True, exist_ok=True)
    _replace_dir(tmp, target)
    return True


def save_metric(name: str, out: Path) -> None:
    """A metric module `evaluate.load(name)` fetches (the Hub's evaluate-metric/<name> space:
    the script and the files it imports), fetched by evaluate itself, then copied to
    <out>/evaluate/<name>/, where `run` finds it offline."""
    from evaluate.loading import evaluation_module_factory, init_dynamic_modules

    module = evaluation_module_factory(name, module_type="metric")
    namespace = name.replace("/", "--") if "/" in name else f"evaluate-metric--{name}"
    src = Path(init_dynamic_modules()) / "metrics" / namespace / module.hash
    tmp = _fresh_tmp(out, f"metric-{namespace}")
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    target = out / EVALUATE_DIR_NAME / name.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    _replace_dir(tmp, target)


def _fetch_metric(name: str, out: Path, timeout: float | None) -> str:
    try:
        run_bounded(lambda: save_metric(name, out), timeout or STEP_TIMEOUT_S)
    except (AirgapError, StepTimeout):
        raise
    except Exception as e:  # evaluate raises FileNotFoundError, ConnectionError, HTTPError...
        if _caused_by_network(e) or isinstance(e, ConnectionError):
            raise UnreachableError(f"{type(e).__name__}: {_short(e)}") from e
        raise NotFoundError(
            f"metric module {name!r}: {type(e).__name__}: {_short(e)}",
            "check the metric name the task's code passes to evaluate.load",
        ) from e
    return "staged"


def _load_previous(out: Path) -> Manifest | None:
    """A failed run's record (it knows what that run wrote), else the complete tree's."""
    for path in (out / PARTIAL_MANIFEST, out / MANIFEST_NAME):
        if not path.is_file():
            continue
        try:
            return Manifest.load(path)
        except ValueError:
            log.warning("%s is unreadable: every dir will be checked as new", path)
            return None
    return None


def _record(out: Path, manifest: Manifest, written: set[str], failed: bool) -> None:
    """manifest.json means a complete tree (sync and run go by it): a failed run keeps its
    record where only a rerun of stage reads it, and a tree it changed loses its old claim."""
    if not failed:
        manifest.dump(out / MANIFEST_NAME)
        (out / PARTIAL_MANIFEST).unlink(missing_ok=True)
        return
    manifest.dump(out / PARTIAL_MANIFEST)
    if written:
        (out / MANIFEST_NAME).unlink(missing_ok=True)


def _build_manifest(
    out: Path, previous: Manifest | None, written: set[str], **fields: Any
) -> Manifest:
    """Hash what this run wrote (and files no manifest knows); keep earlier entries."""
    old = previous.files if previous else {}
    files: dict[str, FileEntry] = {}
    to_hash: list[Path] = []
    for p in iter_tree(out):
        rel = p.relative_to(out).as_posix()
        if rel.split("/", 1)[0] not in written and rel in old:
            files[rel] = old[rel]
        else:
            to_hash.append(p)
    files |= entries_for(out, to_hash)
    return Manifest(files=dict(sorted(files.items())), **fields)


NLTK_HOST = "raw.githubusercontent.com"  # nltk.download's default index


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@dataclass
class Unfetched:
    kind: str  # "dataset", "tokenizer", "nltk data"
    name: str
    source: str  # "the Hugging Face Hub at URL", ...
    why: str
    timed_out: bool


@dataclass
class Fetcher:
    """The network items of one stage run: a progress line as each starts, one line when one
    fails (never one per retry), and what could not be fetched for the final message.

    `timeout`: seconds an item may go without download progress (None: unbounded)."""

    timeout: float | None
    total: int
    hub: str = field(default_factory=hub_endpoint)
    hub_down: str | None = None  # why the Hub did not answer the probe
    unfetched: list[Unfetched] = field(default_factory=list)  # named by one error at the end
    errors: list[AirgapError] = field(default_factory=list)  # the other failures
    done: int = 0

    @property
    def hub_source(self) -> str:
        if _hf_offline():
            return "the local HF cache (--offline)"
        return f"the Hugging Face Hub at {self.hub}"

    def check_hub(self, needed: bool) -> None:
        """One probe before the first download: a Hub that cannot be reached then fails every
        item from it at once instead of each waiting out the libraries' retries."""
        if not needed or _hf_offline():
            return
        bound = min(PROBE_TIMEOUT_S, self.timeout) if self.timeout else PROBE_TIMEOUT_S
        self.hub_down = probe(self.hub, bound)
        if self.hub_down:
            log.error("%s cannot be reached (%s)", self.hub_source, self.hub_down)

    def fetch(
        self, kind: str, name: str, users: list[str], source: str, fn: Callable[[], str]
    ) -> bool:
        """Run fn (it returns what it did: "staged X (1,234 rows)"); True when it worked.
        A failure is one log line, kept here (`errors`, or `unfetched` for the network)."""
        self.done += 1
        tag = f"[{self.done}/{self.total}] {kind} {name}"
        tag += f" for {', '.join(users[:3])}{' ...' if len(users) > 3 else ''}" if users else ""
        if source == self.hub_source and self.hub_down:
            return self._unfetched(tag, Unfetched(kind, name, source, self.hub_down, False))
        log.info("%s: loading", tag)
        start = time.monotonic()
        try:
            result = fn()
        except StepTimeout as e:
            if source == self.hub_source:  # it answered the probe, then went silent
                self.hub_down = f"it stopped answering: {e}"
            return self._unfetched(tag, Unfetched(kind, name, source, str(e), True))
        except UnreachableError as e:
            why = "not in the cache" if _hf_offline() else e.message
            return self._unfetched(tag, Unfetched(kind, name, source, why, False))
        except AirgapError as e:
            log.error("%s: failed: %s", tag, e.message)
            self.errors.append(e)
            return False
        log.info("%s: %s in %.1f s", tag, result, time.monotonic() - start)
        return True

    def _unfetched(self, tag: str, item: Unfetched) -> bool:
        log.error("%s: not fetched from %s: %s", tag, item.source, item.why)
        self.unfetched.append(item)
        return False

    def error(self) -> AirgapError | None:
        """One error naming every item not fetched, where from, why, and the fixes."""
        if not self.unfetched:
            return None
        counts: dict[str, int] = {}
        by_source: dict[str, list[Unfetched]] = {}
        for u in self.unfetched:
            counts[u.kind] = counts.get(u.kind, 0) + 1
            by_source.setdefault(u.source, []).append(u)
        kinds = [
            "the tokenizer"
            if k == "tokenizer"
            else f"{n} {k}{'s' if n > 1 and k == 'dataset' else ''}"
            for k, n in counts.items()
        ]
        what = " and ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        parts = []
        for source, items in by_source.items():
            reasons = {u.why for u in items}
            common = f" ({reasons.pop()})" if len(reasons) == 1 else ""
            names = (
                _listing(items)
                if common
                else ", ".join(f"{u.kind} {u.name} ({u.why})" for u in items)
            )
            parts.append(f"from {source}{common}: {names}")
        cls = DeadlineError if all(u.timed_out for u in self.unfetched) else UnreachableError
        hosts = ", ".join(
            host_of(self.hub) if src == self.hub_source else src.rsplit(" ", 1)[-1].strip("()")
            for src in by_source
        )
        if _hf_offline():
            names = _listing(self.unfetched)
            return NotFoundError(
                f"could not find {what} in the local HF cache (--offline): {names}",
                "run stage without --offline on a machine that reaches the Hub, or point "
                "HF_HOME at an HF cache that holds them",
            )
        timeout = f" (now {self.timeout:.0f})" if self.timeout else ""
        return cls(
            f"could not fetch {what} {'; '.join(parts)}",
            f"run stage on a machine that reaches {hosts}, or set HF_ENDPOINT to a Hub mirror "
            "or HTTPS_PROXY to a proxy that does; with the data in the local HF cache: "
            f"--offline; on a slow link: --network-timeout SECONDS{timeout}. A rerun keeps "
            "what is staged",
        )


def _listing(items: list[Unfetched]) -> str:
    """`dataset nyu-mll/blimp (adjunct_island, causative)`: one entry per dataset path, every
    config named (67 blimp configs stay one line a reader can scan)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for u in items:
        path, _, config = u.name.partition(" (")  # names are "path (config)"
        grouped.setdefault((u.kind, path), []).append(config.rstrip(")"))
    return ", ".join(
        f"{kind} {path}" + (f" ({', '.join(c for c in configs if c)})" if any(configs) else "")
        for (kind, path), configs in grouped.items()
    )


def _fetch_bundle(b: BundleNeed, out: Path, timeout: float | None) -> str:
    try:
        rows = save_bundle(b, out, timeout)
    except (AirgapError, StepTimeout):
        raise
    except Exception as e:  # datasets raises many unrelated types
        raise _load_error(e, b) from e
    return f"staged {b.slug} ({rows:,} rows)"


def stage(
    tasks: list[str],
    tokenizer: str | None,
    out: Path,
    *,
    include_path: Iterable[Path] | None = None,
    upload: str | None = None,
    index: dict[str, Any] | None = None,
    network_timeout: float | None = None,
) -> StageResult:
    """Stage bundles + tokenizer + nltk data for `tasks` into `out`; manifest.json last.

    Every item that can be staged is, even when others fail; then one error names all that
    failed, so a rerun only redoes those. `network_timeout`: seconds an item may go without
    download progress before it is given up (None: no bound).
    """
    register_secret(os.environ.get("HF_TOKEN"))
    index = index if index is not None else load_index(None, list(include_path or []))
    plan = plan_tasks(resolve_tasks(tasks, index), index)
    if plan.unknown:
        raise unknown_tasks_error(plan.unknown, index, "pass --include-path DIR")
    out.mkdir(parents=True, exist_ok=True)
    previous = _load_previous(out)
    if tokenizer is None:
        tokenizer = previous.tokenizer if previous else None
        if tokenizer is None:
            raise ConfigError(
                "no tokenizer given and none staged before",
                "pass --tokenizer HF_ID_OR_DIR (the tokenizer of the model the job evaluates)",
            )
    written: set[str] = set()
    skipped: list[str] = []
    failures: list[AirgapError] = [
        MissingDataError(f"task {t}: dataset unknown: {why}", "stage its data by hand")
        for t, why in plan.unresolved.items()
    ]
    done_slugs: set[str] = set()

    todo: list[BundleNeed] = []
    for _, b in sorted(plan.bundles.items()):
        if _unchanged(out, b.slug, previous) and is_bundle(out / b.slug):
            skipped.append(b.slug)
            done_slugs.add(b.slug)
        else:
            todo.append(b)
    same_tok = previous is not None and previous.tokenizer == tokenizer
    tok_todo = not (same_tok and _unchanged(out, TOKENIZER_DIR_NAME, previous))
    if not tok_todo:
        skipped.append(TOKENIZER_DIR_NAME)
    staged_nltk = set(previous.assets.get("nltk", [])) if previous else set()
    nltk_todo = [
        (pkg, users)
        for pkg, users in sorted(plan.nltk.items())
        if not (pkg in staged_nltk and any((out / NLTK_DIR_NAME).glob(f"*/{pkg}")))
    ]
    metrics_todo = [
        (name, users)
        for name, users in sorted(plan.evaluate.items())
        if not (previous and name in previous.assets.get("evaluate", []))
        or not (out / EVALUATE_DIR_NAME / name / f"{name}.py").is_file()
    ]
    net = Fetcher(network_timeout, len(todo) + int(tok_todo) + len(nltk_todo) + len(metrics_todo))
    tok_from_hub = tok_todo and not Path(tokenizer).is_dir()
    net.check_hub(tok_from_hub or bool(metrics_todo) or any(is_hub_dataset(b) for b in todo))
    if skipped:
        log.info("unchanged since the last run, kept: %s", ", ".join(skipped))

    for b in todo:
        source = net.hub_source if is_hub_dataset(b) else "the network"
        name = b.dataset_path + (f" ({b.dataset_name})" if b.dataset_name else "")
        fn = partial(_fetch_bundle, b, out, network_timeout)
        if net.fetch("dataset", name, b.tasks, source, fn):
            written.add(b.slug)
            done_slugs.add(b.slug)

    staged_tokenizer = tokenizer if not tok_todo else None
    if tok_todo:

        def fetch_tokenizer() -> str:
            save_tokenizer(tokenizer, out, network_timeout)
            return "staged"

        source = net.hub_source if tok_from_hub else "the network"
        if net.fetch("tokenizer", tokenizer, [], source, fetch_tokenizer):
            written.add(TOKENIZER_DIR_NAME)
            staged_tokenizer = tokenizer
    if staged_tokenizer is None and previous and (out / TOKENIZER_DIR_NAME).is_dir():
        staged_tokenizer = previous.tokenizer  # what the tree still holds

    for pkg, users in nltk_todo:
        fn = partial(_fetch_nltk, pkg, out, network_timeout)
        if net.fetch("nltk data", pkg, users, f"nltk's downloads ({NLTK_HOST})", fn):
            staged_nltk.add(pkg)
            written.add(NLTK_DIR_NAME)
    staged_metrics = set(previous.assets.get("evaluate", [])) if previous else set()
    for metric, users in metrics_todo:
        fn = partial(_fetch_metric, metric, out, network_timeout)
        if net.fetch("metric module", metric, users, net.hub_source, fn):
            staged_metrics.add(metric)
            written.add(EVALUATE_DIR_NAME)

    failed_tasks = {t for t, slugs in plan.task_slugs.items() if not done_slugs.issuperset(slugs)}
    task_map = dict(previous.tasks) if previous else {}
    task_map |= {t: s for t, s in plan.task_slugs.items() if t not in failed_tasks}
    for task_dir in include_path or []:
        if copy_task_folder(task_dir, out):
            written.add(TASKS_DIR_NAME)
    manifest = _build_manifest(
        out,
        previous,
        written,
        versions=library_versions(),
        tasks=dict(sorted(task_map.items())),
        tokenizer=staged_tokenizer,
        assets={"nltk": sorted(staged_nltk), "evaluate": sorted(staged_metrics)},
    )
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    network = net.error()
    failures = ([network] if network else []) + merge_gated(net.errors) + failures
    _record(out, manifest, written, failed=bool(failures))  # last: manifest.json = complete
    result = StageResult(out, manifest, sorted(written), skipped, failures)
    if failures:
        first = failures[0]
        if len(failures) > 1:
            first.message += (
                f" (and {len(failures) - 1} more: "
                + "; ".join(f.message for f in failures[1:])
                + ")"
            )
        raise first
    if upload:
        upload_tree(out, manifest, upload)
    return result


def _fetch_nltk(package: str, out: Path, timeout: float | None) -> str:
    save_nltk(package, out, timeout or STEP_TIMEOUT_S)
    return "staged"


# --- upload --------------------------------------------------------------------------------

_UPLOAD_WORKERS = 32
_UPLOAD_DEADLINE_S = 3600.0  # a stalled endpoint must not hold the staging machine forever


def upload_tree(out: Path, manifest: Manifest, uri: str, conn: S3Connection | None = None) -> None:
    """Push the files of the manifest, then the manifest: a reader that finds manifest.json
    finds every file it lists. The old manifest goes first for the same reason."""
    bucket, prefix = parse_s3_uri(uri)
    conn = conn or resolve_connection()
    storage = open_storage(conn, bucket, "auto", _UPLOAD_WORKERS)
    deadline = Deadline(_UPLOAD_DEADLINE_S, "check the S3 endpoint and rerun the upload")
    base = folder(prefix)
    storage.delete_object(base + MANIFEST_NAME)
    names = list(manifest.files)
    start = time.monotonic()
    for _ in storage.upload([Copy(base + n, out / n) for n in names], deadline):
        pass
    storage.write_object(base + MANIFEST_NAME, (out / MANIFEST_NAME).read_bytes())
    size = sum(f.size for f in manifest.files.values())
    log.info(
        "uploaded %d files (%.1f MB) to s3://%s/%s in %.1f s",
        len(names) + 1,
        size / 1e6,
        bucket,
        base,
        time.monotonic() - start,
    )
