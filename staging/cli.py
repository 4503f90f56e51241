"""`airgap-eval stage | verify | slugs`: thin CLIs over staging.stage and staging.verify."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.entry import run_guarded
from common.errors import ConfigError, IntegrityError, MissingDataError
from common.layout import STATE_DIR_NAME, STATUS_NAME
from common.logs import setup_logging
from common.network import STEP_TIMEOUT_S, TIMEOUT_ENV, network_timeout
from common.status import StatusRecord
from tasks.index import load_index, resolve_tasks, unknown_tasks_error
from tasks.plan import TaskPlan, plan_tasks

log = logging.getLogger(__name__)

# The suites docs/dataset-mapping.md covers (`slugs --mapping-doc`).
MAPPING_SUITES = (
    "leaderboard",
    "mmlu",
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "winogrande",
    "gsm8k",
    "truthfulqa",
    "blimp",
    "ifeval",
)
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_CUSTOM = "pass --include-path DIR"  # how these commands take custom task YAMLs


def _task_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
    if positional:
        p.add_argument("tasks", nargs="*", metavar="TASK", help="lm_eval tasks, groups or tags")
    p.add_argument("--from-file", type=Path, help="more task names, one a line (# comments)")
    p.add_argument(
        "--include-path",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of custom task YAMLs (repeatable), as lm_eval's --include_path",
    )


def _tasks(args: argparse.Namespace) -> list[str]:
    names = list(args.tasks or [])
    if args.from_file:
        try:
            lines = args.from_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(
                f"cannot read --from-file {args.from_file}: {e}", "fix the path"
            ) from e
        names += [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
    for name in names:  # `a,b` is lm_eval's own syntax for several tasks
        if "," in name:
            names = [n for item in names for n in item.split(",") if n]
            break
    if not names:
        raise ConfigError("no task given", "name tasks or groups, or pass --from-file tasks.txt")
    return list(dict.fromkeys(names))


def _guard(component: str, fn: Callable[[StatusRecord], None], status_path: Path | None) -> int:
    status = StatusRecord(component=component)
    return run_guarded(lambda: fn(status), status, status_path)


# --- stage --------------------------------------------------------------------------------


def _stage_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Stage the datasets, tokenizer and nltk data of lm_eval tasks into DIR "
        "(a connected machine), write manifest.json, optionally upload the tree to S3.",
    )
    _task_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the tree to write")
    p.add_argument(
        "--tokenizer",
        metavar="HF_ID_OR_DIR",
        help="tokenizer of the evaluated model (default: the one staged before in DIR)",
    )
    p.add_argument("--upload", metavar="S3_URI", help="then push DIR to s3://BUCKET/PREFIX")
    p.add_argument("--endpoint", help="S3 endpoint URL for --upload (else AWS_S3_ENDPOINT)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="read datasets and tokenizer from the local HF cache only (HF_*_OFFLINE=1)",
    )
    p.add_argument(
        "--network-timeout",
        type=float,
        metavar="SECONDS",
        help="give up an item (dataset, tokenizer, nltk data) after this long without download "
        f"progress; a Hub that cannot be reached fails at once (default ${TIMEOUT_ENV} or "
        f"{STEP_TIMEOUT_S:.0f})",
    )
    p.add_argument("--status", type=Path, help="status record path (default DIR/.airgap-eval/)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def stage_main(argv: list[str], prog: str = "airgap-eval stage") -> int:
    args = _stage_parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    if args.offline:  # before datasets/transformers are imported
        os.environ.update(dict.fromkeys(_OFFLINE_ENV, "1"))

    def go(status: StatusRecord) -> None:
        from staging.stage import stage

        upload = args.upload
        if upload and args.endpoint:
            os.environ["AWS_S3_ENDPOINT"] = args.endpoint
        result = stage(
            _tasks(args),
            args.tokenizer,
            args.out,
            include_path=args.include_path,
            upload=upload,
            network_timeout=network_timeout(args.network_timeout),
        )
        status.progress = {
            "written": result.written,
            "skipped": result.skipped,
            "tasks": len(result.manifest.tasks),
            "files": len(result.manifest.files),
        }
        print(
            f"staged {len(result.manifest.tasks)} tasks into {args.out}: "
            f"{len(result.written)} dirs written, {len(result.skipped)} unchanged"
        )

    status_path = args.status or args.out / STATE_DIR_NAME / f"stage-{STATUS_NAME}"
    return _guard("stage", go, status_path)


# --- verify -------------------------------------------------------------------------------


def _verify_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Check, offline, that DIR holds readable, intact data for the tasks.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="the staged tree (e.g. /test_data)")
    p.add_argument("--tasks", nargs="+", default=[], metavar="TASK", help="tasks, groups or tags")
    _task_args(p, positional=False)
    p.add_argument("--tokenizer", help="tokenizer dir to check (default DIR/tokenizer)")
    p.add_argument("--no-hashes", action="store_true", help="skip the sha256 check")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--status", type=Path, help="status record path (default DIR/.airgap-eval/)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def verify_main(argv: list[str], prog: str = "airgap-eval verify") -> int:
    args = _verify_parser(prog).parse_args(argv)
    args.tasks = args.tasks or []
    setup_logging(args.verbose)
    os.environ.update(dict.fromkeys(_OFFLINE_ENV, "1"))  # verify never needs the network

    def go(status: StatusRecord) -> None:
        from staging.verify import verify

        if not args.dir.is_dir():
            raise MissingDataError(f"{args.dir} is not a directory", "pass the staged tree")
        report = verify(
            args.dir,
            _tasks(args),
            tokenizer=args.tokenizer,
            check_hashes=not args.no_hashes,
            include_path=args.include_path,
        )
        if args.json:
            print(json.dumps(_report_json(report), indent=1))
        else:
            print(report.table())
        status.progress = {"items": len(report.items), "problems": len(report.problems)}
        if report.ok:
            return
        summary = ", ".join(f"{i.task} ({i.status})" for i in report.problems[:10])
        more = len(report.problems) - 10
        summary += f" and {more} more" if more > 0 else ""
        hint = f"on a connected machine run: {report.fix_command}, then upload and sync again"
        if report.worst() == "mismatch":
            raise IntegrityError(f"files differ from the manifest: {summary}", hint)
        raise MissingDataError(f"staged data does not cover the job: {summary}", hint)

    status_path = args.status or args.dir / STATE_DIR_NAME / f"verify-{STATUS_NAME}"
    return _guard("verify", go, status_path)


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "items": [vars(i) for i in report.items],
        "fix_command": report.fix_command,
    }


# --- slugs --------------------------------------------------------------------------------


def _slugs_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Print the slugs (bundle dirs) tasks need.")
    _task_args(p)
    p.add_argument("--markdown", action="store_true", help="a table task -> dataset -> slug")
    p.add_argument(
        "--mapping-doc",
        action="store_true",
        help="print docs/dataset-mapping.md for the common suites",
    )
    return p


def _plan(tasks: list[str], index: dict[str, Any]) -> TaskPlan:
    return plan_tasks(resolve_tasks(tasks, index), index)


def mapping_table(tasks: list[str], index: dict[str, Any]) -> tuple[list[str], int]:
    """Markdown rows (task, dataset_path, dataset_name, data_files, slug, alias) and the
    number of distinct bundles."""
    from tasks.slugs import candidates

    plan = _plan(tasks, index)
    if plan.unknown:
        raise unknown_tasks_error(plan.unknown, index, _CUSTOM)
    rows = [
        "| task | dataset_path | dataset_name | data_files | slug | legacy alias |",
        "|---|---|---|---|---|---|",
    ]
    lines: list[tuple[str, str]] = []
    for b in plan.bundles.values():
        files = b.dataset_kwargs.get("data_files")
        alias = candidates(b.dataset_path, b.dataset_name, files)[1:]
        cells = [
            b.dataset_path,
            b.dataset_name or "",
            f"`{json.dumps(files, sort_keys=True)}`" if files else "",
            f"`{b.slug}`",
            f"`{alias[0]}`" if alias else "",
        ]
        lines += [(t, f"| {t} | " + " | ".join(cells) + " |") for t in b.tasks]
    lines += [(t, f"| {t} | ? | | | (unresolved: {why}) | |") for t, why in plan.unresolved.items()]
    return rows + [line for _, line in sorted(lines)], len(plan.bundles)


def mapping_doc(index: dict[str, Any]) -> str:
    from importlib.metadata import version

    out = [
        "# Dataset mapping: lm_eval task -> bundle dir (slug)",
        "",
        "<!-- generated by `airgap-eval slugs --mapping-doc > docs/dataset-mapping.md`; "
        "do not edit by hand -->",
        "",
        f"Generated from the task configs of lm_eval {version('lm_eval')}. A bundle is a "
        "`DatasetDict.save_to_disk` dir under /test_data named by its slug: `dataset_path` "
        "with `/` -> `--`, plus `--<dataset_name>` when set, plus `--files-<8 hex>` when the "
        "task passes `data_files`. The legacy alias (the slug without its `org--` prefix) is "
        "accepted too. `airgap-eval stage` writes these dirs; `airgap-eval slugs TASK...` "
        "prints them for any task.",
        "",
    ]
    for suite in MAPPING_SUITES:
        rows, n = mapping_table([suite], index)
        leaves = len(rows) - 2
        out += [f"## {suite}", "", f"{leaves} task(s), {n} bundle(s).", "", *rows, ""]
    return "\n".join(out)


def slugs_main(argv: list[str], prog: str = "airgap-eval slugs") -> int:
    args = _slugs_parser(prog).parse_args(argv)
    setup_logging()

    def go(status: StatusRecord) -> None:
        index = load_index(None, args.include_path)
        if args.mapping_doc:
            sys.stdout.write(mapping_doc(index))
            return
        tasks = _tasks(args)
        if args.markdown:
            print("\n".join(mapping_table(tasks, index)[0]))
            return
        plan = _plan(tasks, index)
        if plan.unknown:
            raise unknown_tasks_error(plan.unknown, index, _CUSTOM)
        for s in plan.bundles:
            print(s)
        for t, why in plan.unresolved.items():
            print(f"# {t}: dataset unknown ({why})", file=sys.stderr)

    return _guard("slugs", go, None)
