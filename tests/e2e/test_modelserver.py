"""VLLMServer's bad inputs fail at once with a typed error naming the fix (no vLLM started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from testbed.modelserver import VLLM_PYTHON_ENV, VLLMServer, vllm_python


def test_missing_vllm_python_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VLLM_PYTHON_ENV, str(tmp_path / "nope" / "python"))
    with pytest.raises(ConfigError) as e:
        vllm_python()
    assert VLLM_PYTHON_ENV in (e.value.hint or "")
    assert "make setup-vllm" in (e.value.hint or "")


def test_a_dir_without_config_json_is_refused_before_starting(tmp_path: Path) -> None:
    server = VLLMServer(tmp_path)
    with pytest.raises(ConfigError, match=r"no config\.json"):
        server.start()
    assert server.proc is None
