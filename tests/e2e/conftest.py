"""Session fixtures for the e2e tests: the tiny assets (built once) and one vLLM CPU server
serving the tiny model (started once; never two at a time on a small machine)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap_eval.modelserver import VLLMServer, vllm_python
from airgap_eval.tiny import TinyAssets, build_all
from common.errors import ConfigError


def _read_only(root: Path) -> None:
    """chmod a-w, as EvalHub mounts /test_data. (root ignores it: the tests also compare
    the tree before and after a run.)"""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            p = Path(dirpath) / name
            p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)


@pytest.fixture(scope="session")
def vllm_ready() -> None:
    try:
        vllm_python()
    except ConfigError as e:
        pytest.skip(e.one_line())


@pytest.fixture(scope="session")
def tiny_assets(vllm_ready: None, tmp_path_factory: pytest.TempPathFactory) -> TinyAssets:
    assets = build_all(tmp_path_factory.mktemp("tiny"))
    _read_only(assets.test_data)
    return assets


@pytest.fixture(scope="session")
def vllm_server(tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with VLLMServer(tiny_assets.model, log_path=log) as server:
        yield server
