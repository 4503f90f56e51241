"""Size of each image and what fills it, and (with --build) how long deploy/podman/setup.sh
takes to build them as the cache stands: cold on a fresh machine, warm after a first build.

Sizes are podman's (uncompressed, the base included). The base line is the local debootstrap
base the images build on here; python:3.11-slim weighs about the same (~125-180 MB). The
adapter's site-packages are listed by weight: the budget is lm_eval's own dependencies.
Nothing here is asserted: a size is a fact to watch, not a test.

    python bench/image_sizes.py [--build] [--top 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "deploy" / "podman" / "setup.sh"
IMAGES = {
    "initcontainer": "airgap-eval-init",
    "sidecar": "airgap-eval-sidecar",
    "adapter": "airgap-eval-adapter",
}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SITE = "/opt/airgap-eval/lib/python3.11/site-packages"


def podman_env() -> dict[str, str]:
    out = subprocess.run([str(SETUP), "--env"], capture_output=True, text=True, check=True).stdout
    pairs = (line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    return os.environ | dict(pairs)


def podman(*args: str) -> str:
    proc = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"podman {' '.join(args)}: {proc.stderr.strip()} (run {SETUP.relative_to(REPO)})")
    return proc.stdout


def size_mb(image: str) -> float:
    return float(json.loads(podman("image", "inspect", image))[0]["Size"]) / 1e6


def heaviest(image: str, top: int) -> list[tuple[int, str]]:
    out = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image,
                 "-c", f"du -sk {SITE}/*")  # fmt: skip
    rows = []
    for line in out.splitlines():
        kb, _, path = line.partition("\t")
        rows.append((int(kb), path.rsplit("/", 1)[-1]))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="store_true", help="time deploy/podman/setup.sh first")
    ap.add_argument("--top", type=int, default=8, help="adapter packages listed (8)")
    args = ap.parse_args()
    if args.build:
        start = time.monotonic()
        proc = subprocess.run([str(SETUP)], capture_output=True, text=True)
        print(proc.stdout, end="")
        if proc.returncode:
            sys.exit(proc.stderr)
        print(f"setup.sh: {time.monotonic() - start:.0f} s\n")
    base = next(
        line
        for line in podman("images", "--format", "{{.Repository}}:{{.Tag}}").split()
        if line.startswith("localhost/airgap-eval-base:")
    )
    base_mb = size_mb(base)
    print(f"{'image':<46} {'MB':>6} {'over base':>10}")
    print(f"{base:<46} {base_mb:>6.0f} {'':>10}")
    for repo in IMAGES.values():
        image = f"localhost/{repo}:{VERSION}"
        mb = size_mb(image)
        print(f"{image:<46} {mb:>6.0f} {mb - base_mb:>10.0f}")
    adapter = f"localhost/{IMAGES['adapter']}:{VERSION}"
    print(f"\nheaviest in the adapter's {SITE}:")
    for kb, name in heaviest(adapter, args.top):
        print(f"  {kb / 1024:>6.0f} MB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
