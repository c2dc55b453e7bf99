"""Offline mini data sets: MiniVB and MiniWHAMR from Debian's free audio.

The real corpora (VoiceBank-DEMAND, WHAMR!) cannot be downloaded on
machines without network access; this subpackage builds small data sets in
their exact layouts from recordings shipped by Debian packages, so that the
recipes run end to end anywhere. The preparation of the real corpora is in
:mod:`speechbrain_elbo.dataprep`, which reads these data sets like the real
ones.

Modules, in the order a build uses them:

- :mod:`~speechbrain_elbo.minidata.packages`: ``apt-get download`` and
  ``dpkg-deb -x`` into a cache, G.722 decoding with ffmpeg;
- :mod:`~speechbrain_elbo.minidata.bank`: speech and noise clips prepared
  from the packages, or the bundled fixtures (:func:`load_sources`);
- :mod:`~speechbrain_elbo.minidata.clips`: :class:`Clip`,
  :class:`SourceBank`, manifests, fixtures (:data:`DEFAULT_SAMPLES`) and
  the choice of the noise of an item;
- :mod:`~speechbrain_elbo.minidata.signals`: active speech level (ITU-T
  P.56), trimming, cutting at pauses, synthetic noise, looping;
- :mod:`~speechbrain_elbo.minidata.splits`: splits disjoint by recording
  and noise file;
- :mod:`~speechbrain_elbo.minidata.acoustics`: simulated rooms, RT60 and
  the direct-path target;
- :mod:`~speechbrain_elbo.minidata.rooms`: any folder of clean speech to
  one WHAMR! split (``python -m speechbrain_elbo.minidata.rooms``);
- :mod:`~speechbrain_elbo.minidata.builders`: :func:`build_minivb`,
  :func:`build_miniwhamr` (``python -m speechbrain_elbo.minidata``);
- :mod:`~speechbrain_elbo.minidata.folders`: folders built once per set of
  options, put in place whole.

The names below are imported on first use, so that ``python -m
speechbrain_elbo.minidata.rooms`` does not import its own module twice.

Example
-------
>>> from speechbrain_elbo.minidata import DEFAULT_SAMPLES, load_sources
>>> bank = load_sources(samples_dir=DEFAULT_SAMPLES, segment_seconds=None)
>>> [clip.speaker for clip in bank.speech]
['ru_nsh', 'en_allison', 'librivox_austen']
"""

import importlib

#: Public name -> submodule that defines it.
_EXPORTS = {
    "build_minivb": "builders",
    "build_miniwhamr": "builders",
    "load_sources": "bank",
    "prepare_speech": "bank",
    "prepare_noise": "bank",
    "Clip": "clips",
    "SourceBank": "clips",
    "DEFAULT_SAMPLES": "clips",
    "load_fixtures": "clips",
    "clips_from_folder": "clips",
    "fetch_package": "packages",
    "SourcesUnavailable": "packages",
    "LICENCES": "packages",
    "SAMPLE_RATE": "signals",
    "active_speech_level": "signals",
    "RoomConfig": "acoustics",
    "simulate_room": "acoustics",
    "simulate_folder": "rooms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
