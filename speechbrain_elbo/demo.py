"""``make demo``: enhance real noisy speech with a bundled model and report.

:func:`run_demo` takes an exported two-stage model (by default the one
bundled in :mod:`speechbrain_elbo.pretrained`) and the MiniVB test split
(built on the spot from the Debian audio packages by
:func:`prepare_demo_data`, or from the committed fixtures when apt is not
available), and writes into ``out_dir``:

- ``report.json`` and ``report.md``: PESQ-WB, ESTOI, SI-SDR (and DNSMOS when
  the ``speechmos`` package is installed), NFE and real-time factor of the
  noisy input, stage 1 and stage 1+2; the ELBO terms with the Tweedie
  decoder (stage 1) and the refiner as decoder (stage 1+2); the Importance
  of Condition curve;
- ``figures/``: spectrograms of one utterance (noisy, stage 1, stage 1+2,
  clean), the IoC curve, the model's training curves;
- ``enhanced/stage1/`` and ``enhanced/stage1+2/``: the enhanced WAV files;
- ``model/``: a copy of the model folder used.

Stage 1 and stage 1+2 are the *same* stage-1 sample, with and without the
refiner: the sampler runs once per utterance and the refiner is applied to
its output, exactly as ``enhance_batch(use_refiner=True)`` does (the tests
check both outputs against ``enhance_batch``).

``python -m speechbrain_elbo.demo train --minutes N`` runs the whole
pipeline from scratch within a time budget (data, both stages with the
recipe's ``run.sh --config small``, export, report).

Example
-------
>>> plan = plan_training(60)
>>> plan["epochs"] >= 1 and plan["predicted_seconds"] <= 60 * 60
True
"""

import argparse
import csv
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

import soundfile as sf
import torch
from tqdm.auto import tqdm

from speechbrain_elbo import report as reporting
from speechbrain_elbo.audio_output import write_audio_atomic
from speechbrain_elbo.elbo import fit_decoder_variance, negative_elbo
from speechbrain_elbo.ioc import ioc_curve
from speechbrain_elbo.metrics import estoi, nan_mean, pesq_wb, si_sdr
from speechbrain_elbo.spectral import crop_frames, pad_frames, peak_normalize

__all__ = [
    "DemoError",
    "DEFAULT_OUT",
    "DEFAULT_DATA",
    "DEFAULT_ITEMS",
    "prepare_demo_data",
    "load_test_items",
    "enhance_two_stage",
    "elbo_summary",
    "ioc_summary",
    "run_demo",
    "plan_training",
    "run_training",
    "main",
]

#: Where ``make demo`` writes its report (replaced on every run).
DEFAULT_OUT = "results/demo"
#: Where the demo's MiniVB test split is built (kept between runs).
DEFAULT_DATA = "results/demo_data/minivb-test"
#: Test items enhanced by default: with the small configuration at 20
#: network evaluations, about 3.5 minutes of CPU time (docs/demo.md has the
#: measurement).
DEFAULT_ITEMS = 24
#: The demo build of MiniVB needs only its test split, but build_minivb
#: always writes all three splits: these keep the other two tiny. The test
#: split does not depend on them (it is filled first, item by item).
DEMO_TRAIN_MINUTES = 0.05
DEMO_VALID_ITEMS = 4

_TRAIN_LOGS = {
    "score": "train_log_score.txt",
    "refiner": "train_log_refiner.txt",
}


class DemoError(RuntimeError):
    """A step of the demo failed; the message names the step and the fix."""


@contextmanager
def _step(name):
    """Turn any failure inside the block into a DemoError naming the step."""
    try:
        yield
    except DemoError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as error:
        raise DemoError(
            f"{name} failed: {type(error).__name__}: {error}"
        ) from error


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _stamp(data_dir):
    path = pathlib.Path(data_dir) / "minidata.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _is_demo_build(stamp):
    return (
        stamp is not None
        and stamp.get("kind") == "MiniVB"
        and float(stamp.get("train_minutes", -1)) == DEMO_TRAIN_MINUTES
    )


def prepare_demo_data(
    data_dir,
    items=DEFAULT_ITEMS,
    cache_dir=None,
    samples_dir=None,
    seed=1234,
    progress=True,
):
    """Make sure ``data_dir`` holds a MiniVB test split of ``items`` items.

    A folder that already holds a MiniVB (or VoiceBank-DEMAND) test split is
    used as it is when it has enough items or is not a demo build (a full
    MiniVB is never rebuilt). Otherwise MiniVB is built with
    :func:`speechbrain_elbo.dataprep.minidata.build_minivb`:
    ``build_minivb`` always writes the three splits, so the demo asks for a
    training split of a few seconds and a handful of validation items. The
    test split is filled first and item by item, so its first ``items``
    utterances are the same audio as those of the default build (only
    their ``pXXX`` names can differ when few talkers are present).

    The sources are the Debian packages, fetched with ``apt-get`` into the
    cache (about 150 s and 326 MB the first time), or the committed fixtures
    when apt is not available (a loud banner; the build is tiny).

    Arguments
    ---------
    data_dir : str or pathlib.Path
        The MiniVB folder.
    items : int
        Test items wanted.
    cache_dir : str or pathlib.Path, optional
        Cache of the Debian packages (default: ``$SPEECHBRAIN_ELBO_SOURCES``
        or ``~/.cache/speechbrain_elbo/sources``).
    samples_dir : str or pathlib.Path, optional
        Use these fixtures instead of the Debian packages.
    seed : int
        Seed of the build.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        ``dir``, ``origin`` (``"debian"`` or the fixture folder),
        ``fallback`` (True when apt failed and the fixtures were used),
        ``built_now``, ``test_items`` (available).

    Example
    -------
    >>> from speechbrain_elbo.dataprep.sources import DEFAULT_SAMPLES
    >>> info = prepare_demo_data(getfixture("tmp_path") / "vb", items=2,
    ...                          samples_dir=DEFAULT_SAMPLES, progress=False)
    >>> info["test_items"], info["built_now"], info["fallback"]
    (2, True, False)
    """
    from speechbrain_elbo.dataprep.minidata import build_minivb
    from speechbrain_elbo.dataprep.sources import load_sources

    if items < 1:
        raise ValueError(f"items must be >= 1, got {items}.")
    data_dir = pathlib.Path(data_dir)
    stamp = _stamp(data_dir)
    test_csv = data_dir / "metadata" / "test.csv"
    have = len(_read_rows(test_csv)) if test_csv.is_file() else None
    if have is None and (data_dir / "noisy_testset_wav").is_dir():
        have = len(list((data_dir / "noisy_testset_wav").glob("*.wav")))
    enough = have is not None and (
        have >= items
        or not _is_demo_build(stamp)
        or int(stamp.get("test_items", 0)) >= items
    )
    built = False
    if not enough:
        if samples_dir is None and have is None:
            print(
                f"Building the MiniVB test split ({items} items) in "
                f"{data_dir} from the Debian audio packages (fetched once "
                "into the cache) ...",
                flush=True,
            )
        bank = load_sources(cache_dir, samples_dir)
        built = build_minivb(
            data_dir,
            bank,
            seed=seed,
            train_minutes=DEMO_TRAIN_MINUTES,
            valid_items=DEMO_VALID_ITEMS,
            test_items=items,
            overwrite=_is_demo_build(stamp),
            progress=progress,
        ).is_dir()
        stamp = _stamp(data_dir)
    count = len(load_test_items(data_dir))
    return {
        "dir": str(data_dir.absolute()),
        "origin": (stamp or {}).get("sources", "existing folder"),
        "fallback": bool((stamp or {}).get("fallback", False)),
        "built_now": built,
        "test_items": count,
    }


