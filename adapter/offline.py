"""Offline detection and the environment it needs, set BEFORE `datasets`, `transformers`,
`huggingface_hub` or `lm_eval` is imported (they read these variables at import time).

Offline when the test-data dir holds a `manifest.json` or a bundle dir (`dataset_dict.json`),
or when the tokenizer lies under it beside such a bundle (EvalHub's rule). Every cache the
libraries write goes to a writable work dir, so /test_data can be mounted read-only.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from common.errors import MissingDataError
from common.layout import BUNDLE_MARKER, MANIFEST_NAME, NLTK_DIR_NAME

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


def detect(test_data: Path, tokenizer: str | None = None) -> Layout:
    if (test_data / MANIFEST_NAME).is_file():
        return Layout(True, f"{test_data / MANIFEST_NAME} exists")
    if _has_bundle(test_data):
        return Layout(True, f"{test_data} holds dataset bundles")
    if tokenizer:
        tok = Path(tokenizer)
        if tok.is_absolute() and tok.is_relative_to(test_data) and _has_bundle(tok.parent):
            return Layout(True, f"tokenizer {tok} lies beside a dataset bundle")
    return Layout(False, f"no {MANIFEST_NAME} or dataset bundle under {test_data}")


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
