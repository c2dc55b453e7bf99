"""The text files of an exported model: ``hyperparams.yaml`` and its card.

:func:`speechbrain_elbo.export.export_enhancer` writes three files that say
what a model is; this module writes their text, and names the files of the
folder:

- :func:`render_hyperparams`: ``hyperparams.yaml``, the HyperPyYAML file
  that rebuilds every component with all its constructor arguments written
  out (:func:`module_config`), the Pretrainer and the checkpoint digests;
- :func:`build_card`: ``model_card.json`` (pipeline, SDE, transform, default
  sampler, networks and parameter counts, digests, the caller's free-form
  card);
- :func:`card_markdown`: ``model_card.md``, the same for a human.

Example
-------
>>> card = {"stages": 1, "sample_rate": 16000, "sde": "OUVE",
...         "transform": {}, "default_sampler": {"name": "pc"},
...         "score_backbone": {"class": "Net", "parameters": 1234},
...         "speechbrain_elbo_version": "0.1.0",
...         "files": {"score_model.ckpt": "ab12"},
...         "model_card": {"data": {"train": "MiniVB"}}}
>>> print(card_markdown(card).split("## Usage")[0].strip())
# Diffusion speech enhancement model
<BLANKLINE>
- **data**:
  - **train**: MiniVB
<BLANKLINE>
- Pipeline: one stage (diffusion)
- Sample rate: 16000 Hz
- SDE: OUVE
- Spectral transform: {}
- Default sampler: {'name': 'pc'}
- Score backbone: Net, 1,234 parameters
- Exported with speechbrain_elbo 0.1.0
"""

import inspect
import json
import math
from typing import NamedTuple

import torch

from speechbrain_elbo.version import __version__

__all__ = [
    "HPARAMS_FILE",
    "SCORE_CKPT",
    "REFINER_CKPT",
    "FORMAT_VERSION",
    "Exported",
    "module_config",
    "plain_config",
    "transform_config",
    "sampler_config",
    "render_hyperparams",
    "build_card",
    "card_markdown",
]

HPARAMS_FILE = "hyperparams.yaml"
SCORE_CKPT = "score_model.ckpt"
REFINER_CKPT = "refiner.ckpt"
FORMAT_VERSION = 1
#: ``pretrained_path`` as written: no path of the exporting machine; every
#: load replaces it by the folder it loads.
NEUTRAL_PRETRAINED_PATH = "."


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


def _complete(cls, config, what):
    """The config in constructor order, with unset defaults written out.

    Writing every default makes the YAML describe the network completely
    and keeps it valid if a library default changes later.
    """
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return plain_config(config, what)
    complete = {}
    for name, param in list(parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in config:
            complete[name] = plain_config(config[name], f"{what}.{name}")
        elif param.default is not param.empty:
            try:
                complete[name] = plain_config(param.default, f"{what}.{name}")
            except ValueError:
                continue  # an object default: the constructor supplies it
    for name, value in config.items():
        if name not in complete:
            complete[name] = plain_config(value, f"{what}.{name}")
    return complete


def plain_config(value, where):
    """``value`` with tuples, numpy and torch scalars made YAML-writable.

    Example
    -------
    >>> plain_config({"mult": (1, 2), "scale": torch.tensor(0.5)}, "net")
    {'mult': [1, 2], 'scale': 0.5}
    """
    if isinstance(value, dict):
        return {
            str(k): plain_config(v, f"{where}.{k}") for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [plain_config(v, where) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, which cannot be exported.")
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return plain_config(value.item(), where)
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


def transform_config(transform):
    """The settings of a spectral transform, as a plain dict.

    Example
    -------
    >>> from speechbrain_elbo.spectral import SpectralTransform
    >>> transform_config(SpectralTransform())["n_fft"]
    510
    """
    return {
        "n_fft": int(transform.n_fft),
        "hop_length": int(transform.hop_length),
        "alpha": float(transform.alpha),
        "beta": float(transform.beta),
    }


def sampler_config(sampler):
    """The settings of a sampler, as a plain dict.

    Example
    -------
    >>> from speechbrain_elbo.sampling import Sampler
    >>> sampler_config(Sampler("euler", 4))["steps"]
    4
    """
    return {
        "name": sampler.name,
        "steps": int(sampler.steps),
        "corrector_steps": int(sampler.corrector_steps),
        "snr": float(sampler.snr),
    }


class Exported(NamedTuple):
    """What an export writes: the components and the checkpoint digests."""

    backbone: torch.nn.Module
    sde: object
    transform: object
    sampler: object
    refiner: torch.nn.Module | None
    sample_rate: int
    checksums: dict
    weights_dtype: str = "float32"


def _example_export():
    """A one-layer export for the examples."""
    from speechbrain_elbo.sampling import Sampler
    from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    from speechbrain_elbo.spectral import SpectralTransform

    net = torch.nn.Linear(2, 2)
    net.config = {"in_features": 2, "out_features": 2}
    return Exported(
        net,
        OUVESDE(GeometricGNS()),
        SpectralTransform(),
        Sampler("euler", 4),
        None,
        16000,
        {SCORE_CKPT: "ab12"},
    )


def render_hyperparams(export):
    """The text of ``hyperparams.yaml``.

    Every component is built by a ``!new:`` block with all its
    constructor arguments; the Pretrainer loads the checkpoints from
    ``<pretrained_path>``, written as ``"."`` and set by the loader.

    Arguments
    ---------
    export : Exported
        The exported components and the digests of their checkpoints.

    Returns
    -------
    str

    Example
    -------
    >>> text = render_hyperparams(_example_export())
    >>> print("\\n".join(x for x in text.splitlines() if "path" in x))
    pretrained_path: "."
        paths:
            score_model: !ref <pretrained_path>/score_model.ckpt
    """
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
        f"pretrained_path: {_scalar(NEUTRAL_PRETRAINED_PATH)}",
        f"sample_rate: {int(sample_rate)}",
        "",
    ]
    lines += _block(
        "transform",
        _qualname(transform),
        transform_config(transform),
        "Compressed complex STFT (docs/method.md, section 1)",
    )
    lines.append("")
    lines += _block(
        "gns",
        gns_cls,
        gns_cfg,
        "Gaussian noise schedule (docs/method.md, section 2)",
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
        sampler_config(sampler),
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


def build_card(export, model_card=None):
    """The content of ``model_card.json``.

    Arguments
    ---------
    export : Exported
        The exported components and the digests of their checkpoints.
    model_card : dict, optional
        Free-form description, kept under ``"model_card"``.

    Returns
    -------
    dict
        JSON-ready.

    Example
    -------
    >>> card = build_card(_example_export(), {"data": "none"})
    >>> card["stages"], card["score_backbone"]["parameters"], card["files"]
    (1, 6, {'score_model.ckpt': 'ab12'})
    """
    card = {
        "format_version": FORMAT_VERSION,
        "speechbrain_elbo_version": __version__,
        "sample_rate": int(export.sample_rate),
        "stages": 1 if export.refiner is None else 2,
        "sde": export.sde.describe(),
        "transform": transform_config(export.transform),
        "default_sampler": sampler_config(export.sampler),
        "score_backbone": _module_card(export.backbone, "score backbone"),
        "files": export.checksums,
        "weights_dtype": export.weights_dtype,
    }
    if export.refiner is not None:
        card["refiner"] = _module_card(export.refiner, "refiner")
    if model_card:
        card["model_card"] = plain_config(dict(model_card), "model_card")
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


def card_markdown(card):
    """The content of ``model_card.md``, from :func:`build_card`'s dict."""
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
