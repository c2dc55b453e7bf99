"""The two stages of a recipe, whatever its corpus.

A recipe (``recipes/VoiceBank-DEMAND``, ``recipes/WHAMR``) differs from
another only in how it prepares its corpus and in its YAML files, so its
``train_score.py`` and ``train_refiner.py`` are one call each:

- :func:`run_score_stage` (stage 1): load the YAML with the command-line
  overrides, prepare the data, train the score model, test it, export it;
- :func:`run_refiner_stage` (stage 2): the same, with the frozen stage 1,
  its cached estimates (:mod:`speechbrain_elbo.cache`) and the refiner.

Both take the corpus's preparation as a function of the loaded hparams that
returns the manifests: :func:`voicebank_manifests` or
:func:`whamr_manifests`. With ``--prepare_only`` on the command line a stage
only prepares the data, with the same options as a full run (``run.sh``'s
first step). When the YAML has ``test_bins`` (manifest field -> bin
edges, e.g. the measured RT60 and DRR of the WHAMR! test rooms), the test
also writes the per-bin means of its metrics to ``test_bins_csv``
(:func:`write_test_bins`).

Example
-------
>>> manifests = voicebank_manifests({
...     "data_folder": "VB", "prep_folder": "prepared", "sample_rate": 16000,
...     "valid_speakers": ["p226"], "skip_prep": True})
>>> sorted(manifests)
['test', 'train', 'valid']
"""

import json
import sys
from types import SimpleNamespace

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import (
    if_main_process,
    infer_device,
    run_on_main,
)
from speechbrain.utils.logger import get_logger

from speechbrain_elbo.cache import (
    Stage1Cache,
    cache_settings,
    generate_stage1_cache,
    make_refiner_datasets,
)
from speechbrain_elbo.dataio import make_datasets
from speechbrain_elbo.dataprep.voicebank import prepare_voicebank
from speechbrain_elbo.dataprep.whamr import prepare_whamr
from speechbrain_elbo.metrics import BIN_FIELDS, metric_bins
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.training import (
    RefinerBrain,
    ScoreBrain,
    frame_multiple_of,
    load_enhancer_folder,
    parse_arguments,
    write_csv,
)

logger = get_logger(__name__)

__all__ = [
    "PREPARE_ONLY_FLAG",
    "PRECISIONS",
    "prepare_on_main",
    "voicebank_manifests",
    "whamr_manifests",
    "load_stage",
    "write_test_bins",
    "run_score_stage",
    "run_refiner_stage",
]

#: Command-line flag: prepare the data with the stage's options, then stop.
PREPARE_ONLY_FLAG = "--prepare_only"

#: ``--eval_precision`` -> dtype of the stage-1 cache generation.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------
# Corpus preparation from a recipe's hparams
# ---------------------------------------------------------------------------
def prepare_on_main(prepare, hparams, **options):
    """Prepare a corpus on the main process; every process gets the manifests.

    ``prepare`` gets ``data_folder``, ``save_folder`` (the hparams'
    ``prep_folder``), ``sample_rate`` and ``skip_prep`` from the hparams,
    plus ``options``. The other DDP processes wait, then get the manifest
    paths from a second call with ``skip_prep=True``.

    Arguments
    ---------
    prepare : callable
        ``prepare_voicebank``, ``prepare_whamr`` or a function with the same
        contract (returns split -> manifest path, does nothing but that with
        ``skip_prep``).
    hparams : dict
        The recipe's hparams.
    **options
        The corpus's own arguments of ``prepare``.

    Returns
    -------
    dict
        Split name -> manifest path.

    Example
    -------
    >>> hparams = {"data_folder": "WHAMR", "prep_folder": "prep",
    ...            "sample_rate": 16000, "skip_prep": True}
    >>> prepare_on_main(prepare_whamr, hparams, task="dereverb")["valid"]
    'prep/valid.json'
    """
    kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["prep_folder"],
        "sample_rate": hparams["sample_rate"],
        "skip_prep": hparams["skip_prep"],
        **options,
    }
    run_on_main(prepare, kwargs=kwargs)
    return prepare(**{**kwargs, "skip_prep": True})


