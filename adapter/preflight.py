"""Preflight: everything a job needs, checked before the first request, reported at once.

Data (every bundle present and readable, nltk data staged, no Hub-only metric), tokenizer
(loads from the staged dir), endpoint (reachable, key accepted, model served, echo logprobs
for loglikelihood tasks) and task/model compatibility (no loglikelihood on a chat endpoint,
no code-executing task unless allowed). Missing data is ONE error listing every item, with
the `airgap-eval stage` command that fixes it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.metrics import staged_metric
from common.errors import (
    AuthError,
    ConfigError,
    MissingDataError,
    ModelEndpointError,
    UnreachableError,
)
from common.layout import MANIFEST_NAME, NLTK_DIR_NAME, TOKENIZER_DIR_NAME
from common.manifest import Manifest
from common.network import PROBE_TIMEOUT_S, StepTimeout, hub_endpoint, run_bounded
from tasks.code import install_hint
from tasks.datacheck import (
    TOKENIZER_ITEM,
    Item,
    TreeCheck,
    find_bundles,
    read_bundles,
    stage_command,
    tokenizer_item,
    tokenizer_load_error,
)
from tasks.plan import TaskPlan

log = logging.getLogger(__name__)

LOGLIKELIHOOD_TYPES = ("loglikelihood", "loglikelihood_rolling", "multiple_choice")


def read_manifest(test_data: Path) -> Manifest | None:
    """manifest.json, read once per run (None when absent or unreadable: the checks then go
    by the tree itself)."""
    try:
        return Manifest.load(test_data / MANIFEST_NAME)
    except (OSError, ValueError):
        return None


def _names(tasks: list[str]) -> str:
    return ", ".join(tasks[:4]) + (f" and {len(tasks) - 4} more" if len(tasks) > 4 else "")


def asset_problems(test_data: Path, plan: TaskPlan) -> list[str]:
    """nltk data the tasks' code looks up, and metric modules it would fetch from the Hub."""
    problems = []
    for pkg, needers in sorted(plan.nltk.items()):
        if not any((test_data / NLTK_DIR_NAME).glob(f"*/{pkg}")):
            problems.append(
                f"missing nltk data {test_data / NLTK_DIR_NAME}/*/{pkg} (for {_names(needers)})"
            )
    for metric, needers in sorted(plan.evaluate.items()):
        if not staged_metric(test_data, metric).is_file():
            problems.append(
                f"missing metric module {staged_metric(test_data, metric)} "
                f"(evaluate.load({metric!r}) for {_names(needers)})"
            )
    return problems


def _problem_lines(test_data: Path, bad: list[Item]) -> list[str]:
    return [
        f"{i.task} -> {test_data / i.slug}: {i.status}" + (f" ({i.detail})" if i.detail else "")
        for i in bad
    ]


def _fix(
    test_data: Path,
    tasks: list[str],
    bad: list[Item],
    manifest: Manifest | None,
    tokenizer: str | None,
    include_path: list[Path],
) -> str:
    retry = list(dict.fromkeys(i.task for i in bad if i.task != TOKENIZER_ITEM)) or tasks
    src = manifest.tokenizer if manifest else tokenizer
    return stage_command(retry, test_data, src, include_path)


def check_tree(
    test_data: Path,
    tasks: list[str],
    plan: TaskPlan,
    manifest: Manifest | None,
    include_path: list[Path],
    *,
    tokenizer: str | None,
    tok_dir: Path,
    need_tokenizer: bool,
) -> TreeCheck:
    """The fast half (no heavy import, no data read): every bundle dir, the tokenizer's files
    (`tokenizer`: the name asked for; `tok_dir`: where `tokenizer_dir` puts it) and the
    assets are there; else ONE MissingDataError listing all, with the fix."""
    check = find_bundles(test_data, plan, manifest)
    bad = list(check.problems)
    if tokenizer or tok_dir.is_dir() or (manifest and manifest.tokenizer):
        item = tokenizer_item(tok_dir, manifest, load=False)
        bad += [item] if item.status != "ok" else []
    problems = _problem_lines(test_data, bad) + asset_problems(test_data, plan)
    if need_tokenizer and not tokenizer and not tok_dir.is_dir():
        problems.append(missing_tokenizer(test_data, manifest))
    fail_on_problems(problems, _fix(test_data, tasks, bad, manifest, tokenizer, include_path))
    return check


