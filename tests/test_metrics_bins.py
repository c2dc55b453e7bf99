"""Per-bin means of the test metrics (speechbrain_elbo.metrics.metric_bins)."""

import math

import pytest

from speechbrain_elbo.metrics import BIN_FIELDS, metric_bins

EDGES = [0.2, 0.4, 0.6, 0.8, 1.0]


def record(system, rt60, pesq, si_sdr=0.0):
    return {"system": system, "rt60": rt60, "pesq": pesq, "si_sdr": si_sdr}


def table(rows):
    return {(r["system"], r["bin"]): r for r in rows}


def test_bins_are_half_open_and_averaged_per_system():
    records = [
        record("noisy", 0.2, 1.0, 2.0),  # on an edge: the bin above
        record("noisy", 0.39, 2.0, 4.0),
        record("noisy", 0.4, 3.0),
        record("noisy", 0.95, 4.0),
        record("stage1", 0.25, 2.5),
        record("stage1", 1.0, 1.5),  # the last edge: the open bin
    ]
    rows = metric_bins(records, "rt60", EDGES, metrics=("pesq", "si_sdr"))
    assert set(rows[0]) == set(BIN_FIELDS) - {"estoi"}
    got = table(rows)
    assert [r["bin"] for r in rows if r["system"] == "noisy"] == [
        "[0.2, 0.4)",
        "[0.4, 0.6)",
        "[0.6, 0.8)",
        "[0.8, 1)",
    ]
    first = got[("noisy", "[0.2, 0.4)")]
    assert (first["utterances"], first["pesq"], first["si_sdr"]) == (
        2,
        1.5,
        3.0,
    )
    assert (first["low"], first["high"], first["field"]) == (0.2, 0.4, "rt60")
    assert got[("noisy", "[0.4, 0.6)")]["pesq"] == 3.0
    empty = got[("noisy", "[0.6, 0.8)")]
    assert empty["utterances"] == 0 and math.isnan(empty["pesq"])
    # systems in order of appearance; open bins only where they hold data
    assert [r["system"] for r in rows] == ["noisy"] * 4 + ["stage1"] * 5
    top = got[("stage1", ">= 1")]
    assert (top["low"], top["high"], top["utterances"]) == (1.0, None, 1)
    assert ("noisy", ">= 1") not in got and ("noisy", "< 0.2") not in got


def test_values_below_the_first_edge_and_nan_scores():
    records = [
        record("noisy", -3.0, float("nan")),
        record("noisy", -1.0, 2.0),
        record("noisy", None, 9.0),  # no condition: left out
        record("noisy", float("nan"), 9.0),
    ]
    rows = metric_bins(records, "rt60", [0.0], metrics=("pesq",))
    assert len(rows) == 1
    row = rows[0]
    assert (row["bin"], row["low"], row["high"]) == ("< 0", None, 0.0)
    # NaN (a failed PESQ) is left out of the mean but the utterance counts
    assert (row["utterances"], row["pesq"]) == (2, 2.0)


def test_no_condition_gives_no_rows():
    assert metric_bins([{"system": "noisy", "pesq": 1.0}], "drr", [0.0]) == []


@pytest.mark.parametrize(
    "edges, message",
    [
        ([], "non-empty list of finite numbers"),
        ([0.4, 0.2], "increase strictly"),
        ([0.2, 0.2], "increase strictly"),
        ([0.2, float("inf")], "finite"),
        (["low"], "list of numbers"),
    ],
)
def test_bad_edges_name_the_field(edges, message):
    with pytest.raises(ValueError, match=message) as info:
        metric_bins([record("noisy", 0.3, 1.0)], "rt60", edges)
    assert "'rt60'" in str(info.value)
