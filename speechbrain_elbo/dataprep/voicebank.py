"""Preparation of VoiceBank-DEMAND (Valentini-Botinhao et al., 2016).

Reads the official layout, resamples once to 16 kHz into a cache under the
save folder, holds out validation speakers from the training set and writes
SpeechBrain JSON manifests ``train.json``, ``valid.json`` and ``test.json``.
"""

from pathlib import Path

from speechbrain.utils.logger import get_logger

from speechbrain_elbo.dataprep.common import (
    PREP_VERSION,
    cache_folder,
    convert_pairs,
    fingerprint,
    is_prepared,
    pair_files,
    require_dirs,
    warn_if_unexpected_count,
    write_marker,
)
from speechbrain_elbo.fileio import write_json_atomic

logger = get_logger(__name__)

#: (noisy folder, clean folder) of each official subset.
SUBSETS = {
    "train": ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
    "test": ("noisy_testset_wav", "clean_testset_wav"),
}

#: Official numbers of pairs (the training count includes the validation
#: speakers that are held out).
OFFICIAL_COUNTS = {"train": 11572, "test": 824}

#: Sample rates accepted for the source files: the official 48 kHz release
#: and the 16 kHz copies many users have.
SOURCE_RATES = (48000, 16000)

MARKER_NAME = "voicebank_prepared.json"

LAYOUT = """\
  <data_folder>/clean_trainset_28spk_wav/p226_001.wav ...
  <data_folder>/noisy_trainset_28spk_wav/p226_001.wav ...
  <data_folder>/clean_testset_wav/p232_001.wav ...
  <data_folder>/noisy_testset_wav/p232_001.wav ...
(48 kHz as released, or 16 kHz copies; names pXXX_NNN.wav)"""


def speaker_of(utt_id):
    """Speaker of a VoiceBank utterance: the part of its name before "_".

    Arguments
    ---------
    utt_id : str
        File stem, e.g. ``"p226_001"``.

    Returns
    -------
    str
        The speaker, e.g. ``"p226"``.

    Raises
    ------
    ValueError
        If the name has no "_".

    Example
    -------
    >>> speaker_of("p287_123")
    'p287'
    """
    speaker, sep, _ = utt_id.partition("_")
    if not sep or not speaker:
        raise ValueError(
            f"Cannot read the speaker of {utt_id!r}: VoiceBank files are "
            "named <speaker>_<number>.wav, e.g. p226_001.wav."
        )
    return speaker


