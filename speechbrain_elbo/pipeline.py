"""The enhancement pipeline, written once (docs/method.md, sections 1, 5, 7).

Everything that enhances (the ``from_hparams`` interface, both Brains' tests
and validation, the stage-1 cache of the refiner, the demo) calls these
functions, so that what is trained, cached, tested and shipped is the same
computation:

    waveform --peak normalisation--> --compressed STFT--> y
    y --pad frames to the networks' multiple--> --sampler (stage 1)--> x_hat
    x_hat --refiner (stage 2, optional)--> x_ref
    x_hat, x_ref --crop frames--> --inverse STFT--> --undo normalisation-->

- :func:`frame_multiple_of`: the frame multiple that all networks accept;
- :func:`enhance_spectrogram`: pad, sample, refine, crop (spectrograms);
- :func:`enhance_waveforms`: the whole chain on a batch of waveforms;
- :func:`utterance_seed`: the seed of one stochastic sample of an utterance.

Example
-------
>>> from speechbrain_elbo.oracle import GaussianOracle
>>> from speechbrain_elbo.sampling import Sampler
>>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
>>> from speechbrain_elbo.spectral import SpectralTransform
>>> sde = OUVESDE(GeometricGNS())
>>> out = enhance_waveforms(torch.randn(2, 4000), SpectralTransform(),
...     GaussianOracle(sde, c=0.8, s0=0.1), sde, Sampler("euler", 3),
...     generator=torch.Generator().manual_seed(0))
>>> out.stage1.shape, out.refined, out.nfe
(torch.Size([2, 4000]), None, 3)
"""

import contextlib
import math
import time
import zlib
from typing import NamedTuple

import torch

from speechbrain_elbo.spectral import crop_frames, pad_frames, peak_normalize

__all__ = [
    "Enhanced",
    "frame_multiple_of",
    "enhance_spectrogram",
    "enhance_waveforms",
    "utterance_seed",
    "unwrap_module",
]


class Enhanced(NamedTuple):
    """What one pass of the pipeline returns.

    Attributes
    ----------
    stage1 : torch.Tensor
        The stage-1 estimate: complex64 spectrogram (B, 1, F, T) from
        :func:`enhance_spectrogram`, waveform (B, L) from
        :func:`enhance_waveforms`.
    refined : torch.Tensor or None
        The stage-1+2 estimate from the same stage-1 sample (same kind as
        ``stage1``), None without a refiner.
    nfe : int
        Score-network evaluations per utterance.
    seconds : dict
        Wall time of ``"stage1"`` and, with a refiner, of ``"stage1+2"``
        (stage 1 included), synchronised on CUDA.
    """

    stage1: torch.Tensor
    refined: torch.Tensor | None
    nfe: int
    seconds: dict


def unwrap_module(module):
    """The module inside a DDP or DataParallel wrapper (else itself).

    Example
    -------
    >>> net = torch.nn.Linear(2, 2)
    >>> unwrap_module(torch.nn.DataParallel(net)) is net
    True
    """
    wrappers = (
        torch.nn.parallel.DistributedDataParallel,
        torch.nn.DataParallel,
    )
    while isinstance(module, wrappers):
        module = module.module
    return module


def frame_multiple_of(*modules):
    """Frame count that the inputs of all ``modules`` must be a multiple of.

    A network that down-samples its input ``k`` times along the frame axis
    has ``frame_multiple = 2**k``; a score model is asked through its
    ``backbone``; DDP wrappers and None are allowed.

    Example
    -------
    >>> a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    >>> a.frame_multiple, b.frame_multiple = 4, 6
    >>> frame_multiple_of(a, b, None)
    12
    """
    multiple = 1
    for module in modules:
        if module is None:
            continue
        module = unwrap_module(module)
        value = getattr(module, "frame_multiple", None)
        if value is None and hasattr(module, "backbone"):
            backbone = unwrap_module(module.backbone)
            value = getattr(backbone, "frame_multiple", None)
        multiple = math.lcm(multiple, int(value or 1))
    return multiple


def _backbone(module):
    module = unwrap_module(module)
    return unwrap_module(getattr(module, "backbone", module))


def frame_padding_of(score_model):
    """How the enhancement pads a score model's input frames.

    A backbone declares ``frame_padding`` (``"zeros"``, the default, or
    ``"reflection"``) and ``decode_padded`` (default False: the estimate is
    cropped to the input's frames, then decoded; True: the padded estimate
    is decoded, then the waveform is cropped, as sgmse's ``enhancement.py``
    does, :class:`~speechbrain_elbo.interop.sgmse_network.SGMSENCSNpp`).

    Returns
    -------
    tuple
        ``(frame_padding, decode_padded)``.

    Example
    -------
    >>> frame_padding_of(torch.nn.Linear(1, 1))
    ('zeros', False)
    """
    backbone = _backbone(score_model)
    return (
        getattr(backbone, "frame_padding", "zeros"),
        bool(getattr(backbone, "decode_padded", False)),
    )


