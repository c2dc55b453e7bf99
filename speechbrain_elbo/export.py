"""Exported enhancer folders: written once, loaded by one function.

:func:`export_enhancer` writes a trained enhancer as a folder that
:meth:`speechbrain_elbo.inference.DiffusionEnhancement.from_hparams` loads;
:func:`load_folder` is the one loader of such folders (``from_hparams``,
:func:`load_enhancer` for the frozen stage 1 of a refiner, the bundling of
packaged models and the export's own check all use it).

The folder holds everything inference needs and nothing else:

- ``hyperparams.yaml``: a HyperPyYAML file, readable by a human, that builds
  the spectral transform, the Gaussian noise schedule and SDE, the score
  backbone (and the refiner of a two-stage model) with every constructor
  argument written out, the default sampler, the sample rate, the
  ``modules`` dict and a SpeechBrain ``Pretrainer`` whose ``paths`` point at
  the checkpoint files. It also records the SHA-256 of each checkpoint, so
  that a corrupt file is detected at load time.
- ``score_model.ckpt`` (and ``refiner.ckpt``): ``state_dict`` files.
- ``model_card.md`` and ``model_card.json``: what the model is
  (:mod:`speechbrain_elbo.model_card`).

``hyperparams.yaml`` names no path of the machine it was written on: its
``pretrained_path`` is ``"."`` and the loader points it at the folder it
loads, so the folder can be moved or copied.

The folder is written atomically: everything goes into a temporary sibling
folder, is loaded back once as a check, and only then replaces ``folder``
by a rename. A reader sees the old folder or the new one, never a mix. A
process killed during an export leaves at most a hidden sibling
(``.NAME.xxxxxxxx`` being written, ``.NAME.old-xxxxxxxx`` being replaced),
which the next export to the same folder deletes.

Example
-------
>>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
>>> from speechbrain_elbo.spectral import SpectralTransform
>>> from speechbrain_elbo.sampling import Sampler
>>> folder = getfixture("tmp_path") / "enhancer"
>>> net = torch.nn.Conv2d(4, 2, 1)
>>> net.config = {"in_channels": 4, "out_channels": 2, "kernel_size": 1}
>>> net.frame_multiple = 1
>>> _ = export_enhancer(folder, net, OUVESDE(GeometricGNS()),
...                     SpectralTransform(), Sampler("pc", steps=30))
>>> sorted(p.name for p in folder.iterdir())  # doctest: +NORMALIZE_WHITESPACE
['hyperparams.yaml', 'model_card.json', 'model_card.md',
 'score_model.ckpt']
>>> load_enhancer(folder).sampler.steps
30
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from types import SimpleNamespace

import torch

from speechbrain_elbo.fileio import replace_folder
from speechbrain_elbo.model_card import (
    HPARAMS_FILE,
    REFINER_CKPT,
    SCORE_CKPT,
    Exported,
    build_card,
    card_markdown,
    render_hyperparams,
)

__all__ = [
    "export_enhancer",
    "load_folder",
    "load_enhancer",
    "load_checkpoint",
    "file_sha256",
    "module_from_yaml",
    "ModelFolderError",
    "HPARAMS_FILE",
    "SCORE_CKPT",
    "REFINER_CKPT",
]

#: What a loaded ``hyperparams.yaml`` must define.
REQUIRED_KEYS = (
    "pretrainer",
    "modules",
    "sde",
    "transform",
    "sampler",
    "sample_rate",
)


class ModelFolderError(RuntimeError, ValueError):
    """A model folder is incomplete, corrupt or inconsistent.

    A ``RuntimeError`` and a ``ValueError`` (bad input), so that a command
    line that reports bad input in one line reports it too.
    """


def file_sha256(path, block_size=1 << 20):
    """SHA-256 hex digest of a file, read in blocks.

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.bin"
    >>> _ = path.write_bytes(b"abc")
    >>> file_sha256(path)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(module, path):
    """Strict state_dict loader used as the Pretrainer hook of the export.

    SpeechBrain's default transfer hook loads non-strictly and only logs a
    warning for missing weights; an exported enhancer must match its
    ``hyperparams.yaml`` exactly, so this hook fails loudly and names the
    file.

    Arguments
    ---------
    module : torch.nn.Module
        The network built from ``hyperparams.yaml``.
    path : str or pathlib.Path
        The checkpoint file (a ``state_dict`` written by ``torch.save``).

    Example
    -------
    >>> path = getfixture("tmp_path") / "lin.ckpt"
    >>> torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    >>> load_checkpoint(torch.nn.Linear(2, 2), path)
    >>> load_checkpoint(torch.nn.Linear(3, 2), path)
    Traceback (most recent call last):
    ...
    speechbrain_elbo.export.ModelFolderError: ...lin.ckpt does not match ...
    """
    state = read_state_dict(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0:3]
        raise ModelFolderError(
            f"{path} does not match the network described in "
            f"{HPARAMS_FILE}: {' '.join(first)}"
        ) from error


