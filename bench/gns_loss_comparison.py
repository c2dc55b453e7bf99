"""Stage-1 GNS and loss variants trained alike, compared on validation data.

Trains one score model per variant ``GNS:LOSS`` (a noise schedule preset of
``hparams/gns/`` and a loss of ``speechbrain_elbo.losses``) from the same
initial weights, with the same budget, the same batches (same files, same
crops, same order) and the same random stream for t and z, then evaluates
each on the same validation utterances with the same seeds: MiniVB's
held-out speakers p226 and p287, or with ``--task dereverb`` the cv split of
MiniWHAMR (WHAMR! layout). With ``--init`` every variant starts from the
score network of a trained model instead (a warm start, as the bundled
dereverberation model's from the denoiser):

1. the negative ELBO in bits per real dimension and its three terms
   (``speechbrain_elbo.elbo.negative_elbo``, stage-1 Gaussian decoder);
2. one-step denoising: the Tweedie estimate x0_hat(x_t, y, t) at a few fixed
   t (x_t drawn from q(x_t | x0, y), the same z for every t and variant),
   decoded to a waveform, SI-SDR against the clean one, with the same
   formula at score 0 (x_t alone) as reference;
3. sampled enhancement with a few samplers: PESQ-WB, ESTOI, SI-SDR, with the
   (noisy or reverberant) input as reference row;
4. the Importance of Condition curve IoC(t) (``speechbrain_elbo.ioc``) on a
   grid of diffusion times, with where it reaches 0.25 and 0.5 and its mean
   over t, and a figure with, for each loss, the curves of its GNS
   variants.

With ``--seeds S1,S2,S3`` every variant is trained and evaluated once per
seed (each seed gives its own init, batches and random streams, shared by
all variants), and the tables add the mean and standard deviation over
seeds and the paired difference of each loss against ``sigma2`` (same GNS,
same seed).

Each trained model's weights (the evaluated EMA) are saved under
``<out>/models`` (or ``--models``) with the settings that made them, and its
evaluation beside them: a run that finds a model trained with the same
settings reuses it (an interrupted run resumes; a run with more variants
trains only the new ones).

Training is a plain loop: Adam, gradient-norm clipping, an EMA of the
weights (``--ema-decay``, 0 for none) whose weights are the ones evaluated.
Data come from the library: ``prepare_voicebank`` (``prepare_whamr`` with
``--task dereverb``) writes the manifests into
``<out>/prepared``, ``make_datasets`` reads random training crops and centred
validation crops (or whole utterances with ``--valid-frames 0``).

Writes ``<out>/gns_loss_comparison.json`` and ``.md`` and the IoC figure
``<out>/ioc_by_gns.png`` (atomically, after each variant, so a long run shows
what it has) and prints the tables.
Usage (from the repository root; see docs/gns_loss_comparison.md)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/gns_loss_comparison.py \\
        --data MINIVB --out results/gns_loss_comparison
"""

import argparse
import json
import math
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time

import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_elbo.brains import make_ema
from speechbrain_elbo.dataio import make_datasets
from speechbrain_elbo.dataprep.voicebank import prepare_voicebank
from speechbrain_elbo.dataprep.whamr import prepare_whamr
from speechbrain_elbo.demo import figures
from speechbrain_elbo.elbo import negative_elbo
from speechbrain_elbo.fileio import (
    atomic_path,
    write_json_atomic,
    write_text_atomic,
)
from speechbrain_elbo.ioc import ioc_curve
from speechbrain_elbo.losses import LOSSES, build_score_loss
from speechbrain_elbo.metrics import estoi, nan_mean, pesq_wb, si_sdr
from speechbrain_elbo.pipeline import (
    enhance_spectrogram,
    frame_multiple_of,
    utterance_seed,
)
from speechbrain_elbo.recipe import init_score
from speechbrain_elbo.sampling import SAMPLERS, Sampler
from speechbrain_elbo.score import ScoreModel
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import (
    SpectralTransform,
    crop_frames,
    pad_frames,
    peak_normalize,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "hparams" / "models"
GNS_PRESETS = ROOT / "hparams" / "gns"
SAMPLE_RATE = 16000
VALID_SPEAKERS = ("p226", "p287")
# the input each task enhances: the reference row of the tables
TASK_INPUT = {"denoise": "noisy input", "dereverb": "reverberant input"}
CORPUS = {"denoise": "MiniVB", "dereverb": "MiniWHAMR"}
DEFAULT_VARIANTS = (
    "sgmse:sigma2,smax1:sigma2,sgmse:likelihood,sgmse:data_prediction"
)
NAME = "gns_loss_comparison"
# utterance_seed "sample" slots: one independent stream per evaluation
ELBO_STREAM, TWEEDIE_STREAM, SAMPLER_STREAM, IOC_STREAM = 1, 2, 3, 4
ELBO_KEYS = ("total", "prior", "diffusion", "reconstruction")
BASELINE_LOSS = "sigma2"
IOC_LEVELS = (0.25, 0.5)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def parse_variants(text):
    """``"sgmse:sigma2,smax1:likelihood"`` -> [("sgmse", "sigma2"), ...]."""
    presets = sorted(p.stem for p in GNS_PRESETS.glob("*.yaml"))
    variants = []
    for item in text.split(","):
        gns, sep, loss = item.strip().partition(":")
        if not sep or gns not in presets or loss not in LOSSES:
            raise argparse.ArgumentTypeError(
                f"Bad variant {item!r}: write GNS:LOSS with GNS one of "
                f"{presets} (hparams/gns/) and LOSS one of {sorted(LOSSES)}."
            )
        variants.append((gns, loss))
    if len(set(variants)) != len(variants):
        raise argparse.ArgumentTypeError(f"Repeated variant in {text!r}.")
    return variants


def parse_samplers(text):
    """``"euler:3,pc:10"`` -> [("euler", 3), ("pc", 10)]."""
    samplers = []
    for item in text.split(","):
        name, sep, steps = item.strip().partition(":")
        if not sep or name not in SAMPLERS or not steps.isdigit():
            raise argparse.ArgumentTypeError(
                f"Bad sampler {item!r}: write NAME:STEPS with NAME one of "
                f"{sorted(SAMPLERS)} and STEPS a positive integer."
            )
        if int(steps) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: STEPS must be >= 1.")
        samplers.append((name, int(steps)))
    return samplers


def parse_times(text):
    """``"0.1,0.5,1"`` -> [0.1, 0.5, 1.0], each in (0, 1]."""
    times = [float(v) for v in text.split(",")]
    if not all(0.0 < t <= 1.0 for t in times):
        raise argparse.ArgumentTypeError(
            f"Tweedie times must lie in (0, 1], got {text!r}."
        )
    return times


def parse_seeds(text):
    """``"1234,1235"`` -> [1234, 1235], distinct."""
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Bad seeds {text!r}: write integers separated by commas."
        ) from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"Repeated seed in {text!r}.")
    return seeds


