"""Forward-pass speed, FLOPs and memory of the network configurations.

For every model file in ``hparams/models`` and for each frame count, the
script times the forward pass of one utterance (batch 1, F = 256 bins) under
``torch.inference_mode()``: one warm-up pass, then the median of
``--repeats`` passes (fewer when a pass is so slow that the repeats would
exceed ``--budget-s``; the table says how many were taken) and the fastest
of them. It also counts the forward FLOPs with ``torch.utils.flop_counter``
(convolutions, matrix products and attention; element-wise operations are
not counted), the achieved GFLOP/s (from the median time) and the peak
memory of one more pass: on CPU the growth of the resident set size over
that pass after malloc's cache is handed back to the system (Linux; the
process peak elsewhere), on GPU the growth of
``torch.cuda.max_memory_allocated``.

On a shared machine other processes can make a pass several times slower.
The column "others' CPU" gives the share of the machine that other processes
used during the timed passes (from /proc/stat); ``--wait-idle-s`` waits for
a quiet machine before each measurement and ``--retries`` measures again
when others took 10 % or more. The load average is printed at the start and
the end.

A second table turns the measured times into the cost of the whole
enhancement stack (a sampler with ``--nfe`` score evaluations plus one
refiner pass) per second of audio.

With ``--reference-root`` pointing at a checkout of the SGMSE+ repository
(https://github.com/sp-uhh/sgmse), its ``NCSNpp`` is timed the same way, and
its weights are copied into ours to check that the two compute the same
function.

Usage (from the repository root)::

    .venv/bin/python bench/network_speed.py
    .venv/bin/python bench/network_speed.py --configs small tiny --frames 256
    .venv/bin/python bench/network_speed.py --wait-idle-s 120 --retries 3
    .venv/bin/python bench/network_speed.py --reference-root /path/to/sgmse
"""

import argparse
import ctypes
import gc
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

import torch
from hyperpyyaml import load_hyperpyyaml
from torch.utils.flop_counter import FlopCounterMode

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "hparams" / "models"
CONFIGS = [
    "ncsnpp",
    "ncsnpp_m",
    "small",
    "small@patch1",
    "tiny",
    "refiner",
    "refiner_small",
    "refiner_tiny",
]
HOP, SAMPLE_RATE, FREQS = 128, 16000, 256


def build(name):
    """Build a configuration by name: "small", or "small@patch1" for a
    model file with ``patch_size`` overridden to 1.

    Returns (module, kind) with kind "score" or "refiner".
    """
    stem, _, variant = name.partition("@")
    overrides = {}
    if variant:
        if not variant.startswith("patch"):
            raise ValueError(f"Unknown variant {variant!r} in {name!r}.")
        overrides["patch_size"] = int(variant[len("patch") :])
    path = MODELS / f"{stem}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"No model file {path} for config {name!r}.")
    with open(path) as f:
        hparams = load_hyperpyyaml(f, overrides)
    if "score_model" in hparams:
        return hparams["score_model"], "score"
    return hparams["refiner"], "refiner"


def make_call(model, kind, frames, device):
    """A closure running one forward pass on random inputs of ``frames``."""
    gen = torch.Generator().manual_seed(0)
    if kind == "score":
        x = torch.randn(1, 4, FREQS, frames, generator=gen).to(device)
        cond = torch.tensor([-2.0], device=device)
        return lambda: model(x, cond)
    x_hat = torch.randn(1, 1, FREQS, frames, 2, generator=gen)
    y = torch.randn(1, 1, FREQS, frames, 2, generator=gen)
    x_hat = torch.view_as_complex(x_hat).to(device)
    y = torch.view_as_complex(y).to(device)
    return lambda: model(x_hat, y)


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


try:
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):
    _LIBC = None