def read_data(
    test_data: Path,
    tasks: list[str],
    check: TreeCheck,
    manifest: Manifest | None,
    include_path: list[Path],
) -> None:
    """The slow half: each bundle loads (once; `check.data` keeps it for the seam) and holds
    the splits its tasks index."""
    read_bundles(check, manifest)
    bad = check.problems
    if bad:
        fail_on_problems(
            _problem_lines(test_data, bad),
            _fix(test_data, tasks, bad, manifest, None, include_path),
        )


def online_tokenizer_problem(source: str, timeout_s: float) -> str | None:
    """A problem line, or None when the tokenizer loads. Online an HF id may download: the
    Hub's own retries can run for minutes, so the load gets `timeout_s` in all."""
    try:
        error = run_bounded(lambda: tokenizer_load_error(source, local_only=False), timeout_s)
    except StepTimeout:
        for name in ("huggingface_hub", "transformers"):  # its retries may still log: mute them
            logging.getLogger(name).disabled = True
        host = hub_endpoint()
        raise UnreachableError(
            f"tokenizer {source} could not be fetched from {host} within {timeout_s:.0f} s "
            "(online mode)",
            "stage it on a connected machine (airgap-eval stage --tokenizer ...) and run "
            "offline, or set HF_ENDPOINT to a reachable mirror or HTTPS_PROXY to a proxy; "
            "AIRGAP_EVAL_ONLINE_TIMEOUT sets this bound",
        ) from None
    if error:
        return f"tokenizer {source} does not load with this image's transformers: {error}"
    return None


def missing_tokenizer(test_data: Path, manifest: Manifest | None) -> str:
    staged = (
        f" (the tree was staged for {manifest.tokenizer})"
        if manifest and manifest.tokenizer
        else ""
    )
    return f"a tokenizer is not staged under {test_data / TOKENIZER_DIR_NAME}{staged}"


def fail_on_problems(problems: list[str], fix: str) -> None:
    if problems:
        listing = "\n  - ".join(problems)
        raise MissingDataError(
            f"{len(problems)} item(s) the job needs are missing or unreadable:\n  - {listing}",
            f"on a connected machine: {fix}; then sync that tree to the cluster's storage",
        )


def check_packages(missing: dict[str, list[str]]) -> None:
    """The packages the tasks' Python code imports and this image lacks: one error, naming
    each package, its tasks and what installs it (lm_eval's extra)."""
    if not missing:
        return
    listed = "; ".join(
        f"{pkg} (for {_names(tasks)}: {install_hint(pkg)})"
        for pkg, tasks in sorted(missing.items())
    )
    raise ConfigError(
        f"the tasks' code imports packages this image lacks: {listed}",
        "run the airgap-eval adapter image (it carries lm-eval's ifeval and math extras), or "
        "add those packages to this image",
    )


def import_failure(e: ImportError, tasks: list[str]) -> ConfigError:
    """An import that failed while lm_eval built the tasks (what the static check cannot see:
    a package present but broken, a version mismatch)."""
    pkg = (e.name or "").split(".")[0]
    fix = f"{install_hint(pkg)} into this image" if pkg else "fix the image's packages"
    return ConfigError(
        f"building tasks {_names(tasks)} failed on an import: {type(e).__name__}: {str(e)[:300]}",
        f"{fix}, or run the airgap-eval adapter image",
    )


# --- the chat template -------------------------------------------------------------------

# Where transformers reads a tokenizer's chat templates from (tokenization_utils_base).
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"


