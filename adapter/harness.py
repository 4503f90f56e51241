"""Running lm_eval as shipped: `simple_evaluate` over tasks built from the prebuilt index's
folders, against lm_eval's `local-completions` (or `local-chat-completions`) with our request
loop (adapter.client, registered as `airgap-completions`), with the request cache on
(adapter.cache: finished requests survive a crash and a rerun skips them), then
EvaluationTracker output.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import requests
from lm_eval.api.registry import register_model
from lm_eval.evaluator import simple_evaluate
from lm_eval.loggers import EvaluationTracker
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI
from lm_eval.tasks import TaskManager
from lm_eval.utils import make_table

from adapter import seam
from adapter.cache import CachingMixin, RequestCache
from adapter.client import AdaptiveRequests
from adapter.progress import ProgressMixin, RunProgress
from common.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    DeadlineError,
    EvaluationError,
    ModelEndpointError,
    UnreachableError,
)

log = logging.getLogger(__name__)


@register_model("airgap-completions")
class CompletionsLM(CachingMixin, ProgressMixin, AdaptiveRequests, LocalCompletionsAPI):
    """lm_eval's `local-completions`, answering from our request cache, counting finished
    requests, with our request loop (adapter.client: adaptive concurrency, turn-aways,
    several prompts per request)."""


@register_model("airgap-chat-completions")
class ChatLM(CachingMixin, ProgressMixin, AdaptiveRequests, LocalChatCompletion):
    """lm_eval's `local-chat-completions`, the same way."""


@dataclass
class ModelSettings:
    name: str
    url: str  # the full completions (or chat/completions) URL
    model_type: str
    tokenizer: str | None
    max_length: int
    num_concurrent: int | None  # None: adaptive, up to max_concurrent
    max_concurrent: int
    max_retries: int
    timeout: float
    batch_size: int | None  # None: several loglikelihood prompts per request
    max_gen_toks: int | None
    verify_certificate: bool

    def lm_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self.name,
            "base_url": self.url,
            "max_length": self.max_length,
            "num_concurrent": self.num_concurrent,
            "max_concurrent": self.max_concurrent,
            "max_retries": self.max_retries,
            "timeout": int(self.timeout),
            "batch_size": self.batch_size,
            "verify_certificate": self.verify_certificate,
        }
        if self.model_type == "completions":
            # A local tokenizer: lm_eval would otherwise probe the server for one.
            args |= {"tokenizer_backend": "huggingface", "tokenizer": self.tokenizer}
        if self.max_gen_toks:
            args["max_gen_toks"] = self.max_gen_toks
        return args

    def cache_file(self, cache_dir: Path) -> str:
        """lm_eval keys cached answers by request only: one db per model and context size."""
        ident = json.dumps([self.url, self.name, self.model_type, self.max_length, self.tokenizer])
        digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)[:60]
        return str(cache_dir / f"{safe}-{digest}")


def make_lm(settings: ModelSettings, progress: RunProgress) -> CompletionsLM | ChatLM:
    cls = ChatLM if settings.model_type == "chat" else CompletionsLM
    lm = cls(**settings.lm_args())
    lm.progress = progress
    return lm


@dataclass
class BuiltTasks:
    manager: TaskManager  # also handed to simple_evaluate: else it indexes all 14,700 configs
    top: list[Any]  # the requested tasks/groups, so group scores aggregate
    tasks: dict[str, Any]  # every leaf task by name


def build_tasks(names: list[str], folders: list[Path], metadata: dict[str, Any]) -> BuiltTasks:
    """Build only the requested tasks, from their config folders (their data loads here,
    through the seam)."""
    tm = TaskManager(
        include_defaults=False, include_path=[str(f) for f in folders], metadata=metadata
    )
    loaded = tm.load(names)
    children = set(itertools.chain.from_iterable(loaded["group_map"].values()))
    top = [g for n, g in loaded["groups"].items() if n not in children]
    top += [t for n, t in loaded["tasks"].items() if n not in children]
    return BuiltTasks(tm, top, loaded["tasks"])


