"""The seed aggregation and IoC statistics of bench/gns_loss_comparison.py,
and one end-to-end run of it on a tiny MiniWHAMR with a warm start.

The pure helpers are run without training: the paired difference over
seeds, the level crossings and area of an IoC curve, and the parsers. The
end-to-end run trains the tiny network for two steps.
"""

import argparse
import math

import pytest
import torch

from speechbrain_elbo.export import read_state_dict
from speechbrain_elbo.sde import OUVESDE, GeometricGNS


@pytest.fixture(scope="module")
def bench(script):
    return script("bench/gns_loss_comparison.py")


def _variant(name, seed, total, diffusion=1.0, ioc=None):
    gns, loss = name.split(":")
    elbo = {
        "total": total,
        "prior": 0.1,
        "diffusion": diffusion,
        "reconstruction": total - 0.1 - diffusion,
    }
    return {
        "name": name,
        "seed": seed,
        "gns_preset": gns,
        "loss": loss,
        "summary": {"elbo": elbo},
        "ioc_summary": ioc,
    }


def test_paired_difference_is_per_seed_against_sigma2(bench):
    variants = [
        _variant("sgmse:sigma2", 1, -2.0),
        _variant("sgmse:likelihood", 1, -2.5),
        _variant("sgmse:sigma2", 2, -1.0),
        _variant("sgmse:likelihood", 2, -1.1),
        _variant("smax1:likelihood", 1, -9.0),  # no smax1:sigma2: no pair
    ]
    result = bench.aggregate(variants)
    (pair,) = result["paired"]
    assert (pair["variant"], pair["baseline"]) == (
        "sgmse:likelihood",
        "sgmse:sigma2",
    )
    total = pair["difference"]["total"]
    assert total["per_seed"] == pytest.approx([-0.5, -0.1])
    assert total["mean"] == pytest.approx(-0.3)
    assert total["std"] == pytest.approx(math.sqrt(0.08))
    assert pair["negative_in_every_seed"]
    sigma2 = result["variants"]["sgmse:sigma2"]["elbo"]["total"]
    assert sigma2["per_seed"] == [-2.0, -1.0]
    assert sigma2["mean"] == pytest.approx(-1.5)
    one_seed = result["variants"]["smax1:likelihood"]["elbo"]["total"]
    assert one_seed["std"] is None


def test_a_positive_seed_breaks_negative_in_every_seed(bench):
    variants = [
        _variant("sgmse:sigma2", 1, -2.0),
        _variant("sgmse:likelihood", 1, -2.5),
        _variant("sgmse:sigma2", 2, -1.0),
        _variant("sgmse:likelihood", 2, -0.9),
    ]
    (pair,) = bench.aggregate(variants)["paired"]
    assert not pair["negative_in_every_seed"]


def test_crossing_interpolates_in_t_and_in_log_sigma(bench):
    t = [0.0, 0.5, 1.0]
    values = [0.0, 0.2, 0.6]
    assert bench.crossing(t, values, 0.5) == pytest.approx(0.875)
    sigma = [0.01, 0.1, 1.0]
    # half-way from 0.2 to 0.6 in log sigma between 0.1 and 1: sqrt(0.1)
    assert bench.crossing(sigma, values, 0.4, log=True) == pytest.approx(
        math.sqrt(0.1)
    )
    assert bench.crossing(t, values, 0.7) is None
    assert bench.crossing(t, [0.6, 0.7, 0.8], 0.5) == 0.0


def test_curve_stats_mean_over_t_is_the_normalised_area(bench):
    t = [0.2, 0.6, 1.0]
    sigma = [0.05, 0.1, 0.4]
    stats = bench.curve_stats(t, sigma, [0.0, 0.5, 1.0])
    assert stats["mean_over_t"] == pytest.approx(0.5)
    assert stats["t_at_0.5"] == pytest.approx(0.6)
    assert stats["sigma_at_0.25"] == pytest.approx(math.sqrt(0.05 * 0.1))