def parse_ioc_times(text):
    """``"10"``: 10 times evenly spaced on [t_eps, 1]; ``"0.1,0.5"``: those
    times; ``"0"``: no IoC. Returns an int (a count) or a list of floats."""
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if count == 1:
            raise argparse.ArgumentTypeError(
                "--ioc-times: a count must be 0 (no IoC) or >= 2."
            )
        return count
    return parse_times(text)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--data",
        required=True,
        help="MiniVB (VoiceBank-DEMAND layout) or, with --task dereverb, "
        "MiniWHAMR (WHAMR! layout)",
    )
    add(
        "--task",
        choices=TASK_INPUT,
        default="denoise",
        help="denoise: VoiceBank-DEMAND layout, validation speakers "
        f"{', '.join(VALID_SPEAKERS)}; dereverb: WHAMR! layout, its cv split",
    )
    add(
        "--init",
        help="warm start: every variant's score network starts from the "
        "one of this from_hparams source (a folder or a bundled model's "
        "name, e.g. minivb-small) instead of a seeded random init",
    )
    add("--out", required=True, help="output folder (prepared data too)")
    add("--variants", type=parse_variants, default=DEFAULT_VARIANTS)
    add("--config", default="small", help="hparams/models/<config>.yaml")
    add("--steps", type=int, default=400, help="optimiser steps per variant")
    add("--lr", type=float, default=4e-4)
    add("--batch-size", type=int, default=4)
    add("--crop-frames", type=int, default=128, help="training crop")
    add("--clip", type=float, default=1.0, help="grad-norm clip, 0: none")
    add("--ema-decay", type=float, default=0.99, help="0: no EMA")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=1234, help="one seed")
    seeds.add_argument(
        "--seeds",
        type=parse_seeds,
        help="several seeds S1,S2,...: every variant once per seed",
    )
    add("--models", help="saved models and evaluations; <out>/models")
    add("--valid-items", type=int, default=16)
    add(
        "--valid-frames",
        type=int,
        default=256,
        help="centred validation crop in STFT frames; 0: whole utterances",
    )
    add("--elbo-diffusion-samples", type=int, default=16)
    add("--elbo-reconstruction-samples", type=int, default=2)
    add("--tweedie-times", type=parse_times, default="0.1,0.5,1.0")
    add("--samplers", type=parse_samplers, default="euler:3,euler:8,pc:10")
    add(
        "--ioc-times",
        type=parse_ioc_times,
        default="8",
        help="IoC times: a count (evenly spaced on [t_eps, 1]), a list, "
        "or 0 for none",
    )
    add("--ioc-probes", type=int, default=1, help="Hutchinson probes")
    add("--threads", type=int, default=1, help="torch threads")
    add("--device", default="cpu")
    return parser


