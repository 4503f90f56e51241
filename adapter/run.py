"""One `airgap-eval run` job as named steps over the job spec, read once:

    isolate    the light read of the spec (`Job`); offline or online and why, the offline
               env before any HF import, the egress guard; an empty dir fails here
    resolve    task names -> leaf tasks, config folders, bundles (once, from the task index)
    check_data the fast verdict: code-executing tasks allowed, packages present, then offline
               the tree, tokenizer files, assets (manifest read once, no data read)
    prepare    the API key: the frozen `RunConfig` (and eval-hub-sdk's spec, callbacks, when
               the job needs them before the first request: `Job.sdk_first`)
    preflight  online the tokenizer, then the chat template and the endpoint
    load       each bundle loaded once, the tasks built, task/endpoint compatibility, the model
    evaluate   lm_eval's simple_evaluate against the endpoint (request cache on)
    publish    results + samples (redacted), metrics, the SDK's JobResults

A job whose data is not there fails in the first three steps, before eval-hub-sdk, lm_eval,
datasets or transformers are imported (< 1 s); the last three are imported on a thread while
the endpoint probe waits on the network. eval-hub-sdk, the results writers and the metric
mapping are not needed for the first request: a job without a callback URL, model auth or
the spec fields only the SDK checks imports them at publish (~0.3 s less start-up).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapter import criteria, egress, offline, preflight
from adapter.config import Job, RunConfig, Settings, prepare_job, read_job
from adapter.parameters import MAX_CONCURRENT, api_base, endpoint_url
from common.atomic import atomic_write
from common.errors import AirgapError, MissingDataError
from common.jobspec import parse_job_spec
from common.logs import register_secret
from tasks.code import missing_packages, unsafe_tasks
from tasks.datacheck import TreeCheck, stage_command, tokenizer_dir
from tasks.index import (
    Resolution,
    build_index,
    default_index_path,
    load_index,
    resolve_tasks,
    unknown_tasks_error,
    write_index,
)
from tasks.plan import TaskPlan, plan_tasks

if TYPE_CHECKING:
    from evalhub.adapter import JobResults, JobSpec
    from lm_eval.loggers import EvaluationTracker

    from adapter.events import Events
    from adapter.harness import BuiltTasks, ModelSettings
    from adapter.outputs import StatusWriter
    from adapter.progress import RunProgress
    from common.manifest import Manifest
    from common.status import StatusRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolved:
    resolution: Resolution
    plan: TaskPlan
    missing_packages: dict[str, list[str]]  # import name -> tasks whose code imports it
    unsafe: list[str]  # tasks that execute model-written code


@dataclass(frozen=True)
class Loaded:
    settings: ModelSettings
    built: BuiltTasks
    model: Any  # the lm_eval API model
    progress: RunProgress


@dataclass(frozen=True)
class DataVerdict:
    tokenizer: str | None  # offline: the staged dir lm_eval loads (online: decided later)
    check: TreeCheck | None  # offline: the bundles as found (and then loaded)
    manifest: Manifest | None  # offline: manifest.json, read once


@dataclass(frozen=True)
class Checked:
    """What preflight found and decided (`prepare` returns the run's config instead)."""

    tokenizer: str | None  # the dir (offline) or HF id (online) lm_eval loads
    endpoint: preflight.Endpoint
    check: TreeCheck | None  # offline: the bundles as found (and then loaded)
    manifest: Manifest | None  # offline: manifest.json, read once


@dataclass(frozen=True)
class Evaluated:
    """One lm_eval run (one per seed with `repetitions`)."""

    seed: int | None
    results: dict[str, Any]
    tracker: EvaluationTracker  # holds the samples until publish saves them


def _import_heavy() -> None:
    # The tokenizer classes transformers would import lazily on the first
    # AutoTokenizer.from_pretrained (~1 s of a start-up otherwise), its model table read once
    # (seam); lm_eval, datasets, aiohttp. A failure is left to the main thread's own import,
    # which reports it as an error.
    with contextlib.suppress(Exception):
        from adapter import seam

        seam.share_models_scan()
        from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: F401

        from adapter import harness  # noqa: F401


class Run:
    """One job: the steps in order, with status.json and events at each phase."""

    def __init__(self, settings: Settings, status: StatusRecord, writer: StatusWriter) -> None:
        self.settings, self.status, self.writer = settings, status, writer
        self.offline = False
        self.events: Events | None = None
        self.results: JobResults | None = None
        self.files: list[Path] = []  # what publish wrote (results, samples)

    def _phase(self, name: str) -> None:
        self.writer.phase(name)
        if self.events is not None:
            self.events.phase(name)

    def execute(self) -> None:
        start = time.monotonic()
        self.writer.start()
        self.writer.phase("initializing")
        try:
            job = read_job(self.settings)  # light: a bad spec fails here
            self.status.job_id = str(job.data.get("id") or "") or None
            try:  # before eval-hub-sdk and the HF libraries: missing data fails in < 1 s
                self.isolate(job)
                resolved = self.resolve(job)
                data = self.check_data(job, resolved)
            except AirgapError:
                self._connect_to_report(job)
                raise
            cfg = self.prepare(job)
            self.results = self._job(cfg, resolved, data, start)
        finally:
            self.writer.stop()

    def _connect(self, spec: JobSpec) -> Events:
        from adapter.events import Events, SdkAdapter  # eval-hub-sdk: ~0.3 s of imports

        self.events = Events(
            SdkAdapter(spec), "sidecar" if self.settings.terminal_events == "sidecar" else "adapter"
        )
        return self.events

    def _spec(self, job: Job) -> JobSpec:
        return parse_job_spec(job.data, f"job spec {job.settings.job_spec or '(from flags)'}")

    def _connect_to_report(self, job: Job) -> None:
        """A job that failed before the SDK was loaded still reports `failed` to EvalHub
        when the adapter sends the terminal event."""
        if job.callback_url is None or self.settings.terminal_events != "adapter":
            return
        with contextlib.suppress(AirgapError):
            self.prepare(job)  # a callback URL: it connects the SDK (`Job.sdk_first`)

    def _job(
        self, cfg: RunConfig, resolved: Resolved, data: DataVerdict, start: float
    ) -> JobResults:
        """The job's body, from preflight to the SDK's JobResults."""
        if self.events is not None:
            self.events.phase("initializing")  # status.json has said so since the start
        checked = self.preflight(cfg, data)
        self._phase("loading_data")
        loaded = self.load(cfg, resolved, checked)
        self._phase("running_evaluation")
        runs = self.evaluate(cfg, loaded)
        self._phase("post_processing")
        return self.publish(cfg, loaded.settings, runs, time.monotonic() - start)

    # --- prepare ------------------------------------------------------------------------

    def prepare(self, job: Job) -> RunConfig:
        """The run configuration, resolved once (the API key); eval-hub-sdk's spec and
        callbacks first when the job needs them before its first request."""
        spec = self._spec(job) if job.sdk_first else None
        cfg = prepare_job(job, os.environ, spec)  # sets the CA the SDK's client uses
        if spec is not None:
            self._connect(spec)
        self.status.job_id = str(job.data["id"])
        self.status.benchmark_id = str(job.data["benchmark_id"])
        register_secret(cfg.api_key)
        if cfg.api_key:
            os.environ["OPENAI_API_KEY"] = cfg.api_key  # lm_eval's API models read it here
        return cfg

    def isolate(self, job: Job) -> None:
        """Offline or online (online only when nothing points at offline), the env the HF
        libraries read at import, and the egress guard."""
        s = job.settings
        offline.refuse_missing_test_data(s.test_data, s.offline)
        layout = offline.detect(s.test_data, job.params.tokenizer, s.offline)
        offline.apply(layout, s.test_data, s.work_dir, job.params.allow_code_execution)
        self.offline = layout.offline
        if layout.offline:
            egress.enable([job.model_url, job.callback_url or ""])
            offline.refuse_failed_sync(s.test_data)
            offline.refuse_nothing_synced(s.test_data)

    # --- resolve ------------------------------------------------------------------------

    def resolve(self, job: Job) -> Resolved:
        index = load_index(job.task_index, list(job.include_path))
        resolution = resolve_tasks(list(job.tasks), index)
        if resolution.unknown:
            raise unknown_tasks_error(resolution.unknown, index, "add parameters.include_path")
        # Python-class tasks need lm_eval imported to name their dataset: the fast verdict
        # goes by the manifest's record for them, the seam finds their bundle later.
        plan = plan_tasks(resolution, index, import_classes=False)
        return Resolved(
            resolution,
            plan,
            missing_packages(resolution.leaves, index),
            unsafe_tasks(resolution.leaves, index),
        )

    # --- preflight ----------------------------------------------------------------------

    def check_data(self, job: Job, resolved: Resolved) -> DataVerdict:
        """Offline, the fast half of the data check: the tree, the tokenizer's files, the
        assets (no heavy import, no data read)."""
        s, p = job.settings, job.params
        completions = p.model_type == "completions"
        preflight.refuse_unsafe(resolved.unsafe, p.allow_code_execution)
        preflight.check_packages(resolved.missing_packages)
        if not self.offline:
            return DataVerdict(None, None, None)
        manifest = preflight.read_manifest(s.test_data)
        tok_dir = tokenizer_dir(s.test_data, p.tokenizer, manifest)  # decided here only
        tokenizer = str(tok_dir) if completions and tok_dir.is_dir() else None
        check = preflight.check_tree(
            s.test_data,
            list(job.tasks),
            resolved.plan,
            manifest,
            list(job.include_path),
            tokenizer=p.tokenizer,
            tok_dir=tok_dir,
            need_tokenizer=completions,
        )
        return DataVerdict(tokenizer, check, manifest)

    def preflight(self, cfg: RunConfig, data: DataVerdict) -> Checked:
        """Online, the tokenizer (it may download); then the endpoint."""
        s, p = cfg.settings, cfg.params
        completions = p.model_type == "completions"
        tokenizer = data.tokenizer
        if not self.offline and completions:
            tokenizer = p.tokenizer or cfg.model_name
            if problem := preflight.online_tokenizer_problem(tokenizer, s.online_timeout_s):
                preflight.fail_on_problems(
                    [problem],
                    stage_command(cfg.tasks, s.test_data, p.tokenizer, list(cfg.include_path)),
                )
        if completions and p.apply_chat_template and tokenizer and Path(tokenizer).is_dir():
            preflight.check_chat_template(Path(tokenizer), p.apply_chat_template)
        # The heavy imports run while the test request waits on the network.
        importer = threading.Thread(target=_import_heavy, name="heavy-imports", daemon=True)
        try:
            endpoint = preflight.check_endpoint(
                api_base(cfg.model_url),
                cfg.model_name,
                p.model_type,
                cfg.api_key,
                verify=p.verify_certificate,
                attempts=p.max_retries,
                timeout=p.timeout,
                meanwhile=importer.start,
            )
        finally:  # never exit with an import half done on another thread
            if importer.ident is not None:
                importer.join()
        return Checked(tokenizer, endpoint, data.check, data.manifest)

    def load(self, cfg: RunConfig, resolved: Resolved, checked: Checked) -> Loaded:
        """Each bundle loaded once (then served to lm_eval through the seam), tasks built,
        the model (and with it the tokenizer, once) made."""
        from adapter import harness, seam
        from adapter.metrics import install_metrics
        from adapter.progress import RunProgress

        s, p = cfg.settings, cfg.params
        if checked.check is not None:
            preflight.read_data(
                s.test_data,
                list(cfg.tasks),
                checked.check,
                checked.manifest,
                list(cfg.include_path),
            )
            seam.install(s.test_data, checked.check.data)  # before any task module imports
            # before the task modules import: humaneval's loads code_eval at import
            install_metrics(s.test_data, Path(os.environ["HF_MODULES_CACHE"]))
        settings = model_settings(cfg, checked)
        metadata: dict[str, Any] = {
            "pretrained": cfg.model_name,
            "tokenizer": checked.tokenizer,
            "max_length": settings.max_length,
        } | (p.metadata or {})
        try:
            built = harness.build_tasks(list(cfg.tasks), resolved.resolution.folders, metadata)
        except ImportError as e:
            raise preflight.import_failure(e, list(cfg.tasks)) from None
        preflight.check_tasks(built.tasks, p.model_type, checked.endpoint, p.allow_code_execution)
        progress = RunProgress(built.tasks)
        self.writer.progress = progress.snapshot
        return Loaded(settings, built, make_model(settings, progress), progress)

    # --- evaluate -----------------------------------------------------------------------

    def evaluate(self, cfg: RunConfig, loaded: Loaded) -> list[Evaluated]:
        """One lm_eval run per seed (`repetitions`), each with its own tracker and request
        cache (a cached answer must not stand in for another seed's sample)."""
        from lm_eval.loggers import EvaluationTracker

        from adapter import harness
        from adapter.progress import RunProgress

        s, p = cfg.settings, cfg.params
        cache = loaded.settings.cache_file(s.request_cache_dir(p.cache_dir))
        s.output_dir.mkdir(parents=True, exist_ok=True)
        limit = cfg.num_examples if cfg.num_examples is not None else p.limit
        runs = []
        run_seeds = criteria.seeds(p.seed, p.repetitions)
        for i, seed in enumerate(run_seeds):
            db = cache if len(run_seeds) == 1 else f"{cache}-seed{seed}"
            log.info("request cache %s_rank0.db (a rerun resumes from it)", db)
            if len(run_seeds) > 1:
                log.info("repetition %d of %d: seed %s", i + 1, len(run_seeds), seed)
                # and the sampling seed lm_eval's API model sends with generation requests (one
                # run keeps its 1234, as plain lm_eval's --seed does)
                loaded.model._seed = seed
            # each repetition is a whole job of its own: its progress counts from zero
            progress = loaded.progress if i == 0 else RunProgress(loaded.built.tasks)
            loaded.model.progress = progress
            self.writer.progress = progress.snapshot
            tracker = EvaluationTracker(output_path=str(s.output_dir / "results.json"))
            results = harness.run(
                loaded.model,
                loaded.built,
                cache=db,
                progress=progress,
                limit=limit,
                num_fewshot=p.num_fewshot,
                seed=seed,
                gen_kwargs=p.gen_kwargs,
                # a chat endpoint takes messages: lm_eval builds them only with the template on
                apply_chat_template=p.apply_chat_template or p.model_type == "chat",
                fewshot_as_multiturn=p.fewshot_as_multiturn,
                system_instruction=p.system_instruction,
                log_samples=p.log_samples,
                bootstrap_iters=p.bootstrap_iters,
                allow_code=p.allow_code_execution,
                tracker=tracker,
            )
            runs.append(Evaluated(seed, results, tracker))
        return runs

    # --- publish ------------------------------------------------------------------------

    def publish(
        self, cfg: RunConfig, settings: ModelSettings, runs: list[Evaluated], seconds: float
    ) -> JobResults:
        from adapter import harness
        from adapter.outputs import redact_files
        from common.evalhub_metrics import Metrics, evalhub_metrics, primary_score

        p = cfg.params
        benchmark = str(cfg.data["benchmark_id"])
        per_run: list[tuple[int | None, Metrics, list[str]]] = []
        files: list[Path] = []
        for run in runs:
            written = harness.save(
                run.results, run.tracker, cfg.settings.output_dir, settings, p.log_samples
            )
            redact_files(written)
            files += written
            metrics = evalhub_metrics(run.results, benchmark, list(cfg.tasks))
            per_run.append((run.seed, metrics, [f.name for f in written]))
        # eval-hub-sdk from here on, when nothing needed it before the first request
        events = self.events or self._connect(self._spec(cfg))
        from adapter.events import job_results, primary_definition

        spec = events.spec
        metrics = criteria.mean_metrics([m for _, m, _ in per_run])
        self.status.metrics = metrics
        definition = primary_definition(spec, events.callbacks)
        self.status.primary_score = primary_score(metrics, definition)
        if len(runs) > 1:
            self.status.repetitions = criteria.repetitions_summary(per_run, metrics)
            log.info(
                "%d repetitions (seeds %s): EvalHub gets each metric's mean",
                len(runs),
                ", ".join(str(r.seed) for r in runs),
            )
        self.status.criteria = (
            criteria.evaluate_criteria(
                [r.results for r in runs],
                _main_task(runs[0].results, benchmark, cfg.tasks),
                metrics,
                (p.secondary_metric, p.secondary_threshold),
                (p.blocking_subtask, p.blocking_subtask_threshold),
                definition,
            )
            or None
        )
        for item in self.status.criteria or []:
            log.warning("%s", criteria.criteria_line(item))
        artifacts = self.status.collection_artifacts()
        if artifacts:
            summary_file = cfg.settings.output_dir / "criteria.json"
            atomic_write(summary_file, json.dumps(artifacts, indent=1))
            files.append(summary_file)
        self.files = files
        return job_results(
            spec,
            metrics,
            self.status.primary_score,
            harness.examples_evaluated(runs[0].results),
            seconds,
            {
                "results_files": [f.name for f in files],
                "lm_eval_version": runs[0].results.get("lm_eval_version") or _version("lm_eval"),
                # the SDK sends these as the event's artifacts: EvalHub's job view shows them
                **({"artifacts": artifacts} if artifacts else {}),
            },
        )


def _main_task(results: dict[str, Any], benchmark: str, tasks: tuple[str, ...]) -> str:
    """The lm_eval name standing for the benchmark (as common.evalhub_metrics picks it)."""
    known = results.get("results", {}).keys() | (results.get("group_subtasks") or {}).keys()
    return benchmark if benchmark in known else tasks[0]


def model_settings(cfg: RunConfig, checked: Checked) -> ModelSettings:
    """The lm_eval API model's settings, from the spec and what the endpoint advertises."""
    from adapter import harness

    p = cfg.params
    return harness.ModelSettings(
        name=cfg.model_name,
        url=endpoint_url(cfg.model_url, p.model_type),
        model_type=p.model_type,
        tokenizer=checked.tokenizer,
        max_length=harness.resolve_max_length(
            p.max_length, checked.endpoint.max_model_len, p.model_type
        ),
        num_concurrent=p.num_concurrent and min(p.num_concurrent, MAX_CONCURRENT),
        # The env's ceiling beats the spec's, as every env setting does (an operator's guard
        # for a shared server).
        max_concurrent=min(
            cfg.settings.max_concurrent or p.max_concurrent or MAX_CONCURRENT, MAX_CONCURRENT
        ),
        max_retries=p.max_retries,
        timeout=p.timeout,
        batch_size=p.batch_size,
        max_gen_toks=p.max_gen_toks,
        verify_certificate=p.verify_certificate,
    )


def make_model(settings: ModelSettings, progress: RunProgress) -> Any:
    """The lm_eval model (it loads the tokenizer: the one load of it in a run)."""
    from adapter import harness

    try:
        return harness.make_lm(settings, progress)
    except Exception as e:  # transformers raises OSError, ValueError, AttributeError, ...
        if settings.tokenizer is None:
            raise
        raise MissingDataError(
            f"tokenizer {settings.tokenizer} does not load with this image's transformers: "
            f"{type(e).__name__}: {str(e)[:300]}",
            "re-stage the tokenizer (airgap-eval stage --tokenizer ...) with the transformers "
            "major of the adapter image",
        ) from None


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def build_task_index(path: Path | None) -> int:
    path = path or default_index_path()
    index = build_index()
    write_index(path, index)
    log.info("task index: %d names -> %s", len(index["entries"]), path)
    return 0