def chat_template_names(tok_dir: Path) -> list[str]:
    """The chat templates a tokenizer dir holds ("default" for its main one), read from the
    files transformers loads them from: tokenizer_config.json's `chat_template` (a string, or
    a list of {name, template}), chat_template.jinja, additional_chat_templates/*.jinja."""
    names: list[str] = []
    try:
        config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, str) and template:
        names.append("default")
    elif isinstance(template, list):
        names += [str(t.get("name")) for t in template if isinstance(t, dict) and t.get("name")]
    if (tok_dir / CHAT_TEMPLATE_FILE).is_file():
        names.append("default")
    names += [f.stem for f in sorted((tok_dir / CHAT_TEMPLATE_DIR).glob("*.jinja"))]
    return list(dict.fromkeys(names))


def check_chat_template(tok_dir: Path, wanted: bool | str) -> None:
    """With the completions endpoint lm_eval renders the chat with the tokenizer's template:
    one must be staged (and the named one, when a name is asked for)."""
    names = chat_template_names(tok_dir)
    name = "default" if wanted is True else str(wanted)
    if name in names:
        return
    if not names:
        problem = (
            f"the tokenizer {tok_dir} has no chat template (no `chat_template` in "
            f"tokenizer_config.json, no {CHAT_TEMPLATE_FILE}), and parameters."
            "apply_chat_template asks lm_eval to render prompts with it"
        )
    elif name == "default":
        problem = (
            f"the tokenizer {tok_dir} has only named chat templates ({', '.join(names)}) "
            "and no default one"
        )
    else:
        problem = (
            f"the tokenizer {tok_dir} has no chat template named {name!r}; it has: "
            f"{', '.join(names)}"
        )
    raise MissingDataError(
        problem,
        "stage the tokenizer of the chat model (its tokenizer_config.json or chat_template.jinja "
        "carries the template), or set parameters.apply_chat_template to one of the names "
        "above; or use parameters.model_type=chat, where the server applies its template",
    )


# --- the endpoint ----------------------------------------------------------------------


@dataclass
class Endpoint:
    max_model_len: int | None
    echo_logprobs: bool


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _refused(status: int, url: str) -> None:
    if status in (401, 403):
        raise AuthError(
            f"model endpoint {url} refused the request (HTTP {status})",
            "check the model API key (the model auth secret's api-key file, or OPENAI_API_KEY)",
        )


def _get_models(base: str, api_key: str | None, verify: bool) -> dict[str, Any] | None:
    import requests

    url = f"{base}/models"
    try:
        r = requests.get(url, headers=_headers(api_key), timeout=PROBE_TIMEOUT_S, verify=verify)
    except requests.exceptions.Timeout:
        raise UnreachableError(
            f"model endpoint {url} did not answer within {PROBE_TIMEOUT_S:.0f} s",
            "check model.url and that the model server is up and reachable from this pod",
        ) from None
    except requests.exceptions.RequestException as e:
        raise UnreachableError(
            f"model endpoint {url} is unreachable: {type(e).__name__}: {str(e)[:300]}",
            "check model.url and that the model server is up and reachable from this pod",
        ) from None
    _refused(r.status_code, url)
    if not r.ok:
        log.info("%s answered HTTP %s; skipping the model list", url, r.status_code)
        return None
    try:
        body: dict[str, Any] = r.json()
        return body
    except ValueError:
        return None


def _probe(
    url: str,
    payload: dict[str, Any],
    api_key: str | None,
    verify: bool,
    attempts: int,
    timeout: float,
) -> dict[str, Any]:
    import requests

    last = ""
    for attempt in range(1, attempts + 1):
        try:
            r = requests.post(
                url, json=payload, headers=_headers(api_key), timeout=timeout, verify=verify
            )
        except requests.exceptions.RequestException as e:
            last = f"{type(e).__name__}: {str(e)[:200]}"
        else:
            _refused(r.status_code, url)
            if r.ok:
                try:
                    body: dict[str, Any] = r.json()
                    return body
                except ValueError:
                    last = f"a non-JSON answer: {r.text[:200]!r}"
                    break
            last = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code < 500:
                break
        if attempt < attempts:
            time.sleep(min(2.0**attempt, 10.0))
    raise ModelEndpointError(
        f"model endpoint {url} did not answer a test request usefully: {last}",
        "check model.url (an OpenAI-compatible /v1 base), model.name and the server's log",
    )


