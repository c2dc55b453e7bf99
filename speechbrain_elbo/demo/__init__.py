"""``make demo``: enhance real noisy speech with a bundled model and report.

``python -m speechbrain_elbo.demo`` (:mod:`~speechbrain_elbo.demo.cli`), or
:func:`run_demo` from Python, takes an exported two-stage model (by default
the one bundled in :mod:`speechbrain_elbo.pretrained`) and the MiniVB test
split, and writes into an output folder (``results/demo``):

- ``report.json`` and ``report.md``: PESQ-WB, ESTOI, SI-SDR (and DNSMOS when
  the ``speechmos`` package is installed), NFE and real-time factor of the
  noisy input, stage 1 and stage 1+2; the ELBO terms with the Tweedie
  decoder (stage 1) and the refiner as decoder (stage 1+2); the Importance
  of Condition curve;
- ``report.html``: the same for a browser, with audio players for the
  items with the best, median and worst gain;
- ``figures/``: spectrograms of those items (noisy, stage 1, stage 1+2,
  clean), the IoC curve, the model's training curves;
- ``enhanced/stage1/`` and ``enhanced/stage1+2/``: the enhanced WAV files;
  ``listen/``: the noisy and clean files of the items of ``report.html``;
- ``model/``: a copy of the model folder used (with its full model card).

The modules, in the order of a run:

- :mod:`~speechbrain_elbo.demo.data`: the MiniVB test split, built when
  missing, and its (noisy, clean) items;
- :mod:`~speechbrain_elbo.demo.run`: :func:`run_demo` and its
  :class:`DemoOptions`: load the model, enhance every item once with
  ``DiffusionEnhancement.enhance_stages`` (stage 1 and stage 1+2 from the
  same sample), score and time;
- :mod:`~speechbrain_elbo.demo.analysis`: the ELBO terms and the IoC curve;
- :mod:`~speechbrain_elbo.demo.figures`,
  :mod:`~speechbrain_elbo.demo.report` and
  :mod:`~speechbrain_elbo.demo.html_report`: the figures, ``report.md``,
  ``report.json`` and ``report.html``.

Training a model from scratch first (``make demo-train``) needs the recipe
of a source checkout: ``tools/demo_train.py`` runs it, then
:func:`run_demo` on the trained model.

Example
-------
>>> from speechbrain_elbo.demo import DemoOptions, run_demo
>>> DemoOptions().max_items == DEFAULT_ITEMS == 24
True
"""

from speechbrain_elbo.demo.analysis import elbo_summary, ioc_summary
from speechbrain_elbo.demo.cli import main
from speechbrain_elbo.demo.data import (
    DEFAULT_DATA,
    DEFAULT_ITEMS,
    load_test_items,
    prepare_demo_data,
)
from speechbrain_elbo.demo.run import (
    DEFAULT_OUT,
    DemoError,
    DemoOptions,
    ElboOptions,
    IocOptions,
    run_demo,
)

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_ITEMS",
    "DEFAULT_OUT",
    "DemoError",
    "DemoOptions",
    "ElboOptions",
    "IocOptions",
    "elbo_summary",
    "ioc_summary",
    "load_test_items",
    "main",
    "prepare_demo_data",
    "run_demo",
]
