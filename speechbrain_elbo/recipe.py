"""The steps that the recipe scripts share, whatever their corpus.

Each script of a recipe (``recipes/*/train_score.py``, ``train_refiner.py``)
shows its flow top to bottom, as SpeechBrain's own recipes do: arguments,
DDP, YAML, experiment folder, data preparation on the main process,
datasets, Brain (:mod:`speechbrain_elbo.brains`), ``fit``, ``evaluate``,
``export``. What they would otherwise repeat lives here:

- the command line: :func:`parse_arguments` (SpeechBrain's, plus
  ``--overrides_file``), :func:`take_flag` (``--prepare_only``) and
  :func:`stage_arguments` (which arguments of ``run.sh`` go to which stage,
  for ``tools/stage_args.py``);
- the data: :func:`voicebank_manifests`, :func:`whamr_manifests` (through
  :func:`prepare_on_main`), :func:`score_datasets`, :func:`refiner_datasets`;
- the Brain's arguments: :func:`brain_arguments`, :func:`fit_loader_arguments`;
- stage 2: :func:`load_stage1` (the frozen export of stage 1) and
  :func:`cache_stage1_estimates` (its estimates, generated once);
- the results: :func:`write_test_bins` (test metrics per bin of a manifest
  field) and :func:`model_card`.

Example
-------
>>> manifests = voicebank_manifests({
...     "data_folder": "VB", "prep_folder": "prepared", "sample_rate": 16000,
...     "valid_speakers": ["p226"], "skip_prep": True})
>>> sorted(manifests)
['test', 'train', 'valid']
"""

import io
import json
import os
import pathlib
import sys

import ruamel.yaml
import speechbrain as sb
import torch
from ruamel.yaml.comments import Tag
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
from speechbrain_elbo.export import (
    REFINER_CKPT,
    SCORE_CKPT,
    load_enhancer,
    read_state_dict,
)
from speechbrain_elbo.fileio import write_csv_atomic
from speechbrain_elbo.metrics import BIN_FIELDS, metric_bins
from speechbrain_elbo.pipeline import frame_multiple_of
from speechbrain_elbo.sampling import Sampler

logger = get_logger(__name__)

__all__ = [
    "OVERRIDES_FLAG",
    "PREPARE_ONLY_FLAG",
    "PRECISIONS",
    "parse_arguments",
    "take_flag",
    "stage_arguments",
    "prepare_on_main",
    "voicebank_manifests",
    "whamr_manifests",
    "score_datasets",
    "refiner_datasets",
    "brain_arguments",
    "fit_loader_arguments",
    "init_score",
    "init_refiner",
    "load_stage1",
    "cache_stage1_estimates",
    "write_test_bins",
    "model_card",
]

#: Command-line flag: a YAML file of overrides (repeatable).
OVERRIDES_FLAG = "--overrides_file"

#: Command-line flag: prepare the data with the stage's options, then stop.
PREPARE_ONLY_FLAG = "--prepare_only"

#: ``--eval_precision`` -> dtype of the stage-1 cache generation.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def _absolute_includes(node, folder):
    """Rewrite relative ``!include:`` tags to absolute paths (in place)."""
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", None)
    if value and value.startswith("!include:"):
        target = value[len("!include:") :]
        if not os.path.isabs(target):
            absolute = os.path.normpath(os.path.join(folder, target))
            node.yaml_set_ctag(Tag(suffix="!include:" + absolute))
    if isinstance(node, dict):
        for child in node.values():
            _absolute_includes(child, folder)
    elif isinstance(node, list):
        for child in node:
            _absolute_includes(child, folder)


def _read_overrides_file(path):
    yaml = ruamel.yaml.YAML()
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{OVERRIDES_FLAG} {path}: no such file. Give the path of a YAML "
            "file of top-level overrides, e.g. "
            "hparams/overrides/tiny_score.yaml."
        )
    with open(path, encoding="utf-8") as handle:
        tree = yaml.load(handle)
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ValueError(
            f"{path} must hold a mapping of overrides (key: value lines), "
            f"got a {type(tree).__name__}."
        )
    for value in tree.values():
        _absolute_includes(value, str(path.parent.absolute()))
    return tree


