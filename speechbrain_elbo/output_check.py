"""Enhanced audio that departs grossly from its input: found and reported.

A sampler with too few steps can return garbage instead of speech: with
the bundled model, the predictor-corrector sampler with 3 steps returned a
clipped input's enhancement at 13.5 times its peak (the tryout of
docs/inference.md, "Reliability"). Enhancement removes noise, so its
output is not much louder than its input; this module compares each output
with its input and names what departs, with the sampler settings that
produced it and those to change:

- :class:`OutputStats`: energy and peak of an input and its output,
  accumulated block by block (chunked files);
- :func:`departures`: the same for a batch of waveforms, one reason or
  None per waveform;
- :class:`EnhancementOutputError`: raised where an output would be written.

An output departs when it holds NaN or infinite values, when its peak
exceeds :data:`MAX_PEAK_GAIN` times the input's, or when its energy
exceeds :data:`MAX_ENERGY_GAIN` times the input's: thresholds above what
the samplers return at their usual settings (one Euler step, the fewest,
comes closest to the peak limit), well below what a sampler that did not
converge returns.

Example
-------
>>> from speechbrain_elbo.sampling import Sampler
>>> noisy = torch.tensor([[0.5, -1.0, 0.25]])
>>> departures(noisy, 0.5 * noisy, Sampler("pc", 30))
[None]
>>> print(departures(noisy, 10 * noisy, Sampler("pc", 3))[0])
the output departs from the input (peak 10.0 times the input's, energy 100
times); settings: sampler pc, 3 steps, 1 corrector step(s), snr 0.5; raise
the steps (e.g. 30) or use the ODE sampler (ode)
"""

import math

import torch

__all__ = [
    "MAX_PEAK_GAIN",
    "MAX_ENERGY_GAIN",
    "EnhancementOutputError",
    "OutputStats",
    "departures",
    "settings_advice",
]

#: An output whose peak exceeds this many times the input's departs.
MAX_PEAK_GAIN = 4.0

#: An output whose mean energy exceeds this many times the input's departs.
MAX_ENERGY_GAIN = 100.0


class EnhancementOutputError(ValueError):
    """The enhanced audio departs grossly from its input (not written)."""


def settings_advice(sampler):
    """The sampler's settings and what to change, for a message.

    Example
    -------
    >>> from speechbrain_elbo.sampling import Sampler
    >>> settings_advice(Sampler("euler", 1))
    'settings: sampler euler, 1 steps; raise the steps (e.g. 30)'
    """
    if sampler.name == "pc":
        return (
            f"settings: sampler pc, {sampler.steps} steps, "
            f"{sampler.corrector_steps} corrector step(s), snr "
            f"{sampler.snr:g}; raise the steps (e.g. 30) or use the ODE "
            "sampler (ode)"
        )
    return (
        f"settings: sampler {sampler.name}, {sampler.steps} steps; raise "
        "the steps (e.g. 30)"
    )


class OutputStats:
    """Energy and peak of an input and of its output, block by block.

    Example
    -------
    >>> from speechbrain_elbo.sampling import Sampler
    >>> stats = OutputStats()
    >>> stats.add(torch.ones(4), torch.ones(4))
    >>> stats.add(torch.ones(4), torch.full((4,), float("nan")))
    >>> stats.reason(Sampler("heun", 8)).split(";")[0]
    'the output holds NaN or infinite values'
    """

    def __init__(self):
        self.input_energy = 0.0
        self.output_energy = 0.0
        self.samples = 0
        self.input_peak = 0.0
        self.output_peak = 0.0
        self.finite = True

    def add(self, noisy, enhanced):
        """Count a block of input and the matching block of output."""
        noisy = noisy.detach().double()
        enhanced = enhanced.detach().double()
        if not torch.isfinite(enhanced).all():
            self.finite = False
            return
        self.input_energy += float(noisy.pow(2).sum())
        self.output_energy += float(enhanced.pow(2).sum())
        self.samples += noisy.numel()
        self.input_peak = max(self.input_peak, float(noisy.abs().max()))
        self.output_peak = max(self.output_peak, float(enhanced.abs().max()))

    def reason(self, sampler):
        """Why the output departs from its input, or None if it does not."""
        if not self.finite:
            return (
                "the output holds NaN or infinite values; "
                + settings_advice(sampler)
            )
        peak = self.output_peak / max(self.input_peak, 1e-30)
        energy = self.output_energy / max(self.input_energy, 1e-30)
        if peak <= MAX_PEAK_GAIN and energy <= MAX_ENERGY_GAIN:
            return None
        return (
            f"the output departs from the input (peak {peak:.1f} times the "
            f"input's, energy {energy:.3g} times); " + settings_advice(sampler)
        )


def departures(noisy, enhanced, sampler, lengths=None):
    """Per waveform, why its output departs from its input (or None).

    Arguments
    ---------
    noisy, enhanced : torch.Tensor
        Inputs and outputs (B, L), on the same scale.
    sampler : speechbrain_elbo.sampling.Sampler
        The settings that produced ``enhanced`` (named in the reasons).
    lengths : torch.Tensor, optional
        Relative lengths (B,); samples past them are ignored.

    Returns
    -------
    list of str or None
    """
    reasons = []
    for index in range(noisy.shape[0]):
        valid = noisy.shape[-1]
        if lengths is not None:
            valid = max(1, int(math.floor(float(lengths[index]) * valid)))
        stats = OutputStats()
        stats.add(noisy[index, :valid], enhanced[index, :valid])
        reasons.append(stats.reason(sampler))
    return reasons
