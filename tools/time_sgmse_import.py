"""Time an imported sgmse model on the CPU (docs/interop.md, "Speed").

Loads an exported folder with ``DiffusionEnhancement.from_hparams`` and
enhances Gaussian noise (the content does not change the time) with the
sampler settings given, printing one line per setting: wall time, audio
duration, real-time factor (wall time / audio duration), network
evaluations, peak resident memory of the process, and the load average.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python tools/time_sgmse_import.py FOLDER \\
        --seconds 2.04 --setting pc:30 --setting heun:3 \\
        --long-seconds 60 --long-setting euler:2
"""

import argparse
import os
import resource
import time

import torch

from speechbrain_elbo.inference import DiffusionEnhancement


def parse_setting(text):
    """``"pc:30"`` -> ("pc", 30)."""
    name, _, steps = text.partition(":")
    return name, int(steps)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(enhancer, noisy, name, steps, long):
    start = time.perf_counter()
    if long:
        enhancer.enhance_long(noisy, sampler=name, steps=steps, seed=0)
    else:
        enhancer.enhance_batch(noisy, sampler=name, steps=steps, seed=0)
    wall = time.perf_counter() - start
    seconds = noisy.shape[-1] / enhancer.sample_rate
    print(
        f"{name}:{steps} audio {seconds:.2f} s, wall {wall:.1f} s, "
        f"RTF {wall / seconds:.2f}, NFE {enhancer.last_nfe}/chunk, "
        f"chunks {enhancer.last_num_chunks if long else 1}, "
        f"peak RSS {peak_rss_mb():.0f} MB, load {os.getloadavg()[0]:.2f}, "
        f"threads {torch.get_num_threads()}",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--seconds", type=float, default=2.04)
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--long-seconds", type=float, default=0.0)
    parser.add_argument("--long-setting", action="append", default=[])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    enhancer = DiffusionEnhancement.from_hparams(
        source=args.folder, run_opts={"device": "cpu"}
    )
    print(f"loaded in {time.perf_counter() - start:.1f} s", flush=True)
    gen = torch.Generator().manual_seed(0)
    rate = enhancer.sample_rate
    short = 0.1 * torch.randn(int(args.seconds * rate), generator=gen)
    for setting in args.setting:
        run(enhancer, short, *parse_setting(setting), long=False)
    if args.long_seconds:
        noisy = 0.1 * torch.randn(int(args.long_seconds * rate), generator=gen)
        for setting in args.long_setting:
            run(enhancer, noisy, *parse_setting(setting), long=True)


if __name__ == "__main__":
    main()