def _pairs_from_folders(noisy_dir, clean_dir, ids=None):
    if ids is None:
        ids = sorted(p.stem for p in pathlib.Path(noisy_dir).glob("*.wav"))
    pairs = []
    for uid in ids:
        noisy = pathlib.Path(noisy_dir) / f"{uid}.wav"
        clean = pathlib.Path(clean_dir) / f"{uid}.wav"
        if not noisy.is_file() or not clean.is_file():
            raise FileNotFoundError(
                f"{noisy} or {clean} is missing: the data folder is "
                "incomplete. Delete it and run the demo again to rebuild it."
            )
        pairs.append({"id": uid, "noisy": str(noisy), "clean": str(clean)})
    return pairs


def load_test_items(data_dir, max_items=None, split="test"):
    """The (noisy, clean) pairs of a MiniVB or VoiceBank-DEMAND split.

    Arguments
    ---------
    data_dir : str or pathlib.Path
        A folder in VoiceBank-DEMAND's layout (``noisy_testset_wav``,
        ``clean_testset_wav``; MiniVB adds ``metadata/{split}.csv``, whose
        order and SNRs are used).
    max_items : int, optional
        Keep the first ones.
    split : str
        ``"test"`` or ``"valid"`` (MiniVB's validation items, in the
        training folders; needs ``metadata/valid.csv``).

    Returns
    -------
    list of dict
        ``id``, ``noisy``, ``clean`` (paths) and ``snr_db`` when known.

    Example
    -------
    >>> load_test_items(getfixture("tmp_path"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...no test split...
    """
    data_dir = pathlib.Path(data_dir)
    folders = {
        "test": ("noisy_testset_wav", "clean_testset_wav"),
        "valid": ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
    }
    if split not in folders:
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}.")
    noisy_dir, clean_dir = (data_dir / f for f in folders[split])
    manifest = data_dir / "metadata" / f"{split}.csv"
    if manifest.is_file():
        rows = _read_rows(manifest)
        pairs = _pairs_from_folders(
            noisy_dir, clean_dir, [row["id"] for row in rows]
        )
        for pair, row in zip(pairs, rows, strict=True):
            if row.get("snr_db"):
                pair["snr_db"] = float(row["snr_db"])
    elif split == "test" and noisy_dir.is_dir():
        pairs = _pairs_from_folders(noisy_dir, clean_dir)
    else:
        raise FileNotFoundError(
            f"{data_dir} holds no {split} split (neither {manifest} nor "
            f"{noisy_dir}). Build MiniVB there (python -m "
            "speechbrain_elbo.dataprep.minidata vb --out DIR) or point to a "
            "VoiceBank-DEMAND folder."
        )
    return pairs if max_items is None else pairs[:max_items]


def _read_mono(path, sample_rate):
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    wav = torch.from_numpy(data).mean(dim=1)
    if rate != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, rate, sample_rate)
    return wav


# ---------------------------------------------------------------------------
# Enhancement
# ---------------------------------------------------------------------------
def _frame_multiple(enhancer):
    multiple = int(getattr(enhancer.mods.score_model, "frame_multiple", 1))
    if enhancer.has_refiner:
        multiple = math.lcm(
            multiple, int(getattr(enhancer.refiner, "frame_multiple", 1))
        )
    return multiple


def enhance_two_stage(enhancer, noisy, sampler=None, steps=None, seed=0):
    """Stage 1 and stage 1+2 of one utterance from one stage-1 sample.

    The pipeline of ``DiffusionEnhancement.enhance_batch`` (peak
    normalisation, compressed STFT, frame padding for both networks,
    sampling, cropping, inverse STFT), run once; the refiner is then applied
    to the same stage-1 sample. With the same ``seed``, the stage 1+2 output
    equals ``enhance_batch(noisy, seed=seed, use_refiner=True)``, and the
    stage-1 output equals ``enhance_batch(..., use_refiner=False)``
    whenever both networks have the same frame multiple (as the bundled
    configurations do).

    Arguments
    ---------
    enhancer : speechbrain_elbo.inference.DiffusionEnhancement
        The loaded model.
    noisy : torch.Tensor
        One waveform (L,) at the model's sample rate.
    sampler : str, optional
        Sampler name; default that of the model.
    steps : int, optional
        Sampler steps; default that of the model.
    seed : int
        Seed of the sampler's generator.

    Returns
    -------
    dict
        ``stage1`` and ``stage1+2`` (waveforms (L,), the latter only with a
        refiner), ``nfe`` (score evaluations), ``seconds`` (dict of wall
        times: stage 1, and stage 1 plus the refiner).
    """
    plan = enhancer.make_sampler(sampler, steps)
    noisy, _ = enhancer.check_waveforms(noisy)
    out = {"seconds": {}}
    with torch.inference_mode():
        start = time.perf_counter()
        wav = noisy.to(enhancer.device, torch.float32)
        wav, _, scale = peak_normalize(wav)
        length = wav.shape[-1]
        y = enhancer.transform.encode(wav)
        y, frames = pad_frames(y, _frame_multiple(enhancer))
        generator = torch.Generator(device=enhancer.device).manual_seed(seed)
        with enhancer.inference_ctx:
            x, nfe = plan(
                enhancer.score_model, enhancer.sde, y, generator=generator
            )
        stage1 = crop_frames(x.to(torch.complex64), frames)
        out["stage1"] = (
            enhancer.transform.decode(stage1, length) * scale
        ).cpu()[0]
        out["seconds"]["stage1"] = time.perf_counter() - start
        out["nfe"] = int(nfe)
        if enhancer.has_refiner:
            with enhancer.inference_ctx:
                refined = enhancer.refiner(x, y)
            refined = crop_frames(refined.to(torch.complex64), frames)
            out["stage1+2"] = (
                enhancer.transform.decode(refined, length) * scale
            ).cpu()[0]
            out["seconds"]["stage1+2"] = time.perf_counter() - start
    return out


