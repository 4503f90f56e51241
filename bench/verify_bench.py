#!/usr/bin/env python3
"""verify of a 100-bundle tree (hashing included) vs `sha256sum` over the same files.

Builds N bundles (`DatasetDict.save_to_disk`, train + test) for N custom task YAMLs, writes
manifest.json, then measures, in this one run, best of --repeat with a warm page cache:
  - sha256sum over every file verify hashes (one process, all files as arguments);
  - verify() in-process (libraries already imported: the adapter preflight's situation);
  - `airgap-eval verify` as a fresh process (imports datasets + lm_eval's task loader).
Prints each time and its ratio to sha256sum (target: <= 2x).

    python bench/verify_bench.py [--bundles 100] [--mb-per-bundle 4] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_tree(root: Path, n: int, mb: float) -> tuple[Path, list[str]]:
    import datasets

    from common.layout import MANIFEST_NAME
    from common.manifest import build_manifest
    from staging.stage import library_versions
    from tasks.slugs import slug

    tasks_dir, data = root / "tasks", root / "test_data"
    tasks_dir.mkdir(parents=True)
    rng = random.Random(0)
    row_chars = 200
    rows = max(1, int(mb * 1e6 / row_chars))
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(5000)]
    text = [" ".join(rng.choices(words, k=row_chars // 6)) for _ in range(rows)]
    names = []
    for i in range(n):
        name, path = f"vb_{i:03d}", f"bench-org/ds_{i:03d}"
        (tasks_dir / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: {path}\ntraining_split: train\ntest_split: test\n"
            'output_type: multiple_choice\ndoc_to_text: "{{q}}"\ndoc_to_choice: ["a", "b"]\n'
            "doc_to_target: 0\nmetric_list:\n  - metric: acc\n"
        )
        cut = rows * 4 // 5
        rotated = text[i % rows :] + text[: i % rows]  # distinct content per bundle
        dd = datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict({"q": rotated[:cut]}),
                "test": datasets.Dataset.from_dict({"q": rotated[cut:]}),
            }
        )
        dd.save_to_disk(str(data / slug(path)))
        names.append(name)
    manifest = build_manifest(
        data, versions=library_versions(), tasks={t: [slug(f"bench-org/ds_{t[3:]}")] for t in names}
    )
    manifest.dump(data / MANIFEST_NAME)
    return tasks_dir, names


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=int, default=100)
    ap.add_argument("--mb-per-bundle", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="build the tree here and keep it")
    args = ap.parse_args()

    import datasets

    datasets.disable_progress_bars()
    from common.layout import MANIFEST_NAME
    from common.manifest import Manifest
    from staging.verify import verify

    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        tasks_dir, names = build_tree(root, args.bundles, args.mb_per_bundle)
        data = root / "test_data"
        files = [str(data / n) for n in Manifest.load(data / MANIFEST_NAME).files]
        size = sum(os.path.getsize(f) for f in files)
        print(
            f"tree: {args.bundles} bundles, {len(files)} files, {size / 1e6:.0f} MB "
            f"(built in {time.perf_counter() - t0:.1f} s); cpus: {os.cpu_count()}"
        )

        def shasum() -> None:
            subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)

        def in_process() -> None:
            report = verify(data, names, include_path=[tasks_dir])
            assert report.ok, report.table()

        env = os.environ | {"PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "airgap_eval.cli", "verify", str(data), "--tasks", *names]
        cmd += ["--include-path", str(tasks_dir), "--status", str(root / "status.json")]

        def cli() -> None:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)

        shasum()  # warm the page cache (and the task-index cache) for every contender
        in_process()
        base = best(shasum, args.repeat)
        t_in = best(in_process, args.repeat)
        t_cli = best(cli, args.repeat)
        print(f"sha256sum             {base:7.2f} s  (1.00x)  {size / 1e6 / base:.0f} MB/s")
        print(f"verify() in-process   {t_in:7.2f} s  ({t_in / base:.2f}x)  target <= 2x")
        print(f"airgap-eval verify    {t_cli:7.2f} s  ({t_cli / base:.2f}x)  fresh process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
