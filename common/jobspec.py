"""The EvalHub job spec as both the adapter and the sidecar read it: eval-hub-sdk's own
`JobSpec`, with defaults for the EvalHub bookkeeping fields a stand-alone spec (docker run,
Slurm) may leave out, so a spec `run` accepts is one `upload` accepts too."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from common.errors import ConfigError

if TYPE_CHECKING:
    from evalhub.adapter import JobSpec

log = logging.getLogger(__name__)

PROVIDER_ID = "lm_evaluation_harness"
STANDALONE_DEFAULTS: dict[str, Any] = {
    "provider_id": PROVIDER_ID,
    "benchmark_index": 0,
    "callback_url": "",
    "parameters": {},
}


def field_errors(err: ValidationError, prefix: str) -> str:
    parts = []
    for e in err.errors():
        where = prefix + ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        else:
            parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def parse_job_spec(data: dict[str, Any], source: str = "job spec") -> JobSpec:
    from evalhub.adapter import JobSpec  # deferred: the SDK import costs ~0.4 s

    unknown = sorted(set(data) - set(JobSpec.model_fields))
    if unknown:  # newer EvalHub versions may add fields: warn, don't fail
        log.warning("%s: ignoring unknown top-level fields %s", source, unknown)
    try:
        return JobSpec.model_validate(STANDALONE_DEFAULTS | data)
    except ValidationError as e:
        raise ConfigError(
            f"{source}: {field_errors(e, '')}",
            "fix the job spec; required: id, benchmark_id, model.name (see docs/adapter.md)",
        ) from None


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"job spec {path} not found",
            "pass --job-spec PATH or set EVALHUB_JOB_SPEC_PATH (EvalHub mounts /meta/job.json)",
        ) from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"job spec {path} is not readable JSON: {e}", "fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"job spec {path}: expected a JSON object", "see docs/adapter.md")
    return data