class PeakMemory:
    """Peak memory of a region: CUDA allocator, or Linux resident set."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.mode = "cuda" if self.device.type == "cuda" else "rss"
        if self.mode == "rss" and not os.path.exists("/proc/self/clear_refs"):
            self.mode = "maxrss"

    def __enter__(self):
        gc.collect()
        if self.mode == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.mode == "rss":
            # Hand memory cached by malloc back to the system, so that the
            # pass has to map what it needs, then reset the peak resident
            # set size (VmHWM) by writing 5 to clear_refs.
            if _LIBC is not None:
                _LIBC.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.mode == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_bytes = peak - self.base
        elif self.mode == "rss":
            self.peak_bytes = _rss_kib("VmHWM") * 1024 - self.base
        else:  # process-wide peak (macOS reports bytes, Linux KiB)
            scale = 1 if sys.platform == "darwin" else 1024
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_bytes = maxrss * scale
        return False


class OtherLoad:
    """CPU time used by other processes during a region, as a fraction of
    the machine (0: we had it to ourselves, 1: others kept every core busy).

    Reads the machine's busy time from /proc/stat (Linux) and subtracts
    this process's own CPU time; ``fraction`` is None where /proc/stat is
    missing.
    """

    def __enter__(self):
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        self.fraction = None
        if self.start is not None and end is not None:
            busy = end[0] - self.start[0]
            own = end[1] - self.start[1]
            wall = end[2] - self.start[2]
            cores = os.cpu_count() or 1
            self.fraction = max(0.0, busy - own) / max(wall * cores, 1e-9)
        return False

    @staticmethod
    def _snapshot():
        """(machine busy seconds, own CPU seconds, wall seconds) or None."""
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - idle) / hz
        return busy, time.process_time(), time.perf_counter()


def wait_until_idle(max_wait_s, threshold=0.1, window_s=2.0):
    """Wait up to ``max_wait_s`` until other processes use less than
    ``threshold`` of the machine over ``window_s``; return the last
    measured fraction (None without /proc/stat)."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        with OtherLoad() as load:
            time.sleep(window_s)
        if load.fraction is None or load.fraction < threshold:
            return load.fraction
        if time.perf_counter() > deadline:
            return load.fraction


