"""Write a trained enhancer as a folder that ``from_hparams`` can load.

The folder holds everything inference needs and nothing else:

- ``hyperparams.yaml``: a HyperPyYAML file, readable by a human, that builds
  the spectral transform, the Gaussian noise schedule and SDE, the score
  backbone (and the refiner of a two-stage model) with every constructor
  argument written out, the default sampler, the sample rate, the
  ``modules`` dict and a SpeechBrain ``Pretrainer`` whose ``paths`` point at
  the checkpoint files. It also records the SHA-256 of each checkpoint, so
  that a corrupt file is detected at load time.
- ``score_model.ckpt`` (and ``refiner.ckpt``): ``state_dict`` files.
- ``model_card.md`` and ``model_card.json``: what the model is.

The folder is written atomically: everything goes into a temporary sibling
folder, is loaded back once as a check, and only then replaces ``folder``
by a rename. A reader sees the old folder or the new one, never a mix.

Load it with :class:`speechbrain_elbo.inference.DiffusionEnhancement`.

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
"""

import hashlib
import inspect
import json
import math
import os
import pathlib
import shutil
import tempfile
import uuid
from typing import NamedTuple

import torch

from speechbrain_elbo.version import __version__

__all__ = [
    "export_enhancer",
    "load_checkpoint",
    "file_sha256",
    "module_config",
    "module_from_yaml",
    "ModelFolderError",
    "HPARAMS_FILE",
    "SCORE_CKPT",
    "REFINER_CKPT",
]

HPARAMS_FILE = "hyperparams.yaml"
SCORE_CKPT = "score_model.ckpt"
REFINER_CKPT = "refiner.ckpt"
FORMAT_VERSION = 1


class ModelFolderError(RuntimeError):
    """A model folder is incomplete, corrupt or inconsistent."""


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
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0:3]
        raise ModelFolderError(
            f"{path} does not match the network described in "
            f"{HPARAMS_FILE}: {' '.join(first)}"
        ) from error


def module_config(module, what="module"):
    """Import path and constructor arguments of a module, for the YAML.

    The lobes of this package record their constructor keyword arguments
    in a ``config`` attribute; this is what makes an export self-contained.

    Arguments
    ---------
    module : object
        An instance with a ``config`` dict attribute.
    what : str
        Its role, for error messages.

    Returns
    -------
    qualname : str
        ``"package.module.ClassName"``.
    config : dict
        Plain (YAML-writable) constructor arguments.

    Example
    -------
    >>> net = torch.nn.Linear(2, 3)
    >>> net.config = {"in_features": 2, "out_features": 3}
    >>> module_config(net)  # doctest: +NORMALIZE_WHITESPACE
    ('torch.nn.modules.linear.Linear',
     {'in_features': 2, 'out_features': 3, 'bias': True, 'device': None,
      'dtype': None})
    """
    cls = type(module)
    if cls.__module__ in ("__main__", "builtins") or "<locals>" in (
        cls.__qualname__
    ):
        raise ValueError(
            f"The {what} is a {cls.__qualname__} defined in "
            f"{cls.__module__}; an exported model must use a class that can "
            "be imported from a module (e.g. speechbrain_elbo.lobes)."
        )
    config = getattr(module, "config", None)
    if not isinstance(config, dict):
        raise ValueError(
            f"The {what} ({cls.__name__}) has no `config` dict of its "
            "constructor arguments; the lobes of speechbrain_elbo set it. "
            "Set module.config = dict(...) before exporting."
        )
    return f"{cls.__module__}.{cls.__name__}", _complete(cls, config, what)


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


