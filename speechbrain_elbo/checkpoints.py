"""Checkpoints that survive a killed process, and resumes that repeat it.

SpeechBrain's ``Checkpointer`` writes a checkpoint folder in place: its
``CKPT.yaml`` first, then one file per recoverable. A process killed
during a save (a pre-empted job, a full disk, an out-of-memory kill)
leaves a folder that looks complete but holds a truncated or missing
file, and, as the newest checkpoint, it is the one that
``recover_if_possible`` loads: the resume fails, or loads half of it. This
module adds, for the recipes (their YAML files name it):

- :class:`SafeCheckpointer`: a ``Checkpointer`` whose saves are atomic (the
  ``CKPT.yaml`` that makes a folder a checkpoint is renamed into place last,
  after every file is written and flushed to disk; a folder without it is
  never listed, and is deleted at the next recovery) and whose recovery
  falls back: when the chosen checkpoint fails to load (a file truncated or
  corrupted after it was written), a one-line warning names it, it is
  moved aside as ``broken-CKPT+...`` and the next checkpoint in the same
  order is loaded; when none loads, the first error is raised;
- :class:`RandomState`: torch's random number generator states as a
  recoverable, so that a resumed run draws the same crops, diffusion times
  and noise as a run that was never interrupted.

Files are read with ``torch.load(..., weights_only=True)``: a checkpoint is
data, never code.

Example
-------
>>> folder = getfixture("tmp_path") / "save"
>>> net = torch.nn.Linear(2, 2)
>>> checkpointer = SafeCheckpointer(folder, {"net": net})
>>> _ = checkpointer.save_checkpoint()
>>> sorted(p.name for p in next(folder.iterdir()).iterdir())
['CKPT.yaml', 'net.ckpt']
>>> checkpointer.recover_if_possible() is not None
True
"""

import logging
import os
import pathlib
import shutil

import torch
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

__all__ = ["SafeCheckpointer", "RandomState", "BROKEN_PREFIX"]

#: The meta file while the checkpoint is being written.
PENDING_META = METAFNAME + ".pending"

#: Prefix of a checkpoint folder that failed to load, moved aside.
BROKEN_PREFIX = "broken-"


def _fsync(path):
    """Flush a file or a folder to disk (best effort for folders)."""
    flags = os.O_RDONLY
    if path.is_dir():
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        handle = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _check_meta(meta):
    """What SpeechBrain reads of a ``CKPT.yaml``; raises when it lacks it."""
    if not isinstance(meta, dict):
        raise TypeError(f"a mapping was expected, got {type(meta).__name__}")
    float(meta["unixtime"])
    if not isinstance(meta["end-of-epoch"], bool):
        raise TypeError("end-of-epoch is not a boolean")


