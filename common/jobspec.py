"""The EvalHub job spec as both the adapter and the sidecar read it: eval-hub-sdk's own
`JobSpec`, with defaults for the EvalHub bookkeeping fields a stand-alone spec (docker run,
Slurm) may leave out, so a spec `run` accepts is one `upload` accepts too."""

from __future__ import annotations

import difflib
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


# The top-level fields of EvalHub 1.0's job.json (`BuildJobSpec`, eval-hub
# internal/eval_hub/runtimes/shared/jobspec.go) and `primary_score`, which eval-hub-sdk's
# JobSpec adds and the 1.0.2 server writes.
EVALHUB_JOB_FIELDS = (
    "id", "provider_id", "benchmark_id", "benchmark_index", "model", "num_examples",
    "parameters", "experiment_name", "tags", "callback_url", "exports",
)  # fmt: skip
SPEC_FIELDS = (*EVALHUB_JOB_FIELDS, "primary_score")
# The fields whose values only eval-hub-sdk's parse checks (nested models): a spec that sets
# them (or model.auth) is parsed by the SDK before `run`'s first request.
SDK_CHECKED = ("exports", "tags", "primary_score")
# api.ModelRef's fields (pkg/api/evaluations.go)
MODEL_FIELDS = ("url", "name", "auth", "parameters", "card_url")


def _unknown(where: str, found: dict[str, Any], known: tuple[str, ...]) -> list[str]:
    problems = []
    for name in sorted(set(found) - set(known)):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        guess = f" (did you mean '{where}{close[0]}'?)" if close else ""
        problems.append(f"unknown field '{where}{name}'{guess}")
    return problems


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fields(data: dict[str, Any], source: str = "job spec") -> None:
    """Light (no eval-hub-sdk), before anything else reads the spec: unknown fields with the
    closest known name, and the values a run would only trip over later. A spec without
    `SDK_CHECKED` fields or model.auth that passes here passes eval-hub-sdk's strict parse
    (tests/common/test_jobspec.py holds the two to that), so `run` can leave that parse until
    after the first request."""
    problems = _unknown("", data, SPEC_FIELDS)
    model = data.get("model")
    if isinstance(model, dict):
        problems += _unknown("model.", model, MODEL_FIELDS)
        name = model.get("name")
        if not (isinstance(name, str) and name.strip()):
            problems.append(f"model.name: must be a non-empty string (got {name!r})")
        if not isinstance(model.get("url", ""), str):
            problems.append(f"model.url: must be a string (got {model['url']!r})")
    elif model is not None:
        problems.append("model: must be an object {url, name}")
    n = data.get("num_examples")
    if n is not None and not (_integer(n) and n >= 1):
        problems.append(
            f"num_examples: must be a positive integer (got {n!r}); leave it out for every "
            "example, or set parameters.limit to a fraction below 1"
        )
    index = data.get("benchmark_index", 0)
    if not (_integer(index) and index >= 0):
        problems.append(f"benchmark_index: must be an integer >= 0 (got {index!r})")
    for name in ("id", "benchmark_id"):
        if name not in data:
            problems.append(f"{name}: required")
    # strings the SDK requires (the bookkeeping ones have STANDALONE_DEFAULTS), then optional
    for name in ("id", "benchmark_id", "provider_id", "callback_url", "experiment_name"):
        value = data.get(name, "")
        if not isinstance(value, str) and not (name == "experiment_name" and value is None):
            problems.append(f"{name}: must be a string (got {value!r})")
    for name, kind in (("parameters", dict), ("tags", list)):
        if name in data and not isinstance(data[name], kind):
            what = "an object" if kind is dict else "a list"
            problems.append(f"{name}: must be {what} (got {type(data[name]).__name__})")
    if problems:
        raise ConfigError(
            f"{source}: {'; '.join(problems)}",
            f"fix the job spec; its fields: {', '.join(SPEC_FIELDS)} (see docs/adapter.md)",
        )


def parse_job_spec(data: dict[str, Any], source: str = "job spec") -> JobSpec:
    from evalhub.adapter import JobSpec  # deferred: the SDK import costs ~0.4 s

    unknown = sorted(set(data) - set(JobSpec.model_fields))
    if unknown:  # `run` refused them (check_fields); the sidecar still uploads: warn
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