def measure(call, device, repeats, budget_s):
    """Time ``call``; return a dict of the measurements."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else None

    def timed():
        start = time.perf_counter()
        call()
        if sync:
            sync()
        return time.perf_counter() - start

    with torch.inference_mode():
        warm = timed()
        n = max(1, min(repeats, int(budget_s // max(warm, 1e-9))))
        with OtherLoad() as others:
            times = [timed() for _ in range(n)]
        with PeakMemory(device) as memory:
            call()
        with FlopCounterMode(display=False) as counter:
            call()
    seconds = statistics.median(times)
    flops = counter.get_total_flops()
    return dict(
        ms=seconds * 1e3,
        best_ms=min(times) * 1e3,
        gflop=flops / 1e9,
        gflops_per_s=flops / 1e9 / seconds,
        peak_mb=memory.peak_bytes / 2**20,
        memory_mode=memory.mode,
        passes=n,
        others=others.fraction,
    )


def audio_seconds(frames):
    """Duration of the audio behind ``frames`` STFT frames (centred)."""
    return (frames - 1) * HOP / SAMPLE_RATE


def load_reference(root):
    """Import the reference SGMSE+ NCSNpp from a checkout at ``root``."""
    root = pathlib.Path(root).resolve()
    if not (root / "sgmse" / "backbones" / "ncsnpp.py").exists():
        raise FileNotFoundError(
            f"{root} is not an SGMSE+ checkout (no sgmse/backbones/ncsnpp.py)"
        )
    sys.path.insert(0, str(root))
    from sgmse.backbones.ncsnpp import NCSNpp as Reference

    return Reference


def copy_reference_weights(ref, ours):
    """Copy the weights of a reference SGMSE+ NCSNpp into our NCSNpp.

    Both must have the same configuration (biggan blocks, output_skip,
    input_skip with sum). The reference keeps its modules in one flat list
    in forward order; ours are named, so walk both in forward order.
    """

    def copy(dst, src):
        dst.load_state_dict(src.state_dict())

    def res(dst, src):
        copy(dst.norm_0, src.GroupNorm_0)
        copy(dst.conv_0, src.Conv_0)
        copy(dst.dense, src.Dense_0)
        copy(dst.norm_1, src.GroupNorm_1)
        copy(dst.conv_1, src.Conv_1)
        if dst.shortcut is not None:
            copy(dst.shortcut, src.Conv_2)

    def attn(dst, src):
        copy(dst.norm, src.GroupNorm_0)
        nins = (src.NIN_0, src.NIN_1, src.NIN_2)
        weight = torch.cat([nin.W.t() for nin in nins])
        dst.qkv.weight.data.copy_(weight[:, :, None, None])
        dst.qkv.bias.data.copy_(torch.cat([nin.b for nin in nins]))
        dst.proj.weight.data.copy_(src.NIN_3.W.t()[:, :, None, None])
        dst.proj.bias.data.copy_(src.NIN_3.b)

    modules = iter(ref.all_modules)
    ours.fourier.W.data.copy_(next(modules).W)
    copy(ours.emb_0, next(modules))
    copy(ours.emb_1, next(modules))
    copy(ours.input_conv, next(modules))
    for level in range(ours.num_levels):
        attns = ours.down_attn[level]
        for i, block in enumerate(ours.down_blocks[level]):
            res(block, next(modules))
            if len(attns):
                attn(attns[i], next(modules))
        if level < ours.num_levels - 1:
            res(ours.down_resample[level], next(modules))
            copy(ours.down_pyramid[level].conv, next(modules).Conv_0)
    res(ours.mid_block_0, next(modules))
    attn(ours.mid_attn, next(modules))
    res(ours.mid_block_1, next(modules))
    for step in range(ours.num_levels):
        for block in ours.up_blocks[step]:
            res(block, next(modules))
        for module in ours.up_attn[step]:
            attn(module, next(modules))
        copy(ours.up_pyramid[step][0], next(modules))
        copy(ours.up_pyramid[step][2], next(modules))
        if step < ours.num_levels - 1:
            res(ours.up_resample[step], next(modules))
    if next(modules, None) is not None:
        raise RuntimeError("Reference has modules this mapping does not know.")
    copy(ours.output_layer, ref.output_layer)


# Our model file -> the same layout in the reference constructor.
REFERENCE_LAYOUTS = {
    "ncsnpp": {},
    "ncsnpp_m": dict(
        ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(0,)
    ),
}


def check_reference(Reference, name, frames=64):
    """Max |difference| / max |output| between reference and ours, for our
    model file ``name`` and the reference built with the same layout."""
    torch.manual_seed(0)
    ref = Reference(**REFERENCE_LAYOUTS[name]).eval()
    with torch.no_grad():  # wake the near-zero layers up
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ours = build(name)[0].eval()
    copy_reference_weights(ref, ours)
    x = torch.randn(1, 2, FREQS, frames, dtype=torch.complex64)
    t = torch.tensor([0.3])
    with torch.inference_mode():
        expected = ref(x, t)
        stacked = torch.cat([x.real, x.imag], dim=1)[:, [0, 2, 1, 3]]
        out = ours(stacked, torch.log(t), feature_divisor=t)
        out = torch.complex(out[:, :1], out[:, 1:])
    return float((out - expected).abs().max() / expected.abs().max())


def cpu_name():
    """The CPU model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """The 1, 5 and 15 minute load averages as a string."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def table_row(name, params, frames, r):
    """One row of the speed table."""
    return [
        name,
        f"{params / 1e6:.2f} M",
        str(frames),
        f"{r['ms']:.0f}",
        f"{r['best_ms']:.0f}",
        f"{r['gflop']:.1f}",
        f"{r['gflops_per_s']:.0f}",
        f"{r['peak_mb']:.0f}",
        str(r["passes"]),
        "n/a" if r["others"] is None else f"{100 * r['others']:.0f} %",
    ]


def compare_reference(args, device):
    """Time our NCSN++ and the reference one in alternation and check that
    they compute the same function. Alternating the passes exposes both to
    the same load when the machine is shared."""
    Reference = load_reference(args.reference_root)
    print()
    for name in REFERENCE_LAYOUTS:
        rel = check_reference(Reference, name)
        print(
            f"reference check, {name}.yaml: "
            f"max |ours - sgmse| / max |sgmse| = {rel:.1e}"
        )
    torch.manual_seed(0)
    ref = Reference().to(device).eval()
    ours = build("ncsnpp")[0].to(device).eval()
    cuda = device.type == "cuda"
    t = torch.tensor([0.3], device=device)
    rows = []
    for frames in args.frames:
        x = torch.randn(1, 2, FREQS, frames, dtype=torch.complex64)
        x = x.to(device)
        stacked = torch.cat([x.real, x.imag], dim=1)[:, [0, 2, 1, 3]]
        calls = {
            "ours": lambda s=stacked: ours(s, torch.log(t), feature_divisor=t),
            "reference": lambda x=x: ref(x, t),
        }
        times = {name: [] for name in calls}
        if args.wait_idle_s > 0:
            wait_until_idle(args.wait_idle_s)
        with torch.inference_mode(), OtherLoad() as others:
            for call in calls.values():
                call()  # warm-up
            for i in range(args.repeats):
                order = list(calls) if i % 2 == 0 else list(calls)[::-1]
                for name in order:
                    start = time.perf_counter()
                    calls[name]()
                    if cuda:
                        torch.cuda.synchronize(device)
                    times[name].append(time.perf_counter() - start)
        ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        best = {name: min(v) * 1e3 for name, v in times.items()}
        rows.append(
            [
                str(frames),
                f"{ms['ours']:.0f} ({best['ours']:.0f})",
                f"{ms['reference']:.0f} ({best['reference']:.0f})",
                f"{ms['reference'] / ms['ours']:.2f}",
                f"{best['reference'] / best['ours']:.2f}",
                "n/a"
                if others.fraction is None
                else f"{100 * others.fraction:.0f} %",
            ]
        )
        print("  ".join(rows[-1]), flush=True)
    print()
    print(
        markdown(
            rows,
            [
                "frames",
                "ours: ncsnpp, ms median (best)",
                "sgmse NCSNpp, ms median (best)",
                "reference / ours (median)",
                "reference / ours (best)",
                "others' CPU",
            ],
        )
    )


def markdown(rows, header):
    """Render rows (lists of str) as a markdown table."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--frames", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=40.0,
        help="time allowed for the repeats of one measurement",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nfe", type=int, default=60)
    parser.add_argument("--reference-root", default=None)
    parser.add_argument(
        "--wait-idle-s",
        type=float,
        default=0.0,
        help="before each measurement, wait up to this long for other "
        "processes to leave the CPU (less than 10%% of it for 2 s)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="measure a configuration again (up to this many times) when "
        "other processes took 10%% or more of the CPU during its timing",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {cpu_name()}, device {device}, "
        f"{torch.get_num_threads()} threads, batch 1, "
        f"F = {FREQS}, median of up to {args.repeats} passes after a warm-up"
    )
    if hasattr(os, "getloadavg"):
        print("load average at start:", load_average())
    start = time.perf_counter()
    results = {}
    rows = []
    for name in args.configs:
        torch.manual_seed(0)
        model, kind = build(name)
        model = model.to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        for frames in args.frames:
            call = make_call(model, kind, frames, device)
            for _ in range(1 + args.retries):
                if args.wait_idle_s > 0:
                    wait_until_idle(args.wait_idle_s)
                r = measure(call, device, args.repeats, args.budget_s)
                if r["others"] is None or r["others"] < 0.1:
                    break
            results[name, frames] = r
            rows.append(table_row(name, params, frames, r))
            print("  ".join(rows[-1]), flush=True)
        del model

    if args.reference_root:
        compare_reference(args, device)

    if results:
        print_tables(args, results, rows)
    if hasattr(os, "getloadavg"):
        print("\nload average at end:", load_average())
    print(f"total benchmark time {time.perf_counter() - start:.0f} s")


