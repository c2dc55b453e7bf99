"""Diffusion-based speech enhancement and dereverberation for SpeechBrain.

Implements the score-based (SGMSE+) framework with a tunable Gaussian noise
schedule, ELBO analysis and ELBO-aware losses, the Importance of Condition
metric and a two-stage (diffusion, then refinement) pipeline.
"""

from speechbrain_elbo.version import __version__

__all__ = ["__version__"]
