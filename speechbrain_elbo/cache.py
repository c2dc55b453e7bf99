"""Stage-1 estimates cached on disk for training the refiner.

The refinement model (docs/method.md, section 7) is trained on what the
frozen stage-1 model produces at inference: the sampler output x_hat
(compressed complex spectrogram of the whole utterance, with the noisy peak
normalisation of inference), made by the one enhancement pipeline
(:func:`speechbrain_elbo.pipeline.enhance_spectrogram`). Sampling is the
expensive part, so it is done once per utterance (and per stochastic
sample) and stored as ``<folder>/<split>/<id>.<k>.pt``. Generation

- is resumable: existing files are kept, each file is written atomically
  (a process killed while writing one leaves only a hidden temporary file,
  deleted by the next :meth:`Stage1Cache.claim`);
- is split across DDP ranks by batch, with a barrier at the end;
- is reproducible: the batches are the same whatever was cached before
  and however many ranks share the work, and a batch is seeded by
  :func:`~speechbrain_elbo.pipeline.utterance_seed` ``(seed, id, k)`` of
  its first utterance (sample k of an utterance uses its own seed when
  ``batch_size`` is 1), so an interrupted generation, resumed, writes the
  files an uninterrupted one writes;
- is tied to its settings (stage-1 checkpoint checksums, sampler, seed,
  transform) recorded in ``cache_info.json``: a cache made with other
  settings is an error unless regeneration is requested.

:func:`make_refiner_datasets` then serves aligned crops of the cached
estimate, the noisy and the clean spectrograms.

Example
-------
>>> cache = Stage1Cache(getfixture("tmp_path") / "cache", 2)
>>> cache.path("train", "p226_001", 1).name
'p226_001.1.pt'
>>> cache.missing("train", ["p226_001"])
[('p226_001', 0), ('p226_001', 1)]
"""

import json
import pathlib

import torch
import torch.nn.functional as F
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes
from speechbrain.utils.distributed import (
    ddp_barrier,
    get_rank,
    if_main_process,
    is_distributed_initialized,
)
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_elbo.dataio import crop_start
from speechbrain_elbo.dataprep.common import read_audio_checked
from speechbrain_elbo.fileio import atomic_path, write_json_atomic
from speechbrain_elbo.model_card import sampler_config, transform_config
from speechbrain_elbo.pipeline import enhance_spectrogram, utterance_seed
from speechbrain_elbo.spectral import crop_frames, peak_normalize

logger = get_logger(__name__)

__all__ = [
    "Stage1Cache",
    "CacheMismatchError",
    "cache_settings",
    "generate_stage1_cache",
    "refiner_pipeline",
    "make_refiner_datasets",
    "REFINER_KEYS",
]

CACHE_INFO = "cache_info.json"

#: Output keys of the refiner datasets.
REFINER_KEYS = ["id", "xhat_spec", "noisy_spec", "clean_spec", "frame_mask"]


class CacheMismatchError(RuntimeError):
    """The cache on disk was made with other settings."""


