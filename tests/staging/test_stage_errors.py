"""The connected-machine tools' error paths, run as a user runs them (the CLI, a subprocess):
a Hugging Face Hub that cannot be reached (refused, silent, or silent after answering) fails
every item within the bound, one line each, and one final line names them all, the host and
the fixes; an unknown task name is CONFIG with close matches, as in `run`.

The Hub is HF_ENDPOINT pointed at a local port; the HF cache is an empty tmp dir, so nothing
can come from it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from common.errors import ExitCode
from tasks.index import load_index
from testbed.localservers import free_port
from tests.httpstub import serving, silent

TASKS = ["arc_easy", "blimp_adjunct_island", "gsm8k"]
DATASETS = ["allenai/ai2_arc (ARC-Easy)", "nyu-mll/blimp (adjunct_island)", "openai/gsm8k (main)"]


@pytest.fixture(scope="module", autouse=True)
def task_index() -> None:
    """Built once before the clock starts (the CLI reads the same cached index)."""
    load_index(None, [])


def _stage(
    tmp_path: Path,
    endpoint: str,
    *extra: str,
    tasks: list[str] = TASKS,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "TQDM_")) and not k.lower().endswith("_proxy")
    }
    env = (
        clean
        | {
            "HF_ENDPOINT": endpoint,
            "HF_HOME": str(tmp_path / "hf"),  # an empty cache: nothing to fall back on
            "NO_PROXY": "127.0.0.1",
        }
        | (env or {})
    )
    out = tmp_path / "staged"
    return _cli(["stage", *tasks, "--tokenizer", "gpt2", "--out", str(out), *extra], env)


def _cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "airgap_eval", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, time.monotonic() - start


def _final_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert lines, proc
    found = re.search(r"\[[A-Z_]+\] .*", lines[-1])  # without the time, level and logger
    assert found, lines[-1]
    return found.group(0)


def _assert_names_everything(line: str, endpoint: str) -> None:
    for name in DATASETS:
        assert f"dataset {name}" in line, line
    assert "tokenizer gpt2" in line
    assert f"the Hugging Face Hub at {endpoint}" in line
    assert "HF_ENDPOINT" in line and "HTTPS_PROXY" in line and "--offline" in line


def _item_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if "] dataset " in ln or "] tokenizer " in ln]


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent() as port:  # a hung Hub
        yield port


class _AnswersThenHangs(BaseHTTPRequestHandler):
    """Answers the probe (HEAD /), then never answers an API or file request."""

    def do_HEAD(self) -> None:
        if self.path in ("", "/"):
            self.send_response(200)
            self.end_headers()
        else:
            time.sleep(120)

    def do_GET(self) -> None:
        time.sleep(120)

    def log_message(self, *args: object) -> None:
        pass


def test_a_refused_hub_fails_every_item_at_once_and_names_them(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    proc, seconds = _stage(tmp_path, endpoint)
    assert proc.returncode == ExitCode.UNREACHABLE, proc.stderr[-3000:]
    line = _final_line(proc)
    assert line.startswith(
        "[UNREACHABLE] could not fetch 3 datasets and the tokenizer from the Hugging Face Hub"
    ), line
    assert "(connection refused)" in line
    _assert_names_everything(line, endpoint)
    # one line per item (no retries), and nothing else of the libraries'
    items = _item_lines(proc)
    assert len(items) == 4 and all("not fetched" in ln for ln in items), items
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 7, proc.stderr
    assert seconds < 60
    print(f"refused: exit {proc.returncode} in {seconds:.1f} s: {line}")


def test_a_silent_hub_is_given_up_within_the_bound(tmp_path: Path, silent_port: int) -> None:
    endpoint = f"http://127.0.0.1:{silent_port}"
    proc, seconds = _stage(tmp_path, endpoint)  # the default bound: 60 s
    assert proc.returncode == ExitCode.UNREACHABLE, proc.stderr[-3000:]
    line = _final_line(proc)
    assert "(no answer in 10 s)" in line, line
    _assert_names_everything(line, endpoint)
    assert len(_item_lines(proc)) == 4
    assert seconds < 60
    print(f"silent: exit {proc.returncode} in {seconds:.1f} s: {line}")


def test_a_hub_that_stops_answering_costs_one_network_timeout(tmp_path: Path) -> None:
    with serving(_AnswersThenHangs) as port:
        endpoint = f"http://127.0.0.1:{port}"
        proc, seconds = _stage(tmp_path, endpoint, "--network-timeout", "4")
    assert proc.returncode in (ExitCode.UNREACHABLE, ExitCode.TIMEOUT), proc.stderr[-3000:]
    line = _final_line(proc)
    _assert_names_everything(line, endpoint)
    assert "no progress in 4 s" in line
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    items = _item_lines(proc)
    # the first item starts ("loading") and is given up; the others fail at once
    assert sum("not fetched" in ln for ln in items) == 4, items
    assert seconds < 4 + 30, seconds  # one bound, not one per item (+ start-up on a busy box)
    print(f"stops answering: exit {proc.returncode} in {seconds:.1f} s: {line}")


def test_offline_names_what_the_cache_lacks(tmp_path: Path) -> None:
    proc, seconds = _stage(tmp_path, "http://127.0.0.1:9", "--offline")
    assert proc.returncode == ExitCode.NOT_FOUND, proc.stderr[-3000:]
    line = _final_line(proc)
    assert line.startswith(
        "[NOT_FOUND] could not find 3 datasets and the tokenizer in the local HF cache"
    ), line
    for name in DATASETS:
        assert f"dataset {name}" in line
    assert "tokenizer gpt2" in line and "without --offline" in line
    assert len(_item_lines(proc)) == 8  # "loading" and "not fetched" for each of 4 items
    assert not (tmp_path / "staged" / "manifest.json").exists()  # claims no complete tree
    assert seconds < 60


def test_a_refusing_proxy_is_named(tmp_path: Path) -> None:
    proxy = f"127.0.0.1:{free_port()}"
    env = {"HTTPS_PROXY": f"http://user:secret@{proxy}", "NO_PROXY": ""}
    proc, seconds = _stage(tmp_path, "https://hub.example", env=env)
    assert proc.returncode == ExitCode.UNREACHABLE, proc.stderr[-3000:]
    line = _final_line(proc)
    assert f"(connection refused, through the proxy {proxy})" in line, line
    assert "secret" not in proc.stderr
    assert seconds < 60


def test_network_timeout_must_be_positive(tmp_path: Path) -> None:
    proc, _ = _stage(tmp_path, "http://127.0.0.1:9", "--network-timeout", "0")
    assert proc.returncode == ExitCode.CONFIG
    assert _final_line(proc).startswith("[CONFIG] --network-timeout 0 is not a positive")


def test_verify_never_waits_for_the_hub(tmp_path: Path, silent_port: int) -> None:
    """verify is offline whatever the env says: a hung HF_ENDPOINT costs it nothing."""
    tree = tmp_path / "tree"
    tree.mkdir()
    env = os.environ | {"HF_ENDPOINT": f"http://127.0.0.1:{silent_port}"}
    proc, seconds = _cli(["verify", str(tree), "--tasks", "arc_easy"], env)
    assert proc.returncode == ExitCode.MISSING_DATA, proc.stderr[-2000:]
    assert seconds < 30


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "{tmp}", "--tasks", "arc_easy", "arc_eazy"],
        ["stage", "arc_easy", "arc_eazy", "--tokenizer", "gpt2", "--out", "{tmp}/out"],
        ["slugs", "arc_easy", "arc_eazy"],
    ],
    ids=["verify", "stage", "slugs"],
)
def test_an_unknown_task_is_config_with_close_matches(tmp_path: Path, args: list[str]) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = os.environ | {"HF_ENDPOINT": "http://127.0.0.1:9"}  # never reached: typo first
    proc, seconds = _cli(argv, env)
    assert proc.returncode == ExitCode.CONFIG, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "[CONFIG] unknown task or group name(s): arc_eazy (did you mean arc_easy?)" in lines[0]
    assert "check the spelling" in lines[0] and "--include-path" in lines[0]
    assert "airgap-eval stage" not in lines[0]  # not a missing-data fix
    assert seconds < 15
    assert not (tmp_path / "out" / "manifest.json").exists()


class _GatedHub(BaseHTTPRequestHandler):
    """The Hub's answer for a gated repo: 401 without a token, 403 for a token whose user has
    not accepted the terms (X-Error-Code: GatedRepo, as huggingface.co sends)."""

    auth: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        token = self.headers.get("Authorization")
        self.auth.append(token or "")
        body = b'{"error": "Access to dataset Idavidrein/gpqa is restricted."}'
        self.send_response(403 if token else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to dataset Idavidrein/gpqa is restricted.")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer


@pytest.mark.parametrize("token", [None, "hf_gated_test_secret"])
def test_a_gated_dataset_ends_with_one_auth_line(tmp_path: Path, token: str | None) -> None:
    from testbed.tiny import build_tokenizer

    tokenizer = build_tokenizer(tmp_path / "tok")
    auth: list[str] = []
    with serving(type("Hub", (_GatedHub,), {"auth": auth})) as port:
        hub = f"http://127.0.0.1:{port}"
        proc, _ = _stage(
            tmp_path, hub, "--tokenizer", str(tokenizer), tasks=["leaderboard_gpqa"],
            env={"HF_TOKEN": token} if token else None,
        )  # fmt: skip
    assert proc.returncode == ExitCode.AUTH, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "[AUTH]" in lines[-1] and sum("[AUTH]" in line for line in lines) == 1
    last = lines[-1]
    assert "dataset Idavidrein/gpqa (gpqa_diamond, gpqa_extended, gpqa_main)" in last
    assert f"{hub}/datasets/Idavidrein/gpqa" in last and "HF_TOKEN" in last
    assert ("no HF_TOKEN is set" in last) == (token is None)
    assert "Traceback" not in proc.stderr
    if token:
        assert f"Bearer {token}" in auth  # stage sent the token
        assert token not in proc.stderr + proc.stdout
