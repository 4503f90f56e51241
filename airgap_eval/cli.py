"""`airgap-eval SUBCOMMAND ...`: a thin dispatcher. Only the chosen subcommand's module is
imported, so `sync` and `upload` never pay for (or need) lm_eval, and `run` can set the HF
offline env before anything imports `datasets`. A command whose extra is not installed ends
with one CONFIG line naming it (exit 2), before anything is imported."""

from __future__ import annotations

import importlib
import importlib.util
import sys

from airgap_eval import __version__
from common.errors import ConfigError

# name -> ("module" whose `main(argv, prog) -> int` runs it, or "module:function"; one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sync": ("initcontainer.cli", "sync an S3 prefix into /test_data (init container)"),
    "run": ("adapter.cli", "run an lm_eval job offline from /test_data (adapter)"),
    "upload": ("sidecar.cli", "upload results, logs and status to S3 (sidecar)"),
    "stage": ("staging.cli:stage_main", "stage datasets + tokenizer for tasks (connected machine)"),
    "verify": ("staging.cli:verify_main", "prove a staged tree covers a job"),
    "slugs": ("staging.cli:slugs_main", "print the slugs (bundle dirs) tasks need"),
}


# What a command needs beyond the base install (what the init image carries), checked before
# its module is imported (also for --help: a command is usable or it is not): a missing extra is one CONFIG line, not a ModuleNotFoundError.
# Modules, not distributions: find_spec costs ~0.1 ms, importlib.metadata ~0.2 s of start-up.
# tests/test_cli.py checks these against pyproject.toml's extras.
# eval-hub-sdk[adapter]: evalhub.adapter imports these (the sidecar's callbacks, OCI export)
SIDECAR_MODULES = ("httpx", "oras", "olot", "opentelemetry.sdk")
ADAPTER_MODULES = ("lm_eval", "datasets", "transformers", "orjson", *SIDECAR_MODULES)
NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "upload": ("sidecar", SIDECAR_MODULES),
    "run": ("adapter", ADAPTER_MODULES),
    "stage": ("adapter", ADAPTER_MODULES),
    "verify": ("adapter", ADAPTER_MODULES),
    "slugs": ("adapter", ADAPTER_MODULES),
}
_INSTALL_HINT = {
    "sidecar": 'pip install "airgap-eval[sidecar]", or use the sidecar image '
    "(airgap-eval-sidecar: `docker build --target sidecar`)",
    "adapter": 'pip install "airgap-eval[adapter]", or use the adapter image '
    "(airgap-eval-adapter: `docker build --target adapter`)",
}


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a missing parent package, or a None in sys.modules
        return True


def missing_extra(command: str) -> ConfigError | None:
    """The CONFIG error to end with when `command` cannot run on this install, else None."""
    if command not in NEEDS:
        return None
    extra, modules = NEEDS[command]
    absent = [m for m in modules if _missing(m)]
    if not absent:
        return None
    return ConfigError(
        f"airgap-eval {command} needs the {extra} extra, which this install lacks "
        f"(no module {', '.join(absent)})",
        _INSTALL_HINT[extra],
    )


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
    if error := missing_extra(name):
        print(error.one_line(), file=sys.stderr)
        return int(error.exit_code)
    module, _, function = COMMANDS[name][0].partition(":")
    entry = getattr(importlib.import_module(module), function or "main")
    return int(entry(rest, prog=f"airgap-eval {name}"))


if __name__ == "__main__":
    sys.exit(main())
