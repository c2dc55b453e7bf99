"""Neural networks (SpeechBrain "lobes"): the NCSN++ score network and the
stage-2 refinement model, plus their building blocks in ``layers``."""

from speechbrain_elbo.lobes.ncsnpp import NCSNpp
from speechbrain_elbo.lobes.refiner import Refiner

__all__ = ["NCSNpp", "Refiner"]