def test_ioc_over_seeds_spread_is_over_seeds_or_items(bench):
    def summary(values):
        t, sigma = [0.1, 1.0], [0.05, 0.5]
        return {
            "t": t,
            "sigma": sigma,
            "ioc": values,
            "ioc_std_items": [0.01, 0.02],
            **bench.curve_stats(t, sigma, values),
        }

    two = bench.ioc_over_seeds([summary([0.1, 0.7]), summary([0.3, 0.9])])
    assert two["ioc"] == pytest.approx([0.2, 0.8])
    assert two["spread_over"] == "seeds"
    assert two["ioc_spread"] == pytest.approx([math.sqrt(0.02)] * 2)
    assert two["per_seed"]["mean_over_t"]["values"] == pytest.approx([0.4, 0.6])
    one = bench.ioc_over_seeds([summary([0.1, 0.7])])
    assert (one["spread_over"], one["ioc_spread"]) == ("items", [0.01, 0.02])
    assert bench.ioc_over_seeds([None]) is None


def test_parsers(bench):
    assert bench.parse_seeds("3,1,2") == [3, 1, 2]
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_seeds("1,1")
    assert bench.parse_ioc_times("8") == 8
    assert bench.parse_ioc_times("0.1,1") == [0.1, 1.0]
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_ioc_times("1")
    args = bench.build_parser().parse_args(
        ["--data", "d", "--out", "o", "--seeds", "5,6"]
    )
    assert args.seeds == [5, 6]
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(
            ["--data", "d", "--out", "o", "--seed", "1", "--seeds", "5,6"]
        )
    sde = OUVESDE(GeometricGNS(0.05, 0.5), t_eps=0.03)
    grid = bench.ioc_times(argparse.Namespace(ioc_times=3), sde)
    assert grid == pytest.approx([0.03, 0.515, 1.0])
    assert bench.ioc_times(argparse.Namespace(ioc_times=0), sde) == []


def test_dereverb_warm_start_end_to_end(
    bench, tiny_models, tiny_miniwhamr, tmp_path
):
    # --task dereverb reads the WHAMR! layout; --init starts every variant
    # from the given model's score network: with lr 0 the evaluated (EMA)
    # weights are exactly those, not the seeded random init
    data = tiny_miniwhamr
    stage1, _ = tiny_models
    out = tmp_path / "out"
    common = [
        "--data", str(data), "--task", "dereverb", "--config", "tiny",
        "--steps", "2", "--batch-size", "1", "--crop-frames", "32",
        "--valid-items", "1", "--valid-frames", "96",
        "--elbo-diffusion-samples", "2", "--elbo-reconstruction-samples",
        "1", "--tweedie-times", "0.5", "--samplers", "euler:1",
        "--ioc-times", "0", "--variants", "sgmse:sigma2", "--lr", "0",
    ]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert (
            bench.main([*common, "--out", str(out), "--init", str(stage1)]) == 0
        )
        assert bench.main([*common, "--out", str(tmp_path / "cold")]) == 0
    finally:
        torch.set_num_threads(threads)
    saved = torch.load(
        out / "models" / "sgmse-sigma2_seed1234.pt", weights_only=True
    )
    assert saved["settings"]["init"] == str(stage1)
    init = read_state_dict(stage1 / "score_model.ckpt")
    trained = {
        k.removeprefix("backbone."): v
        for k, v in saved["state_dict"].items()
        if k.startswith("backbone.")
    }
    assert trained.keys() == init.keys()
    for key, value in init.items():
        assert torch.allclose(trained[key], value, atol=1e-6), key
    cold = torch.load(
        tmp_path / "cold" / "models" / "sgmse-sigma2_seed1234.pt",
        weights_only=True,
    )
    assert "init" not in cold["settings"]
    assert not all(
        torch.equal(cold["state_dict"][f"backbone.{k}"], v)
        for k, v in init.items()
    )
    report = (out / "gns_loss_comparison.md").read_text()
    assert report.startswith("# GNS and loss comparison on MiniWHAMR")
    assert "| reverberant input |" in report
    assert "noisy input" not in report
    assert "WHAMR! cv split" in report
    assert f"warm start from the score network of {stage1}" in report
    # without IoC the report says so once per IoC table, with no empty table
    assert "no IoC (--ioc-times 0)" in report
    assert report.count("No IoC (--ioc-times 0).") == 2
    assert "Hutchinson" not in report
