"""Preparation of WHAMR! (Maciejewski et al., 2020) for single-speaker tasks.

Two tasks are supported, both with the anechoic first speaker as target:
``dereverb`` (input ``s1_reverb``) and ``denoise_dereverb`` (input
``mix_single_reverb``). The manifests use the keys ``noisy_wav`` (input) and
``clean_wav`` (target), so that one dataset pipeline serves VoiceBank-DEMAND
and WHAMR!.
"""

import csv
from pathlib import Path

from speechbrain.utils.logger import get_logger

from speechbrain_elbo.dataprep.common import (
    PREP_VERSION,
    cache_folder,
    convert_pairs,
    fingerprint,
    format_file_list,
    is_prepared,
    pair_files,
    require_dirs,
    warn_if_unexpected_count,
    write_marker,
)
from speechbrain_elbo.fileio import write_json_atomic

logger = get_logger(__name__)

#: Input folder of each task; the target is always ``TARGET_DIR``.
TASK_INPUTS = {"dereverb": "s1_reverb", "denoise_dereverb": "mix_single_reverb"}
TARGET_DIR = "s1_anechoic"
VERSIONS = ("min", "max")

#: Manifest split -> WHAMR! folder.
SPLITS = {"train": "tr", "valid": "cv", "test": "tt"}

#: Official numbers of utterances per split.
OFFICIAL_COUNTS = {"train": 20000, "valid": 5000, "test": 3000}

#: Per-utterance fields copied from a metadata CSV when it has them.
METADATA_FIELDS = {"rt60": float, "drr": float, "spk_id": str}

MARKER_NAME = "whamr_prepared.json"

LAYOUT = """\
  <data_folder>/wav16k/{min,max}/{tr,cv,tt}/s1_anechoic/<id>.wav
  <data_folder>/wav16k/{min,max}/{tr,cv,tt}/s1_reverb/<id>.wav  (dereverb)
  <data_folder>/wav16k/{min,max}/{tr,cv,tt}/mix_single_reverb/<id>.wav
      (denoise_dereverb)
  optional: <data_folder>/metadata/{tr,cv,tt}.csv with columns id, rt60,
      drr, ... (written by our simulation tool)
(wav8k/ instead of wav16k/ is accepted with resample_8k=True)"""


def _rate_folder(sample_rate):
    return f"wav{sample_rate // 1000}k"


def _find_source(data_folder, version, sample_rate, resample_8k):
    """Picks the folder to read from and its sample rate."""
    wanted = data_folder / _rate_folder(sample_rate) / version
    if sample_rate % 1000 == 0 and wanted.is_dir():
        return wanted, sample_rate
    low = data_folder / "wav8k" / version
    if low.is_dir():
        if resample_8k:
            logger.warning(
                f"{wanted} not found; upsampling {low} to {sample_rate} Hz. "
                "The result has no content above 4 kHz."
            )
            return low, 8000
        raise FileNotFoundError(
            f"{wanted} not found, but {low} exists. Either pass "
            "resample_8k=True to upsample the 8 kHz version into the cache "
            "(band-limited to 4 kHz), or generate the 16 kHz version of "
            f"WHAMR! (wav16k). Expected layout:\n{LAYOUT}"
        )
    raise FileNotFoundError(
        f"Neither {wanted} nor {low} exists. Expected layout:\n{LAYOUT}"
    )


def _metadata_path(data_folder, folder, split):
    """The metadata CSV of a split (named after its folder or the split)."""
    for name in (folder, split):
        path = data_folder / "metadata" / f"{name}.csv"
        if path.is_file():
            return path
    return None


def read_metadata(path, ids):
    """Reads per-utterance fields (rt60, drr, spk_id) from a metadata CSV.

    Arguments
    ---------
    path : str or pathlib.Path
        CSV with an ``id`` column; the columns of ``METADATA_FIELDS`` that it
        has are read.
    ids : iterable of str
        Utterances that must all have a row.

    Returns
    -------
    dict
        Utterance id -> {field: value}.

    Raises
    ------
    ValueError
        If the ``id`` column is missing, an utterance has no row, or a value
        cannot be parsed.

    Example
    -------
    >>> path = getfixture("tmp_path") / "tr.csv"
    >>> _ = path.write_text("id,rt60,drr,room\\nu1,0.41,3.5,7\\n")
    >>> read_metadata(path, ["u1"])
    {'u1': {'rt60': 0.41, 'drr': 3.5}}
    """
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        columns = reader.fieldnames or []
        if "id" not in columns:
            raise ValueError(
                f"{path} has no 'id' column (columns: {columns}). The "
                "metadata CSV needs one row per utterance, keyed by file stem."
            )
        fields = {k: t for k, t in METADATA_FIELDS.items() if k in columns}
        rows = {}
        for line, row in enumerate(reader, start=2):
            try:
                rows[row["id"]] = {k: t(row[k]) for k, t in fields.items()}
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {line}: {err}") from err
    missing = [uid for uid in ids if uid not in rows]
    if missing:
        raise ValueError(
            f"{path} has no row for {len(missing)} utterance(s):\n"
            f"{format_file_list(missing)}\nRegenerate the metadata or remove "
            "the CSV."
        )
    return {uid: rows[uid] for uid in ids}


