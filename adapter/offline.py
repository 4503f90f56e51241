"""Offline detection and the environment it needs, set BEFORE `datasets`, `transformers`,
`huggingface_hub` or `lm_eval` is imported (they read these variables at import time).

Offline whenever anything points at it: `--offline on`, a sync status record, a
`manifest.json` or a bundle dir (`dataset_dict.json`) in the test-data dir, the job's tokenizer
under it (EvalHub's own trigger), or the dir being empty (what a pod sees when its sync left
nothing). Online only when none of these holds, or with `--offline off`. Every cache the
libraries write goes to a writable work dir, so /test_data can be mounted read-only.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from common.errors import MissingDataError
from common.layout import (
    BUNDLE_MARKER,
    MANIFEST_NAME,
    NLTK_DIR_NAME,
    STATE_DIR_NAME,
    SYNC_STATUS_NAME,
)
from common.status import read_status

log = logging.getLogger(__name__)

HEAVY_MODULES = ("datasets", "transformers", "huggingface_hub", "lm_eval", "evaluate", "nltk")


@dataclass(frozen=True)
class Layout:
    offline: bool
    reason: str


def _has_bundle(root: Path) -> bool:
    try:
        return any((d / BUNDLE_MARKER).is_file() for d in root.iterdir() if d.is_dir())
    except OSError:
        return False


# What a fresh filesystem or volume holds before anything is synced into it.
_NOT_DATA = {STATE_DIR_NAME, "lost+found"}


def sync_status_path(test_data: Path) -> Path:
    return test_data / STATE_DIR_NAME / SYNC_STATUS_NAME


def _empty(root: Path) -> bool:
    try:
        return not any(p.name not in _NOT_DATA for p in root.iterdir())
    except OSError:
        return False


def _tokenizer_under(test_data: Path, tokenizer: str | None) -> bool:
    if not tokenizer:
        return False
    tok = Path(tokenizer)
    if tok.is_absolute():
        return tok.is_relative_to(test_data)
    return (test_data / tok).is_dir()  # a relative dir is read from the test data


def detect(test_data: Path, tokenizer: str | None = None, requested: str = "auto") -> Layout:
    """The mode and why; `requested` is --offline (auto, on, off)."""
    if requested != "auto":
        return Layout(requested == "on", f"--offline {requested}")
    if sync_status_path(test_data).is_file():
        return Layout(True, f"{sync_status_path(test_data)} exists: a sync ran into it")
    if (test_data / MANIFEST_NAME).is_file():
        return Layout(True, f"{test_data / MANIFEST_NAME} exists")
    if _has_bundle(test_data):
        return Layout(True, f"{test_data} holds dataset bundles")
    if _tokenizer_under(test_data, tokenizer):
        return Layout(True, f"the job's tokenizer {tokenizer} lies under {test_data}")
    if test_data.is_dir() and _empty(test_data):
        return Layout(True, f"{test_data} is empty: nothing was synced into it")
    return Layout(
        False,
        f"nothing points at offline: {test_data} holds no {MANIFEST_NAME}, dataset bundle or "
        f"sync record, and the tokenizer ({tokenizer or 'the model name'}) is not under it; "
        "--offline on forces offline",
    )


def refuse_missing_test_data(test_data: Path, mode: str) -> None:
    """Online only where asked: a test-data dir that does not exist is a wrong mount or path,
    not a request to fetch everything from the Hub."""
    if mode != "off" and not test_data.is_dir():
        raise MissingDataError(
            f"test data dir {test_data} does not exist",
            "mount or sync the staged tree there (or pass --test-data DIR / set "
            "AIRGAP_EVAL_TEST_DATA); to run online from the Hugging Face Hub instead, pass "
            "--offline off",
        )


def refuse_failed_sync(test_data: Path) -> None:
    """The sync's own record, when it left one: a failed or unfinished sync is the cause of
    whatever is missing, and rerunning it (not restaging) is the fix."""
    path = sync_status_path(test_data)
    record = read_status(path)
    if record is None or record.state == "completed":
        return
    rerun = (
        f"rerun the sync into {test_data} (the pod's init container, or `airgap-eval sync "
        f"--dest {test_data}` with the same bucket and prefix); it resumes what is in place"
    )
    if record.state == "running":
        raise MissingDataError(
            f"the sync into {test_data} has not finished: {path} says running since "
            f"{record.started_at:%Y-%m-%d %H:%M:%S} UTC (last update "
            f"{record.updated_at:%H:%M:%S}); it is still running or was killed",
            f"wait for it to finish, or {rerun}",
        )
    err = record.error
    what = f"[{err.code}] {err.message}" if err else f"exit {record.exit_code}"
    hint = f"{err.hint}; then " if err and err.hint else ""
    raise MissingDataError(f"the sync into {test_data} failed: {what} ({path})", hint + rerun)


def refuse_nothing_synced(test_data: Path) -> None:
    """Offline from an empty dir: say so at once, not after resolving every task."""
    if _empty(test_data):
        raise MissingDataError(
            f"test data dir {test_data} is empty: nothing synced",
            "sync the staged tree into it first (the init container, or `airgap-eval sync "
            f"--bucket B --prefix P --dest {test_data}`), or mount the volume that holds it; "
            "stage it on a connected machine with `airgap-eval stage` if it was never staged",
        )


def offline_env(test_data: Path, work_dir: Path, allow_code: bool) -> dict[str, str]:
    hf_home = work_dir / "hf"
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
        "HF_MODULES_CACHE": str(hf_home / "modules"),
        "NLTK_DATA": str(test_data / NLTK_DIR_NAME),
        # lm_eval's request-building cache (cache_requests) lives in its package dir otherwise
        "LM_HARNESS_CACHE_PATH": str(work_dir / "lm_eval_cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    } | code_env(allow_code)


def code_env(allow_code: bool) -> dict[str, str]:
    flag = "1" if allow_code else "0"
    return {
        "HF_DATASETS_TRUST_REMOTE_CODE": flag,
        "HF_ALLOW_CODE_EVAL": flag,
        "TOKENIZERS_PARALLELISM": "false",
    }


def imported_too_early() -> list[str]:
    return [m for m in HEAVY_MODULES if m in sys.modules]


def apply(layout: Layout, test_data: Path, work_dir: Path, allow_code: bool) -> dict[str, str]:
    """Set the env for this process (and any child). Returns what was set."""
    if early := imported_too_early():
        # A bug in our import order: the libraries already read their env.
        raise RuntimeError(f"{early} imported before the offline env was set")
    env = offline_env(test_data, work_dir, allow_code) if layout.offline else code_env(allow_code)
    os.environ.update(env)
    work_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "%s mode (%s)%s",
        "offline" if layout.offline else "online",
        layout.reason,
        f"; caches in {work_dir}" if layout.offline else "",
    )
    return env
