"""The job spec's `parameters`: a typed model of the lm_eval settings the adapter accepts.

The spec itself is EvalHub's own `JobSpec` (common/jobspec.py, shared with the sidecar).
EvalHub specs work unchanged (its lm_eval adapter's names are accepted as aliases). Only
light imports here (no eval-hub-sdk): this runs before the offline env is set and the fast
verdict depends on it.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import ConfigError
from common.jobspec import field_errors

log = logging.getLogger(__name__)

MAX_CONCURRENT = 128  # EvalHub's lm_eval adapter clamps to the same bound
# Keys EvalHub's collections set for its lighteval provider (pass@k over n samples): accepted
# so one collection's parameters fit every entry, and ignored with one warning line.
LIGHTEVAL_KEYS = ("num_samples", "pass_at_k")


class RunParameters(BaseModel):
    """`parameters` of the job spec. Unknown fields are errors that name the field."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    tasks: list[str] | None = Field(
        default=None, description="lm_eval tasks/groups to run (default: [benchmark_id])"
    )
    tokenizer: str | None = Field(
        default=None,
        description="tokenizer dir (absolute or relative to the test data) or HF id; "
        "default: the manifest's tokenizer, else <test_data>/tokenizer",
    )
    num_fewshot: int | None = Field(
        default=None, ge=0, validation_alias=AliasChoices("num_fewshot", "num_few_shot")
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="prompts per API request; default: several per loglikelihood request "
        "when num_concurrent is unset too, else one",
    )
    num_concurrent: int | None = Field(
        default=None,
        ge=1,
        description="parallel API requests, exactly; default: adaptive, up to max_concurrent",
    )
    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        description="ceiling of the adaptive concurrency (default "
        f"{MAX_CONCURRENT}; AIRGAP_EVAL_MAX_CONCURRENT beats it)",
    )
    max_retries: int = Field(default=3, ge=1, description="attempts per request (5xx, timeouts)")
    timeout: float = Field(
        default=300, gt=0, validation_alias=AliasChoices("timeout", "timeout_seconds")
    )
    max_length: int | None = Field(
        default=None, gt=1, description="context window; default: the endpoint's max_model_len"
    )
    max_gen_toks: int | None = Field(default=None, ge=1)
    model_type: Literal["completions", "chat"] = "completions"
    apply_chat_template: bool | str = Field(
        default=False,
        description="true: the tokenizer's chat template (completions) or the server's (chat); "
        "a name: that one of the tokenizer's named templates, as lm_eval takes it",
    )
    fewshot_as_multiturn: bool | None = None
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("gen_kwargs", "parameters")
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        validation_alias=AliasChoices("seed", "random_seed"),
        description="one seed for python, numpy, torch and few-shot sampling; "
        "default: lm_eval's own defaults",
    )
    cache_dir: str | None = Field(
        default=None, description="request cache dir (persistent storage => resume)"
    )
    allow_code_execution: bool = False
    include_path: list[str] | None = Field(default=None, description="custom task config dirs")
    log_samples: bool = True
    bootstrap_iters: int | None = Field(default=None, ge=0)
    limit: float | None = Field(default=None, gt=0, description="as num_examples; that wins")
    metadata: dict[str, Any] | None = Field(default=None, description="lm_eval task metadata")
    verify_certificate: bool = True
    # EvalHub's collection keys (config/collections/*.yaml)
    repetitions: int = Field(
        default=1,
        ge=1,
        description="runs of the benchmark with seeds seed, seed+1, ...; EvalHub scores the "
        "mean of each metric (seed default: 1234, lm_eval's few-shot and sampling seed)",
    )
    secondary_metric: str | None = Field(
        default=None, description="a metric tracked beside the primary one; not needed to pass"
    )
    secondary_threshold: float | None = None
    blocking_subtask: str | None = Field(
        default=None,
        description="a subtask whose primary metric below blocking_subtask_threshold is a "
        "blocking finding, whatever the benchmark's score",
    )
    blocking_subtask_threshold: float | None = None
    num_samples: int | None = Field(default=None, description="lighteval's: ignored")
    pass_at_k: int | None = Field(default=None, description="lighteval's: ignored")

    @model_validator(mode="after")
    def _thresholds_name_their_metric(self) -> RunParameters:
        for name, threshold in (
            ("secondary_metric", self.secondary_threshold),
            ("blocking_subtask", self.blocking_subtask_threshold),
        ):
            if threshold is not None and not getattr(self, name):
                raise ValueError(f"{name}'s threshold is set without {name}")
        return self


ALIASES = ("num_few_shot", "random_seed", "timeout_seconds", "parameters")


def closest_key(key: str) -> str | None:
    known = [*RunParameters.model_fields, *ALIASES]
    found = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return found[0] if found else None


def parse_parameters(raw: dict[str, Any]) -> RunParameters:
    try:
        params = RunParameters.model_validate(raw)
    except ValidationError as e:
        known = sorted(RunParameters.model_fields)
        guesses = [
            f"did you mean {guess!r} for {key!r}?"
            for err in e.errors()
            if err["type"] == "extra_forbidden"
            and (guess := closest_key(key := str(err["loc"][-1])))
        ]
        raise ConfigError(
            f"job spec: {field_errors(e, 'parameters.')}",
            " ".join(guesses)
            + (" " if guesses else "")
            + f"fix the job spec; known parameters: {', '.join(known)} "
            f"(EvalHub aliases: {', '.join(ALIASES)})",
        ) from None
    if ignored := [k for k in LIGHTEVAL_KEYS if getattr(params, k) is not None]:
        log.warning(
            "parameters %s are lighteval's (pass@k over n samples), not lm_eval's: ignored; "
            "parameters.repetitions runs the benchmark over several seeds",
            ", ".join(ignored),
        )
    return params


def api_base(url: str) -> str:
    """The OpenAI base (`.../v1`) of a model URL ending in /v1, /completions,
    /chat/completions, or none of them (then /v1 is added), as EvalHub reads it."""
    url = url.strip().rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url if url.endswith("/v1") else f"{url}/v1"


def endpoint_url(url: str, model_type: str) -> str:
    return f"{api_base(url)}/{'chat/completions' if model_type == 'chat' else 'completions'}"


def task_names(benchmark_id: str | None, params: RunParameters) -> list[str]:
    names = params.tasks or ([benchmark_id] if benchmark_id else [])
    if not names or not all(n.strip() for n in names):
        raise ConfigError("job spec names no task", "set benchmark_id or parameters.tasks")
    return names