def _dnsmos_scorer():
    """``f(waveform, rate) -> {"sig", "bak", "ovrl"}`` (speechmos) or None.

    DNSMOS P.835 (non-intrusive: no clean reference) from the ``speechmos``
    package, which ships its ONNX models; waveforms are resampled to 16 kHz
    and scaled into [-1, 1] when they exceed it.
    """
    try:
        from speechmos import dnsmos
    except ImportError:
        return None

    def score(waveform, rate=16000):
        waveform = waveform.detach().cpu().float().reshape(-1)
        if rate != 16000:
            import torchaudio.functional as AF

            waveform = AF.resample(waveform, rate, 16000)
        peak = float(waveform.abs().max()) if waveform.numel() else 0.0
        if peak > 1.0:
            waveform = waveform / peak
        result = dnsmos.run(waveform.numpy(), sr=16000)
        return {
            "sig": float(result["sig_mos"]),
            "bak": float(result["bak_mos"]),
            "ovrl": float(result["ovrl_mos"]),
        }

    return score


def _scores(estimate, clean, sample_rate):
    return {
        "pesq": pesq_wb(estimate, clean, sample_rate),
        "estoi": estoi(estimate, clean, sample_rate),
        "si_sdr": float(si_sdr(estimate, clean)[0]),
    }


# ---------------------------------------------------------------------------
# ELBO and IoC
# ---------------------------------------------------------------------------
def _crop_pair(noisy, clean, samples):
    if noisy.shape[-1] <= samples:
        return noisy, clean
    start = (noisy.shape[-1] - samples) // 2
    return noisy[start : start + samples], clean[start : start + samples]


def _spectrograms(enhancer, pairs, crop_frames_count):
    """Peak-normalised compressed spectrograms of centred crops, padded.

    Returns x0, y (B, 1, F, T') complex and the frame mask (B, 1, 1, T').
    All crops are cut to the shortest one so that they stack.
    """
    hop = int(enhancer.transform.hop_length)
    samples = (crop_frames_count - 1) * hop
    samples = min([samples] + [p[0].shape[-1] for p in pairs])
    noisy, clean = zip(
        *[_crop_pair(n, c, samples) for n, c in pairs], strict=True
    )
    noisy = torch.stack(noisy).to(enhancer.device)
    clean = torch.stack(clean).to(enhancer.device)
    noisy, clean, _ = peak_normalize(noisy, clean)
    y = enhancer.transform.encode(noisy)
    x0 = enhancer.transform.encode(clean)
    frames = y.shape[-1]
    y, _ = pad_frames(y, _frame_multiple(enhancer))
    x0, _ = pad_frames(x0, _frame_multiple(enhancer))
    mask = torch.zeros(y.shape[0], 1, 1, y.shape[-1], device=y.device)
    mask[..., :frames] = 1.0
    return x0, y, mask


def elbo_summary(
    enhancer,
    pairs,
    fit_pairs,
    crop_frames_count=256,
    diffusion_samples=8,
    reconstruction_samples=2,
    seed=0,
    progress=True,
):
    """Mean ELBO terms (bits per real dimension) of stage 1 and stage 1+2.

    Each (noisy, clean) pair is cut to its centred ``crop_frames_count``
    frames (the recipe's validation crop; 256 frames = 2.04 s). The decoder
    variance of each decoder (Tweedie estimate; refiner applied to it) is
    fitted by maximum likelihood on ``fit_pairs``, which must be held out
    from ``pairs``. The two decoders see the same random draws, so their
    prior and diffusion terms are equal.

    Arguments
    ---------
    enhancer : speechbrain_elbo.inference.DiffusionEnhancement
        The model.
    pairs : list of (torch.Tensor, torch.Tensor)
        (noisy, clean) waveforms evaluated.
    fit_pairs : list of (torch.Tensor, torch.Tensor)
        (noisy, clean) waveforms for the decoder variances.
    crop_frames_count : int
        Frames per crop.
    diffusion_samples, reconstruction_samples : int
        As in :func:`speechbrain_elbo.elbo.negative_elbo`.
    seed : int
        Seed of the draws.
    progress : bool
        Progress bar.

    Returns
    -------
    dict
        ``stage1`` (and ``stage1+2`` with a refiner): ``prior``,
        ``diffusion``, ``reconstruction``, ``total``, ``stderr``;
        ``decoder_variance`` per decoder and its ``source``; ``items``.
    """
    sde = enhancer.sde
    score = enhancer.score_model
    decoders = {"stage1": None}
    if enhancer.has_refiner:

        def refine(x0_hat, y):
            return enhancer.refiner(x0_hat, y).to(torch.complex64)

        decoders["stage1+2"] = refine
    device = enhancer.device
    variances = {}
    with torch.inference_mode():
        sums = dict.fromkeys(decoders, 0.0)
        bins = 0.0
        for noisy, clean in fit_pairs:
            x0, y, mask = _spectrograms(
                enhancer, [(noisy, clean)], crop_frames_count
            )
            count = float(mask.sum()) * x0.shape[2]
            for name, decoder in decoders.items():
                generator = torch.Generator(device=device).manual_seed(seed)
                sums[name] += count * fit_decoder_variance(
                    score, sde, x0, y, decoder, generator, mask
                )
            bins += count
        if bins:
            variances = {name: sums[name] / bins for name in decoders}
            variances["source"] = (
                f"fitted by maximum likelihood on {len(fit_pairs)} held-out "
                "crops"
            )
        else:
            t_eps = torch.tensor(sde.t_eps)
            default = (sde.variance(t_eps) / sde.decay(t_eps) ** 2).item()
            variances = dict.fromkeys(decoders, default)
            variances["source"] = (
                "sigma(t_eps)^2 / a(t_eps)^2 (no held-out data)"
            )

        records = {name: [] for name in decoders}
        iterator = tqdm(
            list(enumerate(pairs)), desc="ELBO", disable=not progress
        )
        for index, (noisy, clean) in iterator:
            x0, y, mask = _spectrograms(
                enhancer, [(noisy, clean)], crop_frames_count
            )
            for name, decoder in decoders.items():
                generator = torch.Generator(device=device).manual_seed(
                    seed + 1 + index
                )
                records[name].append(
                    negative_elbo(
                        score,
                        sde,
                        x0,
                        y,
                        diffusion_samples=diffusion_samples,
                        reconstruction_samples=reconstruction_samples,
                        decoder=decoder,
                        decoder_variance=variances[name],
                        generator=generator,
                        mask=mask,
                    )
                )
    summary = {
        "units": "bits_per_dim",
        "items": len(pairs),
        "crop_seconds": (crop_frames_count - 1)
        * int(enhancer.transform.hop_length)
        / enhancer.sample_rate,
        "diffusion_samples": diffusion_samples,
        "reconstruction_samples": reconstruction_samples,
        "decoder_variance": variances,
    }
    for name, terms in records.items():
        if not terms:
            continue
        count = len(terms)
        mean = {
            key: sum(float(getattr(t, key)[0]) for t in terms) / count
            for key in ("prior", "diffusion", "reconstruction")
        }
        mean["total"] = (
            mean["prior"] + mean["diffusion"] + mean["reconstruction"]
        )
        mean["stderr"] = (
            math.sqrt(sum(float(t.stderr[0]) ** 2 for t in terms)) / count
        )
        summary[name] = mean
    return summary


