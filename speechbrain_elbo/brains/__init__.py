"""The SpeechBrain Brains of the two stages (docs/method.md, section 7).

- :class:`ScoreBrain` (stage 1, :mod:`speechbrain_elbo.brains.score`): the
  score model;
- :class:`RefinerBrain` (stage 2, :mod:`speechbrain_elbo.brains.refiner`):
  the refinement model on cached stage-1 estimates;
- :class:`EnhancementBrain` (:mod:`speechbrain_elbo.brains.base`): what they
  share (EMA of the weights, non-finite losses, checkpoints, the test
  summary), with :func:`make_ema` and :func:`unwrap_module`.

Only the recipes (and the benchmarks that train) import this subpackage;
inference needs none of it.

Example
-------
>>> from speechbrain_elbo.brains import RefinerBrain, ScoreBrain
>>> issubclass(ScoreBrain, EnhancementBrain)
True
>>> RefinerBrain.test_systems
('noisy', 'stage1', 'stage1+2')
"""

from speechbrain_elbo.brains.base import (
    RESULT_FIELDS,
    UTTERANCE_FIELDS,
    EnhancementBrain,
    make_ema,
    unwrap_module,
)
from speechbrain_elbo.brains.refiner import RefinerBrain
from speechbrain_elbo.brains.score import ScoreBrain

__all__ = [
    "EnhancementBrain",
    "ScoreBrain",
    "RefinerBrain",
    "make_ema",
    "unwrap_module",
    "RESULT_FIELDS",
    "UTTERANCE_FIELDS",
]
