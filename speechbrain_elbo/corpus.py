"""Enhance a whole corpus, in one process or many (``torchrun``), resumably.

:func:`enhance_corpus` is what ``speechbrain-elbo-enhance`` runs, and its
Python entry point. Under ``torchrun --nproc_per_node=N [--nnodes=M ...]``
each process (rank) enhances its own share of the files on its own device
(``cuda:LOCAL_RANK``, or the CPU), and rank 0 writes the merged manifest and
reports the totals. Started without ``torchrun`` it is one process.

- **Checks first.** Before the model is loaded, every input is read
  (header and samples: unreadable, empty, several channels, NaN/Inf, all
  zeros) and the output folder and the manifest's folder are tried for
  writing. Every bad input is reported on its own line; without
  ``skip_errors`` the run stops there (:class:`BadInputsError`), nothing
  loaded, nothing written. Inputs too short for the model are found right
  after loading it, before anything is enhanced, and treated alike. With
  ``skip_errors`` the bad inputs are ``failed`` rows and the rest is
  enhanced.
- **Plan.** The inputs are collected in a fixed order (arguments in the
  order given, folders sorted), and cut into *units*
  (:func:`plan_units`): batches of equal-length files at the model's rate,
  and single files (long ones, streamed in chunks, and other rates). The
  plan does not depend on the number of processes, so every file is
  enhanced in the same batch whatever that number.
- **Shards.** The units that still have work are dealt to the ranks by
  duration, longest first to the least loaded rank (:func:`balance_units`),
  so that the ranks finish together.
- **Noise.** Each file's noise comes from its own generator, seeded with
  :func:`~speechbrain_elbo.pipeline.utterance_seed` of the seed and the
  file's output path relative to the output folder: it depends on the seed
  and the file only, not on the batch, the rank or the order. With the
  same batch size, device type and thread count the outputs are
  byte-identical whatever the number of processes.
- **Atomic outputs, resume.** Each output is written to a temporary file
  and renamed (:mod:`speechbrain_elbo.fileio`): an output that exists is
  complete. With ``resume`` the files whose output exists are skipped (a
  batch with some outputs missing is enhanced whole, for the same numbers,
  and only the missing outputs are written).
- **Manifest.** Each rank appends a row per file to its part
  (``manifest.rank<R>-of-<N>.csv``, flushed per row, the record of a killed
  run); at the end the rows are gathered and rank 0 writes the manifest
  (:data:`MANIFEST_FIELDS`, one row per input, in input order) and removes
  the parts. A file that fails while enhancing (an error, or an output
  that departs grossly from its input,
  :mod:`speechbrain_elbo.output_check`) is a row with status ``failed``
  and its one-line reason; the other files go on.

``torch.distributed`` is used for three things only: rank 0's list of
existing outputs, sent to all (so that no rank sees another's fresh
outputs), the gathering of the manifest rows, and the synchronisation
these imply. These are Python objects, so the process group is ``gloo``
on any device.

Example
-------
>>> import soundfile as sf
>>> tmp = getfixture("tmp_path")
>>> (tmp / "in").mkdir()
>>> for name in ("a", "b"):
...     sf.write(tmp / "in" / f"{name}.wav", torch.randn(4000).numpy() / 8,
...              16000)
>>> summary = enhance_corpus([tmp / "in"], tmp / "out", "minivb-small",
...     steps=1, use_refiner=False, device="cpu")
>>> summary.enhanced, summary.failed, sorted(p.name for p in
...     (tmp / "out").iterdir())
(2, 0, ['a.wav', 'b.wav', 'manifest.csv'])
>>> again = enhance_corpus([tmp / "in"], tmp / "out", "minivb-small",
...     steps=1, use_refiner=False, device="cpu", resume=True)
>>> again.enhanced, again.skipped
(0, 2)
"""

import collections
import contextlib
import csv
import datetime
import os
import pathlib
import sys
import time
from typing import NamedTuple

import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.distributed import (
    ddp_broadcast,
    get_local_rank,
    get_rank,
    infer_device,
    is_distributed_initialized,
)