class Stage1Cache:
    """Files of cached stage-1 estimates, one per utterance and sample.

    Arguments
    ---------
    folder : str or pathlib.Path
        Root folder of the cache.
    samples_per_utterance : int
        Stochastic stage-1 samples stored per utterance (K >= 1).

    Example
    -------
    >>> cache = Stage1Cache(getfixture("tmp_path"), 1)
    >>> x_hat = torch.ones(1, 4, 3, dtype=torch.complex64)
    >>> cache.save("valid", "u1", 0, x_hat)
    >>> torch.equal(cache.load("valid", "u1", 0), x_hat)
    True
    >>> cache.missing("valid", ["u1", "u2"])
    [('u2', 0)]
    """

    def __init__(self, folder, samples_per_utterance=1):
        if int(samples_per_utterance) < 1:
            raise ValueError(
                "samples_per_utterance must be >= 1, got "
                f"{samples_per_utterance}."
            )
        self.folder = pathlib.Path(folder)
        self.samples_per_utterance = int(samples_per_utterance)

    def path(self, split, uid, sample):
        """File of sample ``sample`` of utterance ``uid`` in ``split``."""
        return self.folder / split / f"{uid}.{int(sample)}.pt"

    def missing(self, split, ids):
        """(id, sample) pairs without a file, in order."""
        return [
            (uid, k)
            for uid in ids
            for k in range(self.samples_per_utterance)
            if not self.path(split, uid, k).is_file()
        ]

    def save(self, split, uid, sample, x_hat):
        """Store one estimate (complex (1, F, T)) atomically."""
        with atomic_path(self.path(split, uid, sample), suffix=".pt") as tmp:
            torch.save(x_hat.detach().to("cpu", torch.complex64).clone(), tmp)

    def load(self, split, uid, sample):
        """One cached estimate, complex64 (1, F, T)."""
        path = self.path(split, uid, sample)
        if not path.is_file():
            raise FileNotFoundError(
                f"No cached stage-1 estimate {path}. Generate the cache "
                "(generate_stage1_cache) for the split first."
            )
        return torch.load(path, map_location="cpu", weights_only=True)

    def read_settings(self):
        """The settings recorded with the cache, or None."""
        info = self.folder / CACHE_INFO
        if not info.is_file():
            return None
        with open(info, encoding="utf-8") as handle:
            return json.load(handle)

    def claim(self, settings, regenerate=False):
        """Check or record the settings of the cache (main process writes).

        The main process also deletes the temporary files of writes that a
        killed process left.

        Arguments
        ---------
        settings : dict
            JSON-serialisable description, from :func:`cache_settings`.
        regenerate : bool
            Delete estimates made with other settings instead of failing
            (estimates made with these settings are kept, so that a
            regeneration that was interrupted resumes).

        Raises
        ------
        CacheMismatchError
            If the cache holds estimates made with other settings and
            ``regenerate`` is False.
        """
        settings = json.loads(json.dumps(settings))
        recorded = self.read_settings()
        if recorded is not None and recorded != settings:
            if not regenerate:
                changed = sorted(
                    key
                    for key in set(recorded) | set(settings)
                    if recorded.get(key) != settings.get(key)
                )
                raise CacheMismatchError(
                    f"The stage-1 cache in {self.folder} was made with other "
                    f"settings (differing: {changed}). Pass "
                    "--regenerate_cache=True to rebuild it, or choose another "
                    "cache_folder."
                )
        if if_main_process():
            for partial in self.folder.glob("*/.*.pt"):
                partial.unlink(missing_ok=True)
        if if_main_process() and recorded != settings:
            if regenerate and self.folder.is_dir():
                for old in self.folder.glob("*/*.pt"):
                    old.unlink()
                logger.info(f"Regenerating the stage-1 cache in {self.folder}.")
            write_json_atomic(self.folder / CACHE_INFO, _sorted(settings))
        ddp_barrier()


