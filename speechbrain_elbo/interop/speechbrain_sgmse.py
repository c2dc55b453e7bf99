"""Import checkpoint folders of SpeechBrain's SGMSE recipe.

SpeechBrain's recipe ``recipes/Voicebank/enhance/SGMSE`` (``train.py``,
``hparams.yaml``; the model is
``speechbrain.integrations.models.sgmse_plus.ScoreModel``, which wraps
the sgmse package's backbones and SDEs) trains an sgmse model with a
SpeechBrain ``Checkpointer``. A run folder holds:

- ``hyperparams.yaml``: the recipe's settings as saved at the start of the
  run (references resolved, ``!new:`` tags kept): the STFT and compression
  at the top level (``n_fft``, ``hop_length``, ``window_type``,
  ``transform_type``, ``spec_factor``, ``spec_abs_exponent``,
  ``sample_rate``), the sampler settings of its ``enhance`` under
  ``sampling``, and the model's constructor arguments (backbone, SDE,
  ``loss_type``, ``network_scaling``, ``c_in``...) under
  ``modules: score_model: !new:...sgmse_plus.ScoreModel``;
- ``checkpoints/CKPT+<date>+<time>+NN/``, one folder per checkpoint:
  ``CKPT.yaml`` (meta: ``end-of-epoch``, ``unixtime``, ``valid_loss``),
  ``score_model.ckpt`` (``torch.save`` of the ScoreModel's state_dict: its
  backbone's tensors as ``dnn.<sgmse name>``, the same names as in an sgmse
  Lightning checkpoint), ``ema.ckpt`` (``torch.save`` of torch_ema's
  state_dict: ``decay``, ``num_updates``, ``shadow_params`` in the order
  of the backbone's parameters, ``collected_params``), and the training
  state: ``counter.ckpt``, ``optimizer.ckpt``, ``brain.ckpt``, possibly
  ``dataloader-TRAIN.ckpt`` and ``scaler.ckpt``.

:func:`import_speechbrain_sgmse` reads such a ``CKPT+...`` folder and the
run's ``hyperparams.yaml`` without executing anything (the YAML's tags
are read as inert names, the ``.ckpt`` files with
:func:`~speechbrain_elbo.interop.checkpoint.read_checkpoint`), turns the
recipe's settings into the sgmse ``hyper_parameters`` they stand for,
checks them with the importer of sgmse checkpoints
(:func:`~speechbrain_elbo.interop.sgmse_hparams.sgmse_settings`) and
writes the folder with the same writer
(:func:`~speechbrain_elbo.interop.sgmse.export_imported`). As the
recipe's ``enhance.py``, it uses the EMA weights, pads the frames by
reflection to a multiple of 64 and crops the frames of the sample before
decoding it.

Example
-------
>>> recipe = read_recipe_hparams_text(
...     "n_fft: 510\\nmodules:\\n  score_model: &m !new:" + SCORE_MODEL_CLASS
...     + "\\n    backbone: ncsnpp_v2\\ncheckpointer: !new:x.Checkpointer\\n"
...     "  recoverables:\\n    score_model: *m\\n")
>>> recipe_model(recipe)
('score_model', {'backbone': 'ncsnpp_v2'})
"""

import pathlib

import yaml

from speechbrain_elbo.export import file_sha256
from speechbrain_elbo.interop.checkpoint import CheckpointError, read_checkpoint
from speechbrain_elbo.interop.sgmse import export_imported, sampler_with
from speechbrain_elbo.interop.sgmse_hparams import plain_value, sgmse_settings
from speechbrain_elbo.interop.sgmse_weights import backbone_tensors
from speechbrain_elbo.sampling import Sampler

__all__ = [
    "import_speechbrain_sgmse",
    "read_recipe_hparams",
    "read_recipe_hparams_text",
    "recipe_model",
    "recipe_to_sgmse",
    "RecipeObject",
    "SCORE_MODEL_CLASS",
]

#: The class of the recipe's score model (``!new:`` tag of hyperparams.yaml).
SCORE_MODEL_CLASS = "speechbrain.integrations.models.sgmse_plus.ScoreModel"

#: The recoverable name of the EMA (``train.py``: ``add_recoverable("ema")``).
EMA_NAME = "ema"

#: The file that marks a SpeechBrain checkpoint folder.
CKPT_META = "CKPT.yaml"

#: Recipe settings (top level) -> sgmse hyper-parameter; the recipe's
#: Brain reads them all (``spec_abs_exponent`` with default 1.0).
RECIPE_KEYS = {
    "n_fft": "n_fft",
    "hop_length": "hop_length",
    "window_type": "window",
    "transform_type": "transform_type",
    "spec_factor": "spec_factor",
    "spec_abs_exponent": "spec_abs_exponent",
    "sample_rate": "sr",
}