def ioc_summary(
    enhancer,
    pairs,
    num_times=8,
    probes=2,
    crop_frames_count=128,
    seed=0,
):
    """The IoC curve of the score model on a few crops.

    Arguments
    ---------
    enhancer : speechbrain_elbo.inference.DiffusionEnhancement
        The model.
    pairs : list of (torch.Tensor, torch.Tensor)
        (noisy, clean) waveforms; their centred crops are stacked.
    num_times : int
        Diffusion times, evenly spaced from t_eps to T.
    probes : int
        Hutchinson probes per time.
    crop_frames_count : int
        Frames per crop.
    seed : int
        Seed of the draws.

    Returns
    -------
    dict
        ``t``, ``sigma``, ``ioc``, ``ioc_std`` (lists), ``items``,
        ``probes``, ``crop_seconds``.
    """
    sde = enhancer.sde
    times = torch.linspace(float(sde.t_eps), float(sde.T), num_times)
    with torch.inference_mode():
        x0, y, mask = _spectrograms(enhancer, pairs, crop_frames_count)
    generator = torch.Generator(device=enhancer.device).manual_seed(seed)
    curve = ioc_curve(
        enhancer.score_model,
        sde,
        x0.clone(),
        y.clone(),
        times,
        probes=probes,
        generator=generator,
        mask=mask.clone(),
    )
    return {
        "t": [float(v) for v in curve["t"]],
        "sigma": [float(v) for v in curve["sigma"]],
        "ioc": [float(v) for v in curve["ioc"]],
        "ioc_std": [float(v) for v in curve["ioc_std"]],
        "items": len(pairs),
        "probes": probes,
        "crop_seconds": int(mask.sum().item() / len(pairs))
        * int(enhancer.transform.hop_length)
        / enhancer.sample_rate,
    }


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def _model_info(model_dir, enhancer):
    card_path = pathlib.Path(model_dir) / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    sampler = enhancer.default_sampler
    info = {
        "dir": str(pathlib.Path(model_dir).absolute()),
        "stages": 2 if enhancer.has_refiner else 1,
        "sde": card.get("sde", repr(enhancer.sde)),
        "default_sampler": {
            "name": sampler.name,
            "steps": sampler.steps,
            "corrector_steps": sampler.corrector_steps,
            "snr": sampler.snr,
        },
        "score_parameters": sum(
            p.numel() for p in enhancer.mods.score_model.parameters()
        ),
        "card": card.get("model_card", {}),
    }
    if enhancer.has_refiner:
        info["refiner_parameters"] = sum(
            p.numel() for p in enhancer.refiner.parameters()
        )
    return info


def _evenly_spaced(count, wanted):
    if wanted >= count:
        return list(range(count))
    if wanted <= 1:
        return [0][:wanted]
    return sorted(
        {round(i * (count - 1) / (wanted - 1)) for i in range(wanted)}
    )


def _systems(per_item, timing, audio_seconds, nfe, names):
    systems = {}
    for name in names:
        rows = [item[name] for item in per_item if name in item]
        stats = {
            key: nan_mean([r[key] for r in rows])
            for key in ("pesq", "estoi", "si_sdr")
        }
        stats["count"] = len(rows)
        failed = sum(1 for r in rows if not math.isfinite(r["pesq"]))
        if failed:
            stats["pesq_failed"] = failed
        for key in ("sig", "bak", "ovrl"):
            values = [r[f"dnsmos_{key}"] for r in rows if f"dnsmos_{key}" in r]
            if values:
                stats[f"dnsmos_{key}"] = nan_mean(values)
                stats["dnsmos_count"] = len(values)
        if name == "noisy":
            stats["nfe"], stats["rtf"] = 0, 0.0
        else:
            stats["nfe"] = nfe + (1 if name == "stage1+2" else 0)
            stats["rtf"] = timing[name] / audio_seconds
        systems[name] = stats
    return systems


