"""Debian packages as a source of free audio: download, unpack, decode.

The real corpora cannot be downloaded on machines without network access,
but Debian ships recorded speech and noise under free licences
(:data:`LICENCES`). :func:`fetch_package` downloads one package with
``apt-get download`` (no installation, no dependencies) and unpacks it with
``dpkg-deb -x`` into a cache folder (default :data:`DEFAULT_CACHE`, or
``$SPEECHBRAIN_ELBO_SOURCES``); :func:`decode_g722` decodes the G.722
telephone prompts with Debian's ``ffmpeg`` (:func:`ensure_ffmpeg`). Any
failure raises :class:`SourcesUnavailable`, on which
:func:`speechbrain_elbo.minidata.bank.load_sources` falls back to the bundled
fixtures.

Example
-------
>>> cache_root(getfixture("tmp_path")).is_dir()
True
>>> sorted(LICENCES)[:2]
['asterisk-core-sounds-en-g722', 'asterisk-core-sounds-it-g722']
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from speechbrain.utils.logger import get_logger

from speechbrain_elbo.fileio import replace_folder
from speechbrain_elbo.minidata.signals import SAMPLE_RATE

logger = get_logger(__name__)

#: Where the packages and the prepared clips are cached by default
#: (overridden by the environment variable ``SPEECHBRAIN_ELBO_SOURCES``).
DEFAULT_CACHE = Path("~/.cache/speechbrain_elbo/sources")

#: Licence of each package's audio, as stated in its debian/copyright.
LICENCES = {
    "festvox-ru": "BSD-like (c) 2005 Nickolay V. Shmyrev; modifications "
    "must be marked",
    "asterisk-core-sounds-en-g722": "CC-BY-SA-3.0 (c) 2003-2010 Allison "
    "Smith / Digium",
    "asterisk-core-sounds-it-g722": "CC-BY-3.0 (c) 2012 Carlo Flora",
    "pocketsphinx-testdata": "BSD-2-Clause (c) Carnegie Mellon University",
    "pocketsphinx-testdata/librivox": "public domain (LibriVox recording); "
    "BSD-2-Clause packaging (c) Carnegie Mellon University",
    "sonic-pi-samples": "CC0-1.0 (freesound.org samples via Sonic Pi)",
    "fillets-ng-data": "GPL-2 (c) ALTAR interactive / Fish Fillets NG",
    "fillets-ng-data-nl": "GPL-2 (c) Fish Fillets NG translators",
    "synthetic": "generated noise, no licence restriction",
}

SPEECH_PACKAGES = (
    "festvox-ru",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-it-g722",
    "pocketsphinx-testdata",
)
NOISE_PACKAGES = ("sonic-pi-samples", "fillets-ng-data", "fillets-ng-data-nl")


class SourcesUnavailable(RuntimeError):
    """Raised when the Debian packages cannot be fetched or decoded."""


def cache_root(cache_dir=None):
    """The cache folder of the packages and the prepared clips.

    Arguments
    ---------
    cache_dir : str or pathlib.Path or None
        A folder (``~`` is expanded); None: ``$SPEECHBRAIN_ELBO_SOURCES``
        or :data:`DEFAULT_CACHE`.

    Returns
    -------
    pathlib.Path
        The folder (not created).

    Example
    -------
    >>> cache_root("~/x") == Path.home() / "x"
    True
    """
    if cache_dir is None:
        cache_dir = os.environ.get("SPEECHBRAIN_ELBO_SOURCES", DEFAULT_CACHE)
    return Path(cache_dir).expanduser()


def _run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def fetch_package(name, cache_dir=None, apt_get="apt-get"):
    """Downloads a Debian package and unpacks it into the cache (once).

    ``apt-get download`` fetches the .deb without installing it; when the
    package is unknown, ``apt-get update`` is run once (as root) and the
    download retried. ``dpkg-deb -x`` unpacks it into a temporary folder that
    is renamed into place, so an interrupted run leaves nothing half done.

    Arguments
    ---------
    name : str
        The package.
    cache_dir : str or pathlib.Path or None
        Cache root (default :data:`DEFAULT_CACHE`).
    apt_get : str
        The apt-get command (a parameter so tests can make it fail).

    Returns
    -------
    pathlib.Path
        The folder holding the package's file tree (``usr/...``).

    Raises
    ------
    SourcesUnavailable
        If apt-get or dpkg-deb is missing or fails.

    Example
    -------
    >>> fetch_package("festvox-ru", getfixture("tmp_path"),
    ...               apt_get="no-such-apt-get")
    Traceback (most recent call last):
    ...
    speechbrain_elbo.minidata.packages.SourcesUnavailable: 'no-such-apt-get' ...
    """
    root = cache_root(cache_dir) / "packages"
    target = root / name
    if (target / ".complete").is_file():
        return target
    if shutil.which(apt_get) is None or shutil.which("dpkg-deb") is None:
        raise SourcesUnavailable(
            f"'{apt_get}' or 'dpkg-deb' is not available, so the Debian "
            f"package {name} cannot be fetched."
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        logger.info(f"Downloading the Debian package {name}")
        result = _run([apt_get, "download", name], cwd=tmp)
        if result.returncode != 0 and os.geteuid() == 0:
            _run([apt_get, "update", "-q"])
            result = _run([apt_get, "download", name], cwd=tmp)
        debs = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if result.returncode != 0 or not debs:
            raise SourcesUnavailable(
                f"'{apt_get} download {name}' failed: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        tree = Path(tmp) / "tree"
        result = _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        if result.returncode != 0:
            raise SourcesUnavailable(
                f"dpkg-deb -x {debs[0].name} failed: {result.stderr.strip()}"
            )
        (tree / ".complete").write_text(debs[0].name + "\n")
        replace_folder(tree, target)
    return target


def ensure_ffmpeg(install=True, apt_get="apt-get"):
    """Returns the ffmpeg executable, installing Debian's if needed.

    Arguments
    ---------
    install : bool
        Whether to run ``apt-get install ffmpeg`` (root only) when absent.
    apt_get : str
        The apt-get command.

    Returns
    -------
    str
        Path of ffmpeg.

    Raises
    ------
    SourcesUnavailable
        If ffmpeg is absent and cannot be installed.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    if install and shutil.which(apt_get) and os.geteuid() == 0:
        logger.info("Installing Debian's ffmpeg to decode G.722 prompts")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = [apt_get, "install", "-y", "-q", "--no-install-recommends"]
        result = _run(cmd + ["ffmpeg"], env=env)
        if result.returncode != 0:
            _run([apt_get, "update", "-q"])
            result = _run(cmd + ["ffmpeg"], env=env)
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise SourcesUnavailable(
        "ffmpeg is needed to decode the G.722 prompts of asterisk-core-sounds "
        "but is not installed. Install it (apt-get install ffmpeg) and retry."
    )