def check_args(args):
    for key in ("steps", "batch_size", "valid_items", "threads"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be >= 1.")
    if args.crop_frames < 2:
        raise SystemExit("--crop-frames must be >= 2.")
    if args.valid_frames < 0 or args.valid_frames == 1:
        raise SystemExit("--valid-frames must be >= 2 (or 0: whole files).")
    if not 0.0 <= args.ema_decay < 1.0:
        raise SystemExit("--ema-decay must lie in [0, 1) (0: no EMA).")
    draws = args.elbo_diffusion_samples
    if draws < 2 or draws % 2:
        raise SystemExit("--elbo-diffusion-samples must be even and >= 2.")
    if args.ioc_probes < 1:
        raise SystemExit("--ioc-probes must be >= 1.")
    if args.elbo_reconstruction_samples < 1:
        raise SystemExit("--elbo-reconstruction-samples must be >= 1.")
    known = sorted(
        p.stem
        for p in MODELS.glob("*.yaml")
        if "score_model:" in p.read_text(encoding="utf-8")
    )
    if args.config not in known:
        raise SystemExit(
            f"--config {args.config!r}: not a score network of "
            f"hparams/models/; use one of {known}."
        )


# ---------------------------------------------------------------------------
# Machine description and output
# ---------------------------------------------------------------------------
def cpu_name():
    """The CPU model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device):
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "load_average_at_start": None
        if load is None
        else [round(v, 2) for v in load],
    }


def fmt(value, digits=3):
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def prepare(args):
    """Library preparation into <out>/prepared; returns the manifests."""
    save_folder = pathlib.Path(args.out) / "prepared"
    if args.task == "dereverb":
        return prepare_whamr(
            args.data, save_folder, task="dereverb", sample_rate=SAMPLE_RATE
        )
    return prepare_voicebank(
        args.data,
        save_folder,
        valid_speakers=VALID_SPEAKERS,
        sample_rate=SAMPLE_RATE,
    )


def validation_source(settings):
    """Where the validation utterances come from, for the report."""
    if settings.get("task", "denoise") == "dereverb":
        return "the WHAMR! cv split"
    return f"speakers {', '.join(VALID_SPEAKERS)}"


def train_set(manifests, args):
    return make_datasets(
        {"train": manifests["train"]},
        crop_frames=args.crop_frames,
        sample_rate=SAMPLE_RATE,
        crop={"train": "random"},
    )["train"]


def valid_items(manifests, args):
    """``--valid-items`` utterances spread evenly over the sorted ids."""
    frames = args.valid_frames or 256
    mode = "center" if args.valid_frames else None
    dataset = make_datasets(
        {"valid": manifests["valid"]},
        crop_frames=frames,
        sample_rate=SAMPLE_RATE,
        crop={"valid": mode},
    )["valid"]
    ids = sorted(dataset.data_ids)
    if args.valid_items > len(ids):
        raise SystemExit(
            f"--valid-items {args.valid_items}: the validation set has only "
            f"{len(ids)} utterances."
        )
    step = len(ids) / args.valid_items
    chosen = {ids[int(i * step)] for i in range(args.valid_items)}
    items = []
    for index, uid in enumerate(dataset.data_ids):
        if uid in chosen:
            item = dataset[index]
            items.append((uid, item["noisy_sig"], item["clean_sig"]))
    return sorted(items, key=lambda item: item[0])


def batches(dataset, args):
    """The training batches: same files, crops and order for every call."""
    order = torch.Generator().manual_seed(args.seed)
    queue = []
    for step in range(args.steps):
        indices = []
        while len(indices) < args.batch_size:
            if not queue:
                queue = torch.randperm(len(dataset), generator=order).tolist()
            indices.append(queue.pop())
        # crop positions come from torch's global RNG (dataio.crop_start)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(utterance_seed(args.seed, f"step{step}"))
            items = [dataset[i] for i in indices]
        noisy = torch.stack([item["noisy_sig"] for item in items])
        clean = torch.stack([item["clean_sig"] for item in items])
        yield noisy, clean


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def build_sde(gns_name):
    with open(GNS_PRESETS / f"{gns_name}.yaml", encoding="utf-8") as handle:
        preset = load_hyperpyyaml(handle)
    gns = GeometricGNS(preset["sigma_min"], preset["sigma_max"])
    return OUVESDE(gns, gamma=preset["gamma"], t_eps=preset["t_eps"])


def build_model(config, sde, seed, device):
    """The score model of ``hparams/models/<config>.yaml``, seeded init."""
    torch.manual_seed(seed)
    with open(MODELS / f"{config}.yaml", encoding="utf-8") as handle:
        backbone = load_hyperpyyaml(handle)["score_model"]
    return ScoreModel(backbone, sde).to(device)


def gns_description(sde):
    T = torch.tensor(sde.T)
    return {
        **sde.describe(),
        "prior_coefficient": sde.snr(T).item(),
        "sigma_T": sde.std(T).item(),
        "sigma_t_eps": sde.std(torch.tensor(sde.t_eps)).item(),
    }


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def encode_pair(transform, noisy, clean):
    noisy_n, clean_n, scale = peak_normalize(noisy, clean)
    return transform.encode(noisy_n), transform.encode(clean_n), scale


def train(model, loss_fn, transform, dataset, args, device):
    """Plain loop; returns (model to evaluate, training record)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    ema = make_ema(model, args.ema_decay) if args.ema_decay > 0 else None
    generator = torch.Generator(device=device).manual_seed(args.seed + 1)
    losses, skipped = [], 0
    start = time.perf_counter()
    for step, (noisy, clean) in enumerate(batches(dataset, args)):
        y, x0, _ = encode_pair(transform, noisy.to(device), clean.to(device))
        loss = loss_fn(model, x0, y, generator=generator)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        losses.append(loss.item())
        if (step + 1) % max(1, args.steps // 10) == 0:
            print(f"  step {step + 1}/{args.steps}: loss {losses[-1]:.4f}")
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10) :]
    record = {
        "seconds": seconds,
        "seconds_per_step": seconds / args.steps,
        "skipped_steps": skipped,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(tail) / len(tail) if tail else None,
    }
    evaluated = model if ema is None else ema.module
    return evaluated.eval(), record


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
def generator_for(device, args, uid, stream):
    seed = utterance_seed(args.seed, uid, stream)
    return torch.Generator(device=device).manual_seed(seed)


def enhancement_scores(wav, clean):
    return {
        "si_sdr": si_sdr(wav, clean)[0].item(),
        "pesq": pesq_wb(wav[0], clean[0], SAMPLE_RATE),
        "estoi": estoi(wav[0], clean[0], SAMPLE_RATE),
    }


def elbo_terms(model, sde, x0, y, mask, generator, args):
    terms = negative_elbo(
        model,
        sde,
        x0,
        y,
        diffusion_samples=args.elbo_diffusion_samples,
        reconstruction_samples=args.elbo_reconstruction_samples,
        generator=generator,
        mask=mask,
    )
    return {
        key: getattr(terms, key)[0].item()
        for key in ("prior", "diffusion", "reconstruction", "stderr", "total")
    }


