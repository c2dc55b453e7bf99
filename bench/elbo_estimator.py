"""Standard error of the ELBO's diffusion term: plain versus stratified draws.

Measures, on the Gaussian oracle of docs/method.md §6 with the SGMSE+ GNS,
the spread over repeated estimates of -ELBO for one utterance (64 x 64 bins)
when the K diffusion-time draws are (a) independent draws from the
importance proposal (uniform in log SNR) or (b) stratified as in
``speechbrain_elbo.elbo.negative_elbo``, and the standard error that the
estimator reports. Run: ``.venv/bin/python bench/elbo_estimator.py``.
"""

import platform
import statistics

import torch

from speechbrain_elbo.elbo import negative_elbo
from speechbrain_elbo.oracle import GaussianOracle
from speechbrain_elbo.sde import OUVESDE, GeometricGNS


class IndependentDraws(OUVESDE):
    """An SDE whose inverse CDF ignores the stratum: plain i.i.d. draws."""

    def importance_time(self, u, iterations=60):
        fresh = torch.rand(u.shape, generator=self._generator)
        return super().importance_time(fresh, iterations)


def spread(sde, repeats, draws):
    oracle = GaussianOracle(sde, c=0.5, s0=0.2)
    generator = torch.Generator().manual_seed(0)
    y = 0.3 * torch.randn(
        1, 1, 64, 64, dtype=torch.complex64, generator=generator
    )
    x0 = oracle.sample_x0(y, generator)
    totals, errors = [], []
    for _ in range(repeats):
        terms = negative_elbo(
            oracle,
            sde,
            x0,
            y,
            diffusion_samples=draws,
            reconstruction_samples=1,
            generator=generator,
            units="nats",
        )
        totals.append(terms.total.item() / 4096)
        errors.append(terms.stderr.item() / 4096)
    return statistics.stdev(totals), statistics.mean(errors)


def main():
    torch.manual_seed(0)
    gns = GeometricGNS(0.05, 0.5)
    plain = IndependentDraws(gns)
    plain._generator = torch.Generator().manual_seed(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("nats per bin, one utterance of 64 x 64 bins, 40 repeats")
    print(
        "| draws K | plain: observed sd | stratified: observed sd | "
        "stratified: reported stderr |"
    )
    print("|---|---|---|---|")
    for draws in (8, 16, 32):
        sd_plain, _ = spread(plain, 40, draws)
        sd_strat, se_strat = spread(OUVESDE(gns), 40, draws)
        print(f"| {draws} | {sd_plain:.4f} | {sd_strat:.4f} | {se_strat:.4f} |")


if __name__ == "__main__":
    main()
