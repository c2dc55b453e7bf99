"""The quality mode of bench/inference.py: per-item scores and the paired
difference from the input with its bootstrap interval.

``paired_interval`` is checked against hand-computed cases; ``--quality``
runs end to end with the tiny two-stage model on a tiny MiniWHAMR test split.
"""

import json

import pytest
import torch


@pytest.fixture(scope="module")
def bench(script):
    return script("bench/inference.py")


def test_paired_interval(bench):
    # the same shift on every item: no spread, whatever the resample
    assert bench.paired_interval([2.0, 5.0, 4.0], [1.0, 4.0, 3.0]) == (
        1.0,
        1.0,
        1.0,
    )
    # differences 0 and 1: the mean of a resample of two is 0, 0.5 or 1
    # with probabilities 1/4, 1/2, 1/4, so the 2.5 and 97.5 percentiles
    # are the extremes
    assert bench.paired_interval([0.0, 1.0], [0.0, 0.0]) == (0.5, 0.0, 1.0)
    # paired: a large shared item effect does not widen the interval
    mean, low, high = bench.paired_interval(
        [10.1, 0.1, 5.1, -3.9], [10.0, 0.0, 5.0, -4.0]
    )
    assert (mean, low, high) == pytest.approx((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="one entry per item"):
        bench.paired_interval([], [])


def test_quality_reports_paired_differences(
    bench, tiny_models, tiny_miniwhamr, tmp_path, capsys
):
    data = tiny_miniwhamr
    _, two_stage = tiny_models
    rows_json = tmp_path / "rows.json"
    threads = torch.get_num_threads()
    try:
        bench.main(
            [
                "--quality", str(two_stage), "--data", str(data),
                "--split", "test", "--items", "3", "--threads", "1",
                "--quality-samplers", "euler:1", "--json", str(rows_json),
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(rows_json.read_text())
    assert [r["system"] for r in rows] == ["noisy", "stage1", "stage1+2"]
    for row in rows:
        for key in ("pesq", "estoi", "si_sdr"):
            assert len(row["items"][key]) == 3
            assert row[key] == pytest.approx(sum(row["items"][key]) / 3)
    printed = capsys.readouterr().out
    table = printed.split("paired bootstrap interval]:")[1]
    refined = next(
        line for line in table.splitlines() if line.startswith("| stage1+2 ")
    )
    gain = rows[2]["si_sdr"] - rows[0]["si_sdr"]
    assert refined.split(" | ")[4].startswith(f"{gain:+.2f} [")
