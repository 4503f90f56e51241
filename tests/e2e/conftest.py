"""Session fixtures for the e2e tests: the tiny assets (built once) and one vLLM CPU server
serving the tiny model (started once; never two at a time on a small machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.errors import ConfigError
from testbed.modelserver import VLLMServer, vllm_python
from testbed.tiny import TinyAssets, build_all, read_only


@pytest.fixture(scope="session")
def vllm_ready() -> None:
    try:
        vllm_python()
    except ConfigError as e:
        pytest.skip(e.one_line())


@pytest.fixture(scope="session")
def tiny_assets(vllm_ready: None, tmp_path_factory: pytest.TempPathFactory) -> TinyAssets:
    assets = build_all(tmp_path_factory.mktemp("tiny"))
    read_only(assets.test_data)
    return assets


@pytest.fixture(scope="session")
def vllm_server(tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with VLLMServer(tiny_assets.model, log_path=log) as server:
        yield server
