"""Makes the bundled audio fixtures (minidata/samples/) from Debian packages.

Three speech clips from three packages (Russian male, English female,
English male LibriVox reader) and two CC0 noises, 16 kHz mono 16-bit, about
3-4 s each, with ``samples.csv`` (read by
``speechbrain_elbo.minidata.clips.load_fixtures``) and ``LICENSE.md``.
They are package data of ``speechbrain_elbo.minidata`` (the tests use them,
and the mini data sets fall back to them when apt is unavailable).
The clips are the utterances prepared by ``prepare_speech`` and
``prepare_noise`` (trimmed, resampled, peak-normalised), so the fixtures are
modified copies of the originals; LICENSE.md says so.

Usage::

    python tools/make_fixtures.py [--cache-dir DIR] \
        [--out speechbrain_elbo/minidata/samples]
"""

import argparse
from pathlib import Path

import numpy as np

from speechbrain_elbo.fileio import write_audio_atomic, write_text_atomic
from speechbrain_elbo.minidata.bank import prepare_noise, prepare_speech
from speechbrain_elbo.minidata.clips import DEFAULT_SAMPLES, Clip, save_clips
from speechbrain_elbo.minidata.packages import LICENCES
from speechbrain_elbo.minidata.signals import (
    SAMPLE_RATE,
    check_full_scale,
    fade_edges,
)

#: (file name, speaker) of the speech fixtures; the first utterance of the
#: speaker lasting 3.0-4.5 s is taken.
SPEECH = (
    ("speech_ru.wav", "ru_nsh"),
    ("speech_en.wav", "en_allison"),
    ("speech_librivox.wav", "librivox_austen"),
)
#: (file name, noise uid, seconds kept from the start).
NOISE = (
    ("noise_vinyl_hiss.wav", "ambient_vinyl_hiss", 4.0),
    ("noise_loop_safari.wav", "ambient_loop_safari", 4.0),
)

LICENSE_TEXT = """\
# Licences of the audio fixtures in this folder

These files are MODIFIED excerpts of recordings shipped by Debian packages:
they were decoded (G.722 for the asterisk prompt), resampled to 16 kHz mono
where needed, trimmed of leading and trailing silence, faded in and out over
5 ms, peak-normalised to 0.9 and, for the noises, cut to their first 4 s.
They were made by `tools/make_fixtures.py`; `samples.csv` names the package
and original file of each. They are test data, and the fallback of the
mini data sets when the Debian packages cannot be fetched.

## speech_ru.wav: festvox-ru (msu_ru_nsh_clunits voice)

Original: {ru_source}

               Nickolay V. Shmyrev  Copyright (c) 2005
                        All Rights Reserved.

  Permission is hereby granted, free of charge, to use and distribute
  this software and its documentation without restriction, including
  without limitation the rights to use, copy, modify, merge, publish,
  distribute, sublicense, and/or sell copies of this work, and to
  permit persons to whom this work is furnished to do so, subject to
  the following conditions:
   1. The code must retain the above copyright notice, this list of
      conditions and the following disclaimer.
   2. Any modifications must be clearly marked as such.
   3. Original authors' names are not deleted.
   4. The authors' names are not used to endorse or promote products
      derived from this software without specific prior written
      permission.

  THE AUTHOR AND THE CONTRIBUTORS TO THIS WORK
  DISCLAIM ALL WARRANTIES WITH REGARD TO THIS SOFTWARE, INCLUDING
  ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS, IN NO EVENT
  SHALL THE UNIVERSITY OF EDINBURGH NOR THE CONTRIBUTORS BE LIABLE
  FOR ANY SPECIAL, INDIRECT OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
  WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN
  AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION,
  ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF
  THIS SOFTWARE.

Modification (condition 2): this file is a trimmed, faded and
peak-normalised copy of the original.

## speech_en.wav: asterisk-core-sounds-en-g722 (en_US_f_Allison)

Original: {en_source}

Recorded by Allison Smith (http://www.theivrvoice.com), financial
contributions by Digium, Inc. Copyright 2003-2010 Allison Smith.
Licence: Creative Commons Attribution-ShareAlike 3.0 Unported
(CC-BY-SA-3.0, https://creativecommons.org/licenses/by-sa/3.0/). This
modified excerpt is distributed under the same licence.

## speech_librivox.wav: pocketsphinx-testdata (LibriVox)

Original: {lv_source}

A LibriVox recording of "Sense and Sensibility" (Jane Austen), chapter 1;
LibriVox recordings are in the public domain. It is shipped in CMU Sphinx's
test data, whose packaging is under the BSD-2-Clause licence:

 Copyright 1995-2014 Carnegie Mellon University. All rights reserved.
 Redistribution and use in source and binary forms, with or without
 modification, are permitted provided that the following conditions
 are met:
 1. Redistributions of source code must retain the above copyright
    notice, this list of conditions and the following disclaimer.
 2. Redistributions in binary form must reproduce the above copyright
    notice, this list of conditions and the following disclaimer in
    the documentation and/or other materials provided with the
    distribution.
 THIS SOFTWARE IS PROVIDED BY CARNEGIE MELLON UNIVERSITY ``AS IS'' AND
 ANY EXPRESSED OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO,
 THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR
 PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL CARNEGIE MELLON UNIVERSITY
 NOR ITS EMPLOYEES BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
 SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT
 LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
 DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY
 THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
 (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
 OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

## noise_vinyl_hiss.wav and noise_loop_safari.wav: sonic-pi-samples

Originals: {noise_sources}

Samples from freesound.org placed in the public domain under Creative
Commons CC0 1.0 (https://creativecommons.org/publicdomain/zero/1.0/):
vinyl_hiss by veezay (freesound 130393), loop_safari by nemaavla
(freesound 318759), as listed in the package's debian/copyright.
"""


