"""Preparation of the corpora used by the recipes.

``prepare_voicebank`` and ``prepare_whamr`` read the official layouts and
write SpeechBrain JSON manifests that ``speechbrain_elbo.dataio`` turns into
datasets; ``speechbrain_elbo.dataprep.common`` holds what they share.
"""

from speechbrain_elbo.dataprep.voicebank import prepare_voicebank
from speechbrain_elbo.dataprep.whamr import prepare_whamr

__all__ = ["prepare_voicebank", "prepare_whamr"]
