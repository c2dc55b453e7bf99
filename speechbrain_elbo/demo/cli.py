"""``python -m speechbrain_elbo.demo``: the command line of ``make demo``.

Example
-------
>>> args = build_parser().parse_args(["--items", "8", "--elbo-items", "0"])
>>> options = options_from_args(args)
>>> options.max_items, options.elbo.items, options.ioc.items
(8, 0, 2)
"""

import argparse
import pathlib
import sys

from speechbrain_elbo.demo.data import DEFAULT_ITEMS, TASKS
from speechbrain_elbo.demo.report import render_markdown
from speechbrain_elbo.demo.run import (
    DemoOptions,
    ElboOptions,
    IocOptions,
    run_demo,
)

__all__ = ["build_parser", "options_from_args", "run_guarded", "main"]

PROG = "speechbrain_elbo.demo"

TRAIN_MOVED = (
    "training from scratch is not part of the package: it runs the recipe "
    "of a source checkout. Run 'make demo-train' or 'python "
    "tools/demo_train.py --help' there (docs/demo.md)."
)


def build_parser():
    """The options of ``python -m speechbrain_elbo.demo``.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Enhance the MiniVB (denoising) or MiniWHAMR "
        "(dereverberation) test split with a two-stage model and write a "
        "report (make demo, make demo TASK=dereverb). Training from scratch "
        "first: make demo-train (tools/demo_train.py in a source checkout).",
    )
    parser.add_argument(
        "--task",
        choices=tuple(TASKS),
        default="denoise",
        help="denoise: MiniVB with the bundled minivb-small (default); "
        "dereverb: MiniWHAMR with the bundled miniwhamr-small",
    )
    parser.add_argument(
        "--model",
        help="exported model folder or bundled model name (default: the "
        "task's bundled model)",
    )
    parser.add_argument(
        "--data",
        help="the task's corpus folder, its test split built when missing "
        + "(default "
        + ", ".join(f"{t.name}: {t.data}" for t in TASKS.values())
        + ")",
    )
    parser.add_argument(
        "--out",
        help="output folder (default "
        + ", ".join(f"{t.name}: {t.out}" for t in TASKS.values())
        + ")",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=DEFAULT_ITEMS,
        help=f"test items to enhance (default {DEFAULT_ITEMS})",
    )
    parser.add_argument("--steps", type=int, help="sampler steps")
    parser.add_argument(
        "--sampler", choices=("pc", "euler", "heun", "ode"), help="sampler"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (0)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: the free cores, the usable ones "
        "less the load average, at least 1; as speechbrain_elbo.runtime "
        "chooses at inference)",
    )
    parser.add_argument("--elbo-items", type=int, default=ElboOptions.items)
    parser.add_argument("--ioc-items", type=int, default=IocOptions.items)
    parser.add_argument("--ioc-times", type=int, default=IocOptions.times)
    parser.add_argument(
        "--cache-dir", help="cache of the Debian audio packages"
    )
    parser.add_argument(
        "--samples-dir",
        help=(
            "build the test split from the audio fixtures in this folder "
            "(the bundled ones are used when apt fails)"
        ),
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of failures"
    )
    return parser


def options_from_args(args):
    """The :class:`~speechbrain_elbo.demo.run.DemoOptions` of parsed args.

    Arguments
    ---------
    args : argparse.Namespace
        From :func:`build_parser`.

    Returns
    -------
    DemoOptions
    """
    return DemoOptions(
        task=args.task,
        max_items=args.items,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        elbo=ElboOptions(items=args.elbo_items),
        ioc=IocOptions(items=args.ioc_items, times=args.ioc_times),
        cache_dir=args.cache_dir,
        samples_dir=args.samples_dir,
        progress=not args.no_progress,
    )


def run_guarded(prog, call, debug=False):
    """Run ``call()`` for a command line: failures become exit statuses.

    Arguments
    ---------
    prog : str
        The command's name, first on the error line.
    call : callable
        The work; its result is returned.
    debug : bool
        Let exceptions through (with their tracebacks).

    Returns
    -------
    result, int
        ``call()``'s result (None on failure) and the exit status: 0, 1
        when it raised (one line on stderr), 130 when interrupted.

    Example
    -------
    >>> run_guarded("demo", lambda: 1 / 0)
    (None, 1)
    """
    try:
        return call(), 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return None, 130
    except Exception as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return None, 1


def main(argv=None):
    """``python -m speechbrain_elbo.demo ...``; returns the exit status.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when a step failed (one line on stderr), 2 for
        ``train`` (moved to ``tools/demo_train.py``), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        print(f"{PROG}: {TRAIN_MOVED}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    report, status = run_guarded(
        PROG,
        lambda: run_demo(
            model_dir=args.model,
            data_dir=args.data,
            out_dir=args.out,
            options=options_from_args(args),
        ),
        args.debug,
    )
    if status:
        return status
    print(render_markdown(report).split("## Figures")[0])
    out = pathlib.Path(args.out or TASKS[args.task].out)
    print(f"Report: {out / 'report.md'}; to listen: {out / 'report.html'}")
    print("(and report.json, figures/, enhanced/, listen/)")
    return 0