def _failure(e: BaseException, progress: RunProgress, cache: str) -> AirgapError:
    done = sum(progress.done.values())
    total = sum(progress.total.values())
    kept = (
        f"; {done} of {total} requests had finished and are kept in the request cache "
        f"{cache}_rank0.db: rerunning the same job resumes from there"
    )
    resume = "rerun the same job (same cache dir) once the endpoint is healthy"
    if isinstance(e, aiohttp.ClientResponseError | requests.HTTPError):
        status = (
            e.status
            if isinstance(e, aiohttp.ClientResponseError)
            else (e.response.status_code if e.response is not None else 0)
        )
        if status in (401, 403):
            return AuthError(
                f"model endpoint refused a request (HTTP {status}){kept}", "check the model API key"
            )
        return ModelEndpointError(
            f"a model request failed after all retries: HTTP {status} {str(e)[:200]}{kept}", resume
        )
    if isinstance(e, asyncio.TimeoutError | TimeoutError | requests.Timeout):
        return DeadlineError(
            f"a model request timed out after all retries{kept}",
            f"raise parameters.timeout or lower num_concurrent; {resume}",
        )
    if isinstance(e, aiohttp.ClientError | requests.ConnectionError | ConnectionError):
        return UnreachableError(f"the model endpoint became unreachable: {e}{kept}", resume)
    return EvaluationError(
        f"lm_eval failed: {type(e).__name__}: {str(e)[:500]}{kept}",
        "rerun with AIRGAP_EVAL_DEBUG=1 for the traceback",
    )


def run(
    lm: CompletionsLM | ChatLM,
    built: BuiltTasks,
    *,
    cache: str,
    progress: RunProgress,
    limit: float | None,
    num_fewshot: int | None,
    seed: int | None,
    gen_kwargs: dict[str, Any] | None,
    apply_chat_template: bool | str,
    fewshot_as_multiturn: bool | None,
    system_instruction: str | None,
    log_samples: bool,
    bootstrap_iters: int | None,
    allow_code: bool,
    tracker: EvaluationTracker,
) -> dict[str, Any]:
    seeds: dict[str, Any] = {}
    if seed is not None:
        seeds = {
            "random_seed": seed,
            "numpy_random_seed": seed,
            "torch_random_seed": seed,
            "fewshot_random_seed": seed,
        }
    optional: dict[str, Any] = {}
    if bootstrap_iters is not None:
        optional["bootstrap_iters"] = bootstrap_iters
    if fewshot_as_multiturn is not None:
        optional["fewshot_as_multiturn"] = fewshot_as_multiturn
    seam.quiet_git_probe()
    seam.compile_templates_once()
    db = Path(f"{cache}_rank0.db")  # lm_eval's name for it
    db.parent.mkdir(parents=True, exist_ok=True)
    store = RequestCache(str(db))
    lm.use_request_cache(store)
    try:
        results = simple_evaluate(
            model=lm,
            tasks=built.top,
            task_manager=built.manager,
            num_fewshot=num_fewshot,
            limit=limit,
            log_samples=log_samples,
            evaluation_tracker=tracker,
            system_instruction=system_instruction,
            apply_chat_template=apply_chat_template,
            gen_kwargs=gen_kwargs,
            confirm_run_unsafe_code=allow_code,
            **seeds,
            **optional,
        )
    except AirgapError:
        raise
    except Exception as e:
        log.debug("evaluation failed", exc_info=True)
        raise _failure(e, progress, cache) from None
    finally:
        store.close()
    if results is None:
        raise EvaluationError("lm_eval returned no results", "see the log above")
    return results


def save(
    results: dict[str, Any],
    tracker: EvaluationTracker,
    output_dir: Path,
    settings: ModelSettings,
    log_samples: bool,
) -> list[Path]:
    """Write results + samples through EvaluationTracker; return the files written."""
    before = set(output_dir.glob("*.json*"))
    results["config"]["model"] = (
        f"airgap-{'chat-' if settings.model_type == 'chat' else ''}completions"
    )
    results["config"]["model_args"] = settings.lm_args()
    tracker.general_config_tracker.model_source = results["config"]["model"]
    tracker.general_config_tracker.model_name = settings.name
    samples = results.pop("samples", None) if log_samples else None
    tracker.save_results_aggregated(results=results, samples=samples)
    if samples:
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    written = sorted(set(output_dir.glob("*.json*")) - before)
    if not any(p.name.startswith("results_") for p in written):
        raise EvaluationError(
            f"lm_eval did not write its results file into {output_dir}",
            "check that the output dir is writable and has free space",
        )
    log.info("results:\n%s", make_table(results))
    return written


def examples_evaluated(results: dict[str, Any]) -> int:
    n = results.get("n-samples") or {}
    return sum(int(v.get("effective", 0)) for v in n.values() if isinstance(v, dict))


def resolve_max_length(spec_value: int | None, advertised: int | None, model_type: str) -> int:
    if spec_value:
        return spec_value
    if advertised:
        log.info("max_length %d (the endpoint's max_model_len)", advertised)
        return advertised
    if model_type == "chat":
        return 2048  # unused: a chat endpoint truncates on its side, we send no tokens
    raise ConfigError(
        "the model's context length is unknown: the endpoint advertises no max_model_len",
        "set parameters.max_length (lm_eval would silently truncate prompts at 2048 tokens)",
    )
