"""`airgap-eval run` (also `python -m adapter`): one lm_eval job, offline from the staged test
data, against an OpenAI-compatible model URL. docs/adapter.md is the reference.

Import order matters: nothing here imports datasets/transformers/huggingface_hub/lm_eval at
module level; they are imported after adapter.offline has set their environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapter import egress, offline
from adapter.config import RunConfig, merge_overrides, parser, resolve
from adapter.events import Events, SdkAdapter, job_results
from adapter.jobspec import (
    MAX_CONCURRENT,
    RunParameters,
    api_base,
    endpoint_url,
    parse_parameters,
    task_names,
)
from adapter.outputs import LOG_NAME, StatusWriter, redact_files, wait_uploaded, write_done
from common.entry import run_guarded
from common.errors import AirgapError, ConfigError
from common.jobspec import parse_job_spec, read_spec_file
from common.logs import register_secret, setup_logging
from common.status import StatusRecord

if TYPE_CHECKING:
    from evalhub.adapter import JobResults, JobSpec

log = logging.getLogger("airgap-eval.run")


def _model_api_key(spec: JobSpec, work_dir: Path) -> str | None:
    """The model key through the SDK's model auth (secret dir), else OPENAI_API_KEY."""
    from evalhub.adapter.auth import resolve_model_credentials

    # The SDK re-reads the spec from EVALHUB_JOB_SPEC_PATH to find model.auth: hand it the
    # complete spec (a stand-alone one lacks fields the SDK requires).
    work_dir.mkdir(parents=True, exist_ok=True)
    normalized = work_dir / "job.json"
    normalized.write_text(spec.model_dump_json())
    os.environ["EVALHUB_JOB_SPEC_PATH"] = str(normalized)
    try:
        creds = resolve_model_credentials()
    except ValueError as e:
        raise ConfigError(f"model auth: {e}", "fix model.auth.secret_ref in the job spec") from None
    key = creds.api_key or os.environ.get("OPENAI_API_KEY") or None
    if creds.ca_cert_path is not None:
        os.environ.setdefault("SSL_CERT_FILE", str(creds.ca_cert_path))
        os.environ.setdefault("REQUESTS_CA_BUNDLE", str(creds.ca_cert_path))
    return key


