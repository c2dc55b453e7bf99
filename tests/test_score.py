"""Network output to score (docs/method.md, sections 2 and 3)."""

import torch

from speechbrain_elbo.score import (
    ScoreModel,
    channels_to_complex,
    complex_to_channels,
)
from speechbrain_elbo.sde import OUVESDE, GeometricGNS


class Recorder(torch.nn.Module):
    """Returns a fixed output and records what it was given."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x, cond):
        self.inputs, self.cond = x, cond
        return self.output.expand(x.shape[0], -1, -1, -1)


def test_score_is_minus_output_over_sigma():
    sde = OUVESDE(GeometricGNS())
    out = torch.tensor([[[[0.5]], [[-2.0]]]])
    model = ScoreModel(Recorder(out), sde)
    x = torch.full((2, 1, 1, 1), 1 + 2j)
    y = torch.full_like(x, 3 - 1j)
    t = torch.tensor([0.03, 1.0])
    score = model(x, y, t)
    sigma = sde.std(t)
    expected = -(0.5 - 2.0j) / sigma
    assert torch.allclose(score.flatten(), expected.to(torch.complex64))
    # channels [Re x, Im x, Re y, Im y] and conditioning log sigma_t
    assert model.backbone.inputs[0].flatten().tolist() == [1, 2, 3, -1]
    assert torch.allclose(model.backbone.cond, torch.log(sigma))


def test_noise_prediction_target_gives_exact_tweedie():
    # a backbone that outputs the true z makes Tweedie return x0
    sde = OUVESDE(GeometricGNS())
    x0 = torch.randn(2, 1, 4, 4, dtype=torch.complex64)
    y = torch.randn_like(x0)
    t = torch.tensor([0.2, 0.7])
    x_t, z = sde.perturb(x0, y, t)
    model = ScoreModel(Recorder(complex_to_channels(z)[:1]), sde)
    model.backbone.output = complex_to_channels(z)
    model.backbone.forward = lambda x, c: model.backbone.output
    assert torch.allclose(model.data_prediction(x_t, y, t), x0, atol=1e-5)


def test_channel_round_trip_and_float32_under_autocast():
    x = torch.randn(2, 1, 3, 4, dtype=torch.complex64)
    assert torch.equal(channels_to_complex(complex_to_channels(x)), x)
    half = complex_to_channels(x).to(torch.bfloat16)
    assert channels_to_complex(half).dtype == torch.complex64