def parse_arguments(argv=None):
    """SpeechBrain's ``parse_arguments`` plus ``--overrides_file PATH``.

    An overrides file is a YAML mapping of top-level keys, applied before
    the ``--key=value`` overrides of the command line (which win). Relative
    ``!include:`` paths inside it are taken relative to the overrides file.
    The flag may be repeated; later files win.

    Arguments
    ---------
    argv : list of str, optional
        The script's command line; default ``sys.argv[1:]``.

    Returns
    -------
    hparams_file : str
    run_opts : dict
        SpeechBrain's run options.
    overrides : str
        YAML overrides for ``load_hyperpyyaml``.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> _ = (tmp / "o.yaml").write_text("batch_size: 2\\nlr: 0.1\\n")
    >>> _, opts, overrides = parse_arguments(
    ...     ["h.yaml", "--overrides_file", str(tmp / "o.yaml"), "--lr=0.5"])
    >>> print(overrides.strip())
    batch_size: 2
    lr: 0.5
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    files, rest, index = [], [], 0
    while index < len(argv):
        arg = argv[index]
        if arg == OVERRIDES_FLAG:
            if index + 1 >= len(argv):
                raise ValueError(f"{OVERRIDES_FLAG} needs a file path.")
            files.append(argv[index + 1])
            index += 2
            continue
        if arg.startswith(OVERRIDES_FLAG + "="):
            files.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        index += 1
    hparams_file, run_opts, overrides = sb.parse_arguments(rest)
    if not files:
        return hparams_file, run_opts, overrides
    yaml = ruamel.yaml.YAML()
    merged = {}
    for path in files:
        merged.update(_read_overrides_file(path))
    if overrides:
        merged.update(yaml.load(overrides) or {})
    stream = io.StringIO()
    yaml.dump(merged, stream)
    return hparams_file, run_opts, stream.getvalue()


def take_flag(argv, flag):
    """``argv`` (default ``sys.argv[1:]``) without a boolean ``flag``, and
    whether the flag was there.

    SpeechBrain's parser takes any ``--name`` for a YAML override; a flag of
    the script itself (:data:`PREPARE_ONLY_FLAG`) is taken out first.

    Example
    -------
    >>> take_flag(["h.yaml", "--prepare_only", "--lr=1"], PREPARE_ONLY_FLAG)
    (['h.yaml', '--lr=1'], True)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    return [arg for arg in argv if arg != flag], flag in argv


# ---------------------------------------------------------------------------
# The driver: which command-line arguments belong to which stage
# ---------------------------------------------------------------------------
def _run_option_arities():
    parser = sb.RunOptions._create_parser()
    arities = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                arities[flag[2:]] = 0 if action.nargs == 0 else 1
    return arities


def _yaml_keys(path):
    yaml = ruamel.yaml.YAML()
    with open(path, encoding="utf-8") as handle:
        tree = yaml.load(handle) or {}
    return set(tree)