def voicebank_manifests(hparams):
    """VoiceBank-DEMAND prepared with a recipe's hparams.

    :func:`prepare_on_main` with
    :func:`~speechbrain_elbo.dataprep.voicebank.prepare_voicebank` and the
    hparams' ``valid_speakers`` (the training speakers held out).

    Arguments
    ---------
    hparams : dict
        The recipe's hparams.

    Returns
    -------
    dict
        Split name -> manifest path.

    Example
    -------
    >>> voicebank_manifests({"data_folder": "VB", "prep_folder": "prep",
    ...     "valid_speakers": ["p226"], "sample_rate": 16000,
    ...     "skip_prep": True})["test"]
    'prep/test.json'
    """
    return prepare_on_main(
        prepare_voicebank, hparams, valid_speakers=hparams["valid_speakers"]
    )


def whamr_manifests(hparams):
    """WHAMR! prepared with a recipe's hparams.

    :func:`prepare_on_main` with
    :func:`~speechbrain_elbo.dataprep.whamr.prepare_whamr` and the hparams'
    ``task`` (``dereverb`` or ``denoise_dereverb``), ``whamr_version``
    (``min`` or ``max``) and ``resample_8k``.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams.

    Returns
    -------
    dict
        Split name -> manifest path.

    Example
    -------
    >>> whamr_manifests({"data_folder": "WHAMR", "prep_folder": "prep",
    ...     "task": "dereverb", "whamr_version": "min", "sample_rate": 16000,
    ...     "resample_8k": False, "skip_prep": True})["train"]
    'prep/train.json'
    """
    return prepare_on_main(
        prepare_whamr,
        hparams,
        task=hparams["task"],
        version=hparams["whamr_version"],
        resample_8k=hparams["resample_8k"],
    )


