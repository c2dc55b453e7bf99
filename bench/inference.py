"""Real-time factor and peak memory of ``DiffusionEnhancement`` on this CPU.

Every measurement runs in a fresh Python process that loads an exported
model (random weights: the cost does not depend on the weights), then
enhances a WAV file with ``enhance_file`` -- streamed from disk in chunks of
``--chunk-seconds`` with ``--overlap-seconds`` of cross-fade, written to disk
-- and reports:

- **RTF**: wall-clock time of ``enhance_file`` over the audio duration
  (loading the model is not included; reading, STFT, sampling, refiner,
  inverse STFT and writing are);
- **peak MB**: the peak resident set size of the process during the call,
  and **+MB** its growth over the resident size before the call (after
  malloc's cache is handed back; Linux VmHWM reset through
  ``/proc/self/clear_refs``).

Runs (``--plan standard``): for the tiny and small configurations, stage 1
alone and both stages (the matching refiner), at 10 s, 60 s and 10 min of
audio, with the Euler ODE sampler at 1 step (1 score evaluation) and, at
10 s, 8 steps. Up to 60 s of audio each measurement is repeated
(``--repeats``) and the fastest run counts (other processes share the
CPU). The cost of a call is linear in the number of score-network
evaluations (NFE), so a second table gives, for each duration, the RTF
predicted at more steps from the two measured 10 s points, including the
default PC sampler (30 steps, 1 corrector: 60 NFE). NCSN++M and NCSN++ are
run once, for ``--big-seconds`` of audio (default 10 s) and one Euler step;
at another duration the time is extrapolated linearly to 10 s.

With ``--quality MODEL --data MINIVB`` the script instead measures, on the
validation (``--split valid``, default: for choosing) or test split of a
mini data set and with a trained model, PESQ-WB, ESTOI and SI-SDR of the
noisy input, of stage 1 and of both stages for each sampler setting of
``--quality-samplers`` (one stage-1 sample per item, the refiner applied
to that same sample), and names the best setting by ``--metric``.

Usage (from the repository root; the measured table is in
docs/inference.md)::

    .venv/bin/python bench/inference.py                      # everything
    .venv/bin/python bench/inference.py --configs tiny --durations 10 60
    .venv/bin/python bench/inference.py --from-json a.json b.json  # tables
    .venv/bin/python bench/inference.py --quality MODEL --data MINIVB \\
        --split valid --items 20
"""

import argparse
import ctypes
import gc
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "hparams" / "models"
SR = 16000
REFINERS = {
    "tiny": "refiner_tiny",
    "small": "refiner_small",
    "ncsnpp_m": "refiner",
    "ncsnpp": "refiner",
}
DEFAULT_NFE = 60  # PC sampler, 30 steps, 1 corrector step
FIT_STEPS = 8  # second point of the linear cost fit


