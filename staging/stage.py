"""`airgap-eval stage`: on a connected machine, write the /test_data tree a job needs.

Tasks and groups resolve to leaf tasks through the prebuilt task index; each distinct
(dataset_path, dataset_name, data_files) is loaded once with `datasets.load_dataset` and saved
under its slug; the tokenizer and the nltk data the tasks' code downloads are saved beside
them; `manifest.json` is written last. A rerun only adds what is missing or broken.

Which bundles, splits and assets: adapter.taskplan (the run path plans with the same code).
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
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from adapter import taskindex
from adapter.bundles import is_bundle
from adapter.offline import NLTK_DIR_NAME
from adapter.taskplan import BundleNeed, plan_tasks
from common.errors import (
    AirgapError,
    ConfigError,
    MissingDataError,
    NotFoundError,
    UnreachableError,
)
from common.layout import MANIFEST_NAME, STATE_DIR_NAME, TOKENIZER_DIR_NAME
from common.logs import register_secret
from common.manifest import FileEntry, Manifest, entries_for, iter_tree, mismatches
from common.s3settings import S3Connection, resolve_connection
from common.storage import Copy, Deadline, folder, open_storage, parse_s3_uri

log = logging.getLogger(__name__)

STAGING_DIR = f"{STATE_DIR_NAME}/staging"
VERSIONED = ("lm_eval", "datasets", "transformers", "tokenizers", "airgap-eval")
NLTK_DOWNLOAD_TIMEOUT_S = 120  # nltk.download has no timeout of its own and can stall


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


def _load_error(e: Exception, b: BundleNeed) -> AirgapError:
    what = f"dataset {b.dataset_path!r}" + (f" ({b.dataset_name})" if b.dataset_name else "")
    used_by = f" for {', '.join(b.tasks[:3])}" + (" ..." if len(b.tasks) > 3 else "")
    name = type(e).__name__
    if name in ("DatasetNotFoundError", "FileNotFoundError", "EmptyDatasetError"):
        return NotFoundError(
            f"{what}{used_by} not found: {e}",
            "check dataset_path/dataset_name/data_files of the task; for a gated dataset "
            "accept its terms on the Hub and set HF_TOKEN",
        )
    if "Offline" in name or "Connection" in name or "Timeout" in name:
        return UnreachableError(
            f"{what}{used_by} could not be fetched: {name}: {e}",
            "run `stage` on a machine that reaches the Hugging Face Hub, or populate the HF "
            "cache there and rerun with --offline",
        )
    return MissingDataError(f"loading {what}{used_by} failed: {name}: {e}", "see the log above")


def save_bundle(b: BundleNeed, out: Path) -> int:
    """load_dataset once, save_to_disk under the slug (atomically). Returns rows written."""
    import datasets

    dd = datasets.load_dataset(b.dataset_path, b.dataset_name, **b.dataset_kwargs)
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


def save_tokenizer(source: str, out: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise NotFoundError(
            f"tokenizer {source!r} could not be loaded: {e}",
            "pass a Hugging Face model id this machine can reach (HF_TOKEN for gated ones) "
            "or a local tokenizer dir",
        ) from e
    tmp = _fresh_tmp(out, TOKENIZER_DIR_NAME)
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, out / TOKENIZER_DIR_NAME)


def _nltk_search_path() -> list[Path]:
    paths = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    try:
        import nltk

        paths += [Path(p) for p in nltk.data.path]
    except ImportError:
        pass
    return paths


def save_nltk(package: str, out: Path) -> None:
    """Copy the package from a local nltk data dir, else download it (bounded in time)."""
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
            timeout=NLTK_DOWNLOAD_TIMEOUT_S,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as e:
        raise UnreachableError(
            f"nltk data {package!r} is neither in a local nltk data dir nor downloadable: {e}",
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


def _load_previous(out: Path) -> Manifest | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest.load(path)
    except ValueError:
        log.warning("%s is unreadable: every dir will be checked as new", path)
        return None


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


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="bundle", desc="stage", disable=not sys.stderr.isatty())


def stage(
    tasks: list[str],
    tokenizer: str | None,
    out: Path,
    *,
    include_path: Iterable[Path] | None = None,
    upload: str | None = None,
    index: dict[str, Any] | None = None,
) -> StageResult:
    """Stage bundles + tokenizer + nltk data for `tasks` into `out`; manifest.json last.

    Every bundle that can be staged is, even when others fail; then the first failure is
    raised (naming all of them), so a rerun only redoes what failed.
    """
    register_secret(os.environ.get("HF_TOKEN"))
    index = index if index is not None else taskindex.load_index(None, list(include_path or []))
    plan = plan_tasks(taskindex.resolve(tasks, index), index)
    if plan.unknown:
        raise ConfigError(
            f"unknown task or group name(s): {', '.join(plan.unknown)}",
            "check the spelling (`lm_eval ls tasks`), or pass --include-path DIR for "
            "custom task YAMLs",
        )
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

    todo = [b for s, b in sorted(plan.bundles.items())]
    bar = _progress(len(todo))
    for b in todo:
        if _unchanged(out, b.slug, previous) and is_bundle(out / b.slug):
            skipped.append(b.slug)
            done_slugs.add(b.slug)
        else:
            start = time.monotonic()
            try:
                rows = save_bundle(b, out)
            except AirgapError as e:
                failures.append(e)
            except Exception as e:  # datasets raises many unrelated types
                failures.append(_load_error(e, b))
            else:
                written.add(b.slug)
                done_slugs.add(b.slug)
                log.info("staged %s (%d rows) in %.1f s", b.slug, rows, time.monotonic() - start)
        bar.update(1)
    bar.close()

    same_tok = previous is not None and previous.tokenizer == tokenizer
    if same_tok and _unchanged(out, TOKENIZER_DIR_NAME, previous):
        skipped.append(TOKENIZER_DIR_NAME)
    else:
        save_tokenizer(tokenizer, out)
        written.add(TOKENIZER_DIR_NAME)
        log.info("staged tokenizer %s", tokenizer)

    staged_nltk = set(previous.assets.get("nltk", [])) if previous else set()
    for pkg, users in sorted(plan.nltk.items()):
        if pkg in staged_nltk and any((out / NLTK_DIR_NAME).glob(f"*/{pkg}")):
            continue
        try:
            save_nltk(pkg, out)
        except AirgapError as e:
            failures.append(e)
            continue
        staged_nltk.add(pkg)
        written.add(NLTK_DIR_NAME)
        log.info("staged nltk data %s (for %s)", pkg, ", ".join(users[:3]))
    if plan.evaluate:
        log.warning(
            "tasks load metric modules from the Hub at run time (not staged): %s",
            "; ".join(f"{m} ({', '.join(u[:3])})" for m, u in sorted(plan.evaluate.items())),
        )

    failed_tasks = {t for t, slugs in plan.task_slugs.items() if not done_slugs.issuperset(slugs)}
    task_map = dict(previous.tasks) if previous else {}
    task_map |= {t: s for t, s in plan.task_slugs.items() if t not in failed_tasks}
    metrics = set(previous.assets.get("evaluate", [])) if previous else set()
    manifest = _build_manifest(
        out,
        previous,
        written,
        versions=library_versions(),
        tasks=dict(sorted(task_map.items())),
        tokenizer=tokenizer,
        assets={"nltk": sorted(staged_nltk), "evaluate": sorted(metrics | set(plan.evaluate))},
    )
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    manifest.dump(out / MANIFEST_NAME)  # last: its presence means the tree is complete
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