def tweedie_si_sdr(model, sde, transform, spec, clean, args, generator):
    """SI-SDR of the decoded x0_hat(x_t, y, t) at each ``--tweedie-times``.

    Returns the model's scores and those of the same formula with the score
    set to 0, (x_t - (1 - a_t) y) / a_t = x0 + sigma_t z / a_t: what x_t
    alone gives, the reference the model has to beat at that t.
    """
    x0, y, frames, scale = spec
    state = generator.get_state()
    scores = {"model": {}, "zero_score": {}}
    for t in args.tweedie_times:
        generator.set_state(state)  # the same z at every t
        tt = torch.full((1,), t, device=x0.device)
        x_t, _ = sde.perturb(x0, y, tt, generator)
        estimates = {
            "model": model.data_prediction(x_t, y, tt),
            "zero_score": sde.data_prediction(x_t, y, tt, 0.0 * x_t),
        }
        for key, x0_hat in estimates.items():
            x0_hat = crop_frames(x0_hat, frames)
            wav = transform.decode(x0_hat, clean.shape[-1]) * scale
            scores[key][f"{t:g}"] = si_sdr(wav, clean)[0].item()
    return scores


def sampled_scores(model, sde, transform, spec, clean, args, uid):
    _, y, frames, scale = spec
    y = crop_frames(y, frames)  # the pipeline pads it again, alike
    scores = {}
    for name, steps in args.samplers:
        generator = generator_for(y.device, args, uid, SAMPLER_STREAM)
        out = enhance_spectrogram(
            model, sde, y, Sampler(name, steps), generator=generator
        )
        wav = transform.decode(out.stage1, clean.shape[-1]) * scale
        scores[f"{name}:{steps}"] = {
            "nfe": out.nfe,
            **enhancement_scores(wav, clean),
        }
    return scores


def padded_spectrograms(model, transform, noisy, clean):
    """x0, y padded to the frame multiple; the frame mask, T and scale."""
    y, x0, scale = encode_pair(transform, noisy, clean)
    y, frames = pad_frames(y, frame_multiple_of(model))
    x0, _ = pad_frames(x0, frame_multiple_of(model))
    mask = None
    if y.shape[-1] != frames:
        positions = torch.arange(y.shape[-1], device=y.device)
        mask = (positions < frames).float()[None, None, None, :]
    return x0, y, mask, frames, scale


@torch.inference_mode()
def evaluate(model, sde, transform, items, args, device):
    """Per-utterance ELBO terms, one-step SI-SDR and sampled metrics."""
    records = []
    for uid, noisy, clean in items:
        noisy, clean = noisy[None].to(device), clean[None].to(device)
        x0, y, mask, frames, scale = padded_spectrograms(
            model, transform, noisy, clean
        )
        spec = (x0, y, frames, scale)
        elbo = elbo_terms(
            model,
            sde,
            x0,
            y,
            mask,
            generator_for(device, args, uid, ELBO_STREAM),
            args,
        )
        tweedie = tweedie_si_sdr(
            model,
            sde,
            transform,
            spec,
            clean,
            args,
            generator_for(device, args, uid, TWEEDIE_STREAM),
        )
        sampled = sampled_scores(model, sde, transform, spec, clean, args, uid)
        records.append(
            {"id": uid, "elbo": elbo, "tweedie": tweedie, "sampled": sampled}
        )
    return records


def ioc_times(args, sde):
    """The IoC grid of ``--ioc-times`` for this SDE (a count spans
    [t_eps, 1])."""
    if isinstance(args.ioc_times, int):
        if args.ioc_times == 0:
            return []
        grid = torch.linspace(float(sde.t_eps), 1.0, args.ioc_times)
        return [round(t, 4) for t in grid.tolist()]
    return list(args.ioc_times)


@torch.inference_mode()
def ioc_by_item(model, sde, transform, items, args):
    """IoC(t) of every item (``ioc_curve`` on one item at a time)."""
    times = torch.tensor(ioc_times(args, sde))
    per_item = {}
    for uid, noisy, clean in items:
        device = next(model.parameters()).device
        noisy, clean = noisy[None].to(device), clean[None].to(device)
        x0, y, mask, _, _ = padded_spectrograms(model, transform, noisy, clean)
        curve = ioc_curve(
            model,
            sde,
            x0,
            y,
            times.to(device),
            probes=args.ioc_probes,
            generator=generator_for(device, args, uid, IOC_STREAM),
            mask=mask,
        )
        per_item[uid] = curve["ioc"].tolist()
    return {
        "t": times.tolist(),
        "sigma": sde.std(times.float()).tolist(),
        "per_item": per_item,
    }


def crossing(xs, values, level, log=False):
    """Smallest x at which the piecewise-linear curve reaches ``level``
    (interpolated, in log x if ``log``); None if it never does."""
    points = list(zip(xs, values, strict=True))
    if points and points[0][1] >= level:
        return points[0][0]
    for (x0, v0), (x1, v1) in zip(points, points[1:], strict=False):
        if v0 < level <= v1:
            share = (level - v0) / (v1 - v0)
            if log:
                return math.exp(
                    math.log(x0) + share * (math.log(x1) - math.log(x0))
                )
            return x0 + share * (x1 - x0)
    return None


def curve_stats(t, sigma, values):
    """Where IoC first reaches each of ``IOC_LEVELS`` (in t and sigma_t)
    and its mean over t on the grid (trapezoid area / span)."""
    area = sum(
        (t1 - t0) * (v0 + v1) / 2
        for t0, t1, v0, v1 in zip(t, t[1:], values, values[1:], strict=False)
    )
    span = t[-1] - t[0]
    stats = {}
    for level in IOC_LEVELS:
        stats[f"t_at_{level:g}"] = crossing(t, values, level)
        stats[f"sigma_at_{level:g}"] = crossing(sigma, values, level, True)
    stats["mean_over_t"] = area / span if span > 0 else values[0]
    return stats


def stat_keys():
    keys = [f"{x}_at_{level:g}" for level in IOC_LEVELS for x in ("t", "sigma")]
    return keys + ["mean_over_t"]


def ioc_summary(ioc):
    """Mean and standard deviation over items of one model's IoC."""
    curves = list(ioc["per_item"].values())
    columns = list(zip(*curves, strict=True))
    mean = [statistics.fmean(c) for c in columns]
    std = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
    return {
        "t": ioc["t"],
        "sigma": ioc["sigma"],
        "ioc": mean,
        "ioc_std_items": std,
        **curve_stats(ioc["t"], ioc["sigma"], mean),
    }