# ---------------------------------------------------------------------------
# Shared steps of the stages
# ---------------------------------------------------------------------------
def load_stage(argv=None):
    """Parse a stage's command line, join DDP and load its YAML.

    Arguments
    ---------
    argv : list of str, optional
        ``HPARAMS_FILE [--overrides_file F] [--key=value ...]
        [--prepare_only]`` (default ``sys.argv[1:]``).

    Returns
    -------
    types.SimpleNamespace
        ``hparams_file``, ``run_opts``, ``overrides`` (YAML text),
        ``hparams`` (loaded) and ``prepare_only`` (bool).

    Example
    -------
    >>> path = getfixture("tmp_path") / "h.yaml"
    >>> _ = path.write_text("lr: 0.1\\n")
    >>> stage = load_stage([str(path), "--lr=0.5", "--prepare_only"])
    >>> stage.hparams["lr"], stage.prepare_only
    (0.5, True)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prepare_only = PREPARE_ONLY_FLAG in argv
    argv = [arg for arg in argv if arg != PREPARE_ONLY_FLAG]
    hparams_file, run_opts, overrides = parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    return SimpleNamespace(
        hparams_file=hparams_file,
        run_opts=run_opts,
        overrides=overrides,
        hparams=hparams,
        prepare_only=prepare_only,
    )


def _start(stage, prepare):
    """The experiment folder, then the data; None with ``--prepare_only``."""
    hparams = stage.hparams
    if stage.prepare_only:
        prepare(hparams)
        return None
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=stage.hparams_file,
        overrides=stage.overrides,
    )
    return prepare(hparams)


def write_test_bins(path, utterances, manifest, bins):
    """Per-bin means of the per-utterance test scores, as a CSV file.

    Arguments
    ---------
    path : str or pathlib.Path
        The CSV to write (main process only), columns
        :data:`~speechbrain_elbo.metrics.BIN_FIELDS`.
    utterances : list of dict
        Per-utterance scores (``id``, ``system``, ``pesq``...), e.g. a
        Brain's ``test_utterances``.
    manifest : str or pathlib.Path
        The test manifest, whose entries hold the conditions.
    bins : dict
        Manifest field -> increasing bin edges (see
        :func:`~speechbrain_elbo.metrics.metric_bins`). A field that no
        test utterance has is skipped with a warning.

    Returns
    -------
    list of dict
        The rows written.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> _ = (tmp / "test.json").write_text(
    ...     '{"a": {"rt60": 0.3}, "b": {"rt60": 0.7}}')
    >>> scores = [{"id": "a", "system": "noisy", "pesq": 1.5},
    ...           {"id": "b", "system": "noisy", "pesq": 1.2}]
    >>> rows = write_test_bins(tmp / "bins.csv", scores, tmp / "test.json",
    ...                        {"rt60": [0.2, 0.6, 1.0]})
    >>> [(row["bin"], row["pesq"]) for row in rows]
    [('[0.2, 0.6)', 1.5), ('[0.6, 1)', 1.2)]
    """
    with open(manifest, encoding="utf-8") as handle:
        entries = json.load(handle)
    rows = []
    for field, edges in bins.items():
        records = [
            {**row, field: entries.get(row["id"], {}).get(field)}
            for row in utterances
        ]
        found = metric_bins(records, field, edges)
        if not found and if_main_process():
            logger.warning(
                f"No test utterance of {manifest} has a {field!r} value, so "
                f"there are no {field} bins. WHAMR! manifests get rt60 and "
                "drr from data_folder/metadata/tt.csv (written by "
                "speechbrain_elbo.dataprep.rooms); remove the field from "
                "test_bins otherwise."
            )
        rows.extend(found)
    write_csv(path, rows, BIN_FIELDS)
    return rows


def _test_bins(brain, hparams, manifest):
    bins = hparams.get("test_bins")
    if bins:
        write_test_bins(
            hparams["test_bins_csv"], brain.test_utterances, manifest, bins
        )


def _model_card(task, hparams, **fields):
    return {"task": task.format_map(hparams), **fields}


# ---------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------
def run_score_stage(argv, prepare, task):
    """Stage 1: train, test and export the score model.

    Arguments
    ---------
    argv : list of str or None
        The script's command line (default ``sys.argv[1:]``), see
        :func:`load_stage`.
    prepare : callable
        ``prepare(hparams) -> manifests``, e.g. :func:`whamr_manifests`.
    task : str
        What the model does, for its model card; ``{key}`` fields are
        filled from the hparams (``"WHAMR! {task}"``).

    Returns
    -------
    ScoreBrain or None
        The Brain after its test and export (None with ``--prepare_only``).

    Example
    -------
    >>> path = getfixture("tmp_path") / "h.yaml"
    >>> _ = path.write_text("prep_folder: prepared\\n")
    >>> run_score_stage([str(path), "--prep_folder=elsewhere",
    ...                  "--prepare_only"], lambda h: print(h["prep_folder"]),
    ...                 "demo")
    elsewhere
    """
    stage = load_stage(argv)
    manifests = _start(stage, prepare)
    if manifests is None:
        return None
    hparams = stage.hparams
    datasets = make_datasets(
        manifests,
        crop_frames=hparams["crop_frames"],
        hop_length=hparams["hop_length"],
        sample_rate=hparams["sample_rate"],
    )
    brain = ScoreBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=stage.run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.evaluate(
        datasets["test"], test_loader_kwargs=hparams["test_dataloader_opts"]
    )
    _test_bins(brain, hparams, manifests["test"])
    brain.export(
        hparams["export_folder"],
        model_card=_model_card(
            task,
            hparams,
            stage="1 (score model)",
            loss=hparams["loss"],
            epoch=hparams["epoch_counter"].current,
            test_results=hparams["test_csv"],
        ),
    )
    return brain


def run_refiner_stage(argv, prepare, task):
    """Stage 2: cache stage-1 estimates, train, test and export the refiner.

    The frozen stage 1 comes from ``stage1_folder`` with its exported
    sampler (``stage1_steps`` changes its step count); its estimates of the
    training and validation sets are generated once into ``cache_folder``
    (resumable, split across DDP ranks; ``cache_only`` stops after them).
    The test puts noisy / stage 1 / stage 1+2 side by side with the ELBO
    terms, and the export holds both stages.

    Arguments
    ---------
    argv : list of str or None
        The script's command line (default ``sys.argv[1:]``), see
        :func:`load_stage`.
    prepare : callable
        ``prepare(hparams) -> manifests``, e.g. :func:`whamr_manifests`.
    task : str
        What the model does, for its model card (``{key}`` fields filled
        from the hparams).

    Returns
    -------
    RefinerBrain or None
        The Brain after its test and export (None with ``cache_only`` or
        ``--prepare_only``).

    Example
    -------
    >>> path = getfixture("tmp_path") / "h.yaml"
    >>> _ = path.write_text("prep_folder: prepared\\n")
    >>> run_refiner_stage([str(path), "--prepare_only"],
    ...                   lambda h: print(h["prep_folder"]), "demo")
    prepared
    """
    stage = load_stage(argv)
    manifests = _start(stage, prepare)
    if manifests is None:
        return None
    hparams, run_opts = stage.hparams, stage.run_opts

    # The frozen stage 1, with the sampler used at inference.
    device = run_opts["device"] or infer_device()
    stage1 = load_enhancer_folder(hparams["stage1_folder"], device)
    if hparams["stage1_steps"] is not None:
        exported = stage1.sampler
        stage1.sampler = Sampler(
            exported.name,
            steps=hparams["stage1_steps"],
            corrector_steps=exported.corrector_steps,
            snr=exported.snr,
        )

    # Stage-1 estimates of the training and validation sets, once.
    cache = Stage1Cache(
        hparams["cache_folder"], hparams["samples_per_utterance"]
    )
    # padded for sampling as the exported two-stage model will pad
    multiple = frame_multiple_of(stage1.backbone, hparams["refiner"])
    settings = cache_settings(
        stage1, hparams["seed"], hparams["cache_batch_size"], multiple
    )
    cache.claim(settings, regenerate=hparams["regenerate_cache"])
    for split in ("train", "valid"):
        generate_stage1_cache(
            cache,
            split,
            manifests[split],
            stage1,
            device=device,
            seed=hparams["seed"],
            sample_rate=hparams["sample_rate"],
            batch_size=hparams["cache_batch_size"],
            frame_multiple=multiple,
            precision=PRECISIONS[run_opts["eval_precision"]],
            progress=not run_opts["noprogressbar"],
        )
    if hparams["cache_only"]:
        return None
    datasets = make_refiner_datasets(
        {split: manifests[split] for split in ("train", "valid")},
        cache,
        stage1.transform,
        crop_frames=hparams["crop_frames"],
        sample_rate=hparams["sample_rate"],
    )
    test_set = make_datasets(
        {"test": manifests["test"]},
        hop_length=stage1.transform.hop_length,
        sample_rate=hparams["sample_rate"],
    )["test"]

    brain = RefinerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        stage1=stage1,
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.evaluate(
        test_set,
        decoder_fit_set=datasets["valid"],
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )
    _test_bins(brain, hparams, manifests["test"])
    brain.export(
        hparams["export_folder"],
        model_card=_model_card(
            task,
            hparams,
            stage="1+2 (score model and refiner)",
            stage1_folder=str(stage1.folder),
            refiner_epoch=hparams["epoch_counter"].current,
            test_results=hparams["test_csv"],
        ),
    )
    return brain