def _sorted(value):
    """``value`` with every dict's keys in order (a stable, diffable file)."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    return value


def cache_settings(stage1, seed, batch_size=1, frame_multiple=1):
    """What a cached estimate depends on, as a JSON-ready dict.

    Arguments
    ---------
    stage1 : types.SimpleNamespace
        From :func:`speechbrain_elbo.export.load_enhancer`.
    seed : int
        Base seed of the sampler noise.
    batch_size : int
        Utterances sampled together (zero padding changes the estimates
        slightly, so it is part of the settings).
    frame_multiple : int
        Frame multiple the noisy spectrogram is padded to for sampling.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from speechbrain_elbo.sampling import Sampler
    >>> from speechbrain_elbo.spectral import SpectralTransform
    >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
    >>> stage1 = SimpleNamespace(checksums={"score_model.ckpt": "ab"},
    ...     sampler=Sampler("pc", 30), sde=OUVESDE(GeometricGNS()),
    ...     transform=SpectralTransform())
    >>> cache_settings(stage1, 0)["sampler"]
    {'name': 'pc', 'steps': 30, 'corrector_steps': 1, 'snr': 0.5}
    """
    return {
        "checksums": dict(stage1.checksums),
        "sampler": sampler_config(stage1.sampler),
        "sde": stage1.sde.describe(),
        "transform": transform_config(stage1.transform),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "frame_multiple": int(frame_multiple),
    }


def _shard(items):
    if not is_distributed_initialized():
        return items
    rank = int(get_rank())
    world = torch.distributed.get_world_size()
    return items[rank::world]


@torch.inference_mode()
def generate_stage1_cache(
    cache,
    split,
    manifest,
    stage1,
    device="cpu",
    seed=0,
    sample_rate=16000,
    batch_size=1,
    frame_multiple=1,
    precision=None,
    progress=True,
):
    """Generate the missing stage-1 estimates of one split.

    The utterances, sorted by length (so that batches pad little), are cut
    into batches of ``batch_size``; every rank takes every
    ``world_size``-th of the batches that miss an estimate, samples them
    with the frozen stage-1 model and its sampler, and writes the missing
    estimates, one file each; the function returns after a barrier, when
    the whole split is cached. The batches do not depend on what is
    already cached nor on the number of ranks, so a resumed generation
    writes what an uninterrupted one would.

    Arguments
    ---------
    cache : Stage1Cache
        Where the estimates go.
    split : str
        Split name (sub-folder), e.g. ``"train"``.
    manifest : str or pathlib.Path
        JSON manifest of the split (``noisy_wav`` and ``length`` per id).
    stage1 : types.SimpleNamespace
        From :func:`speechbrain_elbo.export.load_enhancer`.
    device : str
        Device of the stage-1 model.
    seed : int
        Base seed; sample k of utterance u uses ``utterance_seed(seed, u,
        k)`` (of the first utterance of its batch).
    sample_rate : int
        Sample rate of the audio.
    batch_size : int
        Utterances sampled at once (zero-padded to the longest).
    frame_multiple : int
        The spectrogram is zero-padded to a multiple of this many frames
        for sampling, as at inference (the caller passes
        :func:`speechbrain_elbo.pipeline.frame_multiple_of` ``(score
        backbone, refiner)``), and the estimate cropped back.
    precision : torch.dtype, optional
        Autocast dtype (e.g. ``torch.bfloat16``); None for float32.
    progress : bool
        Show a progress bar on the main process.

    Returns
    -------
    int
        Number of estimates this rank wrote.
    """
    with open(manifest, encoding="utf-8") as handle:
        entries = json.load(handle)
    ids = sorted(entries, key=lambda u: (float(entries[u]["length"]), u))
    missing = set(cache.missing(split, ids))
    jobs = [
        (sample, ids[start : start + batch_size])
        for sample in range(cache.samples_per_utterance)
        for start in range(0, len(ids), batch_size)
        if any((u, sample) in missing for u in ids[start : start + batch_size])
    ]
    jobs = _shard(jobs)
    written = 0
    bar = tqdm(
        jobs,
        desc=f"stage-1 cache ({split})",
        disable=not (progress and if_main_process()),
    )
    transform = stage1.transform
    autocast = torch.autocast(
        device_type=torch.device(device).type,
        dtype=precision or torch.float32,
        enabled=precision is not None,
    )
    for sample, uids in bar:
        waves = [
            read_audio_checked(entries[u]["noisy_wav"], sample_rate)
            for u in uids
        ]
        longest = max(w.numel() for w in waves)
        noisy = torch.stack(
            [
                torch.nn.functional.pad(w, (0, longest - w.numel()))
                for w in waves
            ]
        ).to(device)
        lengths = torch.tensor(
            [w.numel() / longest for w in waves], device=device
        )
        noisy, _, _ = peak_normalize(noisy, None, lengths)
        generator = torch.Generator(device=device).manual_seed(
            utterance_seed(seed, uids[0], sample)
        )
        x_hat = enhance_spectrogram(
            stage1.score_model,
            stage1.sde,
            transform.encode(noisy, lengths),
            stage1.sampler,
            generator=generator,
            frame_multiple=frame_multiple,
            autocast=autocast,
        ).stage1
        for index, (uid, wave) in enumerate(zip(uids, waves, strict=True)):
            if (uid, sample) not in missing:
                continue
            frames = transform.num_frames(wave.numel())
            cache.save(split, uid, sample, crop_frames(x_hat[index], frames))
            written += 1
    ddp_barrier()
    left = cache.missing(split, ids)
    if left:
        raise RuntimeError(
            f"{len(left)} stage-1 estimates of {split} are still missing "
            f"after generation, e.g. {left[:3]}; check the disk space of "
            f"{cache.folder} and run again (finished files are kept)."
        )
    logger.info(
        f"Stage-1 cache of {split}: {len(ids)} utterances x "
        f"{cache.samples_per_utterance} samples in {cache.folder / split}."
    )
    return written


def _real(spec):
    # complex (1, F, T) -> real (2, F, T)
    return torch.cat([spec.real, spec.imag], dim=0).float()


def refiner_pipeline(
    cache, split, transform, crop_frames=256, crop=None, sample_rate=16000
):
    """Dynamic item: aligned crops of x_hat, y and x0 for the refiner.

    The noisy and clean waveforms are normalised by the noisy peak of the
    whole utterance (as at inference, where x_hat was made), encoded, and
    the same ``crop_frames`` frames are cut from the three spectrograms
    (padded with zeros when shorter; ``frame_mask`` marks the real frames).
    In training (``crop="random"``) the crop position and the cached sample
    are drawn at random; otherwise the crop is centred and sample 0 used.

    Arguments
    ---------
    cache : Stage1Cache
        The cached estimates.
    split : str
        Their split.
    transform : speechbrain_elbo.spectral.SpectralTransform
        The spectral transform of stage 1.
    crop_frames : int or None
        Frames per example; None keeps the whole utterance.
    crop : str or None
        ``"random"`` or ``"center"``.
    sample_rate : int
        Sample rate of the audio.

    Returns
    -------
    speechbrain.utils.data_pipeline.GeneratorDynamicItem
        Provides ``xhat_spec``, ``noisy_spec``, ``clean_spec`` (real
        (2, F, L) tensors: real and imaginary parts) and ``frame_mask``
        (L,).
    """

    @takes("id", "noisy_wav", "clean_wav")
    @provides("xhat_spec", "noisy_spec", "clean_spec", "frame_mask")
    def pipeline(uid, noisy_wav, clean_wav):
        noisy = read_audio_checked(noisy_wav, sample_rate)
        clean = read_audio_checked(clean_wav, sample_rate)
        noisy, clean, _ = peak_normalize(noisy[None], clean[None])
        y = transform.encode(noisy)[0]
        x0 = transform.encode(clean)[0]
        sample = 0
        if crop == "random" and cache.samples_per_utterance > 1:
            sample = int(torch.randint(cache.samples_per_utterance, (1,)))
        x_hat = cache.load(split, uid, sample)
        if x_hat.shape != y.shape:
            raise CacheMismatchError(
                f"Cached estimate {cache.path(split, uid, sample)} has shape "
                f"{tuple(x_hat.shape)}, the utterance {tuple(y.shape)}: the "
                "cache is stale. Regenerate it (--regenerate_cache=True)."
            )
        frames = y.shape[-1]
        length = frames if crop_frames is None else int(crop_frames)
        start = 0 if crop is None else crop_start(frames, length, crop)
        stop = min(start + length, frames)
        pad = length - (stop - start)
        mask = torch.ones(length)
        if pad:
            mask[length - pad :] = 0.0
        for spec in (x_hat, y, x0):
            part = _real(spec[..., start:stop])
            yield F.pad(part, (0, pad))
        yield mask

    return pipeline


def make_refiner_datasets(
    manifests,
    cache,
    transform,
    crop_frames=256,
    sample_rate=16000,
    crop=None,
):
    """Datasets of aligned (x_hat, y, x0) crops for training the refiner.

    Arguments
    ---------
    manifests : dict
        Split -> JSON manifest; every split must be cached.
    cache : Stage1Cache
        The cached stage-1 estimates.
    transform : speechbrain_elbo.spectral.SpectralTransform
        The spectral transform of stage 1.
    crop_frames : int
        Frames per example.
    sample_rate : int
        Sample rate of the audio.
    crop : dict, optional
        Split -> ``"random"``/``"center"``; default random for ``train`` and
        centred otherwise.

    Returns
    -------
    dict
        Split -> ``DynamicItemDataset`` with keys :data:`REFINER_KEYS`.
    """
    datasets = {}
    for split, path in manifests.items():
        mode = (crop or {}).get(
            split, "random" if split == "train" else "center"
        )
        dataset = DynamicItemDataset.from_json(str(path))
        dataset.add_dynamic_item(
            refiner_pipeline(
                cache, split, transform, crop_frames, mode, sample_rate
            )
        )
        dataset.set_output_keys(REFINER_KEYS)
        datasets[split] = dataset
    return datasets
