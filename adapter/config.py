"""The one place run settings are resolved: flags > job spec > env > defaults."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.layout import DEFAULT_RESULTS, DEFAULT_TEST_DATA

DEFAULT_JOB_SPEC = Path("/meta/job.json")  # where EvalHub mounts it (k8s mode)


@dataclass
class RunConfig:
    job_spec: Path | None  # None: the spec is built from --model-url/--tasks
    overrides: dict[str, Any]  # spec fields and parameters given as flags
    test_data: Path
    output_dir: Path
    work_dir: Path  # writable: HF caches, lm_eval caches, default request cache
    cache_dir: Path | None  # flag or env; the spec's parameters.cache_dir comes next
    task_index: Path | None
    offline: str  # auto | on | off
    terminal_events: str  # adapter | sidecar
    wait_uploaded_s: float
    heartbeat_s: float
    verbose: bool
    max_concurrent: int | None = None  # env; the spec's parameters.max_concurrent wins

    def request_cache_dir(self, spec_cache_dir: str | None) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        if spec_cache_dir:
            return Path(spec_cache_dir)
        return self.work_dir / "requests"


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run an lm_eval job (EvalHub job spec) offline from the staged test data "
        "against an OpenAI-compatible model endpoint. See docs/adapter.md.",
    )
    p.add_argument("--job-spec", type=Path,
                   help=f"job spec JSON (env EVALHUB_JOB_SPEC_PATH; default {DEFAULT_JOB_SPEC})")
    p.add_argument("--test-data", type=Path,
                   help=f"staged data (env AIRGAP_EVAL_TEST_DATA; default {DEFAULT_TEST_DATA})")
    p.add_argument("--output-dir", type=Path,
                   help=f"results dir (env AIRGAP_EVAL_OUTPUT_DIR; default {DEFAULT_RESULTS})")
    p.add_argument("--cache-dir", type=Path,
                   help="request cache; on persistent storage a rerun resumes "
                   "(env AIRGAP_EVAL_CACHE_DIR; default parameters.cache_dir, else WORK_DIR/requests)")
    p.add_argument("--work-dir", type=Path,
                   help="writable scratch for library caches (env AIRGAP_EVAL_WORK_DIR; "
                   "default $TMPDIR/airgap-eval)")
    p.add_argument("--task-index", type=Path,
                   help="prebuilt task index (env AIRGAP_EVAL_TASK_INDEX)")
    p.add_argument("--build-task-index", action="store_true",
                   help="build the task index (image build time) and exit")
    p.add_argument("--offline", choices=["auto", "on", "off"],
                   help="offline mode (env AIRGAP_EVAL_OFFLINE; default auto: on when the "
                   "test data holds a manifest or bundles)")
    p.add_argument("--terminal-events", choices=["adapter", "sidecar"],
                   help="who sends EvalHub's completed/failed event "
                   "(env AIRGAP_EVAL_TERMINAL_EVENTS; default adapter)")
    p.add_argument("--wait-uploaded", type=float, metavar="SECONDS",
                   help="with --terminal-events sidecar: wait this long for the `uploaded` "
                   "marker before exiting (env AIRGAP_EVAL_WAIT_UPLOADED; default 60)")
    p.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS",
                   help="status.json refresh interval while running (default 5)")
    g = p.add_argument_group("stand-alone use (no job spec file) and overrides of the spec")
    g.add_argument("--tasks", help="comma-separated lm_eval tasks/groups (parameters.tasks)")
    g.add_argument("--model-url", help="model.url")
    g.add_argument("--model-name", help="model.name")
    g.add_argument("--limit", type=float, help="num_examples")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameters field (VALUE parsed as JSON when it parses), repeatable")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--param {text!r} is not KEY=VALUE", "e.g. --param max_length=2048")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _pick(env: Mapping[str, str], flag: Any, var: str, default: Any) -> Any:
    if flag is not None:
        return flag
    return env.get(var) or default


def resolve(args: argparse.Namespace, env: Mapping[str, str]) -> RunConfig:
    overrides: dict[str, Any] = {"parameters": dict(_param(p) for p in args.param)}
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        overrides["parameters"]["tasks"] = tasks
        overrides["benchmark_id"] = args.tasks
    if args.model_url or args.model_name:
        overrides["model"] = {k: v for k, v in (("url", args.model_url),
                                                 ("name", args.model_name)) if v}
    if args.limit is not None:
        overrides["num_examples"] = int(args.limit) if args.limit >= 1 else None
        if args.limit < 1:
            overrides["parameters"]["limit"] = args.limit

    job_spec: Path | None = _pick(env, args.job_spec, "EVALHUB_JOB_SPEC_PATH", None)
    if job_spec is None and DEFAULT_JOB_SPEC.is_file():
        job_spec = DEFAULT_JOB_SPEC
    if job_spec is None and not (args.tasks and args.model_url):
        raise ConfigError(
            f"no job spec: {DEFAULT_JOB_SPEC} does not exist",
            "pass --job-spec PATH (or set EVALHUB_JOB_SPEC_PATH), or --tasks and --model-url",
        )

    terminal = _pick(env, args.terminal_events, "AIRGAP_EVAL_TERMINAL_EVENTS", "adapter")
    offline = _pick(env, args.offline, "AIRGAP_EVAL_OFFLINE", "auto")
    for name, value, allowed in (("AIRGAP_EVAL_TERMINAL_EVENTS", terminal, ("adapter", "sidecar")),
                                 ("AIRGAP_EVAL_OFFLINE", offline, ("auto", "on", "off"))):
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not one of {allowed}", f"set {name} correctly")
    try:
        wait = float(_pick(env, args.wait_uploaded, "AIRGAP_EVAL_WAIT_UPLOADED", 60))
    except ValueError:
        raise ConfigError("AIRGAP_EVAL_WAIT_UPLOADED is not a number", "set seconds, e.g. 60") from None
    cache = _pick(env, args.cache_dir, "AIRGAP_EVAL_CACHE_DIR", None)
    ceiling = env.get("AIRGAP_EVAL_MAX_CONCURRENT") or None
    if ceiling is not None and not (ceiling.isdigit() and int(ceiling) >= 1):
        raise ConfigError(f"AIRGAP_EVAL_MAX_CONCURRENT={ceiling!r} is not a positive integer",
                          "set the most parallel model requests, e.g. 64")  # fmt: skip
    index = _pick(env, args.task_index, "AIRGAP_EVAL_TASK_INDEX", None)
    return RunConfig(
        job_spec=Path(job_spec) if job_spec else None,
        overrides=overrides,
        test_data=Path(_pick(env, args.test_data, "AIRGAP_EVAL_TEST_DATA", DEFAULT_TEST_DATA)),
        output_dir=Path(_pick(env, args.output_dir, "AIRGAP_EVAL_OUTPUT_DIR", DEFAULT_RESULTS)),
        work_dir=Path(_pick(env, args.work_dir, "AIRGAP_EVAL_WORK_DIR",
                            Path(tempfile.gettempdir()) / "airgap-eval")),
        cache_dir=Path(cache) if cache else None,
        task_index=Path(index) if index else None,
        offline=offline,
        terminal_events=terminal,
        wait_uploaded_s=wait,
        heartbeat_s=args.heartbeat,
        verbose=args.verbose or bool(os.environ.get("AIRGAP_EVAL_DEBUG")),
        max_concurrent=int(ceiling) if ceiling else None,
    )


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Flag overrides on top of the spec's JSON (parameters and model merge field-wise)."""
    out = dict(data)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = out[key] | value
        elif key == "parameters" and not value:
            continue
        else:
            out[key] = value
    return out
