"""Read foreign checkpoints without executing anything they contain.

A PyTorch Lightning checkpoint is a pickle. Pickles can name any Python
callable and have it called while loading, so a checkpoint from the web is
code. ``torch.load(..., weights_only=True)`` only rebuilds tensors and plain
containers and refuses every other global, but real sgmse checkpoints hold
one more global: their ``hyper_parameters`` record the data-module class,
pickled as a reference to ``sgmse.data_module.SpecsDataModule``.

:func:`read_checkpoint` loads with the weights-only unpickler and lets
exactly the class references listed in :data:`INERT_GLOBALS` through as
:class:`InertReference` objects: classes of this module that carry the
dotted name and can do nothing (no code of the named package is imported or
run; the package need not be installed). Any other global is refused with
one line that names it.

Example
-------
>>> path = getfixture("tmp_path") / "plain.ckpt"
>>> torch.save({"state_dict": {"w": torch.ones(2)}}, path)
>>> read_checkpoint(path)["state_dict"]["w"]
tensor([1., 1.])
"""

import pathlib
import pickle
import re

import torch

__all__ = [
    "InertReference",
    "INERT_GLOBALS",
    "CheckpointError",
    "read_checkpoint",
    "inert_reference",
]

#: Globals that sgmse checkpoints pickle in ``hyper_parameters`` and that
#: are read as inert names: the data-module classes of sgmse 0.1.2.
INERT_GLOBALS = ("sgmse.data_module.SpecsDataModule",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported; one line says why and how."""


class InertReference:
    """Stands for a class named in a checkpoint; it can do nothing.

    Subclasses are made by :func:`inert_reference`, one per dotted name;
    ``qualified_name`` is that name. Calling, instantiating or restoring
    state raises :class:`CheckpointError`.
    """

    qualified_name = ""

    def __new__(cls, *args, **kwargs):
        raise CheckpointError(
            f"{cls.qualified_name} is only a name read from a checkpoint; "
            "it cannot be instantiated."
        )


def inert_reference(qualified_name):
    """A class that the weights-only unpickler accepts for ``qualified_name``.

    Example
    -------
    >>> ref = inert_reference("sgmse.data_module.SpecsDataModule")
    >>> ref.qualified_name, issubclass(ref, InertReference)
    ('sgmse.data_module.SpecsDataModule', True)
    >>> ref()
    Traceback (most recent call last):
    ...
    speechbrain_elbo.interop.checkpoint.CheckpointError: sgmse.data_module...
    """
    module, _, name = qualified_name.rpartition(".")
    cls = type(name, (InertReference,), {"qualified_name": qualified_name})
    # torch's weights-only unpickler matches globals by module + qualname
    cls.__module__ = module
    cls.__qualname__ = name
    return cls


_INERT_CLASSES = tuple(inert_reference(name) for name in INERT_GLOBALS)


def read_checkpoint(path):
    """Load a checkpoint file with the weights-only unpickler.

    Arguments
    ---------
    path : str or pathlib.Path
        A file written by ``torch.save`` (e.g. a Lightning ``.ckpt``).

    Returns
    -------
    dict
        The checkpoint: tensors, plain containers and numbers, and
        :class:`InertReference` subclasses for the names of
        :data:`INERT_GLOBALS`.

    Raises
    ------
    CheckpointError
        Missing file, not a PyTorch checkpoint, truncated, or a pickled
        global outside :data:`INERT_GLOBALS` (named in the message; it was
        not run).

    Example
    -------
    >>> import os
    >>> path = getfixture("tmp_path") / "evil.ckpt"
    >>> torch.save({"hook": os.system}, path)
    >>> read_checkpoint(path)
    Traceback (most recent call last):
    ...
    speechbrain_elbo.interop.checkpoint.CheckpointError: ...evil.ckpt pickles
    the global posix.system, which is not allowed: ...
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist or is not a file."
        )
    try:
        with torch.serialization.safe_globals(list(_INERT_CLASSES)):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(_refusal(path, error)) from None
    except Exception as error:  # noqa: BLE001 -- any other failure: unreadable
        first = str(error).strip().splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or "
            f"another format: {type(error).__name__}: {first}); download it "
            "again."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a checkpoint "
            "dict; pass the .ckpt file that the training wrote."
        )
    return checkpoint


def _refusal(path, error):
    """One line for an unpickling error: the refused global, if any."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"{path} pickles the global {found.group(1)}, which is not "
            f"allowed: only tensors, plain values and "
            f"{', '.join(INERT_GLOBALS)} are read (nothing was executed); "
            "this is not an sgmse checkpoint or it was tampered with."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else type(error).__name__
    return (
        f"{path} cannot be read as weights only ({detail}); nothing was "
        "executed. Pass an sgmse Lightning checkpoint."
    )