def stage_arguments(args, hparams_file, other_files=()):
    """The command-line arguments of a multi-stage run meant for one stage.

    SpeechBrain run options (``--device``, ``--precision``...) go to every
    stage; a ``--key=value`` override goes to the stages whose YAML file has
    ``key``; ``--overrides_file`` goes everywhere. ``--STAGE.key=value``,
    with STAGE the stem of a stage's YAML file (``score``, ``refiner``),
    goes to that stage only and takes precedence there over ``--key``
    (``--number_of_epochs=60 --refiner.number_of_epochs=10``). An override
    that no stage knows is an error (a typo would otherwise be ignored).

    Arguments
    ---------
    args : list of str
        Extra arguments, ``--key=value`` or ``--key value``.
    hparams_file : str
        The YAML file of the stage.
    other_files : sequence of str
        The YAML files of the other stages.

    Returns
    -------
    list of str
        The arguments for this stage, in their original order.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> _ = (tmp / "a.yaml").write_text("lr: 1\\nloss: x\\n")
    >>> _ = (tmp / "b.yaml").write_text("lr: 2\\n")
    >>> args = ["--lr=3", "--loss", "y", "--device=cpu", "--noprogressbar"]
    >>> stage_arguments(args, tmp / "b.yaml", [tmp / "a.yaml"])
    ['--lr=3', '--device=cpu', '--noprogressbar']
    >>> args = ["--lr=3", "--b.lr", "4", "--a.loss=z"]
    >>> stage_arguments(args, tmp / "b.yaml", [tmp / "a.yaml"])
    ['--lr', '4']
    >>> stage_arguments(args, tmp / "a.yaml", [tmp / "b.yaml"])
    ['--lr=3', '--loss=z']
    >>> stage_arguments(["--lrr=3"], tmp / "b.yaml", [tmp / "a.yaml"])
    Traceback (most recent call last):
    ...
    ValueError: --lrr is neither a SpeechBrain run option nor a key of ...
    """
    run_options = _run_option_arities()
    run_options[OVERRIDES_FLAG[2:]] = 1
    stage = pathlib.Path(hparams_file).stem
    keys = {stage: _yaml_keys(hparams_file)}
    for path in other_files:
        keys[pathlib.Path(path).stem] = _yaml_keys(path)
    mine = keys[stage]
    everyone = set().union(*keys.values())
    files = [str(hparams_file), *map(str, other_files)]
    groups, index = [], 0  # (key or None for run options, prefixed, args)
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise ValueError(
                f"Unexpected argument {arg!r}: overrides are --key=value."
            )
        name, has_value, value = arg[2:].partition("=")
        if name in run_options:
            arity = 0 if has_value else run_options[name]
        else:
            arity = 0 if has_value else 1
        group = args[index : index + 1 + arity]
        if len(group) < 1 + arity:
            raise ValueError(f"{arg} needs a value.")
        index += 1 + arity
        if name in run_options:
            groups.append((None, False, group))
            continue
        prefix, dot, key = name.rpartition(".")
        if dot and prefix in keys:
            if key not in keys[prefix]:
                raise ValueError(
                    f"--{name}: {key} is not a key of the {prefix} stage's "
                    "YAML file; check the spelling."
                )
            if prefix == stage:
                unprefixed = f"--{key}={value}" if has_value else f"--{key}"
                groups.append((key, True, [unprefixed, *group[1:]]))
            continue
        if name not in everyone:
            raise ValueError(
                f"--{name} is neither a SpeechBrain run option nor a key of "
                f"{files}; check the spelling."
            )
        if name in mine:
            groups.append((name, False, group))
    prefixed = {key for key, is_prefixed, _ in groups if is_prefixed}
    selected = []
    for key, is_prefixed, group in groups:
        if key is None or is_prefixed or key not in prefixed:
            selected.extend(group)
    return selected


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def prepare_on_main(prepare, hparams, **options):
    """Prepare a corpus on the main process; every process gets the manifests.

    ``prepare`` gets ``data_folder``, ``save_folder`` (the hparams'
    ``prep_folder``), ``sample_rate`` and ``skip_prep`` from the hparams,
    plus ``options``, through ``run_on_main``. The other DDP processes wait,
    then get the manifest paths from a second call with ``skip_prep=True``.

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
    """VoiceBank-DEMAND prepared with a recipe's hparams: split -> manifest.

    :func:`prepare_on_main` with
    :func:`~speechbrain_elbo.dataprep.voicebank.prepare_voicebank` and the
    hparams' ``valid_speakers`` (the training speakers held out).

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
    """WHAMR! prepared with a recipe's hparams: split -> manifest.

    :func:`prepare_on_main` with
    :func:`~speechbrain_elbo.dataprep.whamr.prepare_whamr` and the hparams'
    ``task`` (``dereverb`` or ``denoise_dereverb``), ``whamr_version``
    (``min`` or ``max``) and ``resample_8k``.

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


def score_datasets(hparams, manifests):
    """The datasets of stage 1, split name -> ``DynamicItemDataset``.

    Random training crops, centred validation crops, whole test utterances:
    :func:`~speechbrain_elbo.dataio.make_datasets` of the ``manifests``
    with the hparams' ``crop_frames``, ``hop_length`` and ``sample_rate``.

    Example
    -------
    >>> score_datasets({"crop_frames": 8, "hop_length": 128,
    ...                 "sample_rate": 16000}, {})
    {}
    """
    return make_datasets(
        manifests,
        crop_frames=hparams["crop_frames"],
        hop_length=hparams["hop_length"],
        sample_rate=hparams["sample_rate"],
    )


def refiner_datasets(hparams, manifests, stage1, cache):
    """The datasets of stage 2, split name -> ``DynamicItemDataset``.

    ``train`` and ``valid``: aligned crops of (cached stage-1 estimate,
    noisy, clean) spectrograms from the ``cache`` of the frozen ``stage1``
    (:func:`~speechbrain_elbo.cache.make_refiner_datasets`, with the
    hparams' ``crop_frames`` and ``sample_rate``); ``test``: whole test
    utterances of the ``manifests``, enhanced by the two stages when tested.
    """
    datasets = make_refiner_datasets(
        {split: manifests[split] for split in ("train", "valid")},
        cache,
        stage1.transform,
        crop_frames=hparams["crop_frames"],
        sample_rate=hparams["sample_rate"],
    )
    test = make_datasets(
        {"test": manifests["test"]},
        hop_length=stage1.transform.hop_length,
        sample_rate=hparams["sample_rate"],
    )
    return {**datasets, **test}


# ---------------------------------------------------------------------------
# The Brain's arguments
# ---------------------------------------------------------------------------
def brain_arguments(hparams, run_opts):
    """A Brain's keyword arguments: the YAML's ``modules``, ``opt_class``
    and ``checkpointer``, the hparams and the run options.

    Example
    -------
    >>> sorted(brain_arguments({"modules": {}, "opt_class": None,
    ...                         "checkpointer": None}, {}))
    ['checkpointer', 'hparams', 'modules', 'opt_class', 'run_opts']
    """
    return {
        "modules": hparams["modules"],
        "opt_class": hparams["opt_class"],
        "hparams": hparams,
        "run_opts": run_opts,
        "checkpointer": hparams["checkpointer"],
    }


def fit_loader_arguments(hparams):
    """``train_loader_kwargs`` and ``valid_loader_kwargs`` of ``Brain.fit``
    from the YAML's ``train_dataloader_opts`` and ``valid_dataloader_opts``.

    Example
    -------
    >>> kwargs = fit_loader_arguments({"train_dataloader_opts": {"shuffle": 1},
    ...                                "valid_dataloader_opts": {}})
    >>> kwargs["train_loader_kwargs"], kwargs["valid_loader_kwargs"]
    ({'shuffle': 1}, {})
    """
    return {
        "train_loader_kwargs": hparams["train_dataloader_opts"],
        "valid_loader_kwargs": hparams["valid_dataloader_opts"],
    }


# ---------------------------------------------------------------------------
# Stage 2: the frozen stage 1 and its cached estimates
# ---------------------------------------------------------------------------
def _device(run_opts):
    return run_opts["device"] or infer_device()


def _init_state(source, filename):
    """The ``state_dict`` of ``filename`` in a warm-start model: any source
    of ``from_hparams`` (an exported folder, a bundled model's name, a hub
    id), resolved by :func:`speechbrain_elbo.hub.resolve_source`."""
    from speechbrain_elbo.hub import resolve_source

    return read_state_dict(resolve_source(str(source)).folder / filename)


def init_score(hparams):
    """Warm start: the score network of ``score_init_folder``, when not null.

    Loads the ``score_model.ckpt`` of an exported ``from_hparams`` folder
    (or of a bundled model, by name: ``minivb-small``) into
    ``hparams["score_backbone"]``, strictly: the two networks must have the
    same layout. A new task (dereverberation) can so start from a model
    trained on another (denoising). Call it before the Brain is built, so
    that the EMA copy starts from the same weights; a resumed run then
    continues from its own checkpoint as usual.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams (``score_backbone``, ``score_init_folder``).

    Example
    -------
    >>> init_score({"score_backbone": None, "score_init_folder": None})
    """
    folder = hparams["score_init_folder"]
    if folder is None:
        return
    state = _init_state(folder, SCORE_CKPT)
    try:
        hparams["score_backbone"].load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"the score network of {folder} does not match this recipe's "
            f"model ({str(error).splitlines()[1].strip()}); set --model to "
            "that folder's layout or start without score_init_folder."
        ) from None
    logger.info(f"Score network initialised from {folder}")


def init_refiner(hparams):
    """Warm start: the refiner of ``refiner_init_folder``, when not null.

    Loads the ``refiner.ckpt`` of a two-stage ``from_hparams`` folder (or
    of a bundled model, by name) into ``hparams["refiner"]`` (strictly,
    except that a conditional refiner may start from an unconditional one:
    :meth:`~speechbrain_elbo.lobes.refiner.Refiner.load_warm_start`). Call
    it before the Brain is built, so that the EMA copy starts from the same
    weights; a resumed run then continues from its own checkpoint as usual.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams (``refiner``, ``refiner_init_folder``).

    Example
    -------
    >>> init_refiner({"refiner": None, "refiner_init_folder": None})
    """
    folder = hparams["refiner_init_folder"]
    if folder is None:
        return
    state = _init_state(folder, REFINER_CKPT)
    hparams["refiner"].load_warm_start(state)
    logger.info(f"Refiner initialised from {folder}")


def load_stage1(hparams, run_opts):
    """The frozen stage 1 of a refiner recipe, with its sampler.

    :func:`speechbrain_elbo.export.load_enhancer` of the hparams'
    ``stage1_folder`` (a stage-1 export or an imported sgmse model,
    docs/interop.md) on the run's device; its sample rate must be the
    recipe's ``sample_rate``. ``stage1_steps`` (when not null)
    changes the step count of its exported sampler, which enhances at
    inference, in the cache and in the test.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams.
    run_opts : dict
        SpeechBrain's run options (``device``).

    Returns
    -------
    types.SimpleNamespace
        As :func:`~speechbrain_elbo.export.load_enhancer` returns.
    """
    stage1 = load_enhancer(hparams["stage1_folder"], _device(run_opts))
    if stage1.sample_rate != int(hparams["sample_rate"]):
        raise ValueError(
            f"stage 1 ({stage1.folder.name}) works at {stage1.sample_rate} "
            f"Hz and the recipe at {hparams['sample_rate']} Hz: pass "
            f"--sample_rate={stage1.sample_rate} (and a prep_folder of that "
            "rate)."
        )
    if hparams["stage1_steps"] is not None:
        exported = stage1.sampler
        stage1.sampler = Sampler(
            exported.name,
            steps=hparams["stage1_steps"],
            corrector_steps=exported.corrector_steps,
            snr=exported.snr,
        )
    return stage1


def cache_stage1_estimates(hparams, run_opts, stage1, manifests):
    """Stage-1 estimates of the training and validation sets, made once.

    The cache in ``cache_folder`` (``samples_per_utterance`` stochastic
    estimates per utterance) is tied to its settings (stage-1 checksums,
    sampler, ``seed``, ``cache_batch_size``, padding); other settings are an
    error unless ``regenerate_cache``. The spectrograms are padded for
    sampling as the exported two-stage model pads them; the missing
    estimates are split across DDP ranks, in ``--eval_precision``.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams (with the ``refiner``, for its padding).
    run_opts : dict
        SpeechBrain's run options.
    stage1 : types.SimpleNamespace
        The frozen stage 1 (:func:`load_stage1`).
    manifests : dict
        Split name -> manifest path.

    Returns
    -------
    speechbrain_elbo.cache.Stage1Cache
        The complete cache of ``train`` and ``valid``.
    """
    cache = Stage1Cache(
        hparams["cache_folder"], hparams["samples_per_utterance"]
    )
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
            device=_device(run_opts),
            seed=hparams["seed"],
            sample_rate=hparams["sample_rate"],
            batch_size=hparams["cache_batch_size"],
            frame_multiple=multiple,
            precision=PRECISIONS[run_opts["eval_precision"]],
            progress=not run_opts["noprogressbar"],
        )
    return cache


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------
def write_test_bins(hparams, utterances, manifest):
    """Per-bin means of the per-utterance test scores, as a CSV file.

    With the hparams' ``test_bins`` (manifest field -> increasing bin edges,
    see :func:`~speechbrain_elbo.metrics.metric_bins`), writes
    ``test_bins_csv`` (main process only; columns
    :data:`~speechbrain_elbo.metrics.BIN_FIELDS`). A field that no test
    utterance has is skipped with a warning; empty ``test_bins`` write
    nothing.

    Arguments
    ---------
    hparams : dict
        The recipe's hparams.
    utterances : list of dict
        Per-utterance scores (``id``, ``system``, ``pesq``...), e.g. a
        Brain's ``test_utterances``.
    manifest : str or pathlib.Path
        The test manifest, whose entries hold the conditions.

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
    >>> hparams = {"test_bins": {"rt60": [0.2, 0.6, 1.0]},
    ...            "test_bins_csv": tmp / "bins.csv"}
    >>> rows = write_test_bins(hparams, scores, tmp / "test.json")
    >>> [(row["bin"], row["pesq"]) for row in rows]
    [('[0.2, 0.6)', 1.5), ('[0.6, 1)', 1.2)]
    """
    bins = hparams["test_bins"]
    if not bins:
        return []
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
                "speechbrain_elbo.minidata.rooms); remove the field from "
                "test_bins otherwise."
            )
        rows.extend(found)
    if if_main_process():
        write_csv_atomic(
            hparams["test_bins_csv"], rows, BIN_FIELDS, float_digits=4
        )
    return rows


def _stage1_source(folder):
    """Where an imported stage 1 came from (its card's ``source``), or None
    for a stage 1 trained by a recipe."""
    card = pathlib.Path(folder) / "model_card.json"
    if not card.is_file():
        return None
    written = json.loads(card.read_text(encoding="utf-8"))
    return (written.get("model_card") or {}).get("source")


def model_card(task, hparams, stage1=None):
    """The model card of an export: of stage 1, or of both stages.

    Folders are recorded by name (the test results relative to the run's
    output folder, stage 1 by its folder name and checkpoint checksums), so
    that no path of the training machine ends up in a shipped card.

    Arguments
    ---------
    task : str
        What the model does; ``{key}`` fields are filled from the hparams
        (``"WHAMR! {task}"``).
    hparams : dict
        The recipe's hparams (``loss`` of stage 1, ``epoch_counter``,
        ``test_csv``; for stage 2 also ``forward_share`` and
        ``refiner_init_folder``).
    stage1 : types.SimpleNamespace, optional
        The frozen stage 1 of a two-stage export (``folder``,
        ``checksums``).

    Example
    -------
    >>> from speechbrain.utils.epoch_loop import EpochCounter
    >>> hparams = {"task": "dereverb", "loss": "sigma2",
    ...            "epoch_counter": EpochCounter(3),
    ...            "test_csv": "/runs/a/test_results.csv",
    ...            "forward_share": 0.5, "refiner_init_folder": None}
    >>> card = model_card("WHAMR! {task}", hparams)
    >>> card["task"], card["test_results"]
    ('WHAMR! dereverb', 'test_results.csv')
    >>> from types import SimpleNamespace
    >>> stage1 = SimpleNamespace(folder="/runs/a/model", checksums={})
    >>> card = model_card("x", hparams, stage1)
    >>> card["stage"], card["stage1"], card["forward_share"]
    ('1+2 (score model and refiner)', 'model', 0.5)
    """
    if stage1 is None:
        fields = {
            "stage": "1 (score model)",
            "loss": hparams["loss"],
            "epoch": hparams["epoch_counter"].current,
        }
    else:
        init = hparams["refiner_init_folder"]
        fields = {
            "stage": "1+2 (score model and refiner)",
            "stage1": pathlib.Path(stage1.folder).name,
            "stage1_source": _stage1_source(stage1.folder),
            "stage1_checksums": dict(stage1.checksums),
            "refiner_epoch": hparams["epoch_counter"].current,
            "forward_share": hparams["forward_share"],
            "refiner_init": None if init is None else pathlib.Path(init).name,
        }
    return {
        "task": task.format_map(hparams),
        **fields,
        "test_results": pathlib.Path(hparams["test_csv"]).name,
    }
