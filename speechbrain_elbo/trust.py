"""What a model folder's ``hyperparams.yaml`` may build: an allow-list.

Loading a model folder executes its ``hyperparams.yaml``: HyperPyYAML
imports and calls whatever its tags name (``!new:`` constructs a class,
``!name:`` names a callable that the loader may call later, ``!apply:``
calls a function while loading, ``!module:`` imports a module), and its
tuples are parsed by PyYAML's full loader. A folder from someone else is
therefore code. The SHA-256 checksums of the folder detect corrupt
checkpoints, not a changed ``hyperparams.yaml``.

:func:`check_hparams_file` reads the file as a YAML node tree, before
HyperPyYAML builds anything, and refuses every tag that would import or
call something outside :data:`ALLOWED` (the building blocks that
:func:`speechbrain_elbo.export.export_enhancer` writes, SpeechBrain's
layers and ``Pretrainer``, ``torch.nn``), every ``!include:`` (another
file), every ``!!python/...`` tag and every tuple with a tag inside. It
is what ``from_hparams(..., check_yaml=True)`` and the command line (by
default) run.

The allow-list is narrower than "speechbrain_elbo, speechbrain and torch":
those packages also hold functions that load and run other code
(``torch.hub.load``, ``speechbrain.inference.interfaces.foreign_class``,
the ``from_hparams`` of any interface), which a YAML could call.

Example
-------
>>> folder = getfixture("tmp_path")
>>> _ = (folder / "hyperparams.yaml").write_text(
...     "net: !new:torch.nn.Linear\\n"
...     "    in_features: 2\\n"
...     "    out_features: 2\\n"
...     "hook: !name:os.system\\n")
>>> check_hparams_file(folder / "hyperparams.yaml")
Traceback (most recent call last):
...
speechbrain_elbo.trust.UntrustedModelError: .../hyperparams.yaml, line 4:
!name:os.system is not on the allow-list of model folders...
"""

import importlib
import inspect
import pathlib
import re

import yaml

from speechbrain_elbo.export import ModelFolderError

__all__ = [
    "ALLOWED",
    "UntrustedModelError",
    "check_hparams_file",
    "is_allowed",
]

#: What ``hyperparams.yaml`` may import or call: a module prefix (ending
#: in ``.``) or one exact name.
ALLOWED = (
    "speechbrain_elbo.lobes.",
    "speechbrain_elbo.sde.",
    "speechbrain_elbo.spectral.",
    "speechbrain_elbo.sampling.",
    "speechbrain_elbo.score.",
    "speechbrain_elbo.interop.sgmse_network.",
    "speechbrain_elbo.export.load_checkpoint",
    "speechbrain.nnet.",
    "speechbrain.processing.",
    "speechbrain.lobes.features.",
    "speechbrain.utils.parameter_transfer.Pretrainer",
    "torch.nn.",
)

#: Tags that import or call the dotted name that follows them.
_CALLING = ("!new:", "!name:", "!apply:", "!applyref:", "!module:")

#: Tags that build nothing (references, copies, tuples, placeholders).
_PLAIN = ("!ref", "!copy", "!tuple", "!PLACEHOLDER")

#: HyperPyYAML parses scalars like this with PyYAML's full loader.
_TUPLE = re.compile(r"^\(.*\)$", re.DOTALL)


class UntrustedModelError(ModelFolderError):
    """``hyperparams.yaml`` would build something outside the allow-list."""


def _matches(name, allowed):
    return any(
        name == entry or (entry.endswith(".") and name.startswith(entry))
        for entry in allowed
    )


def _resolve(target):
    """The object ``target`` names, importing only its module part; None
    if a step goes through another module (``pkg.mod.torch.load``)."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute, None)
            if obj is None or inspect.ismodule(obj):
                return None
        return obj
    return None


def is_allowed(target, allowed=ALLOWED):
    """Whether a tag may import or call ``target`` (a dotted name).

    The name must be on ``allowed``, and so must the module that defines
    the object it resolves to (a name re-exported from elsewhere, such as
    ``torch.load`` imported into an allowed module, is refused). Only
    names that pass the first test are imported.

    Example
    -------
    >>> is_allowed("torch.nn.Linear"), is_allowed("torch.hub.load")
    (True, False)
    >>> is_allowed("speechbrain_elbo.lobes.ncsnpp.torch.load")
    False
    """
    if not _matches(target, allowed):
        return False
    obj = _resolve(target)
    if obj is None:
        return False
    if inspect.ismodule(obj):
        return obj.__name__ == target
    home = getattr(obj, "__module__", None)
    if not isinstance(home, str):
        return False
    qualified = f"{home}.{getattr(obj, '__qualname__', '')}"
    return _matches(qualified, allowed) or _matches(home + ".", allowed)


def _problems(node, allowed, seen):
    """(line, what) of each node that builds something not allowed."""
    if id(node) in seen:
        return
    seen.add(id(node))
    tag = node.tag or ""
    line = node.start_mark.line + 1
    if tag.startswith(_CALLING):
        prefix = next(p for p in _CALLING if tag.startswith(p))
        if not is_allowed(tag[len(prefix) :], allowed):
            yield line, tag
    elif tag.startswith("!include:"):
        yield line, f"{tag} (another file, not checked)"
    elif tag.startswith("!") and tag not in _PLAIN:
        yield line, f"the tag {tag}"
    elif tag.startswith("tag:yaml.org,2002:python/"):
        yield line, f"the tag !!{tag.rsplit(':', 1)[-1]}"
    if isinstance(node, yaml.ScalarNode):
        if _TUPLE.match(str(node.value)) and "!" in str(node.value):
            yield line, f"a tuple with a tag inside, {node.value}"
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _problems(item, allowed, seen)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _problems(key, allowed, seen)
            yield from _problems(value, allowed, seen)


def check_hparams_file(path, allowed=ALLOWED):
    """Refuse a ``hyperparams.yaml`` that would build anything not allowed.

    The file is composed into YAML nodes (PyYAML's safe loader: nothing is
    imported or called) and every tag is checked with :func:`is_allowed`.

    Arguments
    ---------
    path : str or pathlib.Path
        The ``hyperparams.yaml`` of a model folder.
    allowed : tuple of str
        Module prefixes (ending in ``.``) and exact names that may be
        imported or called (default :data:`ALLOWED`).

    Raises
    ------
    UntrustedModelError
        One line naming the file, the line and the first tag refused (and
        how many more), and what to do.
    """
    path = pathlib.Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ModelFolderError(
            f"{path} is not valid YAML ({' '.join(str(error).split())}); "
            "export the model again."
        ) from error
    found = [] if root is None else list(_problems(root, allowed, set()))
    if not found:
        return
    line, what = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise UntrustedModelError(
        f"{path}, line {line}: {what} is not on the allow-list of model "
        f"folders{more}. Loading the folder would run it: load it only if "
        "you trust its author (from_hparams(..., check_yaml=False); "
        "command line: --trust-model)."
    )
