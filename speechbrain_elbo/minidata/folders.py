"""Data set folders built once per set of options, and put in place whole.

Every folder the mini data sets write (a MiniVB or MiniWHAMR tree, a split
simulated by :mod:`speechbrain_elbo.minidata.rooms`) records the options it
was built with in a JSON stamp (:data:`STAMP_NAME`). :func:`already_built`
reads that stamp: the same options mean there is nothing to do, other
options an error unless the caller asked to overwrite. :func:`build_once`
builds into a hidden sibling folder that replaces the target only when it is
complete (:func:`speechbrain_elbo.fileio.replace_folder`), so a failed build
leaves nothing behind.

Example
-------
>>> out = getfixture("tmp_path") / "data"
>>> build_once(out, {"n": 1}, lambda tmp: (tmp / "a.txt").touch())
True
>>> sorted(p.name for p in out.iterdir())
['a.txt', 'minidata.json']
"""

import json
import os
import shutil
from pathlib import Path

from speechbrain.utils.logger import get_logger

from speechbrain_elbo.fileio import replace_folder, write_json_atomic

logger = get_logger(__name__)

#: Name of the file that records how a data set folder was built.
STAMP_NAME = "minidata.json"


def as_json(options):
    """The options as they read back from their JSON stamp.

    Arguments
    ---------
    options : dict
        JSON-serialisable options.

    Returns
    -------
    dict
        A copy in which, for instance, tuples became lists.

    Example
    -------
    >>> as_json({"snr_range": (0.0, 15.0)})
    {'snr_range': [0.0, 15.0]}
    """
    return json.loads(json.dumps(options))


def already_built(target, stamp, options, overwrite=False):
    """Tells whether ``target`` was built with ``options`` (per ``stamp``).

    Arguments
    ---------
    target : pathlib.Path
        The folder that a build writes.
    stamp : pathlib.Path
        The JSON file that records the options of the build of ``target``.
    options : dict
        The options of this call, as :func:`as_json` returns them.
    overwrite : bool
        Whether a folder built otherwise (or not built by this package) may
        be replaced.

    Returns
    -------
    bool
        True if ``target`` exists and ``stamp`` records ``options``; False
        if it must be built.

    Raises
    ------
    FileExistsError
        If ``target`` holds something else and ``overwrite`` is False.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> write_json_atomic(root / STAMP_NAME, {"seed": 1})
    >>> already_built(root, root / STAMP_NAME, {"seed": 1})
    True
    >>> already_built(root, root / STAMP_NAME, {"seed": 2}, overwrite=True)
    False
    >>> already_built(root, root / STAMP_NAME, {"seed": 2})
    Traceback (most recent call last):
    ...
    FileExistsError: ...was built with other options...
    """
    target, stamp = Path(target), Path(stamp)
    if stamp.is_file() and target.is_dir():
        if json.loads(stamp.read_text()) == options:
            logger.info(f"{target} is already built with these options")
            return True
        if not overwrite:
            raise FileExistsError(
                f"{target} was built with other options ({stamp}). Pass "
                "overwrite=True (--overwrite) to rebuild it, or choose "
                "another output folder."
            )
    elif target.exists() and not overwrite:
        if not target.is_dir() or any(target.iterdir()):
            raise FileExistsError(
                f"{target} exists and was not built by this package. Choose "
                "an empty or new folder, or pass overwrite=True "
                "(--overwrite)."
            )
    return False


def build_once(out_dir, options, build, overwrite=False):
    """Builds a folder atomically, once per set of options.

    ``build(tmp)`` fills a temporary sibling folder, which replaces
    ``out_dir`` when it succeeds, with ``options`` saved in
    :data:`STAMP_NAME`. A second call with equal options does nothing; a
    folder built with other options is replaced only if ``overwrite``.

    Arguments
    ---------
    out_dir : str or pathlib.Path
        The folder to build.
    options : dict
        JSON-serialisable description of what is built.
    build : callable
        Called with the temporary folder.
    overwrite : bool
        Replace a folder built with other options (or holding other files).

    Returns
    -------
    bool
        True if it was built now, False if it was already there.

    Raises
    ------
    FileExistsError
        If ``out_dir`` holds something else and ``overwrite`` is False.

    Example
    -------
    >>> out = getfixture("tmp_path") / "data"
    >>> build_once(out, {"n": 1}, lambda tmp: (tmp / "a.txt").touch())
    True
    >>> build_once(out, {"n": 1}, lambda tmp: 1 / 0)
    False
    >>> build_once(out, {"n": 2}, lambda tmp: None)
    Traceback (most recent call last):
    ...
    FileExistsError: ...built with other options...
    """
    out_dir = Path(out_dir)
    options = as_json(options)
    if already_built(out_dir, out_dir / STAMP_NAME, options, overwrite):
        return False
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        write_json_atomic(tmp / STAMP_NAME, options, indent=1)
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