def read_state_dict(path):
    """The ``state_dict`` in a checkpoint file of an exported folder,
    read with weights-only loading; one clear error if it is missing,
    corrupt or not a state_dict."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Checkpoint file {path} is missing: the model folder is "
            "incomplete. Export the model again (export_enhancer) or copy "
            "the whole folder."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFolderError(
            f"Checkpoint file {path} is corrupt or not a PyTorch state_dict "
            f"({type(error).__name__}: {error}). Export the model again."
        ) from error
    if not isinstance(state, dict):
        raise ModelFolderError(
            f"Checkpoint file {path} holds a {type(state).__name__}, not a "
            "state_dict. Export the model again."
        )
    return state


def module_from_yaml(path, key):
    r"""Build the module ``key`` of a HyperPyYAML file, ready to export.

    The lobes of this package record their constructor arguments in a
    ``config`` attribute. A module that has none gets the file's other
    top-level keys as its ``config``: the layout of the files in
    ``hparams/models/`` (one module, and its arguments as top-level keys).

    Arguments
    ---------
    path : str or pathlib.Path
        A HyperPyYAML file.
    key : str
        The top-level key that builds the module.

    Returns
    -------
    torch.nn.Module
        With a ``config`` dict, so that :func:`module_config` and
        :func:`export_enhancer` accept it.

    Example
    -------
    >>> path = getfixture("tmp_path") / "linear.yaml"
    >>> _ = path.write_text(
    ...     "in_features: 2\n"
    ...     "out_features: 3\n"
    ...     "net: !new:torch.nn.Linear\n"
    ...     "    in_features: !ref <in_features>\n"
    ...     "    out_features: !ref <out_features>\n")
    >>> module_from_yaml(path, "net").config
    {'in_features': 2, 'out_features': 3}
    """
    from hyperpyyaml import load_hyperpyyaml

    with open(path, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle)
    if key not in hparams:
        raise KeyError(
            f"{path} defines no {key!r}; its top-level keys are "
            f"{sorted(hparams)}."
        )
    module = hparams[key]
    if not isinstance(getattr(module, "config", None), dict):
        module.config = {k: v for k, v in hparams.items() if k != key}
    return module


def _save_state(module, path, weights_dtype=torch.float32):
    """Save a CPU state_dict; floating-point tensors stored as weights_dtype.

    Loading casts them back to the network's own dtype (``load_state_dict``
    copies values into the existing parameters).
    """
    state = {}
    for key, value in module.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(weights_dtype)
        state[key] = value.clone()
    torch.save(state, path)


_WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _weights_dtype(weights_dtype):
    if isinstance(weights_dtype, torch.dtype):
        weights_dtype = str(weights_dtype).removeprefix("torch.")
    if weights_dtype not in _WEIGHT_DTYPES:
        raise ValueError(
            f"weights_dtype must be one of {sorted(_WEIGHT_DTYPES)}, got "
            f"{weights_dtype!r}."
        )
    return weights_dtype


def _check_components(score_backbone, sde, transform, sampler, refiner):
    if not isinstance(score_backbone, torch.nn.Module):
        raise TypeError("score_backbone must be a torch.nn.Module.")
    if refiner is not None and not isinstance(refiner, torch.nn.Module):
        raise TypeError("refiner must be a torch.nn.Module or None.")
    for name, obj, attrs, kind in (
        ("sde", sde, ("gns", "gamma", "t_eps", "T"), "sde.OUVESDE"),
        (
            "transform",
            transform,
            ("n_fft", "hop_length", "alpha", "beta"),
            "spectral.SpectralTransform",
        ),
        (
            "sampler",
            sampler,
            ("name", "steps", "corrector_steps", "snr"),
            "sampling.Sampler",
        ),
    ):
        missing = [a for a in attrs if not hasattr(obj, a)]
        if missing:
            raise TypeError(
                f"{name} lacks the attributes {missing}: pass a "
                f"speechbrain_elbo.{kind}."
            )
    if not hasattr(score_backbone, "frame_multiple"):
        raise ValueError(
            "score_backbone has no frame_multiple attribute (the frame "
            "count its input must be a multiple of)."
        )


def _remove_leftovers(folder):
    """Delete the hidden siblings of ``folder`` that a killed export left:
    its temporary folder (``tempfile.mkdtemp``'s 8 characters) and the
    previous export being replaced (``replace_folder``'s ``old-`` ones)."""
    pattern = re.compile(
        rf"\.{re.escape(folder.name)}\.(old-[0-9a-f]{{8}}|[a-z0-9_]{{8}})"
    )
    if not folder.parent.is_dir():
        return
    for path in folder.parent.iterdir():
        if path.is_dir() and pattern.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)


def _verify(tmp, sample_rate):
    """Load the freshly written folder once, strictly, from ``tmp``."""
    hparams = load_folder(tmp)
    if int(hparams["sample_rate"]) != int(sample_rate):
        raise ModelFolderError("sample_rate did not survive the export.")


def export_enhancer(
    folder,
    score_backbone,
    sde,
    transform,
    sampler,
    refiner=None,
    model_card=None,
    sample_rate=16000,
    weights_dtype="float32",
):
    """Write a ``from_hparams`` folder for a trained enhancer, atomically.

    Arguments
    ---------
    folder : str or pathlib.Path
        Target folder. It is created, or replaced if it holds an earlier
        export; a non-empty folder that is not an export is refused.
    score_backbone : torch.nn.Module
        The score network's backbone, with the weights to ship (the EMA
        copy) loaded; it needs ``config`` and ``frame_multiple`` attributes.
    sde : speechbrain_elbo.sde.OUVESDE
        The SDE with its noise schedule.
    transform : speechbrain_elbo.spectral.SpectralTransform
        The spectral representation.
    sampler : speechbrain_elbo.sampling.Sampler
        The default sampling settings.
    refiner : torch.nn.Module, optional
        The stage-2 refinement model (``config`` attribute needed).
    model_card : dict, optional
        Free-form description (data, metrics, licence...), written to
        ``model_card.md`` and ``model_card.json``.
    sample_rate : int
        Sample rate of the model, in Hz.
    weights_dtype : str or torch.dtype
        How the weights are stored: ``"float32"`` (default) or
        ``"float16"`` (half the size; loading casts them back to float32,
        the networks still compute in float32). Recorded in the card.

    Returns
    -------
    pathlib.Path
        The absolute path of the written folder.
    """
    _check_components(score_backbone, sde, transform, sampler, refiner)
    weights_dtype = _weights_dtype(weights_dtype)
    store = _WEIGHT_DTYPES[weights_dtype]
    folder = pathlib.Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder.")
    if (
        folder.is_dir()
        and any(folder.iterdir())
        and not (folder / HPARAMS_FILE).exists()
    ):
        raise FileExistsError(
            f"{folder} is not empty and holds no {HPARAMS_FILE}: refusing to "
            "replace a folder that is not an exported model. Choose a new "
            "or empty folder."
        )
    _remove_leftovers(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent)
    )
    try:
        os.chmod(tmp, 0o755)
        _save_state(score_backbone, tmp / SCORE_CKPT, store)
        checksums = {SCORE_CKPT: file_sha256(tmp / SCORE_CKPT)}
        if refiner is not None:
            _save_state(refiner, tmp / REFINER_CKPT, store)
            checksums[REFINER_CKPT] = file_sha256(tmp / REFINER_CKPT)
        export = Exported(
            score_backbone,
            sde,
            transform,
            sampler,
            refiner,
            sample_rate,
            checksums,
            weights_dtype,
        )
        text = render_hyperparams(export)
        (tmp / HPARAMS_FILE).write_text(text, encoding="utf-8")
        card = build_card(export, model_card)
        (tmp / "model_card.json").write_text(
            json.dumps(card, indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "model_card.md").write_text(
            card_markdown(card), encoding="utf-8"
        )
        _verify(tmp, sample_rate)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _yaml_of(folder, hparams_file, overrides):
    """The loaded ``hyperparams.yaml``, ``pretrained_path`` set to folder."""
    from hyperpyyaml import load_hyperpyyaml

    hparams_path = folder / hparams_file
    if not hparams_path.is_file():
        raise FileNotFoundError(
            f"{hparams_path} is missing: {folder} is not an exported model "
            "folder (export it with export_enhancer)."
        )
    overrides = dict(overrides or {})
    if "pretrained_path" in overrides:
        raise ValueError(
            "overrides may not set pretrained_path: the loader points it at "
            "the folder it loads; pass that folder as the source instead."
        )
    overrides["pretrained_path"] = str(folder)
    try:
        with open(hparams_path, encoding="utf-8") as handle:
            hparams = load_hyperpyyaml(handle, overrides)
    except Exception as error:
        raise ModelFolderError(
            f"{hparams_path} cannot be loaded ({type(error).__name__}: "
            f"{error}). The file is corrupt or was written by an "
            "incompatible version; export the model again."
        ) from error
    for key in REQUIRED_KEYS:
        if key not in hparams:
            raise ModelFolderError(
                f"{hparams_path} defines no {key!r}: it was not written "
                "by export_enhancer; export the model again."
            )
    if "score_model" not in hparams["modules"]:
        raise ModelFolderError(
            f"{hparams_path} defines no module 'score_model': it was not "
            "written by export_enhancer; export the model again."
        )
    return hparams


def _check_files(folder, hparams, hparams_file, verify_checksums):
    """Every checkpoint present and, optionally, matching its SHA-256."""
    pretrainer = hparams["pretrainer"]
    for name, path in pretrainer.paths.items():
        if pretrainer.is_loadable(name) and not pathlib.Path(path).is_file():
            raise FileNotFoundError(
                f"Checkpoint file {path} (module {name!r}) is missing "
                f"from {folder}; copy the whole exported folder."
            )
    if not verify_checksums:
        return
    for filename, digest in (hparams.get("checksums") or {}).items():
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"Checkpoint file {path} is missing from {folder}; copy "
                "the whole exported folder."
            )
        if file_sha256(path) != str(digest):
            raise ModelFolderError(
                f"Checkpoint file {path} is corrupt: its SHA-256 does not "
                f"match the one recorded in {hparams_file}. Copy or export "
                "the model again."
            )