def prepare_voicebank(
    data_folder,
    save_folder,
    valid_speakers=("p226", "p287"),
    sample_rate=16000,
    skip_prep=False,
):
    """Prepares VoiceBank-DEMAND: resampled cache and JSON manifests.

    Writes ``train.json``, ``valid.json`` and ``test.json`` in
    ``save_folder``, each ``{utt_id: {"noisy_wav": path, "clean_wav": path,
    "length": seconds, "spk_id": speaker}}`` with absolute paths. Files not at
    ``sample_rate`` are resampled once into ``save_folder/wav16k/<subset>/``;
    files already at ``sample_rate`` are referenced where they are. The
    speakers in ``valid_speakers`` are moved from the training set to the
    validation set. A marker file records the options and a fingerprint of
    the source files: a second call with the same options and data does
    nothing, a call with other options prepares again (reusing valid cached
    files).

    Arguments
    ---------
    data_folder : str or pathlib.Path
        Root of the corpus (official layout, 48 kHz or 16 kHz).
    save_folder : str or pathlib.Path
        Where the manifests and the resampled cache go.
    valid_speakers : sequence of str or str
        Training speakers held out for validation.
    sample_rate : int
        Sample rate of the prepared audio.
    skip_prep : bool
        If True, only return the manifest paths.

    Returns
    -------
    dict
        Split name -> manifest path (str).

    Raises
    ------
    FileNotFoundError
        If a corpus folder is missing.
    ValueError
        For unpaired files, wrong sample rates, non-mono, empty, silent or
        NaN files, length mismatches within a pair, or validation speakers
        that leave the training or validation set empty.

    Example
    -------
    >>> import json
    >>> import soundfile as sf
    >>> root = getfixture("tmp_path") / "vb"
    >>> for sub in ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav",
    ...             "clean_testset_wav", "noisy_testset_wav"):
    ...     (root / sub).mkdir(parents=True)
    ...     spks = ["p232"] if "test" in sub else ["p226", "p250"]
    ...     for spk in spks:
    ...         sf.write(root / sub / f"{spk}_001.wav", [0.1, -0.1] * 2400,
    ...                  48000)
    >>> out = prepare_voicebank(root, root.parent / "save")
    >>> with open(out["valid"]) as fin:
    ...     sorted(json.load(fin))
    ['p226_001']
    """
    save_folder = Path(save_folder)
    manifests = {
        split: str(save_folder / f"{split}.json")
        for split in ("train", "valid", "test")
    }
    if skip_prep:
        return manifests
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(
            f"sample_rate must be a positive int, not {sample_rate}"
        )
    data_folder = Path(data_folder).absolute()
    require_dirs(
        data_folder, [d for pair in SUBSETS.values() for d in pair], LAYOUT
    )

    pairs = {
        subset: pair_files(
            {"noisy_wav": data_folder / noisy, "clean_wav": data_folder / clean}
        )
        for subset, (noisy, clean) in SUBSETS.items()
    }
    speakers = {
        subset: {uid: speaker_of(uid) for uid in subset_pairs}
        for subset, subset_pairs in pairs.items()
    }
    if isinstance(valid_speakers, str):
        valid_speakers = [valid_speakers]
    valid_speakers = sorted(set(valid_speakers))
    train_speakers = sorted(set(speakers["train"].values()))
    absent = [spk for spk in valid_speakers if spk not in train_speakers]
    if len(absent) == len(valid_speakers) or set(valid_speakers) >= set(
        train_speakers
    ):
        raise ValueError(
            f"valid_speakers={valid_speakers} would leave the training or the "
            f"validation set empty. Training speakers found: {train_speakers}."
            " Pass a non-empty subset of them."
        )
    if absent:
        logger.warning(
            f"Validation speakers {absent} are not in the training set of "
            f"{data_folder}; the validation set uses the others."
        )

    sources = [
        p
        for sp in pairs.values()
        for roles in sp.values()
        for p in roles.values()
    ]
    options = {
        "prep_version": PREP_VERSION,
        "data_folder": str(data_folder),
        "valid_speakers": valid_speakers,
        "sample_rate": sample_rate,
        "sources": fingerprint(sources),
    }
    marker = save_folder / MARKER_NAME
    if is_prepared(marker, options, list(manifests.values())):
        logger.info(f"VoiceBank-DEMAND already prepared in {save_folder}.")
        return manifests

    for subset, subset_pairs in pairs.items():
        warn_if_unexpected_count(
            "VoiceBank-DEMAND",
            subset,
            len(subset_pairs),
            OFFICIAL_COUNTS[subset],
        )
    cache = cache_folder(save_folder, sample_rate)
    data = {}
    for subset, subset_pairs in pairs.items():
        logger.info(f"VoiceBank-DEMAND {subset}: {len(subset_pairs)} pairs.")
        entries = convert_pairs(
            subset_pairs, data_folder, cache, sample_rate, SOURCE_RATES
        )
        for uid, entry in entries.items():
            entry["spk_id"] = speakers[subset][uid]
        data[subset] = entries

    held_out = set(valid_speakers)
    splits = {
        "train": {
            uid: e
            for uid, e in data["train"].items()
            if e["spk_id"] not in held_out
        },
        "valid": {
            uid: e
            for uid, e in data["train"].items()
            if e["spk_id"] in held_out
        },
        "test": data["test"],
    }
    for split, entries in splits.items():
        write_json_atomic(manifests[split], entries)
        logger.info(f"Wrote {manifests[split]} ({len(entries)} utterances).")
    write_marker(marker, options)
    return manifests
