"""Throughput of corpus enhancement with 1, 2... processes (issue 19).

Enhances a folder with ``speechbrain-elbo-enhance`` once per process count
(``python -m speechbrain_elbo`` for one process, ``torchrun --standalone
--nproc_per_node=N -m speechbrain_elbo`` for N), each run from scratch into
its own output folder, and prints for each

- the files and the seconds of audio enhanced (from the merged manifest),
- the wall time of the whole command (Python start-up and model loading
  included), and the throughput in **hours of audio per hour** of wall time,
- the throughput of the enhancement alone (audio over the slowest rank's
  summed per-file times in the manifest),

then whether the outputs of all runs are byte-identical, the machine (CPU
cores, load average before and after, torch) and the command to repeat it.
The defaults enhance the MiniVB test set (``make demo`` builds it) with the
bundled model and its default sampler, on the CPU with one thread per
process.

Usage (from the repository root; the measured numbers are in
docs/inference.md)::

    .venv/bin/python bench/corpus_throughput.py
    .venv/bin/python bench/corpus_throughput.py --data FOLDER \\
        --processes 1 2 4 --device cuda -- --steps 8
"""

import argparse
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechbrain_elbo.corpus import read_manifest  # noqa: E402

DEFAULT_DATA = "results/demo_data/minivb-test/noisy_testset_wav"


def command(processes, data, out, device, extra):
    """The enhancement command for ``processes`` processes."""
    if processes == 1:
        launch = [sys.executable, "-m", "speechbrain_elbo"]
    else:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "speechbrain_elbo",
        ]
    return [
        *launch,
        str(data),
        "--out",
        str(out),
        "--model",
        "minivb-small",
        "--device",
        device,
        "--quiet",
        *extra,
    ]


def run(processes, data, out, device, threads, extra):
    """One run from scratch; its measurements."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run(
        command(processes, data, out, device, extra),
        cwd=ROOT,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - start
    rows = read_manifest(out / "manifest.csv")
    statuses = {row["status"] for row in rows}
    if statuses != {"enhanced"}:
        raise SystemExit(f"{out}: statuses {statuses}, expected enhanced")
    audio = sum(float(row["duration"]) for row in rows)
    per_rank = {}
    for row in rows:
        rank = row["rank"]
        per_rank[rank] = per_rank.get(rank, 0.0) + float(row["seconds"])
    return {
        "processes": processes,
        "files": len(rows),
        "audio": audio,
        "wall": wall,
        "busiest": max(per_rank.values()),
        "ranks": len(per_rank),
    }


def identical(folders):
    """Whether every output has the same bytes in all ``folders``."""
    first = folders[0]
    names = sorted(p.relative_to(first) for p in first.rglob("*.wav"))
    for other in folders[1:]:
        if sorted(p.relative_to(other) for p in other.rglob("*.wav")) != names:
            return False
        for name in names:
            if (first / name).read_bytes() != (other / name).read_bytes():
                return False
    return True


def cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="input folder")
    parser.add_argument(
        "--out",
        default="results/corpus_throughput",
        help="outputs go to OUT/procs-N",
    )
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="counts"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS per process"
    )
    parser.add_argument(
        "extra",
        nargs="*",
        help="more enhancement options, after -- (e.g. -- --steps 8)",
    )
    args = parser.parse_args(argv)
    data = pathlib.Path(args.data)
    if not data.is_dir():
        raise SystemExit(
            f"{data} is not a folder; build the MiniVB test set with "
            "`make demo` or pass --data FOLDER"
        )
    import torch

    load_before = os.getloadavg()
    results, folders = [], []
    for processes in args.processes:
        out = pathlib.Path(args.out) / f"procs-{processes}"
        results.append(
            run(processes, data, out, args.device, args.threads, args.extra)
        )
        folders.append(out)
    load_after = os.getloadavg()

    print(
        f"Corpus: {data} ({results[0]['files']} files, "
        f"{results[0]['audio']:.1f} s of audio)"
    )
    print(
        f"Machine: {os.cpu_count()} CPU cores ({cpu_model()}), device "
        f"{args.device}, OMP_NUM_THREADS={args.threads} per process, torch "
        f"{torch.__version__}; load average (1 min) {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after"
    )
    print()
    print(
        "| processes | wall s | hours of audio per hour (wall) "
        "| hours of audio per hour (enhancement) |"
    )
    print("|---|---|---|---|")
    for result in results:
        print(
            f"| {result['processes']} | {result['wall']:.1f} | "
            f"{result['audio'] / result['wall']:.2f} | "
            f"{result['audio'] / result['busiest']:.2f} |"
        )
    print()
    same = identical(folders)
    print(f"Outputs byte-identical across the runs: {'yes' if same else 'NO'}")
    example = command(args.processes[-1], data, "OUT", args.device, args.extra)
    example[0] = "python"
    print(f"Each run: OMP_NUM_THREADS={args.threads} {shlex.join(example)}")
    repeat = ["python", "bench/corpus_throughput.py", *(argv or sys.argv[1:])]
    print(f"Measured with: {shlex.join(repeat)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
