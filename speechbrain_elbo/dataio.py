"""Dataset pipelines shared by the VoiceBank-DEMAND and WHAMR! recipes.

The manifests written by ``speechbrain_elbo.dataprep`` become SpeechBrain
``DynamicItemDataset`` objects whose items ``noisy_sig`` and ``clean_sig``
are float32 1-D waveforms. Training examples are cropped at a random position
(the same for input and target), validation examples at the centre, test
examples are read whole. With SpeechBrain's ``PaddedBatch`` (the default
collate function of ``Brain``) a batch has ``batch.id``, ``batch.noisy_sig``
and ``batch.clean_sig`` (``PaddedData`` with relative lengths).
"""

import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes

from speechbrain_elbo.dataprep.common import read_audio_checked
from speechbrain_elbo.fileio import audio_info

#: Crop of each split: "random" (training), "center" (validation) or None
#: (whole file).
DEFAULT_CROP = {"train": "random", "valid": "center", "test": None}

CROP_MODES = ("random", "center", None)

OUTPUT_KEYS = ["id", "noisy_sig", "clean_sig"]


def crop_length(crop_frames=256, hop_length=128):
    """Number of samples whose centred STFT has ``crop_frames`` frames.

    Arguments
    ---------
    crop_frames : int
        STFT frames wanted.
    hop_length : int
        STFT hop.

    Returns
    -------
    int
        ``(crop_frames - 1) * hop_length``.

    Example
    -------
    >>> crop_length()
    32640
    """
    if crop_frames < 2 or hop_length < 1:
        raise ValueError(
            f"crop_frames must be >= 2 and hop_length >= 1, got "
            f"crop_frames={crop_frames}, hop_length={hop_length}."
        )
    return (crop_frames - 1) * hop_length


def crop_start(frames, length, mode):
    """First sample of a crop of ``length`` samples from ``frames`` samples.

    Arguments
    ---------
    frames : int
        Length of the file.
    length : int
        Length of the crop.
    mode : str
        ``"random"`` (uniform over all valid starts, drawn from torch's
        global RNG) or ``"center"``.

    Returns
    -------
    int
        Start sample; 0 when the file is not longer than the crop.

    Example
    -------
    >>> crop_start(100, 40, "center")
    30
    >>> 0 <= crop_start(100, 40, "random") <= 60
    True
    """
    if frames <= length:
        return 0
    if mode == "random":
        return int(torch.randint(0, frames - length + 1, (1,)).item())
    if mode == "center":
        return (frames - length) // 2
    raise ValueError(f"Unknown crop mode {mode!r}; use one of {CROP_MODES}.")


def read_pair(
    noisy_path, clean_path, sample_rate=16000, crop=None, length=None
):
    """Reads an input/target pair, checked and identically cropped.

    Arguments
    ---------
    noisy_path : str
        Input (noisy or reverberant) file.
    clean_path : str
        Target file.
    sample_rate : int
        Required sample rate of both files.
    crop : str or None
        ``"random"``, ``"center"`` or None (whole file).
    length : int or None
        Crop length in samples (needed when ``crop`` is set). Shorter files
        are zero-padded at the end to this length.

    Returns
    -------
    tuple of torch.Tensor
        (noisy, clean), float32 1-D tensors of equal length.

    Raises
    ------
    ValueError
        If a file is not at ``sample_rate``, not mono, holds NaN values, or
        the two files differ in length.

    Example
    -------
    >>> import soundfile as sf
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(tmp / "n.wav", [0.5] * 10, 16000)
    >>> sf.write(tmp / "c.wav", [0.25] * 10, 16000)
    >>> noisy, clean = read_pair(
    ...     tmp / "n.wav", tmp / "c.wav", 16000, "center", 16
    ... )
    >>> noisy.shape, clean[9:11]
    (torch.Size([16]), tensor([0.2500, 0.0000]))
    """
    if crop not in CROP_MODES:
        raise ValueError(
            f"Unknown crop mode {crop!r}; use one of {CROP_MODES}."
        )
    frames = audio_info(noisy_path).frames
    clean_frames = audio_info(clean_path).frames
    if frames != clean_frames:
        raise ValueError(
            f"Input and target differ in length: {noisy_path} has {frames} "
            f"samples, {clean_path} has {clean_frames}. Prepare the data again."
        )
    start, stop = 0, None
    if crop is not None:
        start = crop_start(frames, length, crop)
        stop = min(start + length, frames)
    noisy = read_audio_checked(noisy_path, sample_rate, start, stop)
    clean = read_audio_checked(clean_path, sample_rate, start, stop)
    if crop is not None and noisy.numel() < length:
        pad = (0, length - noisy.numel())
        noisy = torch.nn.functional.pad(noisy, pad)
        clean = torch.nn.functional.pad(clean, pad)
    return noisy, clean


