"""``speechbrain-elbo-enhance``: enhance audio files from the command line.

Usage (also ``python -m speechbrain_elbo``)::

    speechbrain-elbo-enhance [--model MODEL] INPUT [INPUT ...] --out OUT_DIR
        [--steps N] [--sampler {pc,euler,heun,ode}] [--corrector-steps N]
        [--seed S] [--device DEV] [--backend {torch,onnxruntime}]
        [--threads N] [--precision {fp32,bf16,fp16}] [--no-refiner]
        [--batch-size B]
        [--chunk-seconds S] [--overlap-seconds S] [--mix-down]
        [--mix-noisy SHARE] [--subtype SUBTYPE] [--overwrite | --resume]
        [--manifest CSV]
        [--skip-errors] [--no-output-check] [--trust-model] [--quiet]

MODEL is an exported model folder, the name of a bundled model (see
:func:`speechbrain_elbo.pretrained.available`) or a Hugging Face Hub id
``org/name`` (fetched as ``from_hparams`` does); without ``--model`` the
bundled ``minivb-small`` is used, which the command says on stderr.
INPUT are audio files or folders (searched recursively for audio files).
Each output is written to OUT_DIR as ``<name>.wav`` (for folders, under the
same relative path), atomically. Inputs of equal length at the model's
sample rate are enhanced together in batches; long files are streamed in
overlapping chunks; other sample rates are resampled. The input is never
overwritten. Each file's noise depends on ``--seed`` and the file only.
Before the model is loaded, every input is read and the output folder
tried: each bad input is reported on its own line of stderr and the command
stops (status 1), unless ``--skip-errors`` enhances the others (status 3).
A file that fails while it is enhanced (an error, or an output that departs
grossly from its input: ``--no-output-check`` writes it anyway) is
reported on one line and the others go on (status 3); the manifest
(``OUT_DIR/manifest.csv``) has a row per input. Every output is within full
scale (scaled, never clipped, logged). ``--resume`` skips the files whose
output exists (a killed run goes on). Run under ``torchrun
--nproc_per_node=N`` it shares the files among the processes
(:mod:`speechbrain_elbo.corpus`). A model folder's ``hyperparams.yaml`` is
checked against an allow-list before it is loaded
(:mod:`speechbrain_elbo.trust`; ``--trust-model`` skips the check). Exit
status: 0 all enhanced, 1 error (nothing or not all enhanced), 2 malformed
command line, 3 finished with some files not enhanced (see the manifest),
130 on Ctrl-C, 143 on SIGTERM (both remove the temporary file being
written; ``--resume`` goes on).
The progress bar counts seconds of audio enhanced.

Example
-------
>>> main(["--model", "/nonexistent", "x.wav", "--out", "out"])
1
"""

import argparse
import contextlib
import pathlib
import signal
import sys
import threading

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}
PROG = "speechbrain-elbo-enhance"

EPILOG = """\
example:
  speechbrain-elbo-enhance noisy.wav recordings/ --out enhanced/ --steps 20

  Enhances noisy.wav and every audio file under recordings/ with the
  bundled model minivb-small into enhanced/ (--model FOLDER for your own).
"""

__all__ = [
    "main",
    "build_parser",
    "collect_inputs",
    "resolve_model",
    "AUDIO_SUFFIXES",
]


class CommandError(Exception):
    """A problem to report on one line, with exit status 1."""


class _Terminated(BaseException):
    """SIGTERM arrived (a scheduler, ``kill``, ``timeout``): unwind as
    Ctrl-C does, so that temporary files are removed on the way out."""