#: Constructor arguments of the recipe's ScoreModel that sgmse's own
#: ScoreModel does not take; none changes what the network computes.
MODEL_ONLY = ("hop_length", "num_frames", "corrector_steps", "snr")


class RecipeObject:
    """An object that a tag of hyperparams.yaml would build; inert.

    ``tag`` is the YAML tag (e.g. ``"!new:torch.optim.Adam"``) and ``args``
    its mapping, sequence or scalar. Nothing is imported or called.

    Example
    -------
    >>> RecipeObject("!name:torch.optim.Adam", {"lr": 0.1})
    RecipeObject('!name:torch.optim.Adam', {'lr': 0.1})
    """

    def __init__(self, tag, args):
        self.tag = tag
        self.args = args

    def __repr__(self):
        return f"RecipeObject({self.tag!r}, {self.args!r})"


class _InertLoader(yaml.SafeLoader):
    """The safe YAML loader; every tag becomes a :class:`RecipeObject`."""


def _construct_tagged(loader, suffix, node):
    tag = "!" + suffix
    if isinstance(node, yaml.MappingNode):
        args = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        args = loader.construct_sequence(node, deep=True)
    else:
        args = loader.construct_scalar(node)
    return RecipeObject(tag, args)


_InertLoader.add_multi_constructor("!", _construct_tagged)


def read_recipe_hparams_text(text):
    """Parse the text of a recipe's hyperparams.yaml; see
    :func:`read_recipe_hparams`.

    Example
    -------
    >>> read_recipe_hparams_text("a: 2\\nb: !ref <a>\\nc: !ref <s[x]>\\n"
    ...                          "s:\\n  x: 3\\nd: !PLACEHOLDER\\n")
    {'a': 2, 'b': 2, 'c': 3, 's': {'x': 3}, 'd': None}
    """
    try:
        recipe = yaml.load(text, Loader=_InertLoader)  # noqa: S506 (inert)
    except yaml.YAMLError as error:
        first = " ".join(str(error).split())
        raise CheckpointError(f"the YAML cannot be read ({first}).") from None
    if not isinstance(recipe, dict):
        raise CheckpointError("the YAML does not hold a mapping of settings.")
    return _resolve(recipe, recipe)