def load_folder(
    source,
    hparams_file=HPARAMS_FILE,
    overrides=None,
    savedir=None,
    local_strategy=None,
    verify_checksums=True,
    check_yaml=False,
):
    """Load an exported folder: its hyperparameters, weights loaded.

    ``hyperparams.yaml`` is loaded with ``pretrained_path`` pointing at
    the folder (so a moved folder loads), its keys are checked, every
    checkpoint must be present and match the SHA-256 recorded at export,
    and the SpeechBrain ``Pretrainer`` of the file loads the weights
    strictly (:func:`load_checkpoint`), with no network access. Each
    problem is one error that names the file and the fix.

    Arguments
    ---------
    source : str or pathlib.Path
        A local folder written by :func:`export_enhancer`.
    hparams_file : str
        Name of the hyperparameter file in the folder.
    overrides : dict, optional
        HyperPyYAML overrides, e.g. ``{"sampler": ...}``
        (``pretrained_path`` is the loader's).
    savedir : str or pathlib.Path, optional
        Where SpeechBrain links (or copies, see ``local_strategy``) the
        files, renewed on every load. Default None: the files are read
        where they are.
    local_strategy : speechbrain.utils.fetching.LocalStrategy, optional
        How files are brought into ``savedir`` (default: symlinks).
    verify_checksums : bool
        Check each checkpoint against the SHA-256 recorded at export.
    check_yaml : bool or tuple of str
        Before HyperPyYAML builds anything, refuse a ``hyperparams.yaml``
        that would import or call something outside the allow-list
        (:func:`speechbrain_elbo.trust.check_hparams_file`; a tuple is the
        allow-list to use). Loading a folder executes its
        ``hyperparams.yaml``: check folders you did not make.

    Returns
    -------
    dict
        The loaded hyperparameters (``modules``, ``sde``, ``transform``,
        ``sampler``, ``sample_rate``, ``checksums``, ``savedir``...), the
        networks holding the exported weights.

    Raises
    ------
    FileNotFoundError
        A missing folder, ``hyperparams.yaml`` or checkpoint.
    ModelFolderError
        A corrupt or foreign ``hyperparams.yaml`` or checkpoint (an
        :class:`~speechbrain_elbo.trust.UntrustedModelError` for one that
        ``check_yaml`` refuses).

    Example
    -------
    >>> load_folder(getfixture("tmp_path") / "nowhere")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder .../nowhere does not exist (or is not a
    folder). ...
    """
    from speechbrain.utils.fetching import FetchConfig, LocalStrategy, fetch

    folder = pathlib.Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Model folder {source} does not exist (or is not a folder). "
            "Exported folders are loaded from the local disk: pass a "
            "folder written by speechbrain_elbo.export.export_enhancer "
            "(DiffusionEnhancement.from_hparams also takes a bundled "
            "model's name or a Hugging Face Hub id)."
        )
    folder = folder.absolute()
    if check_yaml and (folder / hparams_file).is_file():
        from speechbrain_elbo.trust import ALLOWED, check_hparams_file

        allowed = ALLOWED if check_yaml is True else tuple(check_yaml)
        check_hparams_file(folder / hparams_file, allowed)
    hparams = _yaml_of(folder, hparams_file, overrides)
    _check_files(folder, hparams, hparams_file, verify_checksums)
    hparams["savedir"] = savedir
    if savedir is not None:
        pathlib.Path(savedir).mkdir(parents=True, exist_ok=True)
    strategy = local_strategy or LocalStrategy.SYMLINK
    # Re-link on every load (a reused savedir must not serve stale
    # files); nothing is fetched from the network.
    fetch_config = FetchConfig(overwrite=True, allow_network=False)
    pretrainer = hparams["pretrainer"]
    pretrainer.set_collect_in(savedir)
    pretrainer.collect_files(
        default_source=str(folder),
        local_strategy=strategy,
        fetch_config=fetch_config,
    )
    if savedir is not None:
        fetch(
            hparams_file,
            source=str(folder),
            savedir=savedir,
            local_strategy=strategy,
            fetch_config=fetch_config,
        )
    pretrainer.load_collected()
    return hparams