@contextlib.contextmanager
def _terminate_cleanly():
    """SIGTERM raises :class:`_Terminated` while the command runs (in the
    main thread; elsewhere the handler cannot be set and nothing
    changes)."""

    def stop(signum, frame):
        raise _Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser():
    """The argument parser of the command.

    Example
    -------
    >>> args = build_parser().parse_args(
    ...     ["--model", "m", "a.wav", "--out", "o", "--steps", "5"])
    >>> args.steps, args.sampler, args.inputs
    (5, None, ['a.wav'])
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Enhance noisy speech with a diffusion model exported by "
            "speechbrain_elbo (a folder with hyperparams.yaml) or bundled "
            "with it."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=None,
        help=(
            "exported model folder, a bundled model's name, or a "
            "Hugging Face Hub id org/name (default: the bundled "
            "minivb-small)"
        ),
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="audio files or folders"
    )
    parser.add_argument(
        "--out", required=True, help="output folder (created if needed)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="sampler steps N"
    )
    parser.add_argument(
        "--sampler",
        choices=["pc", "euler", "heun", "ode"],
        default=None,
        help="pc (predictor-corrector), euler or heun (ode = heun)",
    )
    parser.add_argument(
        "--corrector-steps",
        type=int,
        default=None,
        help="Langevin corrector steps per step (pc only)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (default 0)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1... (default: auto)"
    )
    parser.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help=(
            "what runs the networks: torch (default) or onnxruntime (faster "
            "on a CPU; pip install 'speechbrain_elbo[onnx]'; exported once "
            "and cached)"
        ),
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=(
            "CPU threads (default: at most the cores that other processes "
            "leave free, by the load average; 1 on a busy 2-core machine)"
        ),
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help=(
            "precision of the networks (default fp32; bf16/fp16 on a GPU, "
            "bf16 on a CPU with bf16 instructions)"
        ),
    )
    parser.add_argument(
        "--no-refiner",
        action="store_true",
        help="skip the stage-2 refiner of a two-stage model",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="equal-length files enhanced together (default 4)",
    )
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="files longer than this are enhanced in chunks (default 10)",
    )
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        default=None,
        help="overlap of consecutive chunks (default 1)",
    )
    parser.add_argument(
        "--mix-down",
        action="store_true",
        help="average multi-channel files to mono instead of refusing them",
    )
    parser.add_argument(
        "--mix-noisy",
        type=float,
        default=None,
        metavar="SHARE",
        help=(
            "mix this share (0-1) of each input back into its output, for "
            "speech recognition (docs/inference.md, 'Word error rate')"
        ),
    )
    parser.add_argument(
        "--subtype",
        default=None,
        help="soundfile subtype of the outputs (default FLOAT; e.g. PCM_16)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the files whose output exists (continue a killed run)",
    )
    parser.add_argument(
        "--manifest",
        default=None,
        help="CSV with a row per input (default OUT/manifest.csv)",
    )
    parser.add_argument(
        "--skip-errors",
        action="store_true",
        help=(
            "enhance the good inputs when some are bad (default: report "
            "every bad input and stop before loading the model); exit "
            "status 3 if any was skipped"
        ),
    )
    parser.add_argument(
        "--no-output-check",
        action="store_true",
        help=(
            "write outputs that depart grossly from their input (too few "
            "steps); default: such a file fails, with the settings to change"
        ),
    )
    parser.add_argument(
        "--trust-model",
        action="store_true",
        help=(
            "load a model folder whose hyperparams.yaml builds objects "
            "outside the allow-list (loading a folder runs its YAML)"
        ),
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar, no note about the default model",
    )
    return parser


def collect_inputs(inputs, out_dir):
    """Expand files and folders into (input file, output file) pairs.

    Folders are searched recursively for files with an audio suffix
    (:data:`AUDIO_SUFFIXES`), skipping anything inside ``out_dir``. An output
    keeps the input's name with a ``.wav`` suffix; under a folder input it
    keeps the path relative to that folder.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> (tmp / "in" / "sub").mkdir(parents=True)
    >>> for name in ("a.wav", "sub/b.flac", "notes.txt"):
    ...     _ = (tmp / "in" / name).write_bytes(b"")
    >>> pairs = collect_inputs([tmp / "in"], tmp / "out")
    >>> [(str(i.relative_to(tmp)), str(o.relative_to(tmp))) for i, o in pairs]
    [('in/a.wav', 'out/a.wav'), ('in/sub/b.flac', 'out/sub/b.wav')]
    """
    out_dir = pathlib.Path(out_dir).absolute()
    pairs = []
    for item in inputs:
        item = pathlib.Path(item)
        if item.is_dir():
            found = sorted(
                p
                for p in item.rglob("*")
                if p.is_file()
                and p.suffix.lower() in AUDIO_SUFFIXES
                and not _inside(p, out_dir)
            )
            if not found:
                raise CommandError(f"folder {item} contains no audio files")
            for path in found:
                rel = path.relative_to(item).with_suffix(".wav")
                pairs.append((path, out_dir / rel))
        elif item.is_file():
            pairs.append((item, out_dir / item.with_suffix(".wav").name))
        else:
            raise CommandError(f"input {item} does not exist")
    seen = {}
    for source, target in pairs:
        key = target.resolve()
        if key in seen and seen[key] != source.resolve():
            raise CommandError(
                f"inputs {seen[key]} and {source} would both be written to "
                f"{target}; enhance them into different --out folders"
            )
        seen[key] = source.resolve()
    inputs_resolved = {source.resolve() for source, _ in pairs}
    for _, target in pairs:
        if target.resolve() in inputs_resolved:
            raise CommandError(
                f"output {target} would overwrite an input file; choose "
                "another --out folder"
            )
    return pairs


def _inside(path, folder):
    try:
        path.absolute().relative_to(folder)
    except ValueError:
        return False
    return True


def resolve_model(model, quiet=False):
    """The source to load for ``--model``.

    Arguments
    ---------
    model : str or None
        An existing folder, a bundled model's name, a Hugging Face Hub id
        ``org/name`` (fetched by ``from_hparams``), or ``None`` for the
        bundled default (then one line on stderr names it, unless
        ``quiet``).
    quiet : bool
        Say nothing about the default.

    Returns
    -------
    str
        The model folder, or the hub id.

    Raises
    ------
    CommandError
        If ``model`` is not a folder, a bundled model's name or a hub id.

    Example
    -------
    >>> resolve_model("minivb-small").endswith("minivb-small")
    True
    >>> resolve_model("no-such-model")
    Traceback (most recent call last):
    ...
    speechbrain_elbo.cli.CommandError: --model no-such-model is neither a...
    """
    from speechbrain_elbo import pretrained
    from speechbrain_elbo.hub import is_hub_id

    if model is None:
        folder = pretrained.pretrained_path(pretrained.DEFAULT_MODEL)
        if not quiet:
            print(
                f"{PROG}: no --model given; using the bundled model "
                f"{pretrained.DEFAULT_MODEL} ({folder})",
                file=sys.stderr,
            )
        return str(folder)
    if pathlib.Path(model).is_dir():
        return str(model)
    names = pretrained.available()
    if model in names:
        return str(pretrained.pretrained_path(model))
    if is_hub_id(model):
        return model
    listing = ", ".join(names) if names else "none"
    raise CommandError(
        f"--model {model} is neither a folder, a bundled model nor a "
        f"Hugging Face Hub id (org/name); bundled models: {listing}"
    )


def _load_model(args):
    from speechbrain_elbo.inference import DiffusionEnhancement

    run_opts = {} if args.device is None else {"device": args.device}
    kwargs = {}
    if args.chunk_seconds is not None:
        kwargs["chunk_seconds"] = args.chunk_seconds
    if args.overlap_seconds is not None:
        kwargs["overlap_seconds"] = args.overlap_seconds
    kwargs["backend"] = args.backend
    kwargs["threads"] = args.threads
    kwargs["precision"] = args.precision
    return DiffusionEnhancement.from_hparams(
        source=resolve_model(args.model, args.quiet),
        run_opts=run_opts,
        check_yaml=not args.trust_model,
        **kwargs,
    )


def _run(args):
    """Enhance the inputs (:func:`speechbrain_elbo.corpus.enhance_corpus`).

    Returns its :class:`~speechbrain_elbo.corpus.CorpusSummary`.
    """
    from speechbrain.utils.distributed import if_main_process

    from speechbrain_elbo.corpus import enhance_corpus
    from speechbrain_elbo.inference import check_device

    if args.batch_size < 1:
        raise CommandError("--batch-size must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise CommandError("--steps must be >= 1")
    if args.corrector_steps is not None and args.corrector_steps < 0:
        raise CommandError("--corrector-steps must be >= 0")
    check_device(args.device, "--device")
    if args.threads is not None and args.threads < 1:
        raise CommandError("--threads must be >= 1")
    if args.mix_noisy is not None and not 0 <= args.mix_noisy <= 1:
        raise CommandError("--mix-noisy must lie in [0, 1]")

    def load(device):
        # each process loads the model on its device; one default note
        own = argparse.Namespace(**vars(args))
        own.device = device
        own.quiet = args.quiet or not if_main_process()
        return _load_model(own)

    summary = enhance_corpus(
        args.inputs,
        args.out,
        load,
        device=args.device,
        sampler=args.sampler,
        steps=args.steps,
        corrector_steps=args.corrector_steps,
        use_refiner=False if args.no_refiner else None,
        seed=args.seed,
        batch_size=args.batch_size,
        mix_down=args.mix_down,
        subtype=args.subtype,
        overwrite=args.overwrite,
        resume=args.resume,
        manifest=args.manifest,
        quiet=args.quiet,
        prog=PROG,
        skip_errors=args.skip_errors,
        check_output=not args.no_output_check,
    )
    if args.mix_noisy and if_main_process():
        from speechbrain_elbo.asr import mix_noisy_file
        from speechbrain_elbo.corpus import read_manifest

        for row in read_manifest(summary.manifest):
            if row["status"] == "enhanced":  # not those a --resume kept
                mix_noisy_file(
                    row["output"], row["input"], args.mix_noisy, args.mix_down
                )
    return summary


def main(argv=None):
    """Run the command; returns the exit status.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every input was enhanced (or skipped by ``--resume``), 1 on
        an error (bad inputs without ``--skip-errors``, a bad model or
        setting, an unwritable output folder), 2 on a malformed command
        line (argparse), 3 when the run finished but some inputs were not
        enhanced (bad inputs skipped with ``--skip-errors``, or failures
        while enhancing; see the manifest).
    """
    args = build_parser().parse_args(argv)
    try:
        with _terminate_cleanly():
            summary = _run(args)
    except _Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (
        CommandError,
        ValueError,
        OSError,
        RuntimeError,
        ImportError,
    ) as error:
        message = " ".join(str(error).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    return 3 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
