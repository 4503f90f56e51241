"""Chat: `apply_chat_template`, `fewshot_as_multiturn` and `system_instruction` with the
completions endpoint (the staged tokenizer's chat template renders the prompt) and with
`model_type: chat` (the server's template), against vLLM through a recording proxy. Every
request body equals the one plain lm_eval (its CLI, the same settings) sends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from testbed.modelserver import RecordingProxy, VLLMServer
from testbed.tiny import TinyAssets, add_chat_template
from tests.e2e.helpers import RUN_TIMEOUT_S, airgap_run, explain, job_spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

PLAIN = Path(__file__).with_name("plain_lm_eval.py")
SYSTEM = "You are a careful assistant. Answer briefly."
# Loglikelihood (arc_easy) and generation (gsm8k), two shots each as a multi-turn chat.
COMMON = ["--num_fewshot", "2", "--limit", "2", "--apply_chat_template",
          "--fewshot_as_multiturn", "true", "--system_instruction", SYSTEM,
          "--gen_kwargs", "max_gen_toks=16", "--batch_size", "1"]  # fmt: skip
PARAMS: dict[str, Any] = {
    "num_fewshot": 2, "apply_chat_template": True, "fewshot_as_multiturn": True,
    "system_instruction": SYSTEM, "gen_kwargs": {"max_gen_toks": 16},
    "num_concurrent": 1, "batch_size": 1, "max_retries": 1,
}  # fmt: skip
PROBES = ('"Hello world"', '"content": "Hi"')  # airgap-eval's preflight test requests


@pytest.fixture(scope="module")
def chat_tree(tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tree with the chat template in its staged tokenizer."""
    tree = tmp_path_factory.mktemp("chat") / "test_data"
    shutil.copytree(tiny_assets.test_data, tree)
    tok = tree / "tokenizer"
    tok.chmod(0o755)
    add_chat_template(tok)
    return tree


def _bodies(proxy: RecordingProxy, path_end: str) -> Counter[str]:
    """Every evaluation request's body (preflight probes left out), canonical JSON."""
    out: Counter[str] = Counter()
    for path, _, body in proxy.arrivals:
        if not body:  # GET /v1/models
            continue
        text = json.dumps(json.loads(body), sort_keys=True)
        if path.endswith(path_end) and not any(p in text for p in PROBES):
            out[text] += 1
    return out


def _plain(test_data: Path, out: Path, args: list[str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OPENAI_"))}
    proc = subprocess.run(
        [sys.executable, str(PLAIN), str(test_data), *args, "--output_path", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=clean | {"OPENAI_API_KEY": "x"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]


def _rendered(bodies: Counter[str]) -> list[Any]:
    return [json.loads(b) for b in bodies]


@pytest.mark.parametrize("model_type", ["completions", "chat"])
def test_chat_requests_equal_plain_lm_eval(
    model_type: str, chat_tree: Path, vllm_server: VLLMServer, tmp_path: Path
) -> None:
    completions = model_type == "completions"
    tasks = ["arc_easy", "gsm8k"] if completions else ["gsm8k"]  # chat: generation only
    with RecordingProxy(vllm_server.root_url) as proxy:
        base = proxy.base_url
        spec = job_spec(base, tasks, num_examples=2, model_type=model_type, **PARAMS)
        proc = airgap_run(spec, tmp_path / "airgap", chat_tree)
        assert proc.returncode == 0, explain(proc)
        ours = _bodies(proxy, "/completions")
        proxy.arrivals.clear()
        if completions:
            model = "local-completions"
            model_args = (f"base_url={base}/completions,model=tiny,tokenizer_backend=huggingface,"
                          f"tokenizer={chat_tree / 'tokenizer'},max_length=512,"
                          "num_concurrent=1,max_retries=1")  # fmt: skip
        else:
            model = "local-chat-completions"
            model_args = (
                f"base_url={base}/chat/completions,model=tiny,num_concurrent=1,max_retries=1"
            )
        _plain(chat_tree, tmp_path / "plain",
               ["--model", model, "--model_args", model_args, "--tasks", ",".join(tasks), *COMMON])  # fmt: skip
        theirs = _bodies(proxy, "/completions")
    assert sum(theirs.values()) > 0
    assert ours == theirs, (
        f"{sum(ours.values())} vs {sum(theirs.values())} requests; only ours: "
        f"{list(ours - theirs)[:2]}; only lm_eval's: {list(theirs - ours)[:2]}"
    )
    sample = _rendered(ours)
    if completions:
        # the tokenizer's template rendered the system turn and the shots as turns: token ids
        assert all(isinstance(b["prompt"], list) for b in sample)
        assert (tmp_path / "airgap" / "results" / "status.json").is_file()
        results = next((tmp_path / "airgap" / "results").rglob("results_*.json"))
        config = json.loads(results.read_text())
        assert config["chat_template"] and config["fewshot_as_multiturn"] is True
        assert config["system_instruction"] == SYSTEM
    else:
        messages = sample[0]["messages"]
        assert messages[0] == {"role": "system", "content": SYSTEM}
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 2 + ["user"]