def _one_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class SafeCheckpointer(Checkpointer):
    """A ``Checkpointer`` with atomic saves and a recovery that falls back.

    A drop-in replacement of ``speechbrain.utils.checkpoints.Checkpointer``
    (same arguments, same folder layout, checkpoints readable by either):

    - **atomic save**: the meta file is written as ``CKPT.yaml.pending``;
      once every recoverable is saved, the files are flushed to disk and
      it is renamed ``CKPT.yaml``, which is what makes SpeechBrain list the
      folder. A process killed in between leaves a folder that is never
      loaded; the next :meth:`recover_if_possible` deletes it.
    - **recovery with a fallback**: :meth:`recover_if_possible` tries the
      checkpoints in the order SpeechBrain ranks them (most recent first,
      or by ``max_key``/``min_key``); one that fails to load is reported
      in one warning line, renamed ``broken-CKPT+...`` (kept for
      inspection, never loaded again, not counted by the retention of
      ``save_and_keep_only``) and the next one is tried. When none loads
      (e.g. a network that no longer matches its checkpoints), nothing is
      renamed and the first error is raised.
    - a checkpoint whose ``CKPT.yaml`` cannot be read is skipped with a
      warning instead of stopping the listing of the others.

    In DDP, recovery is collective (all ranks call it, as ``Brain.fit``
    and ``Brain.evaluate`` do); only the main process renames or deletes.

    Example
    -------
    >>> folder = getfixture("tmp_path") / "save"
    >>> net = torch.nn.Linear(1, 1)
    >>> checkpointer = SafeCheckpointer(folder, {"net": net})
    >>> old = checkpointer.save_checkpoint(meta={"n": 1})
    >>> new = checkpointer.save_checkpoint(meta={"n": 2})
    >>> _ = new.paramfiles["net"].write_bytes(b"truncated")
    >>> checkpointer.recover_if_possible().meta["n"]  # warns, falls back
    1
    >>> sorted(p.name.split("+")[0] for p in folder.iterdir())
    ['CKPT', 'broken-CKPT']
    """

    def save_checkpoint(
        self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO
    ):
        """``Checkpointer.save_checkpoint``, committed atomically at the end.

        Arguments and return value as in SpeechBrain's method.
        """
        checkpoint = super().save_checkpoint(
            meta=meta or {},
            end_of_epoch=end_of_epoch,
            name=name,
            verbosity=verbosity,
        )
        ddp_barrier()  # every rank has written its files
        if checkpoint is not None:
            folder = pathlib.Path(checkpoint.path)
            for path in folder.iterdir():
                _fsync(path)
            os.replace(folder / PENDING_META, folder / METAFNAME)
            _fsync(folder)
            _fsync(folder.parent)
        return checkpoint

    def _save_checkpoint_metafile(
        self, fpath, meta_to_include=None, end_of_epoch=True
    ):
        """Write the meta file under its pending name (committed later)."""
        pending = pathlib.Path(fpath).with_name(PENDING_META)
        return super()._save_checkpoint_metafile(
            pending, meta_to_include or {}, end_of_epoch
        )

    def list_checkpoints(self):
        """The committed checkpoints; one with an unreadable ``CKPT.yaml``
        is skipped with a warning."""
        checkpoints = []
        for folder in self._list_checkpoint_dirs():
            try:
                found = self._construct_checkpoint_objects([folder])
                _check_meta(found[0].meta)
            except Exception as error:
                logger.warning(
                    f"Skipping checkpoint {folder.name}: its {METAFNAME} "
                    f"cannot be read ({_one_line(error)})."
                )
                continue
            checkpoints.extend(found)
        return checkpoints

    def unfinished_checkpoints(self):
        """Folders of saves that never finished (no ``CKPT.yaml``).

        Example
        -------
        >>> folder = getfixture("tmp_path") / "save"
        >>> checkpointer = SafeCheckpointer(folder)
        >>> (folder / "CKPT+killed").mkdir()
        >>> _ = (folder / "CKPT+killed" / "CKPT.yaml.pending").write_text("")
        >>> [p.name for p in checkpointer.unfinished_checkpoints()]
        ['CKPT+killed']
        """
        return sorted(
            path
            for path in self.checkpoints_dir.glob(f"{CKPT_PREFIX}+*")
            if path.is_dir()
            and (path / PENDING_META).exists()
            and not (path / METAFNAME).exists()
        )

    def _remove_unfinished(self):
        if not if_main_process():
            return
        for path in self.unfinished_checkpoints():
            logger.warning(
                f"Deleting {path.name}: a checkpoint save that never "
                "finished (the process was stopped while writing it)."
            )
            shutil.rmtree(path, ignore_errors=True)

    def recover_if_possible(
        self,
        importance_key=None,
        max_key=None,
        min_key=None,
        ckpt_predicate=None,
    ):
        """Load the best loadable checkpoint; see the class documentation.

        Arguments and return value as in SpeechBrain's method: the
        checkpoint loaded, or None when there is none.
        """
        self._remove_unfinished()
        candidates = self.find_checkpoints(
            importance_key=importance_key,
            max_key=max_key,
            min_key=min_key,
            ckpt_predicate=ckpt_predicate,
        )
        if not candidates:
            logger.info("Would load a checkpoint here, but none found yet.")
            return None
        broken, errors, loaded = [], [], None
        for checkpoint in candidates:
            try:
                self.load_checkpoint(checkpoint)
            except Exception as error:
                logger.warning(
                    f"Checkpoint {checkpoint.path.name} cannot be loaded "
                    f"({_one_line(error)}); trying the previous one."
                )
                broken.append(checkpoint)
                errors.append(error)
                self._forget_partial_load()
                continue
            loaded = checkpoint
            break
        if loaded is None:
            raise RuntimeError(
                f"None of the {len(candidates)} checkpoints in "
                f"{self.checkpoints_dir} can be loaded; the newest fails "
                f"with {_one_line(errors[0])}. If the network or its "
                "settings changed since they were saved, use a new "
                "output_folder."
            ) from errors[0]
        ddp_barrier()  # every rank has read the folders it needed
        if broken and if_main_process():
            for checkpoint in broken:
                path = pathlib.Path(checkpoint.path)
                aside = path.with_name(BROKEN_PREFIX + path.name)
                os.replace(path, aside)
                logger.warning(f"{path.name} moved aside to {aside.name}.")
        return loaded

    def _forget_partial_load(self):
        """Undo what a failed load left that the next one will not reset:
        a ``SaveableDataLoader``'s pending fast-forward (an end-of-epoch
        checkpoint leaves it as it is)."""
        for obj in self.recoverables.values():
            if hasattr(obj, "_speechbrain_recovery_skip_to"):
                obj._speechbrain_recovery_skip_to = None


@register_checkpoint_hooks
class RandomState:
    """Torch's random number generator states, as a recoverable.

    Saved: the CPU generator and, on a CUDA device, that device's. Loading
    sets them back, so that what a run draws after a resume (random crops,
    diffusion times, noise) is what it would have drawn without the
    interruption. The state saved is the main process's; in DDP every rank
    gets it back (SpeechBrain seeds all ranks alike in the first place).
    A ``DataLoader`` created after the recovery must not draw from the
    global generator for exact repetition (give it its own ``generator``,
    as :class:`~speechbrain_elbo.brains.base.EnhancementBrain` does).

    Arguments
    ---------
    device : str or torch.device
        The training device.

    Example
    -------
    >>> path = getfixture("tmp_path") / "rng.ckpt"
    >>> state = RandomState("cpu")
    >>> state.save(path)
    >>> first = torch.rand(3)
    >>> state.load(path, end_of_epoch=False)
    >>> torch.equal(torch.rand(3), first)
    True
    """

    def __init__(self, device="cpu"):
        self.device = torch.device(device)

    def _cuda(self):
        return self.device.type == "cuda" and torch.cuda.is_available()

    @mark_as_saver
    def save(self, path):
        """Write the generator states to ``path``."""
        state = {"cpu": torch.get_rng_state()}
        if self._cuda():
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch):
        """Set the generator states saved in ``path`` (weights only)."""
        del end_of_epoch
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "cpu" not in state:
            raise ValueError(f"{path} holds no random generator state.")
        torch.set_rng_state(state["cpu"])
        if self._cuda() and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)