def _median_gain_item(per_item, system):
    gains = [
        (item[system]["pesq"] - item["noisy"]["pesq"], index)
        for index, item in enumerate(per_item)
        if math.isfinite(item[system]["pesq"])
        and math.isfinite(item["noisy"]["pesq"])
    ]
    if not gains:
        return 0
    gains.sort()
    return gains[len(gains) // 2][1]


def _copy_model(model_dir, target):
    def skip(folder, names):
        return [n for n in names if n.startswith(".") or n == "__pycache__"]

    shutil.copytree(model_dir, target, ignore=skip)


def run_demo(
    model_dir=None,
    data_dir=DEFAULT_DATA,
    out_dir=DEFAULT_OUT,
    steps=None,
    max_items=DEFAULT_ITEMS,
    sampler=None,
    seed=0,
    device="cpu",
    threads=None,
    elbo_items=4,
    elbo_fit_items=4,
    elbo_diffusion_samples=8,
    elbo_reconstruction_samples=2,
    elbo_crop_frames=256,
    ioc_items=2,
    ioc_times=8,
    ioc_probes=2,
    ioc_crop_frames=128,
    dnsmos_items=8,
    cache_dir=None,
    samples_dir=None,
    progress=True,
):
    """Enhance the MiniVB test split with a model and write the report.

    Arguments
    ---------
    model_dir : str or pathlib.Path, optional
        An exported model folder (default: the bundled
        ``speechbrain_elbo/pretrained/minivb-small``).
    data_dir : str or pathlib.Path
        MiniVB folder; built (test split) when missing, see
        :func:`prepare_demo_data`.
    out_dir : str or pathlib.Path
        Output folder, replaced as a whole when the report is complete.
    steps : int, optional
        Sampler steps (default: the model's).
    max_items : int, optional
        Test items to enhance (default :data:`DEFAULT_ITEMS`; None: all).
    sampler : str, optional
        Sampler name (default: the model's).
    seed : int
        Item k is enhanced with seed ``seed + k``.
    device : str
        Torch device.
    threads : int, optional
        Torch CPU threads during the demo (default: torch's setting); the
        previous setting is restored at the end.
    elbo_items, elbo_fit_items : int
        Test crops for the ELBO, held-out crops (MiniVB validation items,
        else other test items) for the decoder variances; 0 skips the ELBO.
    elbo_diffusion_samples, elbo_reconstruction_samples : int
        Monte Carlo samples per crop.
    elbo_crop_frames : int
        STFT frames of the ELBO crops (256: 2.04 s, the recipe's crop).
    ioc_items, ioc_times, ioc_probes : int
        Crops, diffusion times and Hutchinson probes of the IoC curve;
        ``ioc_items=0`` skips it.
    ioc_crop_frames : int
        STFT frames of the IoC crops.
    dnsmos_items : int
        Items scored with DNSMOS when ``speechmos`` is installed (about 2 s
        per clip and system on 2 cores).
    cache_dir, samples_dir : optional
        Sources of a MiniVB build, see :func:`prepare_demo_data`.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        The report (also in ``out_dir/report.json``).
    """
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1 or None, got {max_items}.")
    options = dict(locals())
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run_demo(**options)
    finally:
        torch.set_num_threads(previous)


def _run_demo(
    model_dir,
    data_dir,
    out_dir,
    steps,
    max_items,
    sampler,
    seed,
    device,
    threads,
    elbo_items,
    elbo_fit_items,
    elbo_diffusion_samples,
    elbo_reconstruction_samples,
    elbo_crop_frames,
    ioc_items,
    ioc_times,
    ioc_probes,
    ioc_crop_frames,
    dnsmos_items,
    cache_dir,
    samples_dir,
    progress,
):
    from speechbrain_elbo.inference import DiffusionEnhancement
    from speechbrain_elbo.pretrained import pretrained_path

    begin = time.perf_counter()
    timing = {}
    notes = []
    out_dir = pathlib.Path(out_dir)

    with _step("Loading the model"):
        start = time.perf_counter()
        model_dir = pathlib.Path(
            pretrained_path() if model_dir is None else model_dir
        )
        enhancer = DiffusionEnhancement.from_hparams(
            source=str(model_dir), run_opts={"device": device}
        )
        rate = enhancer.sample_rate
        plan = enhancer.make_sampler(sampler, steps)
        timing["load"] = time.perf_counter() - start

    with _step("Preparing the MiniVB test split"):
        start = time.perf_counter()
        data = prepare_demo_data(
            data_dir,
            items=max_items or 100,
            cache_dir=cache_dir,
            samples_dir=samples_dir,
            progress=progress,
        )
        items = load_test_items(data_dir, max_items)
        timing["data"] = time.perf_counter() - start
    if data["fallback"]:
        notes.append(
            "The Debian audio packages could not be fetched: the test data "
            "were built from the committed fixtures (a few seconds of "
            "audio). The numbers are a smoke test only."
        )
    if max_items is not None and len(items) < max_items:
        notes.append(
            f"Only {len(items)} test items were available ({max_items} asked)."
        )

    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    try:
        names = ["noisy", "stage1"] + (
            ["stage1+2"] if enhancer.has_refiner else []
        )
        if not enhancer.has_refiner:
            notes.append(
                "The model has no refiner (stage 1 only): no stage 1+2 row."
            )
        dnsmos = _dnsmos_scorer()
        if dnsmos is None:
            notes.append(
                "DNSMOS skipped: install speechmos (pip install speechmos, "
                "with onnxruntime and librosa) to add it."
            )
        with _step("Enhancing the test split"):
            start = time.perf_counter()
            # one short warm-up pass so that the first item's timing does
            # not include one-time allocations
            first = _read_mono(items[0]["noisy"], rate)
            enhance_two_stage(enhancer, first[:rate], plan.name, 1, seed)
            per_item, waves = [], {}
            seconds = dict.fromkeys(names[1:], 0.0)
            audio = 0.0
            nfe = 0
            bar = tqdm(
                items, desc="Enhancing", unit="utt", disable=not progress
            )
            for index, item in enumerate(bar):
                noisy = _read_mono(item["noisy"], rate)
                clean = _read_mono(item["clean"], rate)
                if clean.shape != noisy.shape:
                    raise ValueError(
                        f"{item['noisy']} and {item['clean']} differ in "
                        "length; the data folder is inconsistent."
                    )
                result = enhance_two_stage(
                    enhancer, noisy, plan.name, plan.steps, seed + index
                )
                nfe = result["nfe"]
                duration = noisy.shape[-1] / rate
                audio += duration
                record = {
                    "id": item["id"],
                    "duration_s": duration,
                    "snr_db": item.get("snr_db"),
                    "noisy": _scores(noisy, clean, rate),
                }
                signals = {"noisy": noisy}
                for name in names[1:]:
                    seconds[name] += result["seconds"][name]
                    signals[name] = result[name]
                    write_audio_atomic(
                        tmp / "enhanced" / name / f"{item['id']}.wav",
                        result[name],
                        rate,
                    )
                    record[name] = _scores(result[name], clean, rate)
                if dnsmos is not None and index < dnsmos_items:
                    for name in names:
                        for key, value in dnsmos(signals[name], rate).items():
                            record[name][f"dnsmos_{key}"] = value
                per_item.append(record)
                waves[index] = (noisy, clean)
            timing["enhance"] = time.perf_counter() - start
            systems = _systems(per_item, seconds, audio, nfe, names)

        report = {
            "format_version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": _model_info(model_dir, enhancer),
            "data": dict(
                data,
                items=len(items),
                audio_seconds=audio,
                snrs_db=sorted({i["snr_db"] for i in items if "snr_db" in i}),
            ),
            "settings": {
                "sampler": {
                    "name": plan.name,
                    "steps": plan.steps,
                    "corrector_steps": plan.corrector_steps,
                    "snr": plan.snr,
                },
                "seed": seed,
                "device": str(enhancer.device),
                "threads": torch.get_num_threads(),
            },
            "systems": systems,
        }

        if elbo_items > 0:
            with _step("Estimating the ELBO terms"):
                start = time.perf_counter()
                chosen = _evenly_spaced(len(items), elbo_items)
                pairs = [waves[i] for i in chosen]
                try:
                    valid = load_test_items(data_dir, elbo_fit_items, "valid")
                    fit = [
                        (
                            _read_mono(v["noisy"], rate),
                            _read_mono(v["clean"], rate),
                        )
                        for v in valid
                    ]
                    fit_source = "MiniVB validation items"
                except FileNotFoundError:
                    rest = [i for i in range(len(items)) if i not in chosen]
                    fit = [waves[i] for i in rest[:elbo_fit_items]]
                    fit_source = "test items not used for the ELBO"
                report["elbo"] = elbo_summary(
                    enhancer,
                    pairs,
                    fit,
                    crop_frames_count=elbo_crop_frames,
                    diffusion_samples=elbo_diffusion_samples,
                    reconstruction_samples=elbo_reconstruction_samples,
                    seed=seed,
                    progress=progress,
                )
                if fit:
                    report["elbo"]["decoder_variance"]["source"] += (
                        f" ({fit_source})"
                    )
                report["elbo"]["item_ids"] = [items[i]["id"] for i in chosen]
                timing["elbo"] = time.perf_counter() - start

        if ioc_items > 0:
            with _step("Computing the IoC curve"):
                start = time.perf_counter()
                chosen = _evenly_spaced(len(items), ioc_items)
                report["ioc"] = ioc_summary(
                    enhancer,
                    [waves[i] for i in chosen],
                    num_times=ioc_times,
                    probes=ioc_probes,
                    crop_frames_count=ioc_crop_frames,
                    seed=seed,
                )
                report["ioc"]["item_ids"] = [items[i]["id"] for i in chosen]
                timing["ioc"] = time.perf_counter() - start

        with _step("Drawing the figures"):
            start = time.perf_counter()
            report["figures"], figure_notes = _figures(
                tmp, model_dir, report, per_item, items, waves, names, rate
            )
            notes += figure_notes
            timing["figures"] = time.perf_counter() - start

        with _step("Writing the report"):
            _copy_model(model_dir, tmp / "model")
            report["per_item"] = per_item
            timing["total"] = time.perf_counter() - begin
            report["timing"] = timing
            report["notes"] = notes
            reporting.write_json_atomic(tmp / "report.json", report)
            (tmp / "report.md").write_text(
                reporting.render_markdown(reporting.finite_or_none(report))
            )
            _replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return reporting.finite_or_none(report)


def _figures(tmp, model_dir, report, per_item, items, waves, names, rate):
    notes, figures = [], {}
    if not reporting.have_matplotlib():
        notes.append(
            "Figures skipped: matplotlib is not installed "
            "(pip install matplotlib)."
        )
        return figures, notes
    best = names[-1]
    index = _median_gain_item(per_item, best)
    record = per_item[index]
    noisy, clean = waves[index]
    panels = {
        f"noisy (PESQ {record['noisy']['pesq']:.2f})": noisy,
    }
    for name in names[1:]:
        path = tmp / "enhanced" / name / f"{record['id']}.wav"
        panels[
            f"{reporting.SYSTEM_LABELS[name]} (PESQ {record[name]['pesq']:.2f})"
        ] = _read_mono(path, rate)
    panels["clean reference"] = clean
    reporting.plot_spectrograms(
        tmp / "figures" / "spectrograms.png",
        panels,
        rate,
        title=f"{record['id']}: the item with the median PESQ gain of {best}",
    )
    figures["spectrograms"] = "figures/spectrograms.png"
    if "ioc" in report:
        reporting.plot_ioc(tmp / "figures" / "ioc.png", report["ioc"])
        figures["ioc"] = "figures/ioc.png"
    logs = {}
    for stage, filename in _TRAIN_LOGS.items():
        path = pathlib.Path(model_dir) / filename
        if path.is_file():
            logs[stage] = reporting.parse_train_log(path)
    if any(logs.values()):
        reporting.plot_training(
            tmp / "figures" / "training.png", logs, "Training of the model"
        )
        figures["training"] = "figures/training.png"
        report["training"] = {
            stage: {"epochs": len(epochs), "last": epochs[-1]}
            for stage, epochs in logs.items()
            if epochs
        }
    else:
        notes.append(
            "Training curves skipped: the model folder has no "
            f"{' / '.join(_TRAIN_LOGS.values())}."
        )
    return figures, notes


def _replace_folder(tmp, target):
    """Put ``tmp`` at ``target``, replacing what was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


# ---------------------------------------------------------------------------
# Training from scratch within a budget
# ---------------------------------------------------------------------------
#: Costs of the small configuration on one thread of the 2-core development
#: machine while another training job ran (measured; docs/demo.md). The
#: plan scales them by a speed probe of the machine it runs on.
COSTS = {
    "score_step": 1.3,  # s per training step, batch 4, 128 frames
    "refiner_step": 0.9,  # s per refiner training step
    "nfe_per_audio_second": 0.085,  # s per score evaluation per s of audio
    "item_seconds": 5.5,  # mean MiniVB utterance length
    "stage_overhead": 25.0,  # s per recipe step (start-up, preparation)
    "report_fixed": 90.0,  # s of the report besides enhancement
    "data_build": 60.0,  # s to build MiniVB from cached sources
}


def plan_training(minutes, speed=1.0, test_items=8, valid_items=8, steps=6):
    """Choose the data size and epochs of a from-scratch run in a budget.

    The training minutes of MiniVB grow with the budget (a tenth of it,
    between 1 and 60), so that a longer budget buys more data as well as
    more epochs; the stage-1 sampler is the probability-flow ODE with
    ``steps`` Euler steps (NFE ``steps``), as in the bundled model, both
    for the test and for the stage-2 cache. Both stages get the same number
    of epochs. Costs are :data:`COSTS` times ``speed`` (the machine's step
    time relative to the reference).

    Arguments
    ---------
    minutes : float
        Time budget in minutes for everything (data, training, report).
    speed : float
        Slowness factor of this machine (1: the reference machine).
    test_items, valid_items : int
        MiniVB test and validation items.
    steps : int
        Euler steps of the stage-1 sampler.

    Returns
    -------
    dict
        ``train_minutes``, ``epochs``, ``steps``, ``test_items``,
        ``valid_items``, ``predicted_seconds`` and ``breakdown``.

    Raises
    ------
    ValueError
        If the budget cannot hold even one epoch; the message gives the
        smallest budget that can.

    Example
    -------
    >>> plan_training(120)["train_minutes"]
    12.0
    >>> plan_training(1)
    Traceback (most recent call last):
    ...
    ValueError: A budget of 1 minute(s) is too short...
    """
    budget = float(minutes) * 60.0
    cost = {k: v * speed for k, v in COSTS.items()}
    cost["item_seconds"] = COSTS["item_seconds"]
    train_minutes = float(min(60.0, max(1.0, round(minutes / 10.0, 1))))
    train_items = train_minutes * 60.0 / cost["item_seconds"]
    nfe = steps
    per_audio = cost["nfe_per_audio_second"]
    test_audio = test_items * cost["item_seconds"]
    fixed = {
        "data": cost["data_build"],
        "overheads": 4 * cost["stage_overhead"],
        "stage1 test": test_audio * nfe * per_audio,
        "stage2 cache": (train_minutes * 60 + valid_items * 5.5)
        * nfe
        * per_audio,
        "stage2 test": test_audio * (nfe + 1) * per_audio
        + min(4, test_items) * 2.0 * 2 * 10 * per_audio,
        "report": test_audio * (nfe + 1) * per_audio + cost["report_fixed"],
    }
    batches = math.ceil(train_items / 4)
    valid = 2 * (1.0 * nfe * per_audio) + valid_items / 4 * 0.5
    per_epoch = batches * (cost["score_step"] + cost["refiner_step"]) + valid
    spare = budget - sum(fixed.values())
    epochs = int(spare // per_epoch)
    if epochs < 1:
        needed = (sum(fixed.values()) + per_epoch) / 60.0
        raise ValueError(
            f"A budget of {minutes:g} minute(s) is too short for one epoch "
            f"of each stage on this machine: give at least "
            f"{math.ceil(needed)} minutes (DEMO_MINUTES={math.ceil(needed)})."
        )
    breakdown = dict(fixed, training=epochs * per_epoch)
    return {
        "train_minutes": train_minutes,
        "epochs": epochs,
        "steps": steps,
        "test_items": test_items,
        "valid_items": valid_items,
        "predicted_seconds": sum(breakdown.values()),
        "breakdown": breakdown,
    }


def measure_speed(repeats=2):
    """This machine's training step time relative to :data:`COSTS`.

    Times ``repeats`` training steps of the small score network (batch 4,
    128 frames) after one warm-up step.

    Returns
    -------
    float
        Measured step time / reference step time (> 1: slower).
    """
    from hyperpyyaml import load_hyperpyyaml

    path = pathlib.Path(__file__).resolve().parents[1] / "hparams"
    path = path / "models" / "small.yaml"
    if not path.is_file():
        return 1.0
    with open(path, encoding="utf-8") as handle:
        net = load_hyperpyyaml(handle)["score_model"]
    optimizer = torch.optim.Adam(net.parameters())
    inputs = torch.randn(4, 4, 256, 128)
    noise = torch.randn(4)
    elapsed = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        net(inputs, noise).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed.append(time.perf_counter() - start)
    return min(elapsed[1:]) / COSTS["score_step"]


SHORT_BUDGET_WARNING = (
    "NOTE: this trains both stages from scratch in the given budget. A short "
    "budget (minutes, on a CPU) gives a model that does NOT beat the noisy "
    "input: expect PESQ and SI-SDR of stage 1 and stage 1+2 below those of "
    "the noisy row. The bundled model (make demo) was trained for hours."
)


def run_training(
    minutes,
    work_dir="results/demo-train",
    out_dir="results/demo-train/report",
    cache_dir=None,
    samples_dir=None,
    threads=1,
    steps=5,
    test_items=8,
    progress=True,
):
    """Data, both stages, export and report within ``minutes``.

    Builds MiniVB (training minutes chosen by :func:`plan_training`) in
    ``work_dir/minivb``, runs ``recipes/VoiceBank-DEMAND/run.sh --config
    small`` into ``work_dir/run`` with the planned epochs, copies the two
    training logs into the exported model folder, then runs
    :func:`run_demo` on that model.

    Arguments
    ---------
    minutes : float
        The budget.
    work_dir : str or pathlib.Path
        Data and training outputs (resumable: ``run.sh`` skips finished
        steps).
    out_dir : str or pathlib.Path
        The report.
    cache_dir, samples_dir : optional
        Sources of MiniVB, see :func:`prepare_demo_data`.
    threads : int
        ``OMP_NUM_THREADS`` of the training.
    steps : int
        Stage-1 sampler steps.
    test_items : int
        Test items (recipe test and report).
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        The report.
    """
    from speechbrain_elbo.dataprep.minidata import build_minivb
    from speechbrain_elbo.dataprep.sources import load_sources

    begin = time.perf_counter()
    print(SHORT_BUDGET_WARNING, flush=True)
    root = pathlib.Path(__file__).resolve().parents[1]
    script = root / "recipes" / "VoiceBank-DEMAND" / "run.sh"
    if not script.is_file():
        raise DemoError(
            f"{script} not found: training needs a source checkout of the "
            "project (git clone, then pip install -e .)."
        )
    torch.set_num_threads(int(threads))
    speed = measure_speed()
    plan = plan_training(minutes, speed, test_items=test_items, steps=steps)
    print(
        f"Plan for {minutes:g} min (this machine is {speed:.2f}x the "
        f"reference): MiniVB with {plan['train_minutes']} training minutes, "
        f"{plan['epochs']} epoch(s) per stage, PC sampler with "
        f"{plan['steps']} steps; predicted "
        f"{plan['predicted_seconds'] / 60:.1f} min "
        "("
        + ", ".join(f"{k} {v:.0f} s" for k, v in plan["breakdown"].items())
        + ")",
        flush=True,
    )
    work_dir = pathlib.Path(work_dir)
    data_dir = work_dir / "minivb"
    with _step("Building MiniVB"):
        bank = load_sources(cache_dir, samples_dir)
        build_minivb(
            data_dir,
            bank,
            train_minutes=plan["train_minutes"],
            valid_items=plan["valid_items"],
            test_items=plan["test_items"],
            overwrite=(data_dir / "minidata.json").is_file(),
            progress=progress,
        )
    command = [
        "bash",
        str(script),
        str(data_dir),
        str(work_dir / "run"),
        "--config",
        "small",
        f"--number_of_epochs={plan['epochs']}",
        # the bundled model's settings (docs/gns_loss_comparison.md)
        "--loss=data_prediction",
        "--lr=0.0004",
        "--max_grad_norm=1.0",
        "--sampler_name=euler",
        f"--sampler_steps={plan['steps']}",
        "--valid_enhance_utterances=2",
        "--elbo_utterances=4",
        "--decoder_fit_batches=8",
        "--num_workers=0",
        "--device=cpu",
    ]
    if not progress:
        command.append("--noprogressbar")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS=str(threads))
    print("[demo-train] " + " ".join(command), flush=True)
    status = subprocess.run(command, env=env, check=False).returncode
    if status != 0:
        raise DemoError(
            f"Training failed: run.sh exited with status {status} (its "
            f"output is above; logs in {work_dir / 'run'}). Run the same "
            "command again to resume."
        )
    model_dir = work_dir / "run" / "model"
    for stage, filename in _TRAIN_LOGS.items():
        log = work_dir / "run" / stage / "train_log.txt"
        if log.is_file():
            shutil.copyfile(log, model_dir / filename)
    report = run_demo(
        model_dir=model_dir,
        data_dir=data_dir,
        out_dir=out_dir,
        max_items=plan["test_items"],
        threads=threads,
        progress=progress,
    )
    elapsed = time.perf_counter() - begin
    print(
        f"[demo-train] done in {elapsed / 60:.1f} min (budget {minutes:g} "
        f"min). Report: {pathlib.Path(out_dir) / 'report.md'}",
        flush=True,
    )
    print(SHORT_BUDGET_WARNING, flush=True)
    return report


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def _report_parser():
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_elbo.demo",
        description="Enhance the MiniVB test split with a two-stage model "
        "and write a report (make demo). 'python -m speechbrain_elbo.demo "
        "train --help': train from scratch within a budget.",
    )
    parser.add_argument(
        "--model",
        help="exported model folder (default: the bundled minivb-small)",
    )
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help=f"MiniVB folder, built when missing (default {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"output (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--items",
        type=int,
        default=DEFAULT_ITEMS,
        help=f"test items to enhance (default {DEFAULT_ITEMS})",
    )
    parser.add_argument("--steps", type=int, help="sampler steps")
    parser.add_argument(
        "--sampler", choices=("pc", "euler", "heun", "ode"), help="sampler"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (0)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest on a busy machine; 2 "
        "helps on an idle 2-core one)",
    )
    parser.add_argument("--elbo-items", type=int, default=4)
    parser.add_argument("--ioc-items", type=int, default=2)
    parser.add_argument("--ioc-times", type=int, default=8)
    parser.add_argument(
        "--cache-dir", help="cache of the Debian audio packages"
    )
    parser.add_argument(
        "--samples-dir",
        help="build the test split from these fixtures (e.g. tests/samples)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of failures"
    )
    return parser


def _train_parser():
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_elbo.demo train",
        description="Train both stages from scratch within a time budget "
        "(data, run.sh --config small, export, report). "
        + SHORT_BUDGET_WARNING,
    )
    parser.add_argument(
        "--minutes", type=float, required=True, help="time budget in minutes"
    )
    parser.add_argument("--work", default="results/demo-train")
    parser.add_argument("--out", default="results/demo-train/report")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--cache-dir")
    parser.add_argument("--samples-dir")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--debug", action="store_true")
    return parser


def main(argv=None):
    """``python -m speechbrain_elbo.demo [train] ...``; returns the status.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when a step failed (one line on stderr), 130 when
        interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    train = bool(argv) and argv[0] == "train"
    args = (_train_parser() if train else _report_parser()).parse_args(
        argv[1:] if train else argv
    )
    prog = "speechbrain_elbo.demo"
    try:
        if train:
            run_training(
                args.minutes,
                work_dir=args.work,
                out_dir=args.out,
                cache_dir=args.cache_dir,
                samples_dir=args.samples_dir,
                threads=args.threads,
                steps=args.steps,
                test_items=args.items,
                progress=not args.no_progress,
            )
            return 0
        report = run_demo(
            model_dir=args.model,
            data_dir=args.data,
            out_dir=args.out,
            steps=args.steps,
            max_items=args.items,
            sampler=args.sampler,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            elbo_items=args.elbo_items,
            ioc_items=args.ioc_items,
            ioc_times=args.ioc_times,
            cache_dir=args.cache_dir,
            samples_dir=args.samples_dir,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    out = pathlib.Path(args.out)
    print(reporting.render_markdown(report).split("## Figures")[0])
    print(f"Report: {out / 'report.md'} (and report.json, figures/, enhanced/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