class Run:
    """One job: the steps in order, with status.json and events at each phase."""

    def __init__(self, cfg: RunConfig, status: StatusRecord, writer: StatusWriter) -> None:
        self.cfg, self.status, self.writer = cfg, status, writer
        self.spec: JobSpec | None = None
        self.events: Events | None = None
        self.results: JobResults | None = None

    def _phase(self, name: str) -> None:
        self.writer.phase(name)
        if self.events is not None:
            self.events.phase(name)

    def load_spec(self) -> tuple[JobSpec, RunParameters]:
        cfg = self.cfg
        data = read_spec_file(cfg.job_spec) if cfg.job_spec else {"id": "local"}
        data = merge_overrides(data, cfg.overrides)
        spec = parse_job_spec(data, f"job spec {cfg.job_spec or '(from flags)'}")
        params = parse_parameters(spec.parameters)
        if not spec.model.url:
            raise ConfigError("job spec has no model.url", "set model.url (or --model-url)")
        return spec, params

    def execute(self) -> None:
        start = time.monotonic()
        self.writer.start()
        try:
            self._execute(start)
        finally:
            self.writer.stop()

    def _execute(self, start: float) -> None:
        spec, params = self.load_spec()
        self.spec = spec
        self.status.job_id, self.status.benchmark_id = spec.id, spec.benchmark_id
        adapter = SdkAdapter(spec, lambda config, _callbacks: self._job(config, params, start))
        self.events = Events(
            adapter, "sidecar" if self.cfg.terminal_events == "sidecar" else "adapter"
        )
        self.results = adapter.run_benchmark_job(adapter.job_spec, self.events.callbacks)

    def _job(self, spec: JobSpec, params: RunParameters, start: float) -> JobResults:
        """The body of the SDK's run_benchmark_job: preflight, evaluation, outputs."""
        cfg = self.cfg
        self._phase("initializing")
        names = task_names(spec, params)
        api_key = _model_api_key(spec, cfg.work_dir)
        register_secret(api_key)
        if api_key:
            os.environ["OPENAI_API_KEY"] = api_key  # lm_eval's API models read it from here

        layout = offline.detect(cfg.test_data, params.tokenizer)
        if cfg.offline != "auto":
            layout = offline.Layout(cfg.offline == "on", f"--offline {cfg.offline}")
        offline.apply(layout, cfg.test_data, cfg.work_dir, params.allow_code_execution)
        if layout.offline:
            egress.enable([spec.model.url, spec.callback_url])

        # Heavy imports only now: the env above is read at their import time.
        from adapter import evaluate as ev
        from adapter import preflight, seam, taskindex, taskplan
        from adapter.datacheck import stage_command
        from adapter.progress import RunProgress

        include_path = [Path(p) for p in params.include_path or []]
        index = taskindex.load_index(cfg.task_index, include_path)
        resolution = taskindex.resolve(names, index)
        if resolution.unknown:
            raise ConfigError(
                f"unknown task or group name(s): {', '.join(resolution.unknown)}",
                "check the spelling (`lm_eval ls tasks`), or add parameters.include_path "
                "for custom task YAMLs",
            )
        if layout.offline:
            seam.install(cfg.test_data)  # before any task module is imported

        # Preflight: data + tokenizer (one error listing all), then the endpoint.
        completions = params.model_type == "completions"
        problems: list[str] = []
        fix = None
        if layout.offline:
            tokenizer = (
                preflight.tokenizer_source(cfg.test_data, params.tokenizer, offline=True)
                if completions
                else None
            )
            plan = taskplan.plan_tasks(resolution, index)
            problems, fix, _ = preflight.check_data(
                cfg.test_data, names, plan, tokenizer or params.tokenizer, include_path
            )
            if completions and tokenizer is None and not params.tokenizer:
                problems.append(preflight.missing_tokenizer(cfg.test_data, None))
        else:
            tokenizer = (params.tokenizer or spec.model.name) if completions else None
            if tokenizer and (problem := preflight.online_tokenizer_problem(tokenizer)):
                problems.append(problem)
        preflight.fail_on_problems(
            problems,
            fix or stage_command(names, cfg.test_data, params.tokenizer, include_path),
        )
        endpoint = preflight.check_endpoint(
            api_base(spec.model.url),
            spec.model.name,
            params.model_type,
            api_key,
            verify=params.verify_certificate,
            attempts=params.max_retries,
            timeout=params.timeout,
        )

        self._phase("loading_data")
        settings = ev.ModelSettings(
            name=spec.model.name,
            url=endpoint_url(spec.model.url, params.model_type),
            model_type=params.model_type,
            tokenizer=tokenizer,
            max_length=ev.resolve_max_length(
                params.max_length, endpoint.max_model_len, params.model_type
            ),
            num_concurrent=min(params.num_concurrent, MAX_CONCURRENT),
            max_retries=params.max_retries,
            timeout=params.timeout,
            batch_size=params.batch_size,
            max_gen_toks=params.max_gen_toks,
            verify_certificate=params.verify_certificate,
        )
        metadata: dict[str, Any] = {
            "pretrained": spec.model.name,
            "tokenizer": tokenizer,
            "max_length": settings.max_length,
        } | (params.metadata or {})
        built = ev.build_tasks(names, resolution.folders, metadata)
        preflight.check_tasks(built.tasks, params.model_type, endpoint, params.allow_code_execution)

        self._phase("running_evaluation")
        progress = RunProgress()
        self.writer.progress = progress.snapshot
        cache_dir = cfg.request_cache_dir(params.cache_dir)
        cache = settings.cache_file(cache_dir)
        log.info("request cache %s_rank0.db (a rerun resumes from it)", cache)
        from lm_eval.loggers import EvaluationTracker

        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        tracker = EvaluationTracker(output_path=str(cfg.output_dir / "results.json"))
        limit = spec.num_examples if spec.num_examples is not None else params.limit
        chat = params.model_type == "chat"
        results = ev.run(
            ev.make_lm(settings, progress),
            built,
            cache=cache,
            progress=progress,
            limit=limit,
            num_fewshot=params.num_fewshot,
            seed=params.seed,
            gen_kwargs=params.gen_kwargs,
            # a chat endpoint takes messages: lm_eval builds them only with the template on
            apply_chat_template=params.apply_chat_template or chat,
            fewshot_as_multiturn=params.fewshot_as_multiturn,
            system_instruction=params.system_instruction,
            log_samples=params.log_samples,
            bootstrap_iters=params.bootstrap_iters,
            allow_code=params.allow_code_execution,
            tracker=tracker,
        )

        self._phase("post_processing")
        files = ev.save(results, tracker, cfg.output_dir, settings, params.log_samples)
        redact_files(files)
        metrics = ev.flat_metrics(results)
        self.status.metrics = metrics
        primary = (
            spec.primary_score.metric if spec.primary_score else ev.default_primary(results, names)
        )
        if primary is not None:
            self.status.primary_score = {"metric": primary, "value": metrics.get(primary)}
        return job_results(
            spec,
            metrics,
            ev.examples_evaluated(results),
            time.monotonic() - start,
            {
                "results_files": [f.name for f in files],
                "lm_eval_version": results.get("lm_eval_version") or _version("lm_eval"),
            },
        )


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def build_task_index(cfg_index: Path | None) -> int:
    from adapter import taskindex

    path = cfg_index or taskindex.default_index_path()
    index = taskindex.build_index()
    taskindex.write_index(path, index)
    log.info("task index: %d names -> %s", len(index["entries"]), path)
    return 0


def main(argv: list[str] | None = None, prog: str = "airgap-eval run", command: str = "run") -> int:
    args = parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    if args.build_task_index:
        setup_logging(args.verbose)
        return build_task_index(args.task_index)

    status = StatusRecord(component="run")
    try:
        cfg = resolve(args, os.environ)
    except AirgapError as e:  # no output dir known for sure: the message is all we can give
        setup_logging(args.verbose)
        log.error(e.one_line())
        return int(e.exit_code)
    try:
        setup_logging(cfg.verbose, log_file=cfg.output_dir / LOG_NAME)
    except OSError as e:
        setup_logging(cfg.verbose)
        log.warning("cannot write the log into %s: %s", cfg.output_dir, e)

    writer = StatusWriter(cfg.output_dir, status, heartbeat_s=cfg.heartbeat_s)
    run = Run(cfg, status, writer)
    code = run_guarded(run.execute, status, writer.path)
    if run.events is not None:
        run.events.finish(status, run.results)
    try:
        write_done(cfg.output_dir, code)
    except OSError as e:
        log.warning("could not write the done marker: %s", e)
    if cfg.terminal_events == "sidecar":
        wait_uploaded(cfg.output_dir, cfg.wait_uploaded_s)
    logging.shutdown()
    return code
