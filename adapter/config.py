"""The one place run settings are resolved: flags > env > job spec > secret files > defaults.

Three steps, all here: `resolve` reads the flags and the environment (where the results go,
where the data lies: known before anything can fail with a status record), `read_job` reads
the job spec once, light (its parameters and task names: a `Job`), then `prepare_job` freezes
everything the run needs into a `RunConfig` (a `Job` plus the API key; eval-hub-sdk parses the
spec first when the job needs the SDK before its first request, `Job.sdk_first`). Flags
override spec fields
(`--tasks`, `--model-url`, `--param`); env settings beat the spec's (`AIRGAP_EVAL_CACHE_DIR`
over `parameters.cache_dir`, `OPENAI_API_KEY` over the model auth secret file).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapter.parameters import RunParameters, parse_parameters, task_names
from common.errors import ConfigError
from common.jobspec import SDK_CHECKED, STANDALONE_DEFAULTS, check_fields, read_spec_file
from common.layout import DEFAULT_RESULTS, DEFAULT_TEST_DATA

if TYPE_CHECKING:
    from evalhub.adapter import JobSpec

DEFAULT_JOB_SPEC = Path("/meta/job.json")  # where EvalHub mounts it (k8s mode)
# eval-hub-sdk reads model credentials from here when the spec has no model.auth
# (evalhub.adapter.auth._MODEL_AUTH_DIR, held equal by tests/adapter/test_run_spec.py)
MODEL_AUTH_MOUNT = Path("/var/run/secrets/model")


@dataclass(frozen=True)
class Settings:
    """From the flags and the environment."""

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
    online_timeout_s: float  # online mode: the most a Hub fetch (the tokenizer) may take
    verbose: bool  # --verbose or AIRGAP_EVAL_DEBUG
    max_concurrent: int | None = None  # AIRGAP_EVAL_MAX_CONCURRENT: beats the spec's ceiling
    defaulted: tuple[str, ...] = ()  # the dirs neither a flag nor the env chose

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
    p.add_argument(
        "--job-spec",
        type=Path,
        help=f"job spec JSON (env EVALHUB_JOB_SPEC_PATH; default {DEFAULT_JOB_SPEC})",
    )
    p.add_argument(
        "--test-data",
        type=Path,
        help=f"staged data (env AIRGAP_EVAL_TEST_DATA; default {DEFAULT_TEST_DATA})",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        help=f"results dir (env AIRGAP_EVAL_OUTPUT_DIR; default {DEFAULT_RESULTS})",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="request cache; on persistent storage a rerun resumes "
        "(env AIRGAP_EVAL_CACHE_DIR; default parameters.cache_dir, else WORK_DIR/requests)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        help="writable scratch for library caches (env AIRGAP_EVAL_WORK_DIR; "
        "default $TMPDIR/airgap-eval)",
    )
    p.add_argument(
        "--task-index", type=Path, help="prebuilt task index (env AIRGAP_EVAL_TASK_INDEX)"
    )
    p.add_argument(
        "--build-task-index",
        action="store_true",
        help="build the task index (image build time) and exit",
    )
    p.add_argument(
        "--offline",
        choices=["auto", "on", "off"],
        help="offline mode (env AIRGAP_EVAL_OFFLINE; default auto: on when anything "
        "points at it: a sync record, manifest or bundle in the test data, the tokenizer "
        "under it, or an empty dir; a test-data dir that does not exist is an error unless "
        "off)",
    )
    p.add_argument(
        "--terminal-events",
        choices=["adapter", "sidecar"],
        help="who sends EvalHub's completed/failed event "
        "(env AIRGAP_EVAL_TERMINAL_EVENTS; default adapter)",
    )
    p.add_argument(
        "--wait-uploaded",
        type=float,
        metavar="SECONDS",
        help="with --terminal-events sidecar: wait this long for the `uploaded` "
        "marker before exiting (env AIRGAP_EVAL_WAIT_UPLOADED; default 60)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="status.json refresh interval while running (default 5)",
    )
    g = p.add_argument_group("stand-alone use (no job spec file) and overrides of the spec")
    g.add_argument("--tasks", help="comma-separated lm_eval tasks/groups (parameters.tasks)")
    g.add_argument("--model-url", help="model.url")
    g.add_argument("--model-name", help="model.name")
    g.add_argument("--limit", type=float, help="num_examples")
    g.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameters field (VALUE parsed as JSON when it parses), repeatable",
    )
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


def resolve_config(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    overrides: dict[str, Any] = {"parameters": dict(_param(p) for p in args.param)}
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        overrides["parameters"]["tasks"] = tasks
        overrides["benchmark_id"] = args.tasks
    if args.model_url or args.model_name:
        overrides["model"] = {
            k: v for k, v in (("url", args.model_url), ("name", args.model_name)) if v
        }
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
    for name, value, allowed in (
        ("AIRGAP_EVAL_TERMINAL_EVENTS", terminal, ("adapter", "sidecar")),
        ("AIRGAP_EVAL_OFFLINE", offline, ("auto", "on", "off")),
    ):
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not one of {allowed}", f"set {name} correctly")
    seconds = {}
    for var, flag, default in (
        ("AIRGAP_EVAL_WAIT_UPLOADED", args.wait_uploaded, 60),
        ("AIRGAP_EVAL_ONLINE_TIMEOUT", None, 60),
    ):
        try:
            seconds[var] = float(_pick(env, flag, var, default))
        except ValueError:
            raise ConfigError(f"{var} is not a number", "set seconds, e.g. 60") from None
    cache = _pick(env, args.cache_dir, "AIRGAP_EVAL_CACHE_DIR", None)
    ceiling = env.get("AIRGAP_EVAL_MAX_CONCURRENT") or None
    if ceiling is not None and not (ceiling.isdigit() and int(ceiling) >= 1):
        raise ConfigError(f"AIRGAP_EVAL_MAX_CONCURRENT={ceiling!r} is not a positive integer",
                          "set the most parallel model requests, e.g. 64")  # fmt: skip
    index = _pick(env, args.task_index, "AIRGAP_EVAL_TASK_INDEX", None)
    defaulted = tuple(
        flag
        for flag, value, var in (
            ("--output-dir", args.output_dir, "AIRGAP_EVAL_OUTPUT_DIR"),
            ("--work-dir", args.work_dir, "AIRGAP_EVAL_WORK_DIR"),
        )
        if value is None and not env.get(var)
    )
    return Settings(
        job_spec=Path(job_spec) if job_spec else None,
        overrides=overrides,
        test_data=Path(_pick(env, args.test_data, "AIRGAP_EVAL_TEST_DATA", DEFAULT_TEST_DATA)),
        output_dir=Path(_pick(env, args.output_dir, "AIRGAP_EVAL_OUTPUT_DIR", DEFAULT_RESULTS)),
        work_dir=Path(
            _pick(
                env,
                args.work_dir,
                "AIRGAP_EVAL_WORK_DIR",
                Path(tempfile.gettempdir()) / "airgap-eval",
            )
        ),
        cache_dir=Path(cache) if cache else None,
        task_index=Path(index) if index else None,
        offline=offline,
        terminal_events=terminal,
        wait_uploaded_s=seconds["AIRGAP_EVAL_WAIT_UPLOADED"],
        heartbeat_s=args.heartbeat,
        online_timeout_s=seconds["AIRGAP_EVAL_ONLINE_TIMEOUT"],
        verbose=args.verbose or bool(env.get("AIRGAP_EVAL_DEBUG")),
        max_concurrent=int(ceiling) if ceiling else None,
        defaulted=defaulted,
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


@dataclass(frozen=True)
class Job:
    """The spec's JSON (flag overrides merged), its parameters and task names, read light (no
    eval-hub-sdk): the data verdict comes before anything heavy is imported."""

    settings: Settings
    data: dict[str, Any]
    params: RunParameters
    tasks: tuple[str, ...]
    include_path: tuple[Path, ...]

    @property
    def task_index(self) -> Path | None:
        return self.settings.task_index

    @property
    def debug(self) -> bool:
        return self.settings.verbose

    @property
    def model_url(self) -> str:
        return str(self.data["model"]["url"])

    @property
    def callback_url(self) -> str | None:
        url = self.data.get("callback_url")
        return url if isinstance(url, str) and url else None

    @property
    def model_name(self) -> str:
        return str(self.data["model"]["name"])

    @property
    def num_examples(self) -> int | None:
        n = self.data.get("num_examples")
        return int(n) if n is not None else None

    @property
    def sdk_first(self) -> bool:
        """Whether eval-hub-sdk is needed before the first model request: to send phase events
        (a callback URL), to read model credentials (model.auth, or the secret EvalHub mounts),
        or to check fields only its parse checks. Else it is imported at publish: ~0.3 s less
        start-up (check_fields has then checked all the SDK would)."""
        return bool(
            self.callback_url
            or self.data["model"].get("auth") is not None
            or any(k in self.data for k in SDK_CHECKED)
            or MODEL_AUTH_MOUNT.exists()
        )


@dataclass(frozen=True)
class RunConfig(Job):
    """Everything one run needs, resolved once (`prepare_job`); the steps only read it."""

    api_key: str | None = field(repr=False)


def read_job(settings: Settings) -> Job:
    """A bad spec fails here, before anything heavy is imported."""
    data = read_spec_file(settings.job_spec) if settings.job_spec else {"id": "local"}
    data = merge_overrides(data, settings.overrides)
    check_fields(data, f"job spec {settings.job_spec or '(from flags)'}")
    raw = data.get("parameters")
    params = parse_parameters(raw if isinstance(raw, dict) else {})  # checked: a dict or None
    model = data.get("model")
    if not (isinstance(model, dict) and model.get("url")):
        raise ConfigError("job spec has no model.url", "set model.url (or --model-url)")
    benchmark = data.get("benchmark_id")
    tasks = task_names(benchmark if isinstance(benchmark, str) else None, params)
    include = tuple(Path(p) for p in params.include_path or [])
    return Job(settings, data, params, tuple(tasks), include)


def prepare_job(job: Job, env: Mapping[str, str], spec: JobSpec | None) -> RunConfig:
    """`spec`: eval-hub-sdk's parse of the spec, when the job needs it now (`sdk_first`)."""
    return RunConfig(
        settings=job.settings,
        data=job.data,
        params=job.params,
        tasks=job.tasks,
        include_path=job.include_path,
        api_key=model_api_key(job.settings, job.data, spec, env),
    )