def _write(path, wav):
    """Writes a fixture as 16-bit PCM at 16 kHz (refusing clipped samples)."""
    check_full_scale(wav, path)
    write_audio_atomic(path, wav, SAMPLE_RATE, "PCM_16")


def _pick_speech(clips, speaker):
    """First utterance (by id) of a speaker lasting 3.0-4.5 s."""
    for clip in sorted(clips, key=lambda c: c.uid):
        seconds = clip.num_samples / SAMPLE_RATE
        if clip.speaker == speaker and 3.0 <= seconds <= 4.5:
            return clip
    raise RuntimeError(f"No 3.0-4.5 s utterance of {speaker} found.")


def make_fixtures(out_dir, cache_dir=None):
    """Writes the fixtures and their manifest into ``out_dir``.

    Arguments
    ---------
    out_dir : str or pathlib.Path
        Destination (e.g. speechbrain_elbo/minidata/samples).
    cache_dir : str or pathlib.Path or None
        Cache of the Debian packages.

    Returns
    -------
    list of Clip
        The fixtures as written to samples.csv.
    """
    out_dir = Path(out_dir)
    speech = prepare_speech(cache_dir)
    noise = {clip.uid: clip for clip in prepare_noise(cache_dir)}
    written, originals = [], {}
    for name, speaker in SPEECH:
        clip = _pick_speech(speech, speaker)
        path = out_dir / name
        _write(path, clip.read())
        uid = Path(name).stem
        originals[speaker] = clip.source
        written.append(
            Clip(uid, str(path), "speech", speaker, uid, clip.package,
                 clip.source, clip.licence)
        )  # fmt: skip
    noise_sources = []
    for name, noise_uid, seconds in NOISE:
        clip = noise[noise_uid]
        wav = fade_edges(clip.read(0, round(seconds * SAMPLE_RATE)))
        peak = float(np.max(np.abs(wav)))
        path = out_dir / name
        _write(path, wav * (0.9 / peak))
        uid = Path(name).stem
        noise_sources.append(clip.source)
        written.append(
            Clip(uid, str(path), "noise", clip.speaker, uid, clip.package,
                 clip.source, LICENCES["sonic-pi-samples"])
        )  # fmt: skip
    save_clips(out_dir / "samples.csv", written)
    write_text_atomic(
        out_dir / "LICENSE.md",
        LICENSE_TEXT.format(
            ru_source=originals["ru_nsh"],
            en_source=originals["en_allison"].replace("+", " + "),
            lv_source=originals["librivox_austen"],
            noise_sources=", ".join(noise_sources),
        ),
    )
    return written


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str or None
        Arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", help="cache of the Debian packages")
    parser.add_argument(
        "--out",
        default=str(DEFAULT_SAMPLES),
        help="destination folder (default: the bundled fixtures, "
        "speechbrain_elbo/minidata/samples)",
    )
    args = parser.parse_args(argv)
    clips = make_fixtures(args.out, args.cache_dir)
    total = sum(Path(c.path).stat().st_size for c in clips)
    print(f"Wrote {len(clips)} fixtures ({total / 1024:.0f} KiB) to {args.out}")


if __name__ == "__main__":
    main()
