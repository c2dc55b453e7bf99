"""The quality mode of bench/inference.py: per-item scores and the paired
difference from the input with its bootstrap interval (the interval itself
is checked by hand in tests/test_metrics.py), end to end with the tiny
two-stage model on a tiny MiniWHAMR test split.
"""

import json

import pytest
import torch


@pytest.fixture(scope="module")
def bench(script):
    return script("bench/inference.py")


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
