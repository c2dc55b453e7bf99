"""Repack a trained two-stage export as a model bundled with the package.

The recipe driver (``run.sh``) ends with a ``from_hparams`` folder of the
two-stage model. Bundling it writes a new export of the same networks,
optionally with float16 weight storage (half the size; the networks still
compute in float32) and with a default sampler chosen after training, merges
the model cards of both stages with what the maintainer measured, and copies
the training logs in, so that ``make demo`` can draw the training curves::

    python -m speechbrain_elbo.pretrained.bundle RUN/model minivb-small \\
        --stage1-card RUN/score/model/model_card.json \\
        --score-log RUN/score/train_log.txt \\
        --refiner-log RUN/refiner/train_log.txt \\
        --sampler euler --steps 4 --weights-dtype float16 --card extra.json

Example
-------
>>> from speechbrain_elbo.export import export_enhancer
>>> from speechbrain_elbo.lobes.ncsnpp import NCSNpp
>>> from speechbrain_elbo.sampling import Sampler
>>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
>>> from speechbrain_elbo.spectral import SpectralTransform
>>> tmp = getfixture("tmp_path")
>>> net = NCSNpp(nf=8, ch_mult=(1, 1), num_res_blocks=1, num_freqs=16)
>>> source = export_enhancer(tmp / "run", net, OUVESDE(GeometricGNS()),
...                          SpectralTransform(), Sampler("pc", 30))
>>> folder = bundle_model(source, tmp / "bundled", sampler="euler", steps=4,
...                       card={"data": "MiniVB"})
>>> card = json.loads((folder / "model_card.json").read_text())
>>> card["default_sampler"]["name"], card["model_card"]["data"]
('euler', 'MiniVB')
"""

import argparse
import json
import pathlib
import shutil
import sys

from speechbrain_elbo.export import export_enhancer, load_enhancer
from speechbrain_elbo.pretrained import PRETRAINED_DIR
from speechbrain_elbo.sampling import Sampler

__all__ = ["bundle_model", "main"]

#: Names of the copied training logs, as the demo reads them.
SCORE_LOG = "train_log_score.txt"
REFINER_LOG = "train_log_refiner.txt"


def _read_card(path):
    """The free-form ``model_card`` part of an export's model_card.json."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model card {path} not found.")
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data.get("model_card") or {})


def _target(name_or_folder):
    text = str(name_or_folder)
    if "/" in text or text.startswith("."):
        return pathlib.Path(text)
    return PRETRAINED_DIR / text


def bundle_model(
    source,
    name_or_folder,
    sampler=None,
    steps=None,
    weights_dtype="float16",
    card=None,
    stage1_card=None,
    score_log=None,
    refiner_log=None,
):
    """Write ``source`` again as a bundled model folder.

    Arguments
    ---------
    source : str or pathlib.Path
        An exported ``from_hparams`` folder (one or two stages).
    name_or_folder : str or pathlib.Path
        A bare name (a folder of :mod:`speechbrain_elbo.pretrained`) or a
        path (anything with a ``/``).
    sampler, steps : str, int, optional
        New default sampler name and step count; default: as exported.
    weights_dtype : str
        ``"float16"`` (default) or ``"float32"`` weight storage.
    card : dict, optional
        Fields added to the model card (measured metrics, wall time...).
    stage1_card : str or pathlib.Path, optional
        The stage-1 export's ``model_card.json``; its fields are kept under
        ``stage1`` in the card.
    score_log, refiner_log : str or pathlib.Path, optional
        The recipe's ``train_log.txt`` of each stage, copied in as
        ``train_log_score.txt`` and ``train_log_refiner.txt``.

    Returns
    -------
    pathlib.Path
        The written folder.
    """
    source = pathlib.Path(source)
    loaded = load_enhancer(source)
    default = loaded.sampler
    chosen = Sampler(
        sampler or default.name,
        steps if steps is not None else default.steps,
        corrector_steps=default.corrector_steps,
        snr=default.snr,
    )
    logs = {SCORE_LOG: score_log, REFINER_LOG: refiner_log}
    for name, path in logs.items():
        if path is not None and not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"Training log {path} ({name}) not found.")
    merged = _read_card(source / "model_card.json")
    if stage1_card is not None:
        merged["stage1"] = _read_card(stage1_card)
    merged.update(card or {})
    merged["bundled_from"] = {
        "default_sampler_at_training": repr(default),
        "weights_dtype": weights_dtype,
    }
    folder = export_enhancer(
        _target(name_or_folder),
        loaded.backbone,
        loaded.sde,
        loaded.transform,
        chosen,
        refiner=loaded.refiner,
        model_card=merged,
        sample_rate=loaded.sample_rate,
        weights_dtype=weights_dtype,
    )
    for name, path in logs.items():
        if path is not None:
            shutil.copyfile(path, folder / name)
    return folder


def main(argv=None):
    """Command line: ``python -m speechbrain_elbo.pretrained.bundle``."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_elbo.pretrained.bundle",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("source", help="exported from_hparams folder")
    parser.add_argument("target", help="bundled model name or a folder path")
    parser.add_argument("--sampler", choices=("pc", "euler", "heun"))
    parser.add_argument("--steps", type=int)
    parser.add_argument(
        "--weights-dtype", default="float16", choices=("float16", "float32")
    )
    parser.add_argument("--card", help="JSON file of extra card fields")
    parser.add_argument("--stage1-card", help="stage 1's model_card.json")
    parser.add_argument("--score-log", help="stage 1's train_log.txt")
    parser.add_argument("--refiner-log", help="stage 2's train_log.txt")
    args = parser.parse_args(argv)
    card = None
    if args.card:
        card = json.loads(pathlib.Path(args.card).read_text(encoding="utf-8"))
    try:
        folder = bundle_model(
            args.source,
            args.target,
            sampler=args.sampler,
            steps=args.steps,
            weights_dtype=args.weights_dtype,
            card=card,
            stage1_card=args.stage1_card,
            score_log=args.score_log,
            refiner_log=args.refiner_log,
        )
    except (OSError, ValueError) as error:
        print(f"bundle: error: {error}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"bundled {args.source} -> {folder} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