def _clock(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def enhance_spectrogram(
    score_model,
    sde,
    y,
    sampler,
    refiner=None,
    generator=None,
    frame_multiple=None,
    autocast=None,
    crop=True,
):
    """Stage 1 (and stage 2) on a batch of noisy spectrograms.

    ``y`` is padded along the frames to ``frame_multiple`` (default
    :func:`frame_multiple_of` the score model and the refiner; zeros or
    reflection: :func:`frame_padding_of` the score model), sampled,
    refined from the same sample, and both estimates are cropped back.

    Arguments
    ---------
    score_model : callable
        ``score_model(x_t, y, t)``, e.g. a
        :class:`~speechbrain_elbo.score.ScoreModel`.
    sde : speechbrain_elbo.sde.OUVESDE
        The SDE of the score model.
    y : torch.Tensor
        Normalised, compressed noisy spectrograms, complex (B, 1, F, T).
    sampler : speechbrain_elbo.sampling.Sampler
        Sampling settings.
    refiner : torch.nn.Module, optional
        ``refiner(x_hat, y)``: the stage-2 model.
    generator : torch.Generator, optional
        Randomness of the sampler.
    frame_multiple : int, optional
        Pad to this multiple instead of the networks' own.
    autocast : context manager, optional
        Entered around the networks (e.g. a ``torch.autocast``); the
        padding, cropping and outputs stay complex64.
    crop : bool
        False: return the padded estimates (B, 1, F, T'), for a model
        decoded before cropping (:func:`enhance_waveforms`).

    Returns
    -------
    Enhanced
        Complex64 spectrograms (B, 1, F, T).

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sampling import Sampler
    >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
    >>> sde = OUVESDE(GeometricGNS())
    >>> y = torch.randn(1, 1, 8, 5, dtype=torch.complex64)
    >>> out = enhance_spectrogram(GaussianOracle(sde, 0.8, 0.1), sde, y,
    ...     Sampler("euler", 2), refiner=lambda x, y: x + 0 * y,
    ...     frame_multiple=4)
    >>> out.stage1.shape, torch.equal(out.stage1, out.refined), out.nfe
    (torch.Size([1, 1, 8, 5]), True, 2)
    """
    if frame_multiple is None:
        frame_multiple = frame_multiple_of(score_model, refiner)
    context = contextlib.nullcontext() if autocast is None else autocast
    start = _clock(y.device)
    mode, _ = frame_padding_of(score_model)
    y_pad, num_frames = pad_frames(y, frame_multiple, mode)
    if not crop:
        num_frames = y_pad.shape[-1]
    with context:
        x_hat, nfe = sampler(score_model, sde, y_pad, generator=generator)
    stage1 = crop_frames(x_hat.to(torch.complex64), num_frames)
    seconds = {"stage1": _clock(y.device) - start}
    refined = None
    if refiner is not None:
        with context:
            refined = refiner(x_hat, y_pad)
        refined = crop_frames(refined.to(torch.complex64), num_frames)
        seconds["stage1+2"] = _clock(y.device) - start
    return Enhanced(stage1, refined, int(nfe), seconds)


def enhance_waveforms(
    noisy,
    transform,
    score_model,
    sde,
    sampler,
    refiner=None,
    lengths=None,
    generator=None,
    frame_multiple=None,
    autocast=None,
):
    """The whole pipeline on a batch of noisy waveforms.

    Peak normalisation by the noisy peak, compressed STFT,
    :func:`enhance_spectrogram`, inverse STFT and de-normalisation; samples
    past each relative length are zero. A backbone with ``decode_padded``
    (:func:`frame_padding_of`) has its padded estimate decoded and the
    waveform cropped, otherwise the frames are cropped before decoding.

    Arguments
    ---------
    noisy : torch.Tensor
        Noisy waveforms (B, L), float32, on the networks' device.
    transform : speechbrain_elbo.spectral.SpectralTransform
        The spectral transform of the model.
    score_model, sde, sampler, refiner, generator, frame_multiple, autocast
        As in :func:`enhance_spectrogram`.
    lengths : torch.Tensor, optional
        Relative lengths (B,) of a padded batch.

    Returns
    -------
    Enhanced
        Waveforms (B, L) at the scale of ``noisy``.
    """
    start = _clock(noisy.device)
    num_samples = noisy.shape[-1]
    wav, _, scale = peak_normalize(noisy, lengths=lengths)
    y = transform.encode(wav, lengths)
    spec = enhance_spectrogram(
        score_model,
        sde,
        y,
        sampler,
        refiner=refiner,
        generator=generator,
        frame_multiple=frame_multiple,
        autocast=autocast,
        crop=not frame_padding_of(score_model)[1],
    )

    # each system's time: its share of the spectrogram pass plus its decode
    # (spec.seconds are cumulative: the largest is the whole pass)
    before = _clock(noisy.device) - start - max(spec.seconds.values())
    waves, seconds = {}, {}
    for name, x in (("stage1", spec.stage1), ("stage1+2", spec.refined)):
        if x is None:
            continue
        begin = _clock(noisy.device)
        waves[name] = transform.decode(x, num_samples, lengths) * scale
        seconds[name] = before + spec.seconds[name] + _clock(x.device) - begin
    return Enhanced(waves["stage1"], waves.get("stage1+2"), spec.nfe, seconds)


def utterance_seed(seed, uid, sample=0):
    """Seed of stochastic sample ``sample`` of utterance ``uid``.

    Independent of the batch, the rank and the order of processing, so that
    a stage-1 estimate is the same on one GPU or on eight.

    Example
    -------
    >>> utterance_seed(1234, "p232_001") == utterance_seed(1234, "p232_001")
    True
    >>> utterance_seed(1234, "p232_001", 1) != utterance_seed(1234, "p232_001")
    True
    """
    return (int(seed) * 1000003 + zlib.crc32(f"{uid}#{sample}".encode())) % (
        2**63 - 1
    )