def summarise(records):
    """Means over utterances (NaN-aware); ELBO stderr of the mean."""
    count = len(records)
    elbo = {
        key: sum(r["elbo"][key] for r in records) / count
        for key in ("prior", "diffusion", "reconstruction", "total")
    }
    elbo["stderr"] = math.sqrt(sum(r["elbo"]["stderr"] ** 2 for r in records))
    elbo["stderr"] /= count
    first = records[0]
    tweedie = {
        key: {
            t: nan_mean([r["tweedie"][key][t] for r in records])
            for t in first["tweedie"][key]
        }
        for key in first["tweedie"]
    }
    sampled = {
        name: {
            key: nan_mean([r["sampled"][name][key] for r in records])
            for key in first["sampled"][name]
        }
        for name in first["sampled"]
    }
    return {"elbo": elbo, "tweedie_si_sdr": tweedie, "sampled": sampled}


def noisy_reference(items):
    scores = [enhancement_scores(n[None], c[None]) for _, n, c in items]
    return {key: nan_mean([s[key] for s in scores]) for key in scores[0]}


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def settings_lines(result):
    s, m = result["settings"], result["machine"]
    valid = (
        f"centred crops of {s['valid_frames']} frames"
        if s["valid_frames"]
        else "whole utterances"
    )
    ema = f"EMA {s['ema_decay']}" if s["ema_decay"] > 0 else "no EMA"
    return [
        f"machine: {m['cpu']} ({m['cores']} cores), {m['threads']} torch "
        f"threads, torch {m['torch']}, device {m['device']}, load average "
        f"at start {m['load_average_at_start']}",
        f"command: `{result['command']}`",
        f"training: model `{s['config']}`, {s['steps']} Adam steps, lr "
        f"{s['lr']}, batch {s['batch_size']} x {s['crop_frames']} frames, "
        f"clip {s['clip']}, {ema} (evaluated), "
        f"{init_text(s.get('init'))}, "
        f"seed{'s' if len(s['seeds']) > 1 else ''} "
        f"{', '.join(map(str, s['seeds']))}",
        f"validation: {len(result['items'])} utterances of "
        f"{validation_source(s)} ({valid}); -ELBO with "
        f"{s['elbo_diffusion_samples']} stratified diffusion draws and "
        f"{s['elbo_reconstruction_samples']} reconstruction draws; "
        + ioc_settings_text(s),
    ]


def ioc_settings_text(settings):
    if settings["ioc_times"] == 0:
        return "no IoC (--ioc-times 0)"
    probes = settings["ioc_probes"]
    return (
        f"IoC with {probes} Hutchinson probe{'s' if probes > 1 else ''}, "
        f"times {ioc_grid_text(settings['ioc_times'])}"
    )


def init_text(source):
    if source is None:
        return "seeded random init"
    return f"warm start from the score network of {source}"


def input_label(result):
    return TASK_INPUT[result["settings"].get("task", "denoise")]


def ioc_grid_text(times):
    if isinstance(times, int):
        return f"{times} evenly on [t_eps, 1]"
    return ", ".join(f"{t:g}" for t in times)


def label(variant, result):
    """The variant's name, with its seed when the run has several."""
    if len(result["settings"]["seeds"]) > 1:
        return f"{variant['name']} (seed {variant['seed']})"
    return variant["name"]


def training_table(result):
    rows = [
        [
            label(v, result),
            f"{v['gns']['sigma_min']:g} / {v['gns']['sigma_max']:g}",
            fmt(v["gns"]["prior_coefficient"]),
            fmt(v["gns"]["sigma_t_eps"], 4),
            v["loss"],
            f"{v['training']['seconds']:.0f}"
            + (" (saved)" if v["reused_model"] else ""),
            f"{v['training']['seconds_per_step']:.2f}",
            fmt(v["training"]["final_loss"], 4),
            v["training"]["skipped_steps"],
            f"{v['eval_seconds']:.0f}",
        ]
        for v in result["variants"]
    ]
    header = [
        "variant",
        "sigma_min / sigma_max",
        "a_T^2/sigma_T^2",
        "sigma(t_eps)",
        "loss",
        "train s",
        "s/step",
        "final loss (own scale)",
        "skipped",
        "eval s",
    ]
    return markdown(header, rows)


def elbo_table(result):
    rows = [
        [label(v, result)]
        + [
            fmt(v["summary"]["elbo"][key], 4)
            for key in ("total", "prior", "diffusion", "reconstruction")
        ]
        + [fmt(v["summary"]["elbo"]["stderr"], 4)]
        for v in result["variants"]
    ]
    header = ["variant", "-ELBO", "prior", "diffusion", "reconstruction"]
    return markdown(header + ["MC stderr"], rows)


def tweedie_table(result):
    """Model rows, then the score = 0 reference of each GNS."""
    variants = result["variants"]
    times = list(variants[0]["summary"]["tweedie_si_sdr"]["model"])
    noisy = fmt(result["noisy"]["si_sdr"], 2)
    rows = [[input_label(result)] + [noisy] * len(times)]
    references = {}
    for v in variants:
        references.setdefault(v["gns_preset"], v)
        rows.append([label(v, result)] + tweedie_cells(v, "model", times))
    for gns_name, v in references.items():
        reference = f"score = 0, GNS {gns_name}"
        rows.append([reference] + tweedie_cells(v, "zero_score", times))
    header = ["variant"] + [f"t = {t}: SI-SDR dB (sigma_t)" for t in times]
    return markdown(header, rows)