def check_endpoint(
    base: str,
    model: str,
    model_type: str,
    api_key: str | None,
    *,
    verify: bool = True,
    attempts: int = 3,
    timeout: float = 60.0,
    meanwhile: Callable[[], None] | None = None,
) -> Endpoint:
    """/v1/models (reachable? key accepted? model served? max_model_len) + one request.
    `meanwhile` runs once the listing passed, before the test request (the run starts its
    heavy imports there, so a wrong URL, key or model name fails without them)."""
    max_len = None
    listing = _get_models(base, api_key, verify)
    if listing is not None and isinstance(listing.get("data"), list):
        served = {str(m.get("id")): m for m in listing["data"] if isinstance(m, dict)}
        if served and model not in served:
            raise ModelEndpointError(
                f"model {model!r} is not served at {base}; it serves {sorted(served)}",
                "set model.name in the job spec to one of the served names",
            )
        raw = (served.get(model) or {}).get("max_model_len")
        max_len = int(raw) if isinstance(raw, int) and raw > 0 else None
    if meanwhile is not None:
        meanwhile()
    if model_type == "chat":
        _probe(
            f"{base}/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
            api_key,
            verify,
            attempts,
            timeout,
        )
        return Endpoint(max_len, echo_logprobs=False)
    body = _probe(
        f"{base}/completions",
        {
            "model": model,
            "prompt": "Hello world",
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": 1,
            "echo": True,
        },
        api_key,
        verify,
        attempts,
        timeout,
    )
    try:
        token_logprobs = body["choices"][0]["logprobs"]["token_logprobs"]
        echo = isinstance(token_logprobs, list) and len(token_logprobs) >= 2
    except (KeyError, IndexError, TypeError):
        echo = False
    log.info(
        "endpoint %s ok (model %s, max_model_len %s, echo logprobs %s)", base, model, max_len, echo
    )
    return Endpoint(max_len, echo)


# --- the built tasks ---------------------------------------------------------------------


def check_tasks(
    tasks: dict[str, Any], model_type: str, endpoint: Endpoint, allow_code: bool
) -> None:
    """Refuse what cannot work, before any request: one error naming every task."""
    scoring = sorted(n for n, t in tasks.items() if t.OUTPUT_TYPE in LOGLIKELIHOOD_TYPES)
    if scoring and model_type == "chat":
        raise ConfigError(
            f"tasks {', '.join(scoring)} score answers by loglikelihood, which a chat "
            "completions endpoint cannot return (it gives no prompt logprobs)",
            "use parameters.model_type=completions with the model's /v1/completions endpoint, "
            "or pick generation tasks (e.g. gsm8k, ifeval) for a chat endpoint",
        )
    if scoring and not endpoint.echo_logprobs:
        raise ModelEndpointError(
            f"tasks {', '.join(scoring)} need prompt logprobs (echo=true, logprobs=1) and the "
            "endpoint's completions answer carries none",
            "serve the model with a server that returns echo logprobs (vLLM, TGI, SGLang)",
        )
    refuse_unsafe(
        sorted(n for n, t in tasks.items() if getattr(t, "UNSAFE_CODE", False)), allow_code
    )


def refuse_unsafe(unsafe: list[str], allow_code: bool) -> None:
    """Tasks that execute model-written code (humaneval, mbpp: `unsafe_code: true`) run only
    where the job allows it."""
    if unsafe and not allow_code:
        raise ConfigError(
            f"tasks {', '.join(unsafe)} execute model-written code",
            "set parameters.allow_code_execution=true if that is acceptable in this cluster",
        )