def load_enhancer(folder, device="cpu"):
    """The networks of an exported folder, frozen, as plain objects.

    :func:`load_folder` with its defaults; the score model is built and
    everything is put on ``device`` in eval mode, without gradients (the
    frozen stage 1 of a refiner, a model to repack).

    Arguments
    ---------
    folder : str or pathlib.Path
        The exported model folder.
    device : str
        Where to put the networks.

    Returns
    -------
    types.SimpleNamespace
        ``score_model`` (a frozen :class:`~speechbrain_elbo.score.ScoreModel`
        in eval mode), ``backbone``, ``sde``, ``transform``, ``sampler``,
        ``refiner`` (or None), ``sample_rate``, ``checksums`` and
        ``folder``.
    """
    from speechbrain_elbo.score import ScoreModel

    hparams = load_folder(folder)
    modules = hparams["modules"]
    backbone = modules["score_model"].to(device).eval()
    score_model = ScoreModel(backbone, hparams["sde"]).to(device).eval()
    score_model.requires_grad_(False)
    refiner = modules.get("refiner")
    if refiner is not None:
        refiner = refiner.to(device).eval().requires_grad_(False)
    return SimpleNamespace(
        score_model=score_model,
        backbone=backbone,
        sde=hparams["sde"],
        transform=hparams["transform"],
        sampler=hparams["sampler"],
        refiner=refiner,
        sample_rate=int(hparams["sample_rate"]),
        checksums=dict(hparams.get("checksums") or {}),
        folder=pathlib.Path(folder).expanduser().absolute(),
    )