def _complete(cls, config, what):
    """The config in constructor order, with unset defaults written out.

    Writing every default makes the YAML describe the network completely
    and keeps it valid if a library default changes later.
    """
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return _plain(config, what)
    complete = {}
    for name, param in list(parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in config:
            complete[name] = _plain(config[name], f"{what}.{name}")
        elif param.default is not param.empty:
            try:
                complete[name] = _plain(param.default, f"{what}.{name}")
            except ValueError:
                continue  # an object default: the constructor supplies it
    for name, value in config.items():
        if name not in complete:
            complete[name] = _plain(value, f"{what}.{name}")
    return complete


def _plain(value, where):
    """Convert tuples, numpy and torch scalars to YAML-writable values."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, which cannot be exported.")
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _plain(value.item(), where)
    raise ValueError(
        f"{where} = {value!r} ({type(value).__name__}) cannot be written to "
        "hyperparams.yaml; constructor arguments must be numbers, strings, "
        "booleans, None or lists of them."
    )


def _scalar(value):
    # JSON is valid YAML flow style: quoted strings, [lists], true/null.
    return json.dumps(value)


def _block(header, qualname, kwargs, comment=None):
    lines = [] if comment is None else [f"# {comment}"]
    lines.append(f"{header}: !new:{qualname}")
    for key, value in kwargs.items():
        lines.append(f"    {key}: {_scalar(value)}")
    return lines


def _gns_config(gns):
    if hasattr(gns, "config") and isinstance(gns.config, dict):
        return module_config(gns, "noise schedule")
    if hasattr(gns, "sigma_min") and hasattr(gns, "sigma_max"):
        cls = type(gns)
        return f"{cls.__module__}.{cls.__name__}", {
            "sigma_min": float(gns.sigma_min),
            "sigma_max": float(gns.sigma_max),
        }
    raise ValueError(
        f"Cannot export the noise schedule {gns!r}: give it a `config` dict "
        "of its constructor arguments."
    )


def _qualname(obj):
    return f"{type(obj).__module__}.{type(obj).__name__}"


def _transform_config(transform):
    return {
        "n_fft": int(transform.n_fft),
        "hop_length": int(transform.hop_length),
        "alpha": float(transform.alpha),
        "beta": float(transform.beta),
    }


def _sampler_config(sampler):
    return {
        "name": sampler.name,
        "steps": int(sampler.steps),
        "corrector_steps": int(sampler.corrector_steps),
        "snr": float(sampler.snr),
    }


class _Export(NamedTuple):
    """What an export writes: the components and the checkpoint digests."""

    backbone: torch.nn.Module
    sde: object
    transform: object
    sampler: object
    refiner: torch.nn.Module | None
    sample_rate: int
    checksums: dict
    weights_dtype: str = "float32"


def _render_hyperparams(pretrained_path, export):
    backbone, sde, transform, sampler, refiner = export[:5]
    sample_rate, checksums = export.sample_rate, export.checksums
    backbone_cls, backbone_cfg = module_config(backbone, "score backbone")
    gns_cls, gns_cfg = _gns_config(sde.gns)
    lines = [
        "# ############################################################",
        "# Diffusion speech enhancement model (speechbrain_elbo)",
        f"# Exported with speechbrain_elbo {__version__}.",
        "# Load it with:",
        "#   from speechbrain_elbo.inference import DiffusionEnhancement",
        "#   enhancer = DiffusionEnhancement.from_hparams(source=FOLDER)",
        "# ############################################################",
        "",
        f"format_version: {FORMAT_VERSION}",
        "# Folder of the checkpoint files; from_hparams replaces it by the",
        "# folder it loads from, so the folder can be moved.",
        f"pretrained_path: {_scalar(str(pretrained_path))}",
        f"sample_rate: {int(sample_rate)}",
        "",
    ]
    lines += _block(
        "transform",
        _qualname(transform),
        _transform_config(transform),
        "Compressed complex STFT (METHOD.md s. 1)",
    )
    lines.append("")
    lines += _block(
        "gns", gns_cls, gns_cfg, "Gaussian noise schedule (METHOD.md s. 2)"
    )
    lines.append("")
    lines.append("# Ornstein-Uhlenbeck variance-exploding SDE")
    lines.append(f"sde: !new:{_qualname(sde)}")
    lines.append("    gns: !ref <gns>")
    for key in ("gamma", "t_eps", "T"):
        lines.append(f"    {key}: {_scalar(float(getattr(sde, key)))}")
    lines.append("")
    lines += _block(
        "sampler",
        _qualname(sampler),
        _sampler_config(sampler),
        "Default sampler; every setting can be changed per call",
    )
    lines.append("")
    lines += _block(
        "score_backbone",
        backbone_cls,
        backbone_cfg,
        "Score network backbone (EMA weights in " + SCORE_CKPT + ")",
    )
    if refiner is not None:
        refiner_cls, refiner_cfg = module_config(refiner, "refiner")
        lines.append("")
        lines += _block(
            "refiner",
            refiner_cls,
            refiner_cfg,
            "Stage-2 refinement model (weights in " + REFINER_CKPT + ")",
        )
    names = ["score_model"] + ([] if refiner is None else ["refiner"])
    sources = {"score_model": "score_backbone", "refiner": "refiner"}
    files = {"score_model": SCORE_CKPT, "refiner": REFINER_CKPT}
    lines += ["", "modules:"]
    lines += [f"    {n}: !ref <{sources[n]}>" for n in names]
    lines += [
        "",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "    loadables:",
    ]
    lines += [f"        {n}: !ref <{sources[n]}>" for n in names]
    lines.append("    paths:")
    lines += [f"        {n}: !ref <pretrained_path>/{files[n]}" for n in names]
    lines.append("    custom_hooks:")
    lines += [
        f"        {n}: !name:speechbrain_elbo.export.load_checkpoint"
        for n in names
    ]
    lines += ["", "# SHA-256 of the checkpoint files, checked at load time"]
    lines.append("checksums:")
    lines += [
        f"    {name}: {_scalar(digest)}" for name, digest in checksums.items()
    ]
    return "\n".join(lines) + "\n"


def _module_card(module, what):
    cls, config = module_config(module, what)
    parameters = int(sum(p.numel() for p in module.parameters()))
    return {"class": cls, "parameters": parameters, "config": config}


def _card(model_card, export):
    card = {
        "format_version": FORMAT_VERSION,
        "speechbrain_elbo_version": __version__,
        "sample_rate": int(export.sample_rate),
        "stages": 1 if export.refiner is None else 2,
        "sde": export.sde.describe(),
        "transform": _transform_config(export.transform),
        "default_sampler": _sampler_config(export.sampler),
        "score_backbone": _module_card(export.backbone, "score backbone"),
        "files": export.checksums,
        "weights_dtype": export.weights_dtype,
    }
    if export.refiner is not None:
        card["refiner"] = _module_card(export.refiner, "refiner")
    if model_card:
        card["model_card"] = _plain(dict(model_card), "model_card")
    return card


def _card_items(mapping, depth=0):
    """Markdown bullets of a card mapping, nested mappings indented."""
    lines = []
    for key, value in mapping.items():
        head = f"{'  ' * depth}- **{key}**:"
        if isinstance(value, dict) and value:
            lines.append(head)
            lines += _card_items(value, depth + 1)
        else:
            lines.append(f"{head} {value}")
    return lines


def _card_markdown(card):
    lines = ["# Diffusion speech enhancement model", ""]
    user = card.get("model_card", {})
    lines += _card_items(user)
    if user:
        lines.append("")
    stages = "two stages (diffusion, then refiner)"
    if card["stages"] == 1:
        stages = "one stage (diffusion)"
    sampler = card["default_sampler"]
    lines += [
        f"- Pipeline: {stages}",
        f"- Sample rate: {card['sample_rate']} Hz",
        f"- SDE: {card['sde']}",
        f"- Spectral transform: {card['transform']}",
        f"- Default sampler: {sampler}",
        f"- Score backbone: {card['score_backbone']['class']}, "
        f"{card['score_backbone']['parameters']:,} parameters",
    ]
    if "refiner" in card:
        lines.append(
            f"- Refiner: {card['refiner']['class']}, "
            f"{card['refiner']['parameters']:,} parameters"
        )
    lines += [
        f"- Exported with speechbrain_elbo {card['speechbrain_elbo_version']}",
        "",
        "## Usage",
        "",
        "```python",
        "from speechbrain_elbo.inference import DiffusionEnhancement",
        'enhancer = DiffusionEnhancement.from_hparams(source="THIS_FOLDER")',
        'enhancer.enhance_file("noisy.wav", "enhanced.wav", seed=0)',
        "```",
        "",
        "## Files",
        "",
    ]
    for name, digest in card["files"].items():
        lines.append(f"- `{name}`: SHA-256 `{digest}`")
    return "\n".join(lines) + "\n"


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


def _verify(tmp, sample_rate):
    """Load the freshly written folder once, strictly, from ``tmp``."""
    from hyperpyyaml import load_hyperpyyaml

    with open(tmp / HPARAMS_FILE, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, {"pretrained_path": str(tmp)})
    pretrainer = hparams["pretrainer"]
    pretrainer.collect_files(default_source=str(tmp))
    pretrainer.load_collected()
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
        export = _Export(
            score_backbone,
            sde,
            transform,
            sampler,
            refiner,
            sample_rate,
            checksums,
            weights_dtype,
        )
        text = _render_hyperparams(folder, export)
        (tmp / HPARAMS_FILE).write_text(text, encoding="utf-8")
        card = _card(model_card, export)
        (tmp / "model_card.json").write_text(
            json.dumps(card, indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "model_card.md").write_text(
            _card_markdown(card), encoding="utf-8"
        )
        _verify(tmp, sample_rate)
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _replace_folder(tmp, folder):
    """Rename ``tmp`` to ``folder``; an existing ``folder`` is swapped out."""
    if not folder.exists():
        os.rename(tmp, folder)
        return
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(folder, old)
    try:
        os.rename(tmp, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
