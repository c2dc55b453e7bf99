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
to that same sample), and names the best setting by ``--metric``. A
second table gives each system's mean difference from the input over the
same items with its 95 % paired bootstrap interval
(``speechbrain_elbo.metrics.bootstrap_interval``).

With ``--backends`` it compares what runs the networks (issue 15), in one
process: the per-forward time of ``--backend-configs`` (default small,
ncsnpp_m, ncsnpp; batch 1, F = 256, ``--frames`` 256) in eager PyTorch and
in ONNX Runtime (and sgmse 0.1.2's NCSNpp beside ncsnpp with
``--reference-root``), timed in alternation, and the end-to-end RTF of the
bundled two-stage model (``--e2e-model``; its default sampler and the
refiner on ``--e2e-seconds`` of audio) with both backends, for each of
``--thread-counts`` (1 2) and the default threads
(:func:`speechbrain_elbo.runtime.default_threads`), first as the machine
is ("idle") then with one competing CPU-bound process ("busy", started
``--settle-s`` seconds before). It ends with the RTF and the SI-SDR
against the fp32 output of bf16 and fp16 on ``--device`` where they can run
(else the reason), and prints the machine and the command. The ONNX graphs
are cached under ``--work``.

Usage (from the repository root; the measured table is in
docs/inference.md)::

    .venv/bin/python bench/inference.py                      # everything
    .venv/bin/python bench/inference.py --configs tiny --durations 10 60
    .venv/bin/python bench/inference.py --from-json a.json b.json  # tables
    .venv/bin/python bench/inference.py --backends --reference-root SGMSE
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

    def scores(estimates):
        """Per-item values (``items``) and their means."""
        values = {"pesq": [], "estoi": [], "si_sdr": []}
        for out, (_, clean) in zip(estimates, pairs, strict=True):
            values["pesq"].append(float(pesq_wb(out, clean)))
            values["estoi"].append(float(estoi(out, clean)))
            values["si_sdr"].append(float(si_sdr(out, clean)))
        means = {k: sum(v) / len(v) for k, v in values.items()}
        return {**means, "items": values}

    rows = [{"system": "noisy", "nfe": 0, **scores(p[0] for p in pairs)}]
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
                    **scores(o[system] for o in outs),
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
    print(
        "\nDifference from the input, mean over the same items [95 % paired "
        "bootstrap interval]:\n"
    )
    print("\n".join(difference_lines(rows)))
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


def difference_lines(rows):
    """Markdown table: each system's mean paired difference from
    ``rows[0]`` over the items, with its 95 % bootstrap interval."""
    from speechbrain_elbo.metrics import bootstrap_interval

    base = rows[0]["items"]
    lines = [
        "| system | sampler | PESQ-WB | ESTOI | SI-SDR (dB) |",
        "|---|---|---|---|---|",
    ]
    for row in rows[1:]:
        cells = []
        for key, digits in (("pesq", 3), ("estoi", 3), ("si_sdr", 2)):
            mean, low, high = bootstrap_interval(
                row["items"][key], base=base[key], resamples=10000
            )
            cells.append(
                f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
            )
        lines.append(
            f"| {row['system']} | {row['sampler']} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


# ---------------------------------------------------------------------------
# Backends, threads and load (--backends): eager PyTorch vs ONNX Runtime
# ---------------------------------------------------------------------------
class Competitor:
    """One CPU-bound process (a busy loop) while the block runs."""

    def __init__(self, active, settle_s):
        self.active = active
        self.settle_s = settle_s
        self.process = None

    def __enter__(self):
        if self.active:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "while True: pass"]
            )
            # running before default_threads reads the load, and long
            # enough for the load average printed with each row
            time.sleep(self.settle_s)
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def _timed(call, repeats):
    """Median and best seconds of ``repeats`` calls (after one warm-up)."""
    import statistics

    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def _alternate(calls, repeats):
    """Time ``calls`` (name -> callable) in alternation: one warm-up each,
    then ``repeats`` rounds whose order flips every round (the same load
    for all). Returns name -> (median s, best s)."""
    import statistics

    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for i in range(repeats):
        order = list(calls) if i % 2 == 0 else list(calls)[::-1]
        for name in order:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {n: (statistics.median(v), min(v)) for n, v in times.items()}