def prepare_whamr(
    data_folder,
    save_folder,
    task="dereverb",
    version="min",
    sample_rate=16000,
    resample_8k=False,
    skip_prep=False,
):
    """Prepares WHAMR! for dereverberation or joint denoising/dereverberation.

    Writes ``train.json`` (from ``tr``), ``valid.json`` (``cv``) and
    ``test.json`` (``tt``) in ``save_folder``, each ``{utt_id: {"noisy_wav":
    input path, "clean_wav": s1_anechoic path, "length": seconds, "spk_id":
    speaker}}`` with absolute paths, plus ``rt60`` and ``drr`` when
    ``data_folder/metadata/<tr|cv|tt>.csv`` provides them. ``spk_id`` comes
    from the metadata's ``spk_id`` column if present, else from the WSJ0
    convention (first three characters of the file name). If only the 8 kHz
    version exists and ``resample_8k`` is True, it is upsampled once into
    ``save_folder/wav16k/<version>/<split>/...``. Idempotent like
    ``prepare_voicebank``.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        Root of WHAMR! (holding ``wav16k`` and/or ``wav8k``).
    save_folder : str or pathlib.Path
        Where the manifests (and a resampled cache, if any) go.
    task : str
        ``"dereverb"`` or ``"denoise_dereverb"``.
    version : str
        ``"min"`` or ``"max"``.
    sample_rate : int
        Sample rate of the prepared audio.
    resample_8k : bool
        Allow upsampling the 8 kHz version when ``wav16k`` is missing.
    skip_prep : bool
        If True, only return the manifest paths.

    Returns
    -------
    dict
        Split name -> manifest path (str).

    Raises
    ------
    FileNotFoundError
        If the needed folders are missing.
    ValueError
        For an unknown task or version, unpaired files, wrong sample rates,
        non-mono, empty, silent or NaN files, length mismatches, or a
        metadata CSV that lacks utterances.

    Example
    -------
    >>> import json
    >>> import soundfile as sf
    >>> root = getfixture("tmp_path") / "whamr"
    >>> for split in ("tr", "cv", "tt"):
    ...     for sub in ("s1_anechoic", "s1_reverb"):
    ...         folder = root / "wav16k" / "min" / split / sub
    ...         folder.mkdir(parents=True)
    ...         sf.write(folder / "011a0101_0.1_22go010x_-0.1.wav",
    ...                  [0.1, -0.1] * 800, 16000)
    >>> out = prepare_whamr(root, root.parent / "save")
    >>> with open(out["test"]) as fin:
    ...     entry = json.load(fin)["011a0101_0.1_22go010x_-0.1"]
    >>> entry["length"], entry["spk_id"], entry["noisy_wav"].endswith(
    ...     "tt/s1_reverb/011a0101_0.1_22go010x_-0.1.wav")
    (0.1, '011', True)
    """
    save_folder = Path(save_folder)
    manifests = {split: str(save_folder / f"{split}.json") for split in SPLITS}
    if skip_prep:
        return manifests
    if task not in TASK_INPUTS:
        raise ValueError(
            f"Unknown WHAMR! task {task!r}; choose one of {list(TASK_INPUTS)}."
        )
    if version not in VERSIONS:
        raise ValueError(
            f"Unknown WHAMR! version {version!r}; choose one of {VERSIONS}."
        )
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(
            f"sample_rate must be a positive int, not {sample_rate}"
        )
    data_folder = Path(data_folder).absolute()
    if not data_folder.is_dir():
        raise FileNotFoundError(
            f"Data folder {data_folder} does not exist. Expected layout:\n"
            f"{LAYOUT}"
        )
    source, source_rate = _find_source(
        data_folder, version, sample_rate, resample_8k
    )
    input_dir = TASK_INPUTS[task]
    require_dirs(
        source,
        [
            f"{f}/{sub}"
            for f in SPLITS.values()
            for sub in (input_dir, TARGET_DIR)
        ],
        LAYOUT,
    )

    pairs, metadata_files = {}, {}
    for split, folder in SPLITS.items():
        pairs[split] = pair_files(
            {
                "noisy_wav": source / folder / input_dir,
                "clean_wav": source / folder / TARGET_DIR,
            }
        )
        metadata_files[split] = _metadata_path(data_folder, folder, split)

    sources = [
        path
        for split_pairs in pairs.values()
        for roles in split_pairs.values()
        for path in roles.values()
    ]
    sources += [p for p in metadata_files.values() if p is not None]
    options = {
        "prep_version": PREP_VERSION,
        "data_folder": str(data_folder),
        "task": task,
        "version": version,
        "sample_rate": sample_rate,
        "source_rate": source_rate,
        "sources": fingerprint(sources),
    }
    marker = save_folder / MARKER_NAME
    if is_prepared(marker, options, list(manifests.values())):
        logger.info(f"WHAMR! already prepared in {save_folder}.")
        return manifests

    cache = cache_folder(save_folder, sample_rate)
    for split, split_pairs in pairs.items():
        warn_if_unexpected_count(
            "WHAMR!", split, len(split_pairs), OFFICIAL_COUNTS[split]
        )
        logger.info(f"WHAMR! {task} {split}: {len(split_pairs)} pairs.")
        entries = convert_pairs(
            split_pairs, source.parent, cache, sample_rate, (source_rate,)
        )
        meta = {}
        if metadata_files[split] is not None:
            meta = read_metadata(metadata_files[split], list(entries))
        for uid, entry in entries.items():
            entry["spk_id"] = uid[:3]
            entry.update(meta.get(uid, {}))
        write_json_atomic(manifests[split], entries)
        logger.info(f"Wrote {manifests[split]} ({len(entries)} utterances).")
    write_marker(marker, options)
    return manifests