def print_tables(args, results, rows):
    """Print the speed table and the whole-stack table as markdown."""
    memory_mode = next(iter(results.values()))["memory_mode"]
    memory_label = {
        "rss": "peak RSS growth (MB)",
        "maxrss": "process peak RSS (MB)",
        "cuda": "peak CUDA alloc (MB)",
    }[memory_mode]
    header = [
        "configuration",
        "parameters",
        "frames",
        "ms / forward (median)",
        "ms (best)",
        "GFLOP",
        "GFLOP/s",
        memory_label,
        "passes",
        "others' CPU",
    ]
    print()
    print(markdown(rows, header))

    stacks = [
        ("ncsnpp", "refiner"),
        ("ncsnpp_m", "refiner"),
        ("small", "refiner_small"),
        ("tiny", "refiner_tiny"),
    ]
    stack_rows = []
    for score, refiner in stacks:
        for frames in args.frames:
            keys = ((score, frames), (refiner, frames))
            if any(key not in results for key in keys):
                continue
            total = (
                args.nfe * results[score, frames]["ms"]
                + results[refiner, frames]["ms"]
            ) / 1e3
            audio = audio_seconds(frames)
            stack_rows.append(
                [
                    f"{score} + {refiner}",
                    str(frames),
                    f"{audio:.2f}",
                    f"{total:.1f}",
                    f"{total / audio:.2f}",
                ]
            )
    if stack_rows:
        print()
        print(
            markdown(
                stack_rows,
                [
                    f"stack ({args.nfe} score passes + 1 refiner pass)",
                    "frames",
                    "audio (s)",
                    "compute (s)",
                    "real-time factor",
                ],
            )
        )


if __name__ == "__main__":
    main()
