"""Enhancers bundled with the package, loadable by name without network.

Each sub-folder of this package that holds a ``hyperparams.yaml`` is an
exported ``from_hparams`` folder (see :mod:`speechbrain_elbo.export`) with
its model card (``model_card.md``, ``model_card.json``) and, where the model
was trained by the recipe, its training logs (``train_log_score.txt``,
``train_log_refiner.txt``).

Example
-------
>>> pretrained_path("no-such-model")
Traceback (most recent call last):
...
speechbrain_elbo.pretrained.PretrainedModelError: No bundled model named...
"""

import pathlib

__all__ = [
    "PRETRAINED_DIR",
    "DEFAULT_MODEL",
    "PretrainedModelError",
    "available",
    "pretrained_path",
    "load_pretrained",
]

#: The folder of the bundled models (this package).
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent

#: The model ``make demo`` uses.
DEFAULT_MODEL = "minivb-small"

_HPARAMS = "hyperparams.yaml"


class PretrainedModelError(LookupError):
    """A bundled model name is unknown or its folder is incomplete."""


def available(root=PRETRAINED_DIR):
    """Names of the bundled models (folders with a ``hyperparams.yaml``).

    Arguments
    ---------
    root : str or pathlib.Path
        Where to look (default: this package).

    Returns
    -------
    list of str
        Sorted names.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "b").mkdir(); (root / "a").mkdir(); (root / "c").mkdir()
    >>> _ = (root / "a" / "hyperparams.yaml").write_text("x: 1")
    >>> _ = (root / "b" / "hyperparams.yaml").write_text("x: 1")
    >>> available(root)
    ['a', 'b']
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and (p / _HPARAMS).is_file()
    )


def pretrained_path(name=DEFAULT_MODEL, root=PRETRAINED_DIR):
    """The folder of a bundled model.

    Arguments
    ---------
    name : str
        The model's name (a sub-folder of :data:`PRETRAINED_DIR`).
    root : str or pathlib.Path
        Where to look (default: this package).

    Returns
    -------
    pathlib.Path
        An absolute folder that
        ``DiffusionEnhancement.from_hparams(source=...)`` loads.

    Raises
    ------
    PretrainedModelError
        If no such model is bundled, or its folder lacks
        ``hyperparams.yaml``; the message lists the available names.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "m").mkdir()
    >>> _ = (root / "m" / "hyperparams.yaml").write_text("x: 1")
    >>> pretrained_path("m", root).name
    'm'
    >>> (root / "broken").mkdir()
    >>> pretrained_path("broken", root)
    Traceback (most recent call last):
    ...
    speechbrain_elbo.pretrained.PretrainedModelError: The bundled model...
    """
    root = pathlib.Path(root).resolve()
    names = available(root)
    listing = ", ".join(repr(n) for n in names) if names else "none"
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise PretrainedModelError(
            f"A bundled model name must be a plain folder name, got "
            f"{name!r}. Available: {listing}. To load a folder of your own, "
            "use DiffusionEnhancement.from_hparams(source=FOLDER)."
        )
    folder = root / name
    if folder.is_dir() and not (folder / _HPARAMS).is_file():
        raise PretrainedModelError(
            f"The bundled model {name!r} is incomplete: {folder} has no "
            f"{_HPARAMS}. Reinstall the package (or restore the folder). "
            f"Available: {listing}."
        )
    if not folder.is_dir():
        raise PretrainedModelError(
            f"No bundled model named {name!r} in {root}. Available: "
            f"{listing}. To load a folder of your own, use "
            "DiffusionEnhancement.from_hparams(source=FOLDER)."
        )
    return folder


def load_pretrained(name=DEFAULT_MODEL, root=PRETRAINED_DIR, **kwargs):
    """Load a bundled model as a ``DiffusionEnhancement`` (no network).

    Arguments
    ---------
    name : str
        The model's name (see :func:`available`).
    root : str or pathlib.Path
        Where to look (default: this package).
    **kwargs
        Forwarded to ``DiffusionEnhancement.from_hparams`` (e.g.
        ``run_opts={"device": "cuda"}``, ``chunk_seconds=10``).

    Returns
    -------
    speechbrain_elbo.inference.DiffusionEnhancement

    Raises
    ------
    PretrainedModelError
        As :func:`pretrained_path`.

    Example
    -------
    >>> load_pretrained("no-such-model")
    Traceback (most recent call last):
    ...
    speechbrain_elbo.pretrained.PretrainedModelError: No bundled model named...
    """
    from speechbrain_elbo.inference import DiffusionEnhancement

    folder = pretrained_path(name, root)
    return DiffusionEnhancement.from_hparams(source=str(folder), **kwargs)
