"""The dispatcher on a base install (`pip install airgap-eval`, what the init image carries):
each command's real path (not only --help) either runs (sync) or ends with one CONFIG line
naming its extra, never a traceback; the sidecar's install (base + sidecar extra) runs upload.

The base install is real: a fresh venv holding exactly the distributions pyproject.toml's base
dependencies pull in (linked from this venv, as pip would have installed them) and our image
packages, as the wheel lists them.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from airgap_eval.cli import ADAPTER_MODULES, NEEDS, SIDECAR_MODULES
from common.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _closure(requirements: list[str], extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution these requirements pull in (markers evaluated here)."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, from_extras = todo.pop()
        env_ok = not req.marker or any(
            req.marker.evaluate({"extra": e}) for e in (from_extras or {""})
        )
        if not env_ok:
            continue
        dist = md.distribution(req.name)
        key = f"{dist.metadata['Name']}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return {k.split("[")[0] for k in seen}


def _link_distribution(name: str, site: Path) -> None:
    dist = md.distribution(name)
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in tops:
        src = Path(str(dist.locate_file(top)))
        if src.exists() and not (site / top).exists():
            (site / top).symlink_to(src)


def _install(root: Path, extras: list[str]) -> Path:
    """A venv holding exactly what pip would install for the base dependencies plus
    `extras`, and our image packages (never testbed/)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next(root.glob("lib/python3*/site-packages"))
    optional = PYPROJECT["project"]["optional-dependencies"]
    wanted = PYPROJECT["project"]["dependencies"] + [r for e in extras for r in optional[e]]
    for name in _closure(wanted):
        _link_distribution(name, site)
    ours = root / "src"
    ours.mkdir()
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        pkg = pattern.rstrip("*")
        if (REPO / pkg).is_dir():
            (ours / pkg).symlink_to(REPO / pkg)
    (site / "airgap_eval_src.pth").write_text(f"{ours}\n")
    return root / "bin" / "python"


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(tmp_path_factory.mktemp("base-install"), [])


@pytest.fixture(scope="module")
def sidecar_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the sidecar image carries: the base install and the sidecar extra."""
    return _install(tmp_path_factory.mktemp("sidecar-install"), ["sidecar"])


def _cli(
    python: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [str(python), "-m", "airgap_eval", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",  # not the repo: its testbed/ must not be importable from the cwd
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "AIRGAP_EVAL_")) and k != "PYTHONPATH"
        }
        | (env or {}),
    )
    return proc, time.monotonic() - start


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _final(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr, proc
    found = re.search(r"\[[A-Z_]+\] .*", proc.stderr.strip().splitlines()[-1])
    assert found, proc.stderr
    return found.group(0)


S3_KEYS = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_DEFAULT_REGION": "x"}


def test_the_base_install_really_lacks_the_extras_and_syncs(
    base_python: Path, tmp_path: Path
) -> None:
    probe = "import importlib.util as u; print(u.find_spec('lm_eval'), u.find_spec('httpx'))"
    out = subprocess.run([str(base_python), "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "None None", out
    # sync's real path: it gets as far as the S3 endpoint (nothing listens there)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    args = ["--bucket", "evals", "--prefix", "p", "--dest", str(tmp_path / "d")]
    proc, seconds = _cli(
        base_python, "sync", *args, "--endpoint", endpoint, "--timeout", "20", env=S3_KEYS
    )
    line = _final(proc)
    assert proc.returncode == ExitCode.UNREACHABLE and line.startswith("[UNREACHABLE]"), line
    assert (tmp_path / "d" / ".airgap-eval" / "sync-status.json").is_file()
    print(f"sync: exit {proc.returncode} in {seconds:.2f} s: {line}")


def _real_args(command: str, tmp: Path) -> list[str]:
    """Each command as a user runs it, not --help."""
    return {
        "run": ["--tasks", "arc_easy", "--model-url", "http://127.0.0.1:9/v1",
                "--test-data", str(tmp), "--output-dir", str(tmp / "out")],
        "stage": ["arc_easy", "--tokenizer", "gpt2", "--out", str(tmp / "staged")],
        "verify": [str(tmp), "--tasks", "arc_easy"],
        "slugs": ["arc_easy"],
        "upload": ["--once", "--results-dir", str(tmp), "--dest", "s3://evals/results"],
    }[command]  # fmt: skip


@pytest.mark.parametrize("command", list(NEEDS))
def test_a_command_whose_extra_is_missing_names_it(
    base_python: Path, command: str, tmp_path: Path
) -> None:
    extra = NEEDS[command][0]
    for args in (_real_args(command, tmp_path), ["--help"]):
        proc, seconds = _cli(base_python, command, *args)
        assert proc.returncode == 2
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"[CONFIG] airgap-eval {command} needs the {extra} extra")
        assert f'pip install "airgap-eval[{extra}]"' in lines[0]
        assert f"{extra} image" in lines[0] and f"--target {extra}" in lines[0]
        assert seconds < 5
    print(f"{command}: exit {proc.returncode} in {seconds:.2f} s: {lines[0]}")


def test_upload_runs_on_the_sidecar_install(sidecar_python: Path, tmp_path: Path) -> None:
    """The sidecar image's install (base + sidecar extra) runs upload's real path: it gets as
    far as the S3 endpoint."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.json").write_text("{}")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    args = ["--once", "--results-dir", str(results), "--dest", "s3://evals/results"]
    args += ["--job-id", "j", "--benchmark-id", "b", "--endpoint", endpoint, "--deadline", "5"]
    proc, seconds = _cli(sidecar_python, "upload", *args, env=S3_KEYS)
    line = _final(proc)
    assert proc.returncode == ExitCode.UPLOAD and line.startswith("[UPLOAD]"), proc.stderr
    assert "extra" not in line
    print(f"upload (sidecar install): exit {proc.returncode} in {seconds:.2f} s: {line}")