def _onnx_network(net, name, args):
    from speechbrain_elbo.onnx_backend import onnx_network

    start = time.perf_counter()
    made = onnx_network(net, name, [args.onnx_cache], num_freqs=256)
    print(
        f"  {name}: ONNX graph ready in {time.perf_counter() - start:.0f} s "
        f"({made.path.parent.name})",
        flush=True,
    )
    return made.path


def forward_rows(args, load_name, threads_list, cache):
    """Per-forward ms of each config (batch 1, F = 256, --frames frames),
    eager vs ONNX Runtime (and sgmse's NCSNpp for ``ncsnpp`` with
    --reference-root), alternating, for each thread count."""
    import torch

    from speechbrain_elbo.export import module_from_yaml
    from speechbrain_elbo.onnx_backend import OnnxNetwork

    rows = []
    for config in args.backend_configs:
        if config not in cache:
            torch.manual_seed(0)
            net = module_from_yaml(MODELS / f"{config}.yaml", "score_model")
            net.eval()
            shape = (1, 4, 256, args.frames)
            gflop = forward_gflop(net, torch.zeros(shape), torch.tensor([-1.0]))
            cache[config] = (net, _onnx_network(net, config, args), gflop)
        net, path, gflop = cache[config]
        x = torch.randn(1, 4, 256, args.frames)
        cond = torch.tensor([-1.0])
        reference = None
        if args.reference_root and config == "ncsnpp":
            reference = _reference_call(args, x)
        for threads in threads_list:
            torch.set_num_threads(threads)
            onnx = OnnxNetwork(path, net, threads=threads)
            calls = {
                "eager": lambda net=net, x=x, c=cond: net(x, c),
                "onnxruntime": lambda onnx=onnx, x=x, c=cond: onnx(x, c),
            }
            if reference is not None:
                calls["sgmse 0.1.2"] = reference
            with torch.inference_mode():
                result = _alternate(calls, args.backend_repeats)
            row = {
                "load": load_name,
                "config": config,
                "threads": threads,
                "frames": args.frames,
                "load_average": load_average(),
                "gflop": gflop,
                **{f"{k}_ms": v[0] * 1e3 for k, v in result.items()},
                **{f"{k}_best_ms": v[1] * 1e3 for k, v in result.items()},
            }
            rows.append(row)
            print(
                f"  {load_name:5s} {config:9s} threads={threads}: "
                + ", ".join(
                    f"{k} {v[0] * 1e3:.0f} ms" for k, v in result.items()
                )
                + f" (load {row['load_average']:.2f})",
                flush=True,
            )
            del onnx
    return rows


def forward_gflop(net, *inputs):
    """Floating-point operations of one forward (GFLOP, a multiply-add
    counted as 2), by ``torch.utils.flop_counter``: with the per-forward
    time it gives the arithmetic rate a backend reaches, to set against
    the processor's peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(*inputs)
    return counter.get_total_flops() / 1e9


def _reference_call(args, x):
    """sgmse 0.1.2's NCSNpp (default layout = ncsnpp.yaml) on the same
    input, as ``bench/network_speed.py --reference-root`` builds it."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from network_speed import load_reference

    torch.manual_seed(0)
    ref = load_reference(args.reference_root)().eval()
    spec = torch.complex(x[:, 0::2], x[:, 1::2])  # (1, 2, F, T) complex
    t = torch.tensor([0.3])
    return lambda: ref(spec, t)


