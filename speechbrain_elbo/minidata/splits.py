"""Splits of the mini data sets: disjoint by recording and by noise file.

:func:`split_speech` shares the speech clips between test, validation and
training so that no recording (a clip's ``group``) is in two splits, every
talker is represented, and the talkers of :data:`HELDOUT_PACKAGES` appear
in the test set only (unseen speakers). :func:`split_noise` does the same
per noise category, file by file.

Example
-------
>>> import numpy as np
>>> from speechbrain_elbo.minidata.clips import load_fixtures
>>> parts = split_noise(load_fixtures().noise, np.random.default_rng(1))
>>> sorted(len(files) for files in parts.values())
[0, 1, 1]
"""

from speechbrain.utils.logger import get_logger

from speechbrain_elbo.minidata.signals import SAMPLE_RATE

logger = get_logger(__name__)

#: Packages whose talkers are kept out of training and validation.
HELDOUT_PACKAGES = ("pocketsphinx-testdata",)

#: Share of each real-noise category given to validation and to test.
NOISE_HELDOUT_SHARE = 0.15


def split_speech(
    clips, rng, test_items, valid_items, train_seconds, heldout=()
):
    """Splits speech clips into test, validation and training sets.

    Clips are grouped by ``group`` (recording); a group goes to one split
    only (surplus clips of a group that fills a split are left unused).
    The test set takes the talkers of ``heldout`` first, then, like the
    other splits, groups in turn from each remaining talker (round robin, a
    random order within each talker), so that every talker is represented.
    Held-out talkers never reach validation or training.

    Arguments
    ---------
    clips : list of Clip
        Speech clips.
    rng : numpy.random.Generator
        Shuffles the groups.
    test_items : int
        Number of test clips.
    valid_items : int
        Number of validation clips.
    train_seconds : float
        Training duration to reach (the last clip may overshoot).
    heldout : collection of str
        Packages whose talkers only go to the test set.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}`` lists of clips.

    Example
    -------
    >>> import numpy as np
    >>> from speechbrain_elbo.minidata.clips import load_fixtures
    >>> bank = load_fixtures(segment_seconds=1.0)
    >>> parts = split_speech(bank.speech, np.random.default_rng(0), 2, 2,
    ...                      3.0, heldout=("pocketsphinx-testdata",))
    >>> [len(parts[k]) for k in ("train", "valid", "test")]
    [3, 2, 2]
    >>> {c.package for c in parts["test"]}
    {'pocketsphinx-testdata'}
    """
    groups = {}
    for clip in clips:
        groups.setdefault(clip.group, []).append(clip)
    by_speaker = {}
    for name in sorted(groups):
        first = groups[name][0]
        key = (first.package in heldout, first.speaker)
        by_speaker.setdefault(key, []).append(name)
    queues = {}
    for key in sorted(by_speaker):
        names = by_speaker[key]
        queues[key] = [names[i] for i in rng.permutation(len(names))]

    def fill(speakers, items=None, seconds=None):
        taken, total = [], 0.0
        while True:
            active = [key for key in speakers if queues[key]]
            if not active:
                return taken
            for key in active:
                for clip in groups[queues[key].pop(0)]:
                    if items is not None and len(taken) >= items:
                        return taken
                    if seconds is not None and total >= seconds:
                        return taken
                    taken.append(clip)
                    total += clip.num_samples / SAMPLE_RATE
                if (items is not None and len(taken) >= items) or (
                    seconds is not None and total >= seconds
                ):
                    return taken

    held = [key for key in queues if key[0]]
    others = [key for key in queues if not key[0]]
    test = fill(held, items=test_items)
    if len(test) < test_items:
        test += fill(others, items=test_items - len(test))
    valid = fill(others, items=valid_items)
    train = fill(others, seconds=train_seconds)
    got = {"test": len(test), "valid": len(valid)}
    for name, wanted in (("test", test_items), ("valid", valid_items)):
        if got[name] < wanted:
            logger.warning(
                f"Only {got[name]} of the {wanted} {name} items could be "
                "filled from the available speech."
            )
    seconds = sum(c.num_samples for c in train) / SAMPLE_RATE
    if seconds < train_seconds:
        logger.warning(
            f"Only {seconds / 60:.1f} of the {train_seconds / 60:.1f} "
            "training minutes could be filled from the available speech."
        )
    return {"train": train, "valid": valid, "test": test}


def split_noise(clips, rng, heldout_share=NOISE_HELDOUT_SHARE):
    """Splits noise files into disjoint sets, per category.

    In each category, a random ``heldout_share`` of the files (at least one)
    goes to test and as many to validation when there are three files or
    more; with two files, one goes to training and one to test; a single
    file goes to training. A split without real noise of some category
    simply uses the others (and synthetic noise).

    Arguments
    ---------
    clips : list of Clip
        Noise clips (``speaker`` is the category).
    rng : numpy.random.Generator
        Shuffles the files.
    heldout_share : float
        Share of validation and of test files.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}``.

    Example
    -------
    >>> import numpy as np
    >>> from speechbrain_elbo.minidata.clips import load_fixtures
    >>> parts = split_noise(load_fixtures().noise, np.random.default_rng(0))
    >>> [len(parts[k]) for k in ("train", "valid", "test")]
    [1, 0, 1]
    """
    parts = {"train": [], "valid": [], "test": []}
    categories = sorted({clip.speaker for clip in clips})
    for category in categories:
        files = sorted(
            (c for c in clips if c.speaker == category), key=lambda c: c.uid
        )
        files = [files[i] for i in rng.permutation(len(files))]
        if len(files) >= 3:
            n = max(1, round(heldout_share * len(files)))
            parts["test"] += files[:n]
            parts["valid"] += files[n : 2 * n]
            parts["train"] += files[2 * n :]
        elif len(files) == 2:
            parts["test"].append(files[0])
            parts["train"].append(files[1])
        else:
            parts["train"] += files
    return parts