@pytest.mark.parametrize("extra", ["adapter", "sidecar"])
def test_the_modules_checked_are_the_extras(extra: str) -> None:
    """Each distribution of the extra has a module in its list, and each module comes from
    that extra: the table cannot drift from pyproject.toml."""
    modules = {"adapter": ADAPTER_MODULES, "sidecar": SIDECAR_MODULES}[extra]
    requirements = PYPROJECT["project"]["optional-dependencies"][extra]
    pulled = _closure(requirements)
    owners = md.packages_distributions()
    for module in modules:
        dists = set(owners.get(module.split(".")[0], []))
        assert dists & pulled, f"{module} is not installed by the {extra} extra"
    covered = {d for m in modules for d in owners.get(m.split(".")[0], [])}
    direct = {md.distribution(Requirement(r).name).metadata["Name"] for r in requirements}
    assert direct - {"eval-hub-sdk"} <= covered, direct - covered


def test_with_the_extra_installed_the_command_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airgap_eval", "slugs", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "[CONFIG]" not in proc.stderr


def _make_dry_run(*targets: str) -> str:
    proc = subprocess.run(
        ["make", "-n", "-B", *targets], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_says_what_it_installs_and_shows_pip() -> None:
    out = _make_dry_run("setup", "setup-vllm")
    installs = [ln for ln in out.splitlines() if " install " in ln and "--upgrade pip" not in ln]
    assert len(installs) >= 4 and not [ln for ln in installs if " -q" in ln], installs
    said = [ln for ln in out.splitlines() if ln.startswith("echo")]
    assert any(".venv:" in ln for ln in said) and any(".venv-vllm:" in ln for ln in said)
    assert sum("min" in ln for ln in said) >= 2  # how long it usually takes


def test_make_bench_runs_every_bench_script_with_the_venv_python() -> None:
    out = _make_dry_run("bench")
    loop = next(ln for ln in out.splitlines() if "for b in" in ln)
    listed = set(loop.split("for b in", 1)[1].split(";", 1)[0].split())
    assert listed == {p.name.removesuffix("_bench.py") for p in (REPO / "bench").glob("*_bench.py")}
    assert ".venv/bin/python bench/${b}_bench.py" in out