# ---------------------------------------------------------------------------
# Measurement worker (runs in its own process)
# ---------------------------------------------------------------------------
def _status_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(ctypes.c_size_t(0))
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def worker(args):
    """Load the model, enhance one file, print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from speechbrain_elbo.inference import DiffusionEnhancement

    enhancer = DiffusionEnhancement.from_hparams(
        source=args.model,
        run_opts={"device": "cpu"},
        chunk_seconds=args.chunk_seconds,
        overlap_seconds=args.overlap_seconds,
    )
    refine = enhancer.has_refiner
    seconds = _audio_seconds(args.input)
    walls = []
    for repeat in range(args.repeats if seconds <= 60 else 1):
        gc.collect()
        _reset_peak()
        if repeat == 0:
            base = _status_kib("VmRSS")
        start = time.perf_counter()
        enhancer.enhance_file(
            args.input,
            args.output,
            sampler="euler",
            steps=args.steps,
            use_refiner=refine,
            seed=0,
        )
        walls.append(time.perf_counter() - start)
        if repeat == 0:
            peak = _status_kib("VmHWM")
    wall = min(walls)  # the least disturbed by other processes
    print(
        json.dumps(
            {
                "wall_s": wall,
                "audio_s": seconds,
                "rtf": wall / seconds,
                "nfe": enhancer.last_nfe,
                "chunks": enhancer.last_num_chunks,
                "refiner": refine,
                "peak_mb": peak / 1024,
                "growth_mb": (peak - base) / 1024,
                "base_mb": base / 1024,
            }
        )
    )


def _audio_seconds(path):
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


# ---------------------------------------------------------------------------
# Parent: models, inputs, runs, tables
# ---------------------------------------------------------------------------
def export_random(config, stages, folder):
    """Export a random-weight model of ``config`` (1 or 2 stages)."""
    import torch

    from speechbrain_elbo.export import export_enhancer, module_from_yaml
    from speechbrain_elbo.sampling import Sampler
    from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    from speechbrain_elbo.spectral import SpectralTransform

    def build(name, key):
        return module_from_yaml(MODELS / f"{name}.yaml", key)

    torch.manual_seed(0)
    refiner = None
    if stages == 2:
        refiner = build(REFINERS[config], "refiner")
    return export_enhancer(
        folder,
        build(config, "score_model"),
        OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03),
        SpectralTransform(),
        Sampler("pc", 30),
        refiner=refiner,
        model_card={"note": "random weights, for timing only"},
    )


def make_input(path, seconds, block_seconds=10):
    """A noisy-speech-like test file, written in blocks (bounded memory)."""
    import numpy as np

    from speechbrain_elbo.fileio import AtomicAudioWriter

    rng = np.random.default_rng(0)
    total = int(round(seconds * SR))
    with AtomicAudioWriter(path, SR, "PCM_16") as handle:
        for start in range(0, total, block_seconds * SR):
            count = min(block_seconds * SR, total - start)
            t = (start + np.arange(count)) / SR
            voice = np.sin(2 * np.pi * 150 * t) * (
                np.sin(2 * np.pi * 3 * t) > 0
            )
            block = 0.3 * voice + 0.05 * rng.standard_normal(count)
            handle.write(block.astype("float32"))
    return path


def run_one(model, wav, steps, args, timeout):
    out = pathlib.Path(tempfile.mkdtemp(dir=args.work)) / "out.wav"
    command = [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--worker",
        "--model",
        str(model),
        "--input",
        str(wav),
        "--output",
        str(out),
        "--steps",
        str(steps),
        "--threads",
        str(args.threads),
        "--chunk-seconds",
        str(args.chunk_seconds),
        "--overlap-seconds",
        str(args.overlap_seconds),
        "--repeats",
        str(args.repeats),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    out.parent.rmdir()
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine(threads):
    """CPU, cores, torch version, threads and load: where it was measured."""
    import torch

    return (
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, "
        f"{threads} thread(s), load average {load_average():.2f}"
    )


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def plan(args):
    """(config, stages, seconds, steps) runs of the standard plan."""
    runs = []
    for config in args.configs:
        for seconds in args.durations:
            for stages in (1, 2):
                runs.append((config, stages, seconds, 1))
                if seconds == min(args.durations) and stages == 1:
                    runs.append((config, stages, seconds, FIT_STEPS))
    for config in args.big:
        runs.append((config, 1, args.big_seconds, 1))
    return runs


def predicted_rtf(rows, config, stages, seconds, nfe):
    """RTF at ``nfe`` from the measured 1- and FIT_STEPS-step runs.

    cost(nfe) = fixed + nfe * per_nfe, fitted at the shortest duration on
    stage 1; the refiner's extra cost is the measured two-stage minus
    stage-1 difference at 1 step; a longer duration scales the measured
    1-step cost of that duration.
    """
    shortest = min(r["seconds"] for r in rows if r["config"] == config)

    def find(stg, sec, steps):
        for r in rows:
            if (r["config"], r["stages"], r["seconds"], r["steps"]) == (
                config,
                stg,
                sec,
                steps,
            ):
                return r
        return None

    one, many = find(1, shortest, 1), find(1, shortest, FIT_STEPS)
    here = find(stages, seconds, 1)
    if one is None or many is None or here is None:
        return None
    per_nfe = (many["rtf"] - one["rtf"]) / (FIT_STEPS - 1)
    return here["rtf"] + (nfe - 1) * per_nfe


def table(rows, args):
    lines = [
        "| config | stages | audio | steps (NFE) | RTF | peak MB | +MB "
        "| chunks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        audio = _duration(r["seconds"])
        lines.append(
            f"| {r['config']} | {r['stages']} | {audio} | {r['steps']} "
            f"({r['nfe']}) | {r['rtf']:.3f} | {r['peak_mb']:.0f} | "
            f"{r['growth_mb']:.0f} | {r['chunks']} |"
        )
    return "\n".join(lines)


def predicted_table(rows, args):
    lines = [
        "| config | stages | audio | RTF at NFE 1 (measured) | NFE 8 | "
        "NFE 16 | NFE 60 (PC default) |",
        "|---|---|---|---|---|---|---|",
    ]
    for config in args.configs:
        for seconds in args.durations:
            for stages in (1, 2):
                cells = []
                for nfe in (1, 8, 16, DEFAULT_NFE):
                    value = predicted_rtf(rows, config, stages, seconds, nfe)
                    cells.append("-" if value is None else f"{value:.2f}")
                if cells[0] == "-":
                    continue  # not measured
                lines.append(
                    f"| {config} | {stages} | {_duration(seconds)} | "
                    + " | ".join(cells)
                    + " |"
                )
    return "\n".join(lines)


def big_table(rows, args):
    lines = [
        "| config | measured | wall s | RTF | peak MB | s per step for 10 s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["config"] not in args.big:
            continue
        ten = r["wall_s"] * 10.0 / r["seconds"]
        how = "measured" if r["seconds"] == 10 else "extrapolated, linear"
        lines.append(
            f"| {r['config']} | {_duration(r['seconds'])}, 1 step | "
            f"{r['wall_s']:.1f} | {r['rtf']:.2f} | {r['peak_mb']:.0f} | "
            f"{ten:.1f} ({how}) |"
        )
    return "\n".join(lines)


def _duration(seconds):
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def memory_summary(rows, args):
    lines = []
    for config in args.configs:
        for stages in (1, 2):
            mine = [
                r
                for r in rows
                if r["config"] == config
                and r["stages"] == stages
                and r["steps"] == 1
            ]
            if len(mine) < 2:
                continue
            short = min(mine, key=lambda r: r["seconds"])
            long = max(mine, key=lambda r: r["seconds"])
            lines.append(
                f"- {config}, {stages} stage(s): peak {long['peak_mb']:.0f} MB "
                f"for {_duration(long['seconds'])} vs {short['peak_mb']:.0f} "
                f"MB for {_duration(short['seconds'])} "
                f"(x{long['peak_mb'] / short['peak_mb']:.2f})"
            )
    return "\n".join(lines)


def benchmark(args):
    from speechbrain_elbo.fileio import write_json_atomic

    own_work = not args.work and not args.from_json
    if not args.from_json:
        args.work = pathlib.Path(
            args.work or tempfile.mkdtemp(prefix="sbe_bench_")
        )
        args.work.mkdir(parents=True, exist_ok=True)
    print(f"# {machine(args.threads)}", flush=True)
    models, inputs, rows = {}, {}, []
    begin = time.perf_counter()
    if args.from_json:
        for name in args.from_json:
            rows += json.loads(pathlib.Path(name).read_text())
        configs = [r["config"] for r in rows if r["config"] not in args.big]
        args.configs = list(dict.fromkeys(configs))
        args.durations = sorted({r["seconds"] for r in rows})
    for config, stages, seconds, steps in [] if args.from_json else plan(args):
        key = (config, stages)
        if key not in models:
            folder = args.work / f"{config}_{stages}"
            models[key] = export_random(config, stages, folder)
        if seconds not in inputs:
            inputs[seconds] = make_input(
                args.work / f"in_{seconds:g}s.wav", seconds
            )
        try:
            result = run_one(
                models[key], inputs[seconds], steps, args, args.timeout
            )
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"{config} {stages} {seconds}s {steps}: FAILED {error}")
            continue
        result.update(
            config=config, stages=stages, seconds=seconds, steps=steps
        )
        rows.append(result)
        print(
            f"{config:9s} stages={stages} {_duration(seconds):>7s} "
            f"steps={steps}: RTF {result['rtf']:.3f}, peak "
            f"{result['peak_mb']:.0f} MB (+{result['growth_mb']:.0f}), "
            f"{result['chunks']} chunk(s), load {load_average():.2f}",
            flush=True,
        )
    report = [
        "## Measured",
        "",
        table(rows, args),
        "",
        "## RTF predicted at more steps (linear in NFE)",
        "",
        predicted_table(rows, args),
        "",
        "## Peak memory, longest vs shortest audio",
        "",
        memory_summary(rows, args),
    ]
    if args.big:
        report += ["", "## Full-size networks", "", big_table(rows, args)]
    report.append(
        f"\nTotal {time.perf_counter() - begin:.0f} s; load average at the "
        f"end {load_average():.2f}."
    )
    print("\n".join(report))
    if own_work:  # models and long input files: hundreds of MB
        shutil.rmtree(args.work, ignore_errors=True)
    if args.json:
        write_json_atomic(args.json, rows, indent=1)


# ---------------------------------------------------------------------------
# Quality versus steps (needs a trained two-stage model)
# ---------------------------------------------------------------------------
def quality(args):
    import torch

    from speechbrain_elbo.demo.data import load_test_items
    from speechbrain_elbo.fileio import write_json_atomic
    from speechbrain_elbo.inference import DiffusionEnhancement
    from speechbrain_elbo.metrics import estoi, pesq_wb, si_sdr

    torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    items = load_test_items(args.data, args.items, split=args.split)
    enhancer = DiffusionEnhancement.from_hparams(source=args.quality)
    pairs = [
        (enhancer.load_waveform(i["noisy"]), enhancer.load_waveform(i["clean"]))
        for i in items
    ]

    def mean_scores(estimates):
        values = {"pesq": [], "estoi": [], "si_sdr": []}
        for out, (_, clean) in zip(estimates, pairs, strict=True):
            values["pesq"].append(float(pesq_wb(out, clean)))
            values["estoi"].append(float(estoi(out, clean)))
            values["si_sdr"].append(float(si_sdr(out, clean)))
        return {k: sum(v) / len(v) for k, v in values.items()}

    rows = [{"system": "noisy", "nfe": 0, **mean_scores(p[0] for p in pairs)}]
    systems = ["stage1"] + (["stage1+2"] if enhancer.has_refiner else [])
    for spec in args.quality_samplers:
        name, steps = spec.split(":")
        outs = [
            enhancer.enhance_stages(noisy, name, int(steps), seed=k)
            for k, (noisy, _) in enumerate(pairs)
        ]
        for system in systems:
            rows.append(
                {
                    "system": system,
                    "sampler": spec,
                    "nfe": outs[0]["nfe"] + (system == "stage1+2"),
                    **mean_scores(o[system] for o in outs),
                }
            )
    header = "| system | sampler | NFE | PESQ-WB | ESTOI | SI-SDR (dB) |"
    lines = [header, "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['system']} | {row.get('sampler', '-')} | {row['nfe']} "
            f"| {row['pesq']:.3f} | {row['estoi']:.3f} | {row['si_sdr']:.2f} |"
        )
    best = {
        system: max(
            (r for r in rows if r["system"] == system),
            key=lambda r: r[args.metric],
        )
        for system in systems
    }
    print(f"Model {args.quality}, default sampler {enhancer.default_sampler}")
    print(
        f"{len(pairs)} {args.split} items of {args.data}; one stage-1 sample "
        "per item (item k seeded with k), the refiner applied to that sample"
    )
    print("\n".join(lines))
    for system, row in best.items():
        print(f"Best {system} by {args.metric}: {row['sampler']}")
    print(
        f"{machine(args.threads)}; {time.perf_counter() - begin:.0f} s. "
        "Repeat: "
        f"python bench/inference.py --quality {args.quality} --data "
        f"{args.data} --split {args.split} --items {args.items} "
        f"--threads {args.threads} --quality-samplers "
        + " ".join(args.quality_samplers)
    )
    if args.json:
        write_json_atomic(args.json, rows, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", default=["tiny", "small"])
    parser.add_argument(
        "--durations", nargs="*", type=float, default=[10, 60, 600]
    )
    parser.add_argument(
        "--big",
        nargs="*",
        default=["ncsnpp_m", "ncsnpp"],
        help="full-size configurations run once at --big-seconds",
    )
    parser.add_argument("--big-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--overlap-seconds", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs per measurement up to 60 s of audio (the fastest counts)",
    )
    parser.add_argument("--work", help="folder for models and inputs")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--from-json",
        nargs="*",
        help="print the tables of rows saved by --json (no measurement)",
    )
    parser.add_argument("--quality", metavar="MODEL", help="trained model")
    parser.add_argument("--data", help="mini data set folder (MiniVB)")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--split", default="valid", choices=["valid", "test"])
    parser.add_argument(
        "--quality-samplers",
        nargs="*",
        default=[
            "euler:1",
            "euler:2",
            "euler:3",
            "euler:5",
            "euler:8",
            "heun:2",
            "heun:3",
            "pc:5",
            "pc:10",
        ],
        help="NAME:STEPS settings compared with --quality",
    )
    parser.add_argument(
        "--metric", default="pesq", choices=["pesq", "estoi", "si_sdr"]
    )
    # worker-only arguments
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
    elif args.quality:
        if not args.data:
            parser.error("--quality needs --data (a MiniVB folder)")
        quality(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