def e2e_rows(args, load_name, threads_list, audio):
    """End-to-end RTF of the --e2e-model (default: the bundled two-stage
    model, its default sampler) on --e2e-seconds of audio: eager vs ONNX
    Runtime for each thread count, and the default threads."""
    from speechbrain_elbo.inference import DiffusionEnhancement
    from speechbrain_elbo.metrics import si_sdr
    from speechbrain_elbo.runtime import default_threads

    rows = []
    seconds = audio.shape[-1] / SR
    # what a fresh process gets (PyTorch's default: all cores, capped)
    default = default_threads()
    for threads in [*threads_list, f"default={default}"]:
        count = default if isinstance(threads, str) else threads
        models = {
            backend: DiffusionEnhancement.from_hparams(
                args.e2e_model,
                savedir=args.onnx_cache.parent / "e2e_savedir",
                run_opts={"device": "cpu"},
                threads=count,
                backend=backend,
            )
            for backend in ("torch", "onnxruntime")
        }
        outs = {}

        def run(backend, models=models, outs=outs):
            outs[backend] = models[backend].enhance_batch(audio, seed=0)

        calls = {b: (lambda b=b, run=run: run(b)) for b in models}
        result = _alternate(calls, args.e2e_repeats)
        row = {
            "load": load_name,
            "threads": threads,
            "audio_s": seconds,
            "load_average": load_average(),
            "eager_rtf": result["torch"][0] / seconds,
            "onnxruntime_rtf": result["onnxruntime"][0] / seconds,
            "eager_best_rtf": result["torch"][1] / seconds,
            "onnxruntime_best_rtf": result["onnxruntime"][1] / seconds,
            "onnx_vs_eager_si_sdr": float(
                si_sdr(outs["onnxruntime"], outs["torch"])
            ),
        }
        rows.append(row)
        print(
            f"  {load_name:5s} e2e threads={threads}: RTF eager "
            f"{row['eager_rtf']:.3f}, onnxruntime {row['onnxruntime_rtf']:.3f}"
            f" (ONNX vs eager SI-SDR {row['onnx_vs_eager_si_sdr']:.1f} dB; "
            f"load {row['load_average']:.2f})",
            flush=True,
        )
    return rows


def precision_rows(args, audio):
    """RTF and SI-SDR against the fp32 output of bf16 and fp16 (where the
    device allows them; otherwise the reason)."""
    from speechbrain_elbo.inference import DiffusionEnhancement
    from speechbrain_elbo.metrics import si_sdr
    from speechbrain_elbo.runtime import check_precision

    device = args.device
    rows = []
    seconds = audio.shape[-1] / SR
    outs = {}
    for name in ("fp32", "bf16", "fp16"):
        try:
            check_precision(name, device)
        except ValueError as error:
            rows.append({"precision": name, "note": str(error)})
            print(f"  {name}: {error}", flush=True)
            continue
        model = DiffusionEnhancement.from_hparams(
            args.e2e_model,
            run_opts={"device": device},
            threads=1,
            precision=name,
        )
        signal = audio.to(device)

        def run(model=model, signal=signal, name=name):
            outs[name] = model.enhance_batch(signal, seed=0).cpu()

        median, _ = _timed(run, args.e2e_repeats)
        row = {"precision": name, "rtf": median / seconds}
        if name != "fp32":  # fp32 is the reference
            row["si_sdr_vs_fp32"] = float(si_sdr(outs[name], outs["fp32"]))
        rows.append(row)
        vs = row.get("si_sdr_vs_fp32")
        print(
            f"  {name}: RTF {row['rtf']:.3f}"
            + ("" if vs is None else f", SI-SDR against fp32 {vs:.1f} dB"),
            flush=True,
        )
    return rows