def audio_pipeline(sample_rate=16000, crop=None, length=None):
    """Dynamic item turning ``noisy_wav``/``clean_wav`` into waveforms.

    Arguments
    ---------
    sample_rate : int
        Required sample rate.
    crop : str or None
        ``"random"``, ``"center"`` or None.
    length : int or None
        Crop length in samples.

    Returns
    -------
    speechbrain.utils.data_pipeline.GeneratorDynamicItem
        Takes ``noisy_wav``, ``clean_wav``; provides ``noisy_sig``,
        ``clean_sig``.

    Example
    -------
    >>> pipeline = audio_pipeline(16000, "random", 32640)
    >>> list(pipeline.provides)
    ['noisy_sig', 'clean_sig']
    """
    if crop not in CROP_MODES:
        raise ValueError(
            f"Unknown crop mode {crop!r}; use one of {CROP_MODES}."
        )
    if crop is not None and (length is None or length < 1):
        raise ValueError(
            f"crop={crop!r} needs a positive length, got {length}."
        )

    @takes("noisy_wav", "clean_wav")
    @provides("noisy_sig", "clean_sig")
    def pipeline(noisy_wav, clean_wav):
        noisy, clean = read_pair(
            noisy_wav, clean_wav, sample_rate, crop, length
        )
        yield noisy
        yield clean

    return pipeline


def make_datasets(
    manifests,
    crop_frames=256,
    hop_length=128,
    sample_rate=16000,
    crop=None,
    replacements=None,
):
    """Builds the datasets of a recipe from its JSON manifests.

    Arguments
    ---------
    manifests : dict
        Split name -> JSON manifest (``{id: {"noisy_wav", "clean_wav",
        "length", ...}}``), e.g. the return value of ``prepare_voicebank``.
    crop_frames : int
        STFT frames of a crop; a crop has ``(crop_frames - 1) * hop_length``
        samples (32640 by default).
    hop_length : int
        STFT hop.
    sample_rate : int
        Required sample rate of the audio (checked on every read).
    crop : dict or None
        Split name -> ``"random"``, ``"center"`` or None (whole file);
        default ``DEFAULT_CROP`` (train random, valid centre, test whole).
        Every split of ``manifests`` needs an entry.
    replacements : dict or None
        ``{placeholder: value}`` substitutions applied to the manifests'
        strings, as in ``DynamicItemDataset.from_json``.

    Returns
    -------
    dict
        Split name -> ``DynamicItemDataset`` with output keys ``id``,
        ``noisy_sig`` and ``clean_sig``.

    Example
    -------
    >>> import json
    >>> import soundfile as sf
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(tmp / "n.wav", [0.1, -0.1] * 8000, 16000)
    >>> sf.write(tmp / "c.wav", [0.1, 0.0] * 8000, 16000)
    >>> entry = {"noisy_wav": str(tmp / "n.wav"),
    ...          "clean_wav": str(tmp / "c.wav"), "length": 1.0}
    >>> _ = (tmp / "m.json").write_text(json.dumps({"u1": entry}))
    >>> sets = make_datasets({"train": tmp / "m.json", "test": tmp / "m.json"})
    >>> sets["train"][0]["noisy_sig"].shape, sets["test"][0]["clean_sig"].shape
    (torch.Size([32640]), torch.Size([16000]))
    """
    crop = DEFAULT_CROP if crop is None else crop
    length = crop_length(crop_frames, hop_length)
    missing = [split for split in manifests if split not in crop]
    if missing:
        raise ValueError(
            f"No crop mode for split(s) {missing}; pass crop={{split: "
            f"'random' | 'center' | None}} for each (got {crop})."
        )
    datasets = {}
    for split, path in manifests.items():
        dataset = DynamicItemDataset.from_json(
            str(path), replacements=replacements or {}
        )
        dataset.add_dynamic_item(
            audio_pipeline(sample_rate, crop[split], length)
        )
        dataset.set_output_keys(OUTPUT_KEYS)
        datasets[split] = dataset
    return datasets
