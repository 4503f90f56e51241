"""Our own pyproject.toml builds without warnings (setuptools printed a `project.license`
deprecation block three times per install), with the license as an SPDX expression."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "SetuptoolsDeprecationWarning" not in output
    assert "project.license" not in output
    (wheel,) = tmp_path.glob("airgap_eval-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        assert "License-Expression: Apache-2.0" in zf.read(metadata).decode()
        # the demo's and the tests' local servers are the repo's, not the product's
        assert not [n for n in zf.namelist() if n.startswith("testbed/")]
