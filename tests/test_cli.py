"""The dispatcher on a base install (`pip install airgap-eval`, what the init image carries):
a command whose extra is missing ends with one CONFIG line naming the extra, not a traceback.

The base install is real: a fresh venv holding exactly the distributions pyproject.toml's base
dependencies pull in (linked from this venv, as pip would have installed them) and our image
packages, as the wheel lists them.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from airgap_eval.cli import ADAPTER_MODULES, NEEDS

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ADAPTER_COMMANDS = [c for c, (extra, _) in NEEDS.items() if extra == "adapter"]


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


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base-install")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next(root.glob("lib/python3*/site-packages"))
    for name in _closure(PYPROJECT["project"]["dependencies"]):
        _link_distribution(name, site)
    ours = root / "src"
    ours.mkdir()
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        pkg = pattern.rstrip("*")
        if (REPO / pkg).is_dir():
            (ours / pkg).symlink_to(REPO / pkg)
    (site / "airgap_eval_src.pth").write_text(f"{ours}\n")
    return root / "bin" / "python"


def _cli(python: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [str(python), "-m", "airgap_eval", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",  # not the repo: its testbed/ must not be importable from the cwd
    )
    return proc, time.monotonic() - start


def test_the_base_install_really_lacks_the_adapter_extra_and_runs_sync(base_python: Path) -> None:
    probe = "import importlib.util as u; print(u.find_spec('lm_eval'), u.find_spec('boto3'))"
    out = subprocess.run([str(base_python), "-c", probe], capture_output=True, text=True)
    assert out.stdout.startswith("None ModuleSpec"), out
    proc, _ = _cli(base_python, "sync", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--dest" in proc.stdout


@pytest.mark.parametrize("command", ADAPTER_COMMANDS)
def test_an_adapter_command_on_the_base_install_is_one_config_line(
    base_python: Path, command: str
) -> None:
    proc, seconds = _cli(base_python, command, "--help")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"[CONFIG] airgap-eval {command} needs the adapter extra")
    assert "lm_eval" in lines[0]
    assert 'pip install "airgap-eval[adapter]"' in lines[0] and "adapter image" in lines[0]
    assert seconds < 5
    print(f"{command}: exit {proc.returncode} in {seconds:.2f} s: {lines[0]}")


def test_the_modules_checked_are_the_adapter_extras(tmp_path: Path) -> None:
    """Each distribution of the adapter extra has a module in ADAPTER_MODULES, and each
    module comes from that extra: the table cannot drift from pyproject.toml."""
    extra = PYPROJECT["project"]["optional-dependencies"]["adapter"]
    pulled = _closure(extra)
    owners = md.packages_distributions()
    for module in ADAPTER_MODULES:
        dists = set(owners.get(module.split(".")[0], []))
        assert dists & pulled, f"{module} is not installed by the adapter extra"
    covered = {d for m in ADAPTER_MODULES for d in owners.get(m.split(".")[0], [])}
    direct = {md.distribution(Requirement(r).name).metadata["Name"] for r in extra}
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