from speechbrain_elbo.audio_input import check_audio_content
from speechbrain_elbo.fileio import write_audio_atomic, write_csv_atomic
from speechbrain_elbo.output_check import EnhancementOutputError
from speechbrain_elbo.pipeline import utterance_seed

__all__ = [
    "BadInputsError",
    "MANIFEST_FIELDS",
    "Unit",
    "CorpusSummary",
    "plan_units",
    "balance_units",
    "rank_device",
    "read_manifest",
    "enhance_corpus",
]

#: Columns of the manifest: the input and output files, the input's
#: duration (s), the wall time spent on it (s; a batch's time is shared by
#: duration), the score-network evaluations per file, the status
#: (``enhanced``, ``skipped`` or ``failed``), the reason of a failure, and
#: the rank that did it.
MANIFEST_FIELDS = (
    "input",
    "output",
    "duration",
    "seconds",
    "nfe",
    "status",
    "reason",
    "rank",
)

#: How long a rank waits for the others at the end (the slowest rank's
#: extra time): generous, for long runs on uneven machines.
GROUP_TIMEOUT = datetime.timedelta(days=7)


class BadInputsError(ValueError):
    """Inputs that cannot be enhanced, found before any enhancement.

    Attributes
    ----------
    reasons : dict
        Input index -> its one-line reason.
    """

    def __init__(self, message, reasons):
        super().__init__(message)
        self.reasons = reasons


class Unit(NamedTuple):
    """Files enhanced together.

    Attributes
    ----------
    members : tuple of int
        Indices of the files in the input list.
    seconds : float
        Their total duration.
    batched : bool
        True: equal-length files enhanced as one batch; False: one file
        enhanced on its own (streamed in chunks, or resampled).
    """

    members: tuple
    seconds: float
    batched: bool


class CorpusSummary(NamedTuple):
    """What :func:`enhance_corpus` did, over all processes.

    Attributes
    ----------
    files : int
        Inputs.
    enhanced, skipped, failed : int
        Files enhanced now, skipped (``resume``: their output existed) and
        failed.
    audio_seconds : float
        Duration of the files enhanced now.
    wall_seconds : float
        Wall time of the run (rank 0's, model loading included).
    processes : int
        Number of processes (ranks).
    manifest : pathlib.Path
        The merged manifest.
    """

    files: int
    enhanced: int
    skipped: int
    failed: int
    audio_seconds: float
    wall_seconds: float
    processes: int
    manifest: pathlib.Path


def plan_units(infos, sample_rate, max_frames, batch_size):
    """Cut the files into units: batches of equal length, and single files.

    Files at ``sample_rate`` with at most ``max_frames`` samples are grouped
    by length (in order of first appearance) and each group is cut into
    batches of ``batch_size`` in input order; the other files are single
    units, after the batches. The plan depends on the files only, never on
    the number of processes.

    Arguments
    ---------
    infos : list of speechbrain_elbo.fileio.AudioInfo or None
        Header of each file; None for a file that cannot be enhanced (it
        gets no unit).
    sample_rate : int
        The model's rate.
    max_frames : int
        Longest file enhanced whole (longer ones are streamed in chunks).
    batch_size : int
        Files per batch.

    Returns
    -------
    list of Unit

    Example
    -------
    >>> from speechbrain_elbo.fileio import AudioInfo
    >>> infos = [AudioInfo(8000, 16000, 1), AudioInfo(4000, 16000, 1),
    ...          AudioInfo(8000, 16000, 1), None, AudioInfo(8000, 8000, 1),
    ...          AudioInfo(8000, 16000, 1)]
    >>> for unit in plan_units(infos, 16000, 16000, batch_size=2):
    ...     print(unit)
    Unit(members=(0, 2), seconds=1.0, batched=True)
    Unit(members=(5,), seconds=0.5, batched=True)
    Unit(members=(1,), seconds=0.25, batched=True)
    Unit(members=(4,), seconds=1.0, batched=False)
    """
    groups = collections.defaultdict(list)
    singles = []
    for index, info in enumerate(infos):
        if info is None:
            continue
        if info.sample_rate == sample_rate and info.frames <= max_frames:
            groups[info.frames].append(index)
        else:
            singles.append(
                Unit((index,), info.frames / info.sample_rate, False)
            )
    units = []
    for frames, members in groups.items():
        for start in range(0, len(members), batch_size):
            batch = tuple(members[start : start + batch_size])
            units.append(Unit(batch, len(batch) * frames / sample_rate, True))
    return units + singles