def model_api_key(
    settings: Settings, data: dict[str, Any], spec: JobSpec | None, env: Mapping[str, str]
) -> str | None:
    """OPENAI_API_KEY, else the `api-key` file of the SDK's model auth secret dir (none to
    read without `spec`: no model.auth and no mounted secret)."""
    # The SDK finds model.auth by reading the spec file at EVALHUB_JOB_SPEC_PATH. The file
    # we read serves when the SDK's strict parse accepts it; a stand-alone spec with
    # model.auth lacks fields the SDK requires, so only then is a complete copy written.
    if (
        spec is not None
        and spec.model.auth is not None
        and (settings.job_spec is None or any(k not in data for k in STANDALONE_DEFAULTS))
    ):
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        complete = settings.work_dir / "job.json"
        complete.write_text(spec.model_dump_json())
        os.environ["EVALHUB_JOB_SPEC_PATH"] = str(complete)
    elif settings.job_spec is not None:
        os.environ["EVALHUB_JOB_SPEC_PATH"] = str(settings.job_spec)
    if spec is None:
        return env.get("OPENAI_API_KEY") or None
    from evalhub.adapter.auth import resolve_model_credentials

    try:
        creds = resolve_model_credentials()
    except ValueError as e:
        raise ConfigError(f"model auth: {e}", "fix model.auth.secret_ref in the job spec") from None
    if creds.ca_cert_path is not None:
        os.environ.setdefault("SSL_CERT_FILE", str(creds.ca_cert_path))
        os.environ.setdefault("REQUESTS_CA_BUNDLE", str(creds.ca_cert_path))
    return env.get("OPENAI_API_KEY") or creds.api_key or None