def decode_g722(sources, destinations, ffmpeg=None, batch=64):
    """Decodes G.722 files to 16 kHz 16-bit WAV with ffmpeg.

    Many files are decoded by one ffmpeg process (one input and one output
    per file), which avoids starting a process per prompt.

    Arguments
    ---------
    sources : list of pathlib.Path
        G.722 files.
    destinations : list of pathlib.Path
        WAV files to write (same order).
    ffmpeg : str or None
        The ffmpeg executable (default: :func:`ensure_ffmpeg`).
    batch : int
        Files per ffmpeg process.

    Raises
    ------
    SourcesUnavailable
        If ffmpeg fails.
    """
    ffmpeg = ffmpeg or ensure_ffmpeg()
    pairs = list(zip(sources, destinations, strict=True))
    for first in range(0, len(pairs), batch):
        chunk = pairs[first : first + batch]
        cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y"]
        for src, _ in chunk:
            cmd += ["-f", "g722", "-i", str(src)]
        for index, (_, dst) in enumerate(chunk):
            cmd += ["-map", f"{index}:a", "-ar", str(SAMPLE_RATE), "-ac", "1"]
            cmd += ["-c:a", "pcm_s16le", str(dst)]
        result = _run(cmd)
        if result.returncode != 0:
            raise SourcesUnavailable(
                f"ffmpeg failed to decode G.722: {result.stderr.strip()[-500:]}"
            )