def backend_tables(forward, e2e, precision, args):
    lines = [
        f"Per-forward time, batch 1, F = 256, {args.frames} frames "
        "(ms, median (best)), alternating in one process:",
        "",
    ]
    extra = any("sgmse 0.1.2_ms" in r for r in forward)
    header = (
        "| load | config | threads | GFLOP | eager | ONNX Runtime "
        "| ORT / eager | fastest GFLOP/s |"
    )
    if extra:
        header += " sgmse 0.1.2 | fastest / sgmse |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for r in forward:
        cells = [
            r["load"],
            r["config"],
            str(r["threads"]),
            f"{r['gflop']:.1f}" if "gflop" in r else "-",
            f"{r['eager_ms']:.0f} ({r['eager_best_ms']:.0f})",
            f"{r['onnxruntime_ms']:.0f} ({r['onnxruntime_best_ms']:.0f})",
            f"{r['onnxruntime_ms'] / r['eager_ms']:.2f}",
            f"{r['gflop'] * 1e3 / min(r['eager_ms'], r['onnxruntime_ms']):.1f}"
            if "gflop" in r
            else "-",
        ]
        if extra:
            ref = r.get("sgmse 0.1.2_ms")
            fastest = min(r["eager_ms"], r["onnxruntime_ms"])
            cells += (
                [f"{ref:.0f} ({r['sgmse 0.1.2_best_ms']:.0f})"]
                + [f"{fastest / ref:.2f}"]
                if ref
                else ["-", "-"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    if e2e:
        lines += [
            "",
            f"End-to-end RTF of {pathlib.Path(str(args.e2e_model)).name} "
            f"(default sampler, refiner), {e2e[0]['audio_s']:g} s of audio, "
            "median (best):",
            "",
            "| load | threads | eager RTF | ONNX Runtime RTF | ONNX vs eager "
            "SI-SDR (dB) |",
            "|---|---|---|---|---|",
        ]
        for r in e2e:
            lines.append(
                f"| {r['load']} | {r['threads']} | {r['eager_rtf']:.3f} "
                f"({r['eager_best_rtf']:.3f}) | {r['onnxruntime_rtf']:.3f} "
                f"({r['onnxruntime_best_rtf']:.3f}) | "
                f"{r['onnx_vs_eager_si_sdr']:.1f} |"
            )
        loads = {r["load"] for r in e2e}
        if {"idle", "busy"} <= loads:
            lines += ["", "Busy / idle, same settings (e2e median):", ""]
            for r in e2e:
                if r["load"] != "busy":
                    continue
                idle = [
                    i
                    for i in e2e
                    if i["load"] == "idle"
                    and str(i["threads"]).split("=")[0]
                    == str(r["threads"]).split("=")[0]
                ]
                if idle:
                    i = idle[0]
                    lines.append(
                        f"- threads {r['threads']} (idle {i['threads']}): "
                        f"eager x{r['eager_rtf'] / i['eager_rtf']:.2f}, "
                        "ONNX Runtime "
                        f"x{r['onnxruntime_rtf'] / i['onnxruntime_rtf']:.2f}"
                    )
    if precision:
        lines += [
            "",
            f"Precision of the networks ({args.device}, torch backend):",
            "",
            "| precision | RTF | SI-SDR against fp32 (dB) |",
            "|---|---|---|",
        ]
        for r in precision:
            if "note" in r:
                lines.append(f"| {r['precision']} | - | {r['note']} |")
            else:
                vs = r.get("si_sdr_vs_fp32")
                vs = "reference" if vs is None else f"{vs:.1f}"
                lines.append(f"| {r['precision']} | {r['rtf']:.3f} | {vs} |")
    return "\n".join(lines)


def backends(args, argv):
    """The --backends run: per-forward and end-to-end, idle and with one
    competing process, eager vs ONNX Runtime, threads 1 and 2."""
    import torch

    from speechbrain_elbo.fileio import write_json_atomic
    from speechbrain_elbo.runtime import default_threads, usable_cpus

    command = "python bench/inference.py " + " ".join(argv)
    print(f"# {command}")
    print(f"# {machine_long()}", flush=True)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="sbe_backends_"))
    args.onnx_cache = pathlib.Path(args.onnx_cache or work / "onnx")
    if args.e2e_model is None:
        from speechbrain_elbo.pretrained import DEFAULT_MODEL, pretrained_path

        args.e2e_model = pretrained_path(DEFAULT_MODEL)
    audio = None
    if args.e2e_seconds > 0:
        import soundfile as sf

        wav = make_input(work / "e2e.wav", args.e2e_seconds)
        audio = torch.from_numpy(sf.read(str(wav), dtype="float32")[0])[None]
    begin = time.perf_counter()
    forward, e2e, cache = [], [], {}
    for load_name in args.loads:
        with Competitor(load_name == "busy", args.settle_s):
            print(
                f"{load_name}: load average {load_average():.2f}, "
                f"default threads now {default_threads()} of "
                f"{usable_cpus()} usable CPUs",
                flush=True,
            )
            forward += forward_rows(args, load_name, args.thread_counts, cache)
            if audio is not None:
                e2e += e2e_rows(args, load_name, args.thread_counts, audio)
    precision = precision_rows(args, audio) if args.precisions else []
    print()
    print(backend_tables(forward, e2e, precision, args))
    print(
        f"\nTotal {time.perf_counter() - begin:.0f} s; load average at the "
        f"end {load_average():.2f}. Command: {command}"
    )
    if args.json:
        write_json_atomic(
            args.json,
            {"forward": forward, "e2e": e2e, "precision": precision},
            indent=1,
        )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def machine_long():
    """CPU model, flags that matter, cores, versions, load."""
    import torch

    from speechbrain_elbo.runtime import cpu_has_bf16, usable_cpus

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = "no onnxruntime"
    return (
        f"{name} ({torch.backends.cpu.get_cpu_capability()}, bf16 "
        f"{'yes' if cpu_has_bf16() else 'no'}), {os.cpu_count()} cores "
        f"({usable_cpus()} usable), torch {torch.__version__}, {ort}, "
        f"load average {load_average():.2f}"
    )


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
    parser.add_argument(
        "--data", help="mini data set folder (MiniVB or MiniWHAMR)"
    )
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
    parser.add_argument(
        "--backends",
        action="store_true",
        help=(
            "compare eager PyTorch and ONNX Runtime: per-forward time of "
            "--backend-configs and end-to-end RTF of --e2e-model, for each "
            "of --thread-counts, idle and with one competing process"
        ),
    )
    parser.add_argument(
        "--backend-configs", nargs="*", default=["small", "ncsnpp_m", "ncsnpp"]
    )
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--thread-counts", nargs="*", type=int, default=[1, 2])
    parser.add_argument(
        "--loads",
        nargs="*",
        default=["idle", "busy"],
        choices=["idle", "busy"],
        help="busy: one competing CPU-bound process runs meanwhile",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=60.0,
        help="seconds the competitor runs before measuring (load average)",
    )
    parser.add_argument("--backend-repeats", type=int, default=5)
    parser.add_argument(
        "--e2e-model", help="model folder (default: the bundled one)"
    )
    parser.add_argument("--e2e-seconds", type=float, default=10.0)
    parser.add_argument("--e2e-repeats", type=int, default=3)
    parser.add_argument(
        "--no-precisions",
        dest="precisions",
        action="store_false",
        help="skip the bf16/fp16 rows",
    )
    parser.add_argument("--device", default="cpu", help="for the precisions")
    parser.add_argument(
        "--reference-root",
        help="sgmse checkout (sgmse/backbones/ncsnpp.py) timed beside ncsnpp",
    )
    parser.add_argument(
        "--onnx-cache", help="folder of the exported graphs (kept; reused)"
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
    elif args.backends:
        backends(args, sys.argv[1:] if argv is None else list(argv))
    elif args.quality:
        if not args.data:
            parser.error(
                "--quality needs --data (a MiniVB or MiniWHAMR folder)"
            )
        quality(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