def read_recipe_hparams(path):
    """Read a SpeechBrain recipe's hyperparams.yaml without executing it.

    PyYAML's safe loader, with every tag (``!new:``, ``!name:``,
    ``!apply:``...) read as an inert :class:`RecipeObject`; a ``!ref``
    that is exactly one reference (``<key>`` or ``<key[sub]>``) is
    replaced by the value it names (a saved run's file has them resolved
    already), and ``!PLACEHOLDER`` is None.

    Arguments
    ---------
    path : str or pathlib.Path

    Returns
    -------
    dict

    Raises
    ------
    CheckpointError
        A missing or unreadable file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"the recipe's hyperparams.yaml {path} does not exist; pass the "
            "run folder's hyperparams.yaml with --hparams."
        )
    try:
        return read_recipe_hparams_text(path.read_text(encoding="utf-8"))
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _resolve(value, root):
    """Replace single ``!ref`` references and ``!PLACEHOLDER`` in value."""
    if isinstance(value, RecipeObject):
        if value.tag == "!PLACEHOLDER":
            return None
        if value.tag == "!ref" and isinstance(value.args, str):
            target = _lookup(value.args.strip(), root)
            if target is not _MISSING:
                return _resolve(target, root)
            return value
        value.args = _resolve(value.args, root)
        return value
    if isinstance(value, dict):
        return {k: _resolve(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root) for v in value]
    return value


_MISSING = object()


def _lookup(ref, root):
    """The value of ``<a>`` or ``<a[b][c]>`` in root, or _MISSING."""
    if not (ref.startswith("<") and ref.endswith(">")) or ref.count("<") > 1:
        return _MISSING
    name, _, rest = ref[1:-1].partition("[")
    keys = [name] + [k for k in rest.replace("]", "").split("[") if rest]
    node = root
    for key in keys:
        if isinstance(node, RecipeObject):
            node = node.args
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def recipe_model(recipe):
    """The recipe's score model: (recoverable name, constructor arguments).

    The one module of ``modules`` built as :data:`SCORE_MODEL_CLASS`;
    its checkpoint file is ``<name>.ckpt``, ``name`` its key among the
    ``checkpointer``'s ``recoverables`` (the module's key if none names
    it).

    Raises
    ------
    CheckpointError
        No such module, or more than one.
    """
    modules = recipe.get("modules")
    found = [
        (key, module)
        for key, module in (modules or {}).items()
        if isinstance(module, RecipeObject)
        and module.tag == f"!new:{SCORE_MODEL_CLASS}"
    ]
    if len(found) != 1:
        raise CheckpointError(
            f"the recipe's hyperparams.yaml defines {len(found)} modules of "
            f"class {SCORE_MODEL_CLASS} (under 'modules'); one is needed: "
            "this is not a run of SpeechBrain's SGMSE recipe."
        )
    key, module = found[0]
    if not isinstance(module.args, dict):
        raise CheckpointError(
            f"modules.{key} has no mapping of constructor arguments."
        )
    checkpointer = recipe.get("checkpointer")
    recoverables = {}
    if isinstance(checkpointer, RecipeObject) and isinstance(
        checkpointer.args, dict
    ):
        recoverables = checkpointer.args.get("recoverables") or {}
    names = [n for n, obj in recoverables.items() if obj is module]
    return (names[0] if names else key), dict(module.args)


def recipe_to_sgmse(recipe):
    """The sgmse ``hyper_parameters`` a recipe's settings stand for.

    Arguments
    ---------
    recipe : dict
        From :func:`read_recipe_hparams`.

    Returns
    -------
    hparams : dict
        sgmse-style hyper-parameters for
        :func:`~speechbrain_elbo.interop.sgmse_hparams.sgmse_settings`:
        the model's constructor arguments (the recipe ScoreModel's
        defaults ``backbone: ncsnpp_v2``, ``sde: ouve``) and the recipe's
        STFT, compression and sample rate.
    sampler : speechbrain_elbo.sampling.Sampler
        The predictor-corrector settings of the recipe's ``sampling``.
    record : dict
        What else was read, for the model card.

    Raises
    ------
    CheckpointError
        A missing or conflicting setting, or a sampler that is not
        reproduced (only ``reverse_diffusion`` with ``ald``).

    Example
    -------
    >>> recipe = read_recipe_hparams_text(
    ...     "n_fft: 510\\nhop_length: 128\\nwindow_type: hann\\n"
    ...     "transform_type: exponent\\nspec_factor: 0.15\\n"
    ...     "sample_rate: 16000\\nsampling: {predictor: reverse_diffusion,"
    ...     " corrector: ald, N: 30, corrector_steps: 1, snr: 0.5}\\n"
    ...     "modules:\\n  score_model: !new:" + SCORE_MODEL_CLASS + "\\n"
    ...     "    network_scaling: 1/t\\n    snr: 0.5\\n")
    >>> hparams, sampler, record = recipe_to_sgmse(recipe)
    >>> hparams["backbone"], hparams["window"], hparams["spec_abs_exponent"]
    ('ncsnpp_v2', 'hann', 1.0)
    >>> sampler, record["model_arguments_not_used"]
    (Sampler('pc', steps=30, corrector_steps=1, snr=0.5), {'snr': 0.5})
    """
    name, model = recipe_model(recipe)
    hparams = {"backbone": "ncsnpp_v2", "sde": "ouve"}
    not_used = {}
    for key, value in model.items():
        if key in MODEL_ONLY:
            not_used[key] = plain_value(value)
        elif key in RECIPE_KEYS.values() and key != "sr":
            raise CheckpointError(
                f"the score model's arguments set {key!r}, which the "
                "recipe takes from the top level of hyperparams.yaml; "
                "remove it from modules."
            )
        else:
            hparams[key] = value
    missing = [
        k for k in RECIPE_KEYS if k not in recipe and k != "spec_abs_exponent"
    ]
    if missing:
        raise CheckpointError(
            f"the recipe's hyperparams.yaml lacks {missing}, which the "
            "recipe's enhancement reads."
        )
    top = {RECIPE_KEYS[k]: recipe[k] for k in RECIPE_KEYS if k in recipe}
    # the recipe's spec_fwd: getattr(hparams, "spec_abs_exponent", 1.0)
    top.setdefault("spec_abs_exponent", 1.0)
    if "sr" in hparams and hparams["sr"] != top["sr"]:
        raise CheckpointError(
            f"the score model's sr={hparams['sr']!r} differs from the "
            f"recipe's sample_rate={top['sr']!r}."
        )
    hparams.update(top)
    sampler = _recipe_sampler(recipe.get("sampling"))
    record = {
        "score_model_recoverable": name,
        "sampling": plain_value(recipe.get("sampling")),
        "model_arguments_not_used": not_used,
        "other_settings_not_read": sorted(
            k for k in recipe if k not in RECIPE_KEYS and k != "sampling"
        ),
    }
    return hparams, sampler, record


def _recipe_sampler(sampling):
    """The recipe's ``sampling`` block as a Sampler; refuse the others."""
    if not isinstance(sampling, dict):
        raise CheckpointError(
            "the recipe's hyperparams.yaml has no 'sampling' block (N, "
            "corrector_steps, snr...), which the recipe's enhancement reads."
        )
    wanted = {"predictor": "reverse_diffusion", "corrector": "ald"}
    for key, value in wanted.items():
        if sampling.get(key) != value:
            raise CheckpointError(
                f"sampling {key}={sampling.get(key)!r} is not supported "
                f"(only {value!r} is reproduced)."
            )
    try:
        return Sampler(
            "pc",
            int(sampling["N"]),
            corrector_steps=int(sampling["corrector_steps"]),
            snr=float(sampling["snr"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"the recipe's sampling block is incomplete or invalid ({error})."
        ) from None


def import_speechbrain_sgmse(
    folder,
    out,
    hparams_path=None,
    use_ema=True,
    ignore_keys=(),
    steps=None,
    snr=None,
    corrector_steps=None,
):
    """Import a checkpoint folder of SpeechBrain's SGMSE recipe.

    Arguments
    ---------
    folder : str or pathlib.Path
        A ``CKPT+...`` folder written by the recipe's ``Checkpointer``.
    out : str or pathlib.Path
        The folder to write.
    hparams_path : str or pathlib.Path, optional
        The run's ``hyperparams.yaml``; default the one of the run folder
        that holds ``checkpoints/CKPT+...`` (``folder/../../``).
    use_ema : bool
        The EMA weights (``ema.ckpt``; what the recipe's ``enhance.py``
        uses) or the raw ones of ``score_model.ckpt``.
    ignore_keys : sequence of str
        Unknown arguments of the score model to accept (recorded).
    steps, snr, corrector_steps : optional
        Override the recipe's ``sampling`` (N, snr, corrector_steps) as the
        folder's default sampler.

    Returns
    -------
    pathlib.Path
        The written folder.

    Raises
    ------
    CheckpointError
        A folder, file or setting that cannot be imported (one line).
    """
    folder = pathlib.Path(folder).expanduser()
    if not (folder / CKPT_META).is_file():
        raise CheckpointError(
            f"{folder} holds no {CKPT_META}: it is not a SpeechBrain "
            "checkpoint folder (CKPT+...)."
        )
    if hparams_path is None:
        hparams_path = folder.parent.parent / "hyperparams.yaml"
    hparams_path = pathlib.Path(hparams_path).expanduser()
    recipe = read_recipe_hparams(hparams_path)
    hparams, recipe_sampler, record = recipe_to_sgmse(recipe)
    settings = sgmse_settings(hparams, ignore_keys)
    # the recipe's enhance crops the sample's frames, then decodes
    settings.backbone["decode_padded"] = False
    name = record["score_model_recoverable"]
    model_file = folder / f"{name}.ckpt"
    state = read_checkpoint(model_file)
    if not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(
            f"{model_file} is not a state_dict of tensors (the recipe's "
            "Checkpointer saves the score model's state_dict)."
        )
    checkpoint = {"state_dict": state}
    used = [model_file]
    ema_file = folder / f"{EMA_NAME}.ckpt"
    if use_ema:
        if not ema_file.is_file():
            raise CheckpointError(
                f"{folder} has no {ema_file.name} (the recipe's EMA "
                "weights); import the raw weights with --no-ema."
            )
        checkpoint["ema"] = read_checkpoint(ema_file)
        used.append(ema_file)
    tensors, weights_used = backbone_tensors(checkpoint, use_ema)
    meta = yaml.safe_load((folder / CKPT_META).read_text(encoding="utf-8"))
    used_names = {p.name for p in used} | {CKPT_META}
    source = {
        "format": "SpeechBrain SGMSE recipe checkpoint folder "
        f"({SCORE_MODEL_CLASS})",
        "folder": folder.name,
        "files": [
            {"file": p.name, "sha256": file_sha256(p)}
            for p in [*used, folder / CKPT_META, hparams_path]
        ],
        "weights": weights_used,
        "checkpoint_meta": plain_value(meta),
        "recipe": record,
    }
    not_imported = {
        "files": sorted(
            p.name for p in folder.iterdir() if p.name not in used_names
        ),
        "why": "training state (optimizer, epoch counter, brain, data "
        "loaders) and, with --no-ema, the EMA; the settings of "
        "hyperparams.yaml are recorded above",
    }
    sampler = sampler_with(recipe_sampler, steps, snr, corrector_steps)
    return export_imported(
        out, hparams, settings, tensors, sampler, source, not_imported
    )