def tweedie_cells(variant, key, times):
    sde = build_sde(variant["gns_preset"])
    cells = []
    for t in times:
        sigma = sde.std(torch.tensor(float(t))).item()
        score = variant["summary"]["tweedie_si_sdr"][key][t]
        cells.append(f"{fmt(score, 2)} ({sigma:.3f})")
    return cells


def sampled_table(result):
    noisy = result["noisy"]
    rows = [
        [input_label(result), "-", "-"]
        + [fmt(noisy[k], 2) for k in ("pesq", "estoi", "si_sdr")]
    ]
    samplers = list(result["variants"][0]["summary"]["sampled"])
    for name in samplers:
        for v in result["variants"]:
            score = v["summary"]["sampled"][name]
            rows.append(
                [label(v, result), name, f"{score['nfe']:.0f}"]
                + [fmt(score[k], 2) for k in ("pesq", "estoi", "si_sdr")]
            )
    header = ["variant", "sampler", "NFE", "PESQ-WB", "ESTOI", "SI-SDR dB"]
    return markdown(header, rows)


def mean_std(values):
    """Mean and sample standard deviation (None for fewer than 2)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std}


def aggregate(variants):
    """Per variant over seeds: -ELBO terms and IoC; paired differences.

    ``paired`` compares each variant with the ``sigma2`` variant of the
    same GNS on the seeds both have: per seed, the difference of each
    -ELBO term (variant minus baseline), its mean and standard deviation.
    """
    by_name = {}
    for v in variants:
        by_name.setdefault(v["name"], {})[v["seed"]] = v
    per_variant = {}
    for name, runs in by_name.items():
        seeds = sorted(runs)
        elbo = {}
        for key in ELBO_KEYS:
            values = [runs[s]["summary"]["elbo"][key] for s in seeds]
            elbo[key] = {"per_seed": values, **mean_std(values)}
        per_variant[name] = {
            "seeds": seeds,
            "gns_preset": runs[seeds[0]]["gns_preset"],
            "loss": runs[seeds[0]]["loss"],
            "elbo": elbo,
            "ioc": ioc_over_seeds([runs[s]["ioc_summary"] for s in seeds]),
        }
    paired = []
    for name, entry in per_variant.items():
        base = f"{entry['gns_preset']}:{BASELINE_LOSS}"
        if entry["loss"] == BASELINE_LOSS or base not in by_name:
            continue
        seeds = [s for s in entry["seeds"] if s in by_name[base]]
        if not seeds:
            continue
        diffs = {}
        for key in ELBO_KEYS:
            values = [
                by_name[name][s]["summary"]["elbo"][key]
                - by_name[base][s]["summary"]["elbo"][key]
                for s in seeds
            ]
            diffs[key] = {"per_seed": values, **mean_std(values)}
        paired.append(
            {
                "variant": name,
                "baseline": base,
                "seeds": seeds,
                "difference": diffs,
                "negative_in_every_seed": all(
                    d < 0 for d in diffs["total"]["per_seed"]
                ),
            }
        )
    return {"variants": per_variant, "paired": paired}


def ioc_over_seeds(summaries):
    """Seed-mean IoC curve, its spread over seeds (over items for one
    seed), and the level crossings and mean IoC per seed with their
    spread."""
    if not summaries or any(s is None for s in summaries):
        return None
    first = summaries[0]
    columns = list(zip(*(s["ioc"] for s in summaries), strict=True))
    mean = [statistics.fmean(c) for c in columns]
    if len(summaries) > 1:
        spread, spread_over = [statistics.stdev(c) for c in columns], "seeds"
    else:
        spread, spread_over = first["ioc_std_items"], "items"
    return {
        "t": first["t"],
        "sigma": first["sigma"],
        "ioc": mean,
        "ioc_spread": spread,
        "spread_over": spread_over,
        "levels": list(IOC_LEVELS),
        "of_mean_curve": curve_stats(first["t"], first["sigma"], mean),
        "per_seed": {
            key: {
                "values": [s[key] for s in summaries],
                **mean_std([s[key] for s in summaries]),
            }
            for key in stat_keys()
        },
    }


def pm(stats, digits=4):
    """``mean ± std`` (just the mean for one seed)."""
    text = fmt(stats["mean"], digits)
    if stats["std"] is not None:
        text += f" ± {fmt(stats['std'], digits)}"
    return text


def elbo_seeds_table(result):
    rows = []
    for name, entry in result["aggregate"]["variants"].items():
        elbo = entry["elbo"]
        rows.append(
            [name, ", ".join(map(str, entry["seeds"]))]
            + [", ".join(fmt(v, 4) for v in elbo["total"]["per_seed"])]
            + [pm(elbo[key]) for key in ELBO_KEYS]
        )
    header = ["variant", "seeds", "-ELBO per seed", "-ELBO mean ± std"]
    header += ["prior", "diffusion", "reconstruction"]
    return markdown(header, rows)


def paired_table(result):
    rows = []
    for pair in result["aggregate"]["paired"]:
        diff = pair["difference"]
        rows.append(
            [
                f"{pair['variant']} - {pair['baseline']}",
                ", ".join(map(str, pair["seeds"])),
                ", ".join(fmt(v, 4) for v in diff["total"]["per_seed"]),
                pm(diff["total"]),
                "yes" if pair["negative_in_every_seed"] else "no",
            ]
            + [pm(diff[key]) for key in ("diffusion", "reconstruction")]
        )
    header = ["difference of -ELBO", "seeds", "per seed", "mean ± std"]
    header += ["negative in every seed", "diffusion", "reconstruction"]
    return markdown(header, rows)


def ioc_entries(result):
    return {
        name: entry["ioc"]
        for name, entry in result["aggregate"]["variants"].items()
        if entry["ioc"] is not None
    }


def ioc_curve_table(result):
    entries = ioc_entries(result)
    if not entries:
        return "No IoC (--ioc-times 0)."
    grid = next(iter(entries.values()))["t"]
    header = ["variant", "spread over"] + [f"t = {t:g}" for t in grid]
    rows = []
    for name, ioc in entries.items():
        cells = []
        for t, sigma, value, spread in zip(
            ioc["t"], ioc["sigma"], ioc["ioc"], ioc["ioc_spread"], strict=True
        ):
            where = "" if t in grid else f"t={t:g}, "
            cells.append(f"{fmt(value)} ± {fmt(spread)} ({where}σ {sigma:.3f})")
        rows.append([name, ioc["spread_over"]] + cells)
    return markdown(header, rows)


def ioc_stats_table(result):
    """Per variant: where IoC reaches each level, mean IoC over t; for
    each, mean ± std over seeds of the per-seed curves."""
    if not ioc_entries(result):
        return "No IoC (--ioc-times 0)."
    rows = []
    for name, ioc in ioc_entries(result).items():
        seeds = ioc["per_seed"]
        rows.append(
            [name, len(seeds["mean_over_t"]["values"])]
            + [
                pm(seeds[key], 4 if key.startswith("sigma") else 3)
                for key in stat_keys()
            ]
        )
    header = ["variant", "seeds"]
    for level in IOC_LEVELS:
        header += [f"t at IoC = {level:g}", f"sigma_t at IoC = {level:g}"]
    return markdown(header + ["mean IoC over t"], rows)


def plot_ioc_by_gns(result, out):
    """``<out>/ioc_by_gns.png``: one row per loss, IoC against t and
    against sigma_t, one curve per GNS of that loss (mean over seeds;
    band: spread over seeds, or over items for one seed). Returns the
    paths written."""
    entries = ioc_entries(result)
    if not entries or not figures.have_matplotlib():
        return []
    variants = result["aggregate"]["variants"]
    losses = {}
    for name, ioc in entries.items():
        losses.setdefault(variants[name]["loss"], {})[name] = ioc
    plt = figures._pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, grid = plt.subplots(
        len(losses), 2, figsize=(10, 3.6 * len(losses)), squeeze=False
    )
    for axes, (loss, curves) in zip(grid, losses.items(), strict=True):
        for name, ioc in curves.items():
            pairs = list(zip(ioc["ioc"], ioc["ioc_spread"], strict=True))
            low = [m - s for m, s in pairs]
            high = [m + s for m, s in pairs]
            seeds = len(variants[name]["seeds"])
            text = f"{variants[name]['gns_preset']} ({seeds} seed"
            text += f"{'s' if seeds > 1 else ''}, ± std over "
            text += f"{ioc['spread_over']})"
            for ax, xs in zip(axes, (ioc["t"], ioc["sigma"]), strict=True):
                (line,) = ax.plot(xs, ioc["ioc"], "-o", ms=3, label=text)
                ax.fill_between(
                    xs, low, high, alpha=0.2, color=line.get_color()
                )
        axes[0].set_xlabel("diffusion time t")
        axes[1].set_xlabel("sigma_t (noise standard deviation)")
        axes[1].set_xscale("log")
        axes[1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axes[1].xaxis.set_minor_formatter(NullFormatter())
        axes[0].set_ylabel(f"IoC, loss {loss}")
        for ax in axes:
            ax.set_ylim(-0.02, 1.02)
            for level in IOC_LEVELS:
                ax.axhline(level, color="grey", lw=0.8, ls=":")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, title="GNS", title_fontsize=8)
    fig.suptitle(
        f"Importance of Condition by GNS ({len(result['items'])} "
        "validation items)",
        fontsize=10,
    )
    fig.tight_layout()
    return [str(figures._save(fig, out / "ioc_by_gns.png"))]


def report(result):
    corpus = CORPUS[result["settings"].get("task", "denoise")]
    lines = [f"# GNS and loss comparison on {corpus} validation data", ""]
    lines += [f"- {line}" for line in settings_lines(result)]
    sections = [
        ("Training (same init, batches and random stream)", training_table),
        (
            "Negative ELBO, bits per real dimension (lower is better)",
            elbo_table,
        ),
        ("One-step Tweedie estimate x0_hat(x_t, y, t)", tweedie_table),
        ("Sampled enhancement (means over utterances)", sampled_table),
    ]
    sections += [
        ("Negative ELBO over seeds, bits per real dimension", elbo_seeds_table),
        (
            f"Paired difference of -ELBO against {BASELINE_LOSS} (same GNS, "
            "same seed; negative: the variant's bound is lower)",
            paired_table,
        ),
        (
            "Importance of Condition IoC(t): mean ± spread (sigma_t)",
            ioc_curve_table,
        ),
        (
            "Where the IoC first reaches "
            + " and ".join(f"{level:g}" for level in IOC_LEVELS)
            + " (interpolated; mean ± std over seeds), and its mean over t",
            ioc_stats_table,
        ),
    ]
    if result["variants"]:
        for title, table in sections:
            lines += ["", f"## {title}", "", table(result)]
        for path in result.get("figures", []):
            lines += ["", f"IoC figure: `{pathlib.Path(path).name}`"]
    return "\n".join(lines) + "\n"


def save(result, out):
    result["aggregate"] = aggregate(result["variants"])
    result["figures"] = plot_ioc_by_gns(result, out)
    write_json_atomic(out / f"{NAME}.json", result, indent=1)
    write_text_atomic(out / f"{NAME}.md", report(result))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
def training_key(gns_name, loss_name, args, dataset):
    """What makes a trained model: the saved one is reused only if equal."""
    keys = ("config", "steps", "lr", "batch_size", "crop_frames", "clip")
    key = {
        "gns": gns_name,
        "loss": loss_name,
        **{key: getattr(args, key) for key in keys},
        "ema_decay": args.ema_decay,
        "seed": args.seed,
        "data": str(pathlib.Path(args.data).resolve()),
        "train_utterances": len(dataset),
    }
    if args.init is not None:  # absent for random init: older saved models
        key["init"] = args.init  # stay reusable
    return key


def evaluation_key(args, items):
    keys = (
        "valid_frames",
        "elbo_diffusion_samples",
        "elbo_reconstruction_samples",
        "tweedie_times",
    )
    return {
        **{key: getattr(args, key) for key in keys},
        "samplers": [f"{n}:{s}" for n, s in args.samplers],
        "items": [uid for uid, _, _ in items],
        "seed": args.seed,
    }


def ioc_key(args, items, sde):
    return {
        "times": ioc_times(args, sde),
        "probes": args.ioc_probes,
        "valid_frames": args.valid_frames,
        "items": [uid for uid, _, _ in items],
        "seed": args.seed,
    }


def load_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def trained_model(gns_name, loss_name, sde, transform, data, args, device):
    """The evaluated weights: saved ones of equal settings, else trained.

    Returns (model, training record, whether it was reused)."""
    stem = model_stem(gns_name, loss_name, args.seed)
    path = args.models_dir / f"{stem}.pt"
    key = training_key(gns_name, loss_name, args, data["train"])
    model = build_model(args.config, sde, args.seed, device)
    init_score(
        {"score_backbone": model.backbone, "score_init_folder": args.init}
    )
    if path.exists():
        saved = torch.load(path, map_location=device, weights_only=True)
        if saved.get("settings") == key:
            model.load_state_dict(saved["state_dict"])
            print(f"  reusing {path}", flush=True)
            return model.eval(), saved["training"], True
        print(f"  {path} has other settings: training again", flush=True)
    loss_fn = build_score_loss(loss_name, sde, transform=transform)
    evaluated, record = train(
        model, loss_fn, transform, data["train"], args, device
    )
    print(
        f"  trained in {record['seconds']:.0f} s "
        f"({record['seconds_per_step']:.2f} s/step)",
        flush=True,
    )
    saved = {
        "settings": key,
        "training": record,
        "state_dict": evaluated.state_dict(),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(saved, tmp)
    return evaluated, record, False


def model_stem(gns_name, loss_name, seed):
    return f"{gns_name}-{loss_name}_seed{seed}"


def run_variant(gns_name, loss_name, data, args, device):
    """Train (or reuse) and evaluate one variant for ``args.seed``.

    The evaluation and the IoC curve are stored beside the model with
    their settings, and reused when the model was reused and they match.
    """
    name = f"{gns_name}:{loss_name}"
    print(f"\n== {name}, seed {args.seed}", flush=True)
    sde = build_sde(gns_name)
    transform = SpectralTransform()
    model, record, reused = trained_model(
        gns_name, loss_name, sde, transform, data, args, device
    )
    cache_path = (
        args.models_dir
        / f"{model_stem(gns_name, loss_name, args.seed)}.eval.json"
    )
    cache = load_json(cache_path) if reused else {}
    eval_key = evaluation_key(args, data["valid"])
    if cache.get("evaluation_settings") == eval_key:
        print("  reusing its evaluation", flush=True)
    else:
        start = time.perf_counter()
        cache["utterances"] = evaluate(
            model, sde, transform, data["valid"], args, device
        )
        cache["eval_seconds"] = time.perf_counter() - start
        cache["evaluation_settings"] = eval_key
        write_json_atomic(cache_path, cache, indent=1)
    curve_key = ioc_key(args, data["valid"], sde)
    if not curve_key["times"]:
        cache["ioc"] = None
    elif cache.get("ioc_settings") == curve_key:
        print("  reusing its IoC curve", flush=True)
    else:
        start = time.perf_counter()
        cache["ioc"] = ioc_by_item(model, sde, transform, data["valid"], args)
        cache["ioc"]["seconds"] = time.perf_counter() - start
        cache["ioc_settings"] = curve_key
        write_json_atomic(cache_path, cache, indent=1)
    return {
        "name": name,
        "seed": args.seed,
        "gns_preset": gns_name,
        "loss": loss_name,
        "gns": gns_description(sde),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": record,
        "reused_model": reused,
        "eval_seconds": cache["eval_seconds"],
        "summary": summarise(cache["utterances"]),
        "ioc": cache["ioc"],
        "ioc_summary": cache["ioc"] and ioc_summary(cache["ioc"]),
        "utterances": cache["utterances"],
    }


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    check_args(args)
    args.seeds = args.seeds or [args.seed]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.models_dir = pathlib.Path(args.models or out / "models")
    command = shlex.join(["python", "bench/gns_loss_comparison.py", *argv])
    settings = {
        k: v
        for k, v in vars(args).items()
        if k not in ("variants", "samplers", "seed", "models_dir")
    }
    settings["variants"] = [f"{g}:{loss}" for g, loss in args.variants]
    settings["samplers"] = [f"{n}:{s}" for n, s in args.samplers]
    settings["models"] = str(args.models_dir)
    result = {"machine": machine(device), "command": command}
    result["settings"] = settings
    print("\n".join(settings_lines({**result, "items": []})[:2]), flush=True)

    manifests = prepare(args)
    data = {"train": train_set(manifests, args)}
    data["valid"] = valid_items(manifests, args)
    result["items"] = [uid for uid, _, _ in data["valid"]]
    result["noisy"] = noisy_reference(data["valid"])
    result["variants"] = []
    save(result, out)
    for seed in args.seeds:
        seed_args = argparse.Namespace(**{**vars(args), "seed": seed})
        for gns_name, loss_name in args.variants:
            variant = run_variant(gns_name, loss_name, data, seed_args, device)
            result["variants"].append(variant)
            save(result, out)
    print()
    print(report(result))
    written = [out / f"{NAME}.json", out / f"{NAME}.md", *result["figures"]]
    print("written: " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
