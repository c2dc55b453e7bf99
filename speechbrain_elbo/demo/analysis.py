"""What the demo measures besides quality: the ELBO terms and the IoC curve.

- :func:`elbo_summary`: mean ELBO terms (docs/method.md, section 4) of
  stage 1 (Tweedie decoder) and stage 1+2 (the refiner as decoder,
  docs/method.md, section 7), in bits per real dimension, on centred crops
  of a few test items, with decoder variances fitted on held-out crops;
- :func:`ioc_summary`: the Importance of Condition curve (docs/method.md,
  section 6) of the score model on a few crops;
- :func:`evenly_spaced`: which items of a list to use for them.

Both take a loaded :class:`~speechbrain_elbo.inference.DiffusionEnhancement`
and (noisy, clean) waveform pairs at its sample rate.

Example
-------
>>> evenly_spaced(10, 4)
[0, 3, 6, 9]
>>> evenly_spaced(3, 8), evenly_spaced(5, 1), evenly_spaced(5, 0)
([0, 1, 2], [0], [])
"""

import math

import torch
from tqdm.auto import tqdm

from speechbrain_elbo.elbo import fit_decoder_variances, negative_elbo
from speechbrain_elbo.ioc import ioc_curve
from speechbrain_elbo.pipeline import frame_multiple_of
from speechbrain_elbo.spectral import pad_frames, peak_normalize

__all__ = ["elbo_summary", "ioc_summary", "evenly_spaced"]


def evenly_spaced(count, wanted):
    """Indices of ``wanted`` items spread evenly over ``count`` (sorted).

    Arguments
    ---------
    count : int
        Items available.
    wanted : int
        Items wanted (all when ``wanted >= count``).

    Returns
    -------
    list of int
    """
    if wanted >= count:
        return list(range(count))
    if wanted <= 1:
        return [0][:wanted]
    return sorted(
        {round(i * (count - 1) / (wanted - 1)) for i in range(wanted)}
    )


def _crop_pair(noisy, clean, samples):
    if noisy.shape[-1] <= samples:
        return noisy, clean
    start = (noisy.shape[-1] - samples) // 2
    return noisy[start : start + samples], clean[start : start + samples]


def _crop_seconds(enhancer, frames):
    return frames * int(enhancer.transform.hop_length) / enhancer.sample_rate


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
    multiple = frame_multiple_of(enhancer.score_model, enhancer.refiner)
    y, _ = pad_frames(y, multiple)
    x0, _ = pad_frames(x0, multiple)
    mask = torch.zeros(y.shape[0], 1, 1, y.shape[-1], device=y.device)
    mask[..., :frames] = 1.0
    return x0, y, mask


def _decoders(enhancer):
    """Decoder of each system: None (Tweedie) and the refiner applied to it
    as the decoder of the ELBO (``refiner.decode``, docs/method.md §7)."""
    decoders = {"stage1": None}
    if enhancer.has_refiner:

        def refine(x0_hat, y):
            return enhancer.refiner.decode(x0_hat, y).to(torch.complex64)

        decoders["stage1+2"] = refine
    return decoders


def _decoder_variances(enhancer, decoders, fit_pairs, crop_frames_count, seed):
    """Maximum-likelihood variance of each decoder on the held-out crops
    (:func:`speechbrain_elbo.elbo.fit_decoder_variances`, as the recipes'
    test fits them)."""
    sde = enhancer.sde
    crops = (
        _spectrograms(enhancer, [pair], crop_frames_count) for pair in fit_pairs
    )
    fitted = fit_decoder_variances(
        enhancer.score_model, sde, crops, decoders, seed
    )
    if fitted.pop("crops"):
        fitted["source"] = (
            f"fitted by maximum likelihood on {len(fit_pairs)} held-out crops"
        )
        return fitted
    t_eps = torch.tensor(sde.t_eps)
    default = (sde.variance(t_eps) / sde.decay(t_eps) ** 2).item()
    variances = dict.fromkeys(decoders, default)
    variances["source"] = "sigma(t_eps)^2 / a(t_eps)^2 (no held-out data)"
    return variances


def _mean_terms(terms):
    """Mean prior, diffusion and reconstruction terms, total and stderr."""
    count = len(terms)
    mean = {
        key: sum(float(getattr(t, key)[0]) for t in terms) / count
        for key in ("prior", "diffusion", "reconstruction")
    }
    mean["total"] = mean["prior"] + mean["diffusion"] + mean["reconstruction"]
    mean["stderr"] = (
        math.sqrt(sum(float(t.stderr[0]) ** 2 for t in terms)) / count
    )
    return mean


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
    prior and diffusion terms are equal (docs/method.md, section 4).

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
        ``diffusion``, ``reconstruction``, ``total``, ``stderr``; with a
        refiner, ``difference``: the paired -ELBO difference (stage 1+2
        minus stage 1) per crop, its ``mean``, ``stderr`` over the crops,
        ``crops`` and ``lower_by_two_stderr``;
        ``decoder_variance`` per decoder and its ``source``; ``items``.
    """
    decoders = _decoders(enhancer)
    records = {name: [] for name in decoders}
    with torch.inference_mode():
        variances = _decoder_variances(
            enhancer, decoders, fit_pairs, crop_frames_count, seed
        )
        iterator = tqdm(
            list(enumerate(pairs)), desc="ELBO", disable=not progress
        )
        for index, (noisy, clean) in iterator:
            x0, y, mask = _spectrograms(
                enhancer, [(noisy, clean)], crop_frames_count
            )
            for name, decoder in decoders.items():
                generator = torch.Generator(device=enhancer.device).manual_seed(
                    seed + 1 + index
                )
                records[name].append(
                    negative_elbo(
                        enhancer.score_model,
                        enhancer.sde,
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
        "crop_seconds": _crop_seconds(enhancer, crop_frames_count - 1),
        "diffusion_samples": diffusion_samples,
        "reconstruction_samples": reconstruction_samples,
        "decoder_variance": variances,
    }
    for name, terms in records.items():
        if terms:
            summary[name] = _mean_terms(terms)
    if records.get("stage1+2"):
        summary["difference"] = _paired_difference(
            records["stage1"], records["stage1+2"]
        )
    return summary


def _paired_difference(first, second):
    """-ELBO of ``second`` minus that of ``first``, crop by crop (same
    draws, so only the reconstruction terms differ): the mean, its standard
    error over the crops, and whether it lies more than two standard errors
    below zero."""
    diffs = [
        float(b.total[0]) - float(a.total[0])
        for a, b in zip(first, second, strict=True)
    ]
    count = len(diffs)
    mean = sum(diffs) / count
    spread = 0.0
    if count > 1:
        spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (count - 1))
    stderr = spread / math.sqrt(count)
    return {
        "mean": mean,
        "stderr": stderr,
        "crops": count,
        "lower_by_two_stderr": bool(mean < -2 * stderr),
    }


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
    summary = {
        key: [float(v) for v in curve[key]]
        for key in ("t", "sigma", "ioc", "ioc_std")
    }
    frames = int(mask.sum().item() / len(pairs))
    summary.update(
        items=len(pairs),
        probes=probes,
        crop_seconds=_crop_seconds(enhancer, frames),
    )
    return summary
