#!/usr/bin/env python3
"""The arguments of one stage of ``two_stage_driver.sh``, NUL-separated.

    python tools/stage_args.py HPARAMS_FILE [OTHER_HPARAMS_FILES...] -- ARGS

prints the arguments among ARGS that go to the stage of HPARAMS_FILE
(:func:`speechbrain_elbo.recipe.stage_arguments`: run options to every
stage, ``--key=value`` to the stages whose YAML file has the key,
``--STAGE.key=value`` to that stage only), each followed by a NUL byte, for
``mapfile -d ''`` in a shell script. An override that no stage knows is an
error (exit status 2) before anything runs.
"""

import sys

from speechbrain_elbo.recipe import stage_arguments

USAGE = (
    "usage: python tools/stage_args.py HPARAMS_FILE "
    "[OTHER_HPARAMS_FILES...] -- [ARGS...]"
)


def main(argv=None):
    """Print the selected arguments; exit with a message on an error.

    Arguments
    ---------
    argv : list of str, optional
        ``FILE [OTHERS...] -- ARGS`` (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") < 1:
        raise SystemExit(USAGE)
    split = argv.index("--")
    files, args = argv[:split], argv[split + 1 :]
    try:
        selected = stage_arguments(args, files[0], files[1:])
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    sys.stdout.write("".join(arg + "\0" for arg in selected))


if __name__ == "__main__":
    main()
