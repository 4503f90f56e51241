"""`airgap-eval SUBCOMMAND ...`: a thin dispatcher. Only the chosen subcommand's module is
imported, so `sync` and `upload` never pay for (or need) lm_eval, and `run` can set the HF
offline env before anything imports `datasets`."""

from __future__ import annotations

import importlib
import sys

from airgap_eval import __version__

# name -> ("module" whose `main(argv, prog) -> int` runs it, or "module:function"; one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sync": ("initcontainer.cli", "sync an S3 prefix into /test_data (init container)"),
    "run": ("adapter.cli", "run an lm_eval job offline from /test_data (adapter)"),
    "upload": ("sidecar.cli", "upload results, logs and status to S3 (sidecar)"),
    "stage": ("staging.cli:stage_main", "stage datasets + tokenizer for tasks (connected machine)"),
    "verify": ("staging.cli:verify_main", "prove a staged tree covers a job"),
    "slugs": ("staging.cli:slugs_main", "print the slugs (bundle dirs) tasks need"),
    "demo": ("testbed.demo", "the whole pod locally: SeaweedFS, vLLM, sync -> run -> upload"),
}


def _usage() -> str:
    lines = [f"airgap-eval {__version__}", "", "usage: airgap-eval COMMAND [options]", ""]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`airgap-eval COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"airgap-eval: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, _, function = COMMANDS[name][0].partition(":")
    entry = getattr(importlib.import_module(module), function or "main")
    return int(entry(rest, prog=f"airgap-eval {name}"))


if __name__ == "__main__":
    sys.exit(main())