def balance_units(seconds, world_size):
    """Deal units to ranks by duration: longest first, to the least loaded.

    Deterministic (ties go to the earlier unit and the lower rank); each
    rank's units are returned in their original order.

    Arguments
    ---------
    seconds : list of float
        Duration of each unit.
    world_size : int
        Number of ranks.

    Returns
    -------
    list of list of int
        The unit indices of each rank.

    Example
    -------
    >>> balance_units([4.0, 1.0, 1.0, 3.0, 1.0], 2)
    [[0, 2], [1, 3, 4]]
    """
    loads = [0.0] * world_size
    shards = [[] for _ in range(world_size)]
    for index in sorted(range(len(seconds)), key=lambda i: (-seconds[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shards[rank].append(index)
        loads[rank] += seconds[index]
    return [sorted(shard) for shard in shards]


def rank_device(device, local_rank):
    """The device of a process: ``device``, given the rank's index under
    ``torchrun``.

    Without a local rank (no ``torchrun``) ``device`` is returned as is
    (None: the interface picks one). Under ``torchrun`` no device means
    ``cuda:LOCAL_RANK`` when there is a GPU, else the CPU, and a device
    type without an index (``cuda``) gets ``LOCAL_RANK`` as its index.

    Example
    -------
    >>> rank_device("cuda", 3), rank_device("cuda:0", 3)
    ('cuda:3', 'cuda:0')
    >>> rank_device("cpu", 1), rank_device(None, None)
    ('cpu', None)
    """
    if local_rank is None:
        return device
    if device is None:
        return infer_device()
    kind, _, index = str(device).partition(":")
    if kind != "cpu" and not index:
        return f"{kind}:{local_rank}"
    return str(device)


def read_manifest(path):
    """The rows of a manifest (or of a rank's part), as dicts of strings.

    Example
    -------
    >>> path = getfixture("tmp_path") / "m.csv"
    >>> write_csv_atomic(path, [{"input": "a.wav", "status": "enhanced"}],
    ...                  MANIFEST_FIELDS)
    >>> read_manifest(path)[0]["status"]
    'enhanced'
    """
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@contextlib.contextmanager
def _process_group():
    """(rank, world size); a gloo group while WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world > 1 and not is_distributed_initialized():
        torch.distributed.init_process_group(
            backend="gloo",
            rank=get_rank(),
            world_size=world,
            timeout=GROUP_TIMEOUT,
        )
        started = True
    try:
        if is_distributed_initialized():
            yield (
                torch.distributed.get_rank(),
                torch.distributed.get_world_size(),
            )
        else:
            yield 0, 1
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _gather(rows, world):
    if world == 1:
        return [rows]
    everyone = [None] * world
    torch.distributed.all_gather_object(everyone, rows)
    return everyone


def _one_line(error, source):
    text = " ".join(str(error).split()).rstrip(".") or type(error).__name__
    return text if str(source) in text else f"{source}: {text}"


def _load_enhancer(model, device, quiet, chunk_seconds, overlap_seconds):
    """The model: an interface, ``model(device)``, or a folder/name."""
    if isinstance(model, Pretrained):
        return model
    if callable(model):
        return model(device)
    from speechbrain_elbo.cli import resolve_model
    from speechbrain_elbo.inference import DiffusionEnhancement

    kwargs = {}
    if chunk_seconds is not None:
        kwargs["chunk_seconds"] = chunk_seconds
    if overlap_seconds is not None:
        kwargs["overlap_seconds"] = overlap_seconds
    return DiffusionEnhancement.from_hparams(
        source=resolve_model(model, quiet),
        run_opts={} if device is None else {"device": device},
        **kwargs,
    )


def _check_cuda_index(device, rank):
    kind, _, index = str(device).partition(":")
    if kind != "cuda" or not index.isdigit():
        return
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise ValueError(
            f"process {rank} would run on {device}, but this machine has "
            f"{count} CUDA device(s): start at most {count} processes per "
            "machine (torchrun --nproc_per_node) or pass --device cpu"
        )


class _Part:
    """A rank's manifest part: rows appended and flushed one by one."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(
            self.handle, MANIFEST_FIELDS, extrasaction="ignore"
        )
        self.writer.writeheader()
        self.rows = []

    def add(self, row):
        self.rows.append(row)
        self.writer.writerow(
            {
                key: f"{value:.4f}" if isinstance(value, float) else value
                for key, value in row.items()
            }
        )
        self.handle.flush()

    def close(self):
        self.handle.close()


def _remove_stale_parts(target):
    """Temporary files of ``target`` left by a killed run."""
    for stale in target.parent.glob(f".{target.name}.*.part"):
        stale.unlink(missing_ok=True)


class _Runner:
    """Enhances units on one rank and records a row per file."""

    def __init__(self, enhancer, pairs, keys, infos, settings, part, rank):
        self.enhancer = enhancer
        self.pairs = pairs
        self.keys = keys
        self.infos = infos
        self.settings = settings
        self.part = part
        self.rank = rank
        self.options = dict(
            sampler=settings["sampler"],
            steps=settings["steps"],
            corrector_steps=settings["corrector_steps"],
            use_refiner=settings["use_refiner"],
            check_output=settings["check_output"],
        )

    def duration(self, index):
        info = self.infos[index]
        return None if info is None else info.frames / info.sample_rate

    def record(self, index, status, seconds=None, nfe=None, reason=""):
        source, target = self.pairs[index]
        self.part.add(
            dict(
                index=index,
                input=str(source),
                output=str(target),
                duration=self.duration(index),
                seconds=seconds,
                nfe=nfe,
                status=status,
                reason=reason,
                rank=self.rank,
            )
        )

    def fail(self, index, reason):
        from tqdm.auto import tqdm

        tqdm.write(f"{self.settings['prog']}: error: {reason}", file=sys.stderr)
        self.record(index, "failed", reason=reason)

    def seed(self, index):
        return utterance_seed(self.settings["seed"], self.keys[index])

    def run(self, unit, done, progress):
        """Enhance ``unit``; ``done`` holds the indices not to write."""
        if all(index in done for index in unit.members):
            for index in unit.members:
                self.record(index, "skipped")
            return
        if self.settings["resume"]:
            for index in unit.members:
                _remove_stale_parts(self.pairs[index][1])
        start = time.perf_counter()
        if unit.batched:
            self._batch(unit, done, start)
        else:
            self._single(unit.members[0], start, progress)

    def _batch(self, unit, done, start):
        enhancer = self.enhancer
        members, waves = [], []
        for index in unit.members:
            source = self.pairs[index][0]
            try:
                wave = enhancer.load_waveform(source, self.settings["mix_down"])
                enhancer.check_waveforms(wave[None], names=[str(source)])
            except Exception as error:
                self.fail(index, _one_line(error, source))
                continue
            members.append(index)
            waves.append(wave)
        if not members:
            return
        departed = [None] * len(members)
        try:
            enhanced = enhancer.enhance_batch(
                torch.stack(waves),
                seed=[self.seed(index) for index in members],
                **self.options,
            )
        except EnhancementOutputError as error:
            # the others of the batch are fine: keep them
            enhanced, departed = error.enhanced, error.departures
        except Exception as error:
            for index in members:
                self.fail(index, _one_line(error, self.pairs[index][0]))
            return
        written = []
        for index, wav, reason in zip(members, enhanced, departed, strict=True):
            source, target = self.pairs[index]
            if index in done:
                self.record(index, "skipped")
                continue
            if reason is not None:
                self.fail(index, f"{source}: {reason}; not written")
                continue
            try:
                write_audio_atomic(
                    target, wav, enhancer.sample_rate, self.settings["subtype"]
                )
            except Exception as error:
                self.fail(index, _one_line(error, source))
                continue
            written.append(index)
        # the batch's time, shared by duration
        seconds = time.perf_counter() - start
        total = sum(self.duration(index) for index in members)
        for index in written:
            share = seconds * self.duration(index) / total
            self.record(index, "enhanced", share, enhancer.last_nfe)

    def _single(self, index, start, progress):
        source, target = self.pairs[index]
        try:
            self.enhancer._enhance_file(
                source,
                target,
                self.settings["mix_down"],
                self.settings["subtype"],
                False,
                progress=progress,
                seed=self.seed(index),
                **self.options,
            )
        except Exception as error:
            self.fail(index, _one_line(error, source))
            return
        seconds = time.perf_counter() - start
        self.record(index, "enhanced", seconds, self.enhancer.last_nfe)


def _check_inputs(pairs, mix_down, done):
    """Each input's header, or the one-line reason it cannot be enhanced.

    Every sample is read (:func:`check_audio_content`), except in the files
    whose output exists (``done``: they are skipped), of which only the
    header is.
    """
    from speechbrain_elbo.audio_input import check_audio_file

    infos, reasons = [], {}
    for index, (source, _) in enumerate(pairs):
        check = check_audio_file if index in done else check_audio_content
        try:
            info = check(source, mix_down, mix_down_hint="pass --mix-down")
        except Exception as error:
            info = None
            reasons[index] = _one_line(error, source)
        infos.append(info)
    return infos, reasons


def _too_short(pairs, infos, enhancer):
    """Inputs shorter than the model needs (after resampling), by index."""
    reasons = {}
    for index, info in enumerate(infos):
        if info is None:
            continue
        frames = info.frames * enhancer.sample_rate / info.sample_rate
        if frames < enhancer.min_samples:
            reasons[index] = (
                f"{pairs[index][0]} has {info.frames} samples at "
                f"{info.sample_rate} Hz, fewer "
                f"than the {enhancer.min_samples} at {enhancer.sample_rate} "
                "Hz the model needs: too short to enhance"
            )
    return reasons


def _check_writable(folder, what):
    """Try writing in ``folder`` (or its nearest existing parent, which
    must be a folder); one clear error naming ``folder`` if it fails.
    Nothing is created."""
    import tempfile

    folder = pathlib.Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{what} {folder} cannot be created: {existing} is a file, not a "
            "folder; choose another"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test."):
            pass
    except OSError as error:
        raise PermissionError(
            f"{what} {folder} is not writable ({error.strerror or error}); "
            "choose another"
        ) from error


def _stop_for_bad_inputs(reasons, pairs, prog, rank, late=False):
    """Report every bad input (one line each) and raise one summary."""
    total = len(pairs)
    bad = len(reasons)
    rest = total - bad
    when = "nothing was enhanced" if late else "nothing was loaded or enhanced"
    advice = (
        f"fix or remove {'it' if bad == 1 else 'them'}, or pass "
        f"--skip-errors to enhance the other {rest}"
        if rest
        else "fix or remove them"
    )
    if bad == 1:
        ((index, reason),) = reasons.items()
        message = reason if total == 1 else f"{reason}; {when}: {advice}"
    else:
        if rank == 0:
            for index in sorted(reasons):
                print(f"{prog}: error: {reasons[index]}", file=sys.stderr)
        message = (
            f"{bad} of {total} inputs cannot be enhanced (listed above); "
            f"{when}: {advice}"
        )
    raise BadInputsError(message, reasons)


def _summary(rows, world, wall, manifest):
    count = collections.Counter(row["status"] for row in rows)
    audio = sum(row["duration"] for row in rows if row["status"] == "enhanced")
    return CorpusSummary(
        files=len(rows),
        enhanced=count["enhanced"],
        skipped=count["skipped"],
        failed=count["failed"],
        audio_seconds=float(audio),
        wall_seconds=wall,
        processes=world,
        manifest=manifest,
    )


def enhance_corpus(
    inputs,
    out_dir,
    model=None,
    *,
    device=None,
    sampler=None,
    steps=None,
    corrector_steps=None,
    use_refiner=None,
    seed=0,
    batch_size=4,
    chunk_seconds=None,
    overlap_seconds=None,
    mix_down=False,
    subtype=None,
    overwrite=False,
    resume=False,
    manifest=None,
    quiet=True,
    prog="speechbrain_elbo.corpus",
    skip_errors=False,
    check_output=True,
):
    """Enhance audio files and folders into ``out_dir``, on every rank.

    Call it in every process of a ``torchrun`` launch (or in one process);
    see the module's description for the plan, the shards, the noise,
    ``resume`` and the manifest. Outputs are ``<out_dir>/<name>.wav``, under
    a folder input's relative path
    (:func:`speechbrain_elbo.cli.collect_inputs`).

    Arguments
    ---------
    inputs : list of str or pathlib.Path
        Audio files and folders (searched recursively).
    out_dir : str or pathlib.Path
        Output folder (a shared file system when several machines write).
    model : str, DiffusionEnhancement or callable, optional
        An exported folder or a bundled model's name (default: the bundled
        ``minivb-small``), a loaded interface, or ``model(device)``
        returning one (device None: the interface's choice).
    device : str, optional
        ``cpu``, ``cuda``...; see :func:`rank_device`.
    sampler, steps, corrector_steps, use_refiner :
        Sampling settings, as in
        :meth:`~speechbrain_elbo.inference.DiffusionEnhancement.enhance_batch`.
    seed : int
        With each file's output path, seeds the file's noise.
    batch_size : int
        Equal-length files enhanced together.
    chunk_seconds, overlap_seconds : float, optional
        Longer files are streamed in chunks (when ``model`` is loaded
        here).
    mix_down : bool
        Average multi-channel files to mono instead of failing them.
    subtype : str, optional
        soundfile subtype of the outputs (default 32-bit float).
    overwrite : bool
        Replace existing outputs.
    resume : bool
        Skip the files whose output exists (written by an earlier,
        perhaps killed, run with the same settings).
    manifest : str or pathlib.Path, optional
        The merged manifest (default ``<out_dir>/manifest.csv``).
    quiet : bool
        No progress bar and no totals (failures are always reported).
    prog : str
        Prefix of the lines written on stderr.
    skip_errors : bool
        Enhance the good inputs when some are bad (the bad ones are
        ``failed`` rows); without it a bad input stops the run before the
        model is loaded (or, too short for the model, before anything is
        enhanced), after every bad input has been reported.
    check_output : bool
        Fail (and do not write) a file whose output departs grossly from
        its input (:mod:`speechbrain_elbo.output_check`); False writes it
        anyway (the departure is still logged).

    Returns
    -------
    CorpusSummary
        The same on every rank.

    Raises
    ------
    FileExistsError
        If an output exists and neither ``overwrite`` nor ``resume`` is
        set.
    BadInputsError
        If inputs cannot be enhanced and ``skip_errors`` is not set.
    OSError
        If the output folder or the manifest's folder cannot be written.
    ValueError
        For settings that cannot be used (on every rank alike).
    """
    from speechbrain_elbo.cli import collect_inputs

    start = time.perf_counter()
    if batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    if overwrite and resume:
        raise ValueError(
            "--resume keeps existing outputs and --overwrite replaces them: "
            "pass one of them"
        )
    pairs = collect_inputs(inputs, out_dir)
    out_dir = pathlib.Path(out_dir).absolute()
    manifest = pathlib.Path(manifest or out_dir / "manifest.csv")
    keys = [target.relative_to(out_dir).as_posix() for _, target in pairs]
    with _process_group() as (rank, world):
        # one look at the outputs, before any rank writes
        done = ddp_broadcast(
            {i for i, (_, target) in enumerate(pairs) if target.exists()}
            if rank == 0
            else None
        )
        if done and not (overwrite or resume):
            target = pairs[min(done)][1]
            raise FileExistsError(
                f"{target} exists; pass --overwrite to replace it or "
                "--resume to keep it"
            )
        if overwrite:
            done = set()
        # everything that can be checked without the model, by rank 0
        checked = None
        if rank == 0:
            try:
                _check_writable(out_dir, "the output folder")
                _check_writable(manifest.parent, "the manifest's folder")
                checked = _check_inputs(pairs, mix_down, done)
            except OSError as error:
                checked = error
        checked = ddp_broadcast(checked)
        if isinstance(checked, OSError):
            raise checked
        infos, reasons = checked
        if reasons and not skip_errors:
            _stop_for_bad_inputs(reasons, pairs, prog, rank)
        local = rank_device(device, get_local_rank())
        _check_cuda_index(local, rank)
        enhancer = _load_enhancer(
            model, local, quiet or rank > 0, chunk_seconds, overlap_seconds
        )
        enhancer.make_sampler(sampler, steps, corrector_steps)
        enhancer._use_refiner(use_refiner)
        short = _too_short(pairs, infos, enhancer)
        if short and not skip_errors:
            _stop_for_bad_inputs(short, pairs, prog, rank, late=True)
        for index, reason in short.items():
            infos[index] = None
            reasons[index] = reason
        units = plan_units(
            infos,
            enhancer.sample_rate,
            int(round(enhancer.chunk_seconds * enhancer.sample_rate)),
            batch_size,
        )
        todo = [u for u in units if not set(u.members) <= done]
        shard = balance_units([u.seconds for u in todo], world)[rank]
        mine = [todo[i] for i in shard]
        if rank == 0:  # rank 0 also records what needs no work
            mine = [u for u in units if set(u.members) <= done] + mine
        settings = dict(
            sampler=sampler,
            steps=steps,
            corrector_steps=corrector_steps,
            use_refiner=use_refiner,
            seed=seed,
            mix_down=mix_down,
            subtype=subtype,
            resume=resume,
            prog=prog,
            check_output=check_output,
        )
        name = f"{manifest.stem}.rank{rank}-of-{world}{manifest.suffix}"
        part = _Part(manifest.with_name(name))
        try:
            runner = _Runner(enhancer, pairs, keys, infos, settings, part, rank)
            if rank == 0:
                for index, reason in reasons.items():
                    runner.fail(index, reason)
            _run_units(runner, mine, done, quiet or rank > 0, prog)
        finally:
            part.close()
        everyone = _gather(part.rows, world)
        rows = sorted(
            (row for rows in everyone for row in rows),
            key=lambda row: row["index"],
        )
        summary = _summary(rows, world, time.perf_counter() - start, manifest)
        if rank == 0:
            write_csv_atomic(manifest, rows, MANIFEST_FIELDS, float_digits=4)
            stem = f"{manifest.stem}.rank*-of-*{manifest.suffix}"
            for stale in manifest.parent.glob(stem):
                stale.unlink(missing_ok=True)
            if not quiet:
                _report(summary, prog)
        part.path.unlink(missing_ok=True)
    return summary


def _run_units(runner, units, done, quiet, prog):
    """Enhance ``units`` with a progress bar in seconds of audio."""
    from tqdm.auto import tqdm

    work = [u for u in units if not set(u.members) <= done]
    bar = tqdm(
        total=round(sum(u.seconds for u in work), 2),
        unit="s",
        unit_scale=False,
        bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of audio "
            "[{elapsed}<{remaining}]"
        ),
        disable=quiet,
        desc=prog,
        file=sys.stderr,
    )
    with bar:
        for unit in units:
            if set(unit.members) <= done:
                runner.run(unit, done, None)
                continue
            # a streamed file advances the bar per chunk, then settles on
            # the unit's duration
            before = bar.n
            runner.run(unit, done, bar.update if not unit.batched else None)
            if unit.batched:
                bar.update(unit.seconds)
            else:
                bar.n = before + unit.seconds
                bar.refresh()


def _report(summary, prog):
    rate = summary.audio_seconds / max(summary.wall_seconds, 1e-9)
    print(
        f"{prog}: {summary.files} files: {summary.enhanced} enhanced "
        f"({summary.audio_seconds:.1f} s of audio), {summary.skipped} "
        f"skipped, {summary.failed} failed; {summary.processes} "
        f"process(es), {summary.wall_seconds:.1f} s "
        f"({rate:.2f} hours of audio per hour); manifest "
        f"{summary.manifest}",
        file=sys.stderr,
    )
