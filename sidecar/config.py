"""Every sidecar setting, resolved in one place: flags > env > secret files > defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.engine import ENGINES, Engine, check_engine
from common.errors import ConfigError
from common.jobspec import parse_job_spec, read_spec_file
from common.layout import DEFAULT_RESULTS, TERMINATION_LOG
from common.logs import register_secret
from common.s3settings import RESULTS_SECRET_DIR, S3Connection, _lookup, resolve_connection
from common.storage import parse_s3_uri

if TYPE_CHECKING:
    from evalhub.adapter import JobSpec

DEFAULT_JOB_SPEC = Path("/meta/job.json")

# flag dest -> (env var, default). Durations are seconds.
_NUMBERS: dict[str, tuple[str, float]] = {
    "stale_after": ("UPLOAD_STALE_AFTER", 120.0),
    "start_timeout": ("UPLOAD_START_TIMEOUT", 3600.0),
    "deadline": ("UPLOAD_DEADLINE", 300.0),
    "grace": ("UPLOAD_GRACE", 25.0),
    "poll_interval": ("UPLOAD_POLL_INTERVAL", 0.2),  # a stat of two small files: cheap
    "partial_every": ("UPLOAD_PARTIAL_EVERY", 300.0),
}


@dataclass(frozen=True)
class UploadConfig:
    results_dir: Path
    bucket: str
    prefix: str  # the --dest prefix; the job and benchmark ids go below it
    conn: S3Connection
    once: bool
    stale_after: float
    start_timeout: float
    deadline: float
    grace: float
    poll_interval: float
    partial_every: float  # 0: no partial uploads
    job_spec: JobSpec | None
    job_id: str | None
    benchmark_id: str | None
    engine: Engine
    workers: int
    secrets: tuple[str, ...]  # values that must never leave the pod
    termination_log: Path


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Wait for the adapter, upload its results dir to S3 and report the job.",
    )
    p.add_argument(
        "--results-dir", type=Path, help="shared results dir (env RESULTS_DIR; /results)"
    )
    p.add_argument("--dest", help="s3://BUCKET/PREFIX (env or secret file RESULTS_S3_URI)")
    p.add_argument("--once", action="store_true", help="upload now and exit (post-step mode)")
    p.add_argument(
        "--stale-after", type=float, help="adapter dead after this many s without heartbeat (120)"
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        help="adapter dead if no status.json after this many s (3600)",
    )
    p.add_argument(
        "--deadline", type=float, help="give up the final upload after this many s (300)"
    )
    p.add_argument("--grace", type=float, help="after SIGTERM, finish within this many s (25)")
    p.add_argument(
        "--poll-interval", type=float, help="seconds between looks at the results dir (0.2)"
    )
    p.add_argument("--partial-every", type=float, help="partial upload period in s, 0 = off (300)")
    p.add_argument(
        "--job-spec", type=Path, help="EvalHub job spec (env EVALHUB_JOB_SPEC_PATH; /meta/job.json)"
    )
    p.add_argument(
        "--job-id", help="job id for the S3 layout (default: from the job spec or status.json)"
    )
    p.add_argument("--benchmark-id", help="benchmark id for the S3 layout (same defaults)")
    p.add_argument(
        "--secret-dir",
        type=Path,
        help=f"S3 secret files (env RESULTS_SECRET_DIR; {RESULTS_SECRET_DIR})",
    )
    p.add_argument("--endpoint", help="S3 endpoint URL (env or secret file AWS_S3_ENDPOINT)")
    p.add_argument(
        "--no-verify-ssl", action="store_true", help="skip TLS verification of the S3 endpoint"
    )
    p.add_argument("--engine", choices=ENGINES, help="byte mover (env UPLOAD_ENGINE; auto)")
    p.add_argument("--workers", type=int, default=16, help="parallel transfers (16)")
    p.add_argument("--termination-log", type=Path, default=TERMINATION_LOG, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    return p  # fmt: skip


def results_dir(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(args.results_dir or env.get("RESULTS_DIR") or DEFAULT_RESULTS)


def _number(args: argparse.Namespace, name: str, env: Mapping[str, str]) -> float:
    var, default = _NUMBERS[name]
    flag = getattr(args, name)
    if flag is not None:
        return float(flag)
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{var}={raw!r} is not a number", f"set {var} to seconds, e.g. {default:g}"
        ) from None
    if value < 0:
        raise ConfigError(f"{var}={raw!r} is negative", f"set {var} to seconds >= 0")
    return value


def load_job_spec(args: argparse.Namespace, env: Mapping[str, str]) -> JobSpec | None:
    """The EvalHub job spec, through the SDK's own model; absent is fine unless named."""
    named = args.job_spec or (
        Path(env["EVALHUB_JOB_SPEC_PATH"]) if env.get("EVALHUB_JOB_SPEC_PATH") else None
    )
    path = named or DEFAULT_JOB_SPEC
    if not path.is_file():
        if named:
            raise ConfigError(
                f"job spec {path} not found",
                "fix --job-spec / EVALHUB_JOB_SPEC_PATH, or leave both unset to run without one",
            )
        return None
    return parse_job_spec(read_spec_file(path), f"job spec {path}")


def _model_secrets(env: Mapping[str, str]) -> list[str]:
    """The model API key and HF token as the adapter sees them (SDK model auth, or env)."""
    found = [env.get("OPENAI_API_KEY", ""), env.get("HF_TOKEN", "")]
    try:
        from evalhub.adapter.auth import resolve_model_credentials

        creds = resolve_model_credentials()
        found += [creds.api_key or "", creds.hf_token or ""]
    except (ValueError, OSError):
        pass  # no readable model auth here: nothing to mask
    return found


def resolve_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> UploadConfig:
    env = os.environ if env is None else env
    secret_dir = args.secret_dir or Path(env.get("RESULTS_SECRET_DIR") or RESULTS_SECRET_DIR)
    dest = args.dest or _lookup("RESULTS_S3_URI", env, secret_dir)
    if not dest:
        raise ConfigError(
            "no upload destination",
            "pass --dest s3://BUCKET/PREFIX or set RESULTS_S3_URI (env or secret file "
            f"in {secret_dir})",
        )
    bucket, prefix = parse_s3_uri(dest)
    engine = check_engine(args.engine or env.get("UPLOAD_ENGINE") or "auto", "UPLOAD_ENGINE")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be >= 1", "pass --workers 16")
    conn = resolve_connection(
        endpoint=args.endpoint, no_verify_ssl=args.no_verify_ssl, secret_dir=secret_dir, env=env
    )
    numbers = {name: _number(args, name, env) for name in _NUMBERS}
    if numbers["poll_interval"] <= 0:
        raise ConfigError("the poll interval must be > 0", "pass --poll-interval 0.5")
    spec = load_job_spec(args, env)
    found = {conn.secret_key or "", conn.session_token or "", *_model_secrets(env)}
    secrets = tuple(s for s in found if register_secret(s))
    return UploadConfig(
        results_dir=results_dir(args, env),
        bucket=bucket,
        prefix=prefix,
        conn=conn,
        once=args.once,
        job_spec=spec,
        job_id=args.job_id,
        benchmark_id=args.benchmark_id,
        engine=engine,
        workers=args.workers,
        secrets=secrets,
        termination_log=args.termination_log,
        **numbers,
    )
