"""Import sgmse (SGMSE+) checkpoints as exported enhancer folders.

An sgmse Lightning checkpoint (sgmse 0.1.2, ``sgmse.model.ScoreModel``)
holds the backbone weights under ``state_dict`` with the prefix ``dnn.``,
the EMA weights under ``ema`` (torch_ema's ``shadow_params``, in the order
of the backbone's parameters) and every setting under
``hyper_parameters``. :func:`import_sgmse` reads it without executing
anything (:func:`speechbrain_elbo.interop.checkpoint.read_checkpoint`),
checks every setting (:mod:`speechbrain_elbo.interop.sgmse_hparams`),
maps every tensor (:mod:`speechbrain_elbo.interop.sgmse_weights`) onto
:class:`~speechbrain_elbo.interop.sgmse_network.SGMSENCSNpp` and writes a
folder with :func:`speechbrain_elbo.export.export_enhancer` that
``DiffusionEnhancement.from_hparams`` loads. The command line is
``speechbrain-elbo-import CKPT --out DIR`` (:func:`main`). The names of
those modules that this one used to define (``SGMSENCSNpp``,
``SGMSE_PAD_MULTIPLE``, ``SGMSESettings``, ``sgmse_settings``,
``map_ncsnpp_state``) are importable from here too.

Supported: backbones ``ncsnpp`` (SGMSE+), ``ncsnpp_48k`` (EARS, 48 kHz)
and ``ncsnpp_v2`` (with its ``c_in``/``c_out``/``c_skip``/
``network_scaling`` and ``score_matching`` or ``denoiser`` output) with
SDE ``ouve``. Anything else is refused with one line naming it
(docs/interop.md). The same command imports checkpoint folders of
SpeechBrain's SGMSE recipe
(:mod:`speechbrain_elbo.interop.speechbrain_sgmse`).

How sgmse computes, and where it is reproduced:

- spectral transform: STFT (periodic Hann window, centred frames) of the
  waveform divided by its peak, compressed as ``spec_factor |X|^e
  exp(j angle X)`` = :class:`~speechbrain_elbo.spectral.SpectralTransform`
  with ``alpha = spec_abs_exponent``, ``beta = spec_factor``;
- SDE: OUVE with ``theta`` = ``gamma`` and the geometric schedule
  (docs/method.md, section 2) = :class:`~speechbrain_elbo.sde.OUVESDE`;
- score: ``-net(x_t, y, log t, feature_divisor=t)`` (the sgmse ``ncsnpp``
  conditions on the time t, not on sigma_t): the ``"sgmse_time"``
  parameterisation of :class:`~speechbrain_elbo.score.ScoreModel`, declared
  by ``SGMSENCSNpp``; ``ncsnpp_48k`` divides the output instead,
  ``-net(x_t, y, log t) / t`` (``"sgmse_time_output"``); ``ncsnpp_v2``
  scales inputs and output as its ScoreModel's settings say
  (``"sgmse_v2"``, declared by ``SGMSENCSNppV2``);
- padding: sgmse's ``enhancement.py`` pads the spectrogram to a multiple
  of 64 frames before sampling (``pad_spec``: zeros, reflection for
  ``ncsnpp_48k``) and decodes the padded sample before cropping the
  waveform: ``SGMSENCSNpp`` declares ``frame_multiple`` 64, its
  ``frame_padding`` and ``decode_padded``, and the pipeline does the same;
- sampler: the predictor-corrector of ``enhancement.py`` (reverse
  diffusion, annealed Langevin with ``snr`` 0.5, one corrector step, N
  from the checkpoint) = :func:`speechbrain_elbo.sampling.sample_pc` with
  the same grid ``linspace(1, t_eps, N)`` then 0.

Example
-------
>>> SGMSENCSNpp.__module__  # what exported folders name
'speechbrain_elbo.interop.sgmse_network'
>>> sorted(vars(build_parser().parse_args(["m.ckpt", "--out", "m"])))
['checkpoint', 'corrector_steps', 'hparams', 'ignore_key', 'no_ema', 'out',
 'snr', 'steps']
"""

import argparse
import pathlib
import sys

from speechbrain_elbo.export import export_enhancer, file_sha256
from speechbrain_elbo.interop.checkpoint import CheckpointError, read_checkpoint
from speechbrain_elbo.interop.sgmse_hparams import (
    SGMSESettings,
    equivalent_loss,
    plain_value,
    sgmse_settings,
)
from speechbrain_elbo.interop.sgmse_network import (
    SGMSE_PAD_MULTIPLE,
    SGMSENCSNpp,
)
from speechbrain_elbo.interop.sgmse_weights import (
    backbone_tensors,
    map_ncsnpp_state,
)
from speechbrain_elbo.sampling import Sampler

__all__ = [
    "import_sgmse",
    "main",
    "build_parser",
    # defined in sgmse_network, sgmse_hparams and sgmse_weights
    "SGMSENCSNpp",
    "SGMSE_PAD_MULTIPLE",
    "SGMSESettings",
    "sgmse_settings",
    "map_ncsnpp_state",
]

PROG = "speechbrain-elbo-import"


def import_sgmse(
    checkpoint_path,
    out,
    use_ema=True,
    ignore_keys=(),
    steps=None,
    snr=None,
    corrector_steps=None,
):
    """Import an sgmse checkpoint as an exported enhancer folder.

    Arguments
    ---------
    checkpoint_path : str or pathlib.Path
        An sgmse 0.1.2 Lightning checkpoint (``.ckpt``).
    out : str or pathlib.Path
        The folder to write (see
        :func:`speechbrain_elbo.export.export_enhancer`).
    use_ema : bool
        Import the EMA weights (default, what sgmse's ``enhancement.py``
        uses) or the raw ones.
    ignore_keys : sequence of str
        Unknown hyper-parameters to accept (recorded in the model card).
    steps, snr, corrector_steps : optional
        The folder's default predictor-corrector settings (sgmse's
        ``enhancement.py`` options ``--N``, ``--snr``,
        ``--corrector_steps``); default the checkpoint's N, 0.5 and 1.
        WSJ0-REVERB models were evaluated with ``steps=50, snr=0.33``.

    Returns
    -------
    pathlib.Path
        The written folder.

    Example
    -------
    >>> import torch
    >>> from speechbrain_elbo.inference import DiffusionEnhancement
    >>> root = pathlib.Path(__file__).resolve().parents[2]
    >>> ckpt = root / "tests" / "fixtures" / "sgmse" / "ncsnpp_small.ckpt"
    >>> folder = import_sgmse(ckpt, getfixture("tmp_path") / "model")
    >>> enhancer = DiffusionEnhancement.from_hparams(source=folder)
    >>> enhancer.default_sampler, enhancer.sample_rate
    (Sampler('pc', steps=3, corrector_steps=1, snr=0.5), 16000)
    >>> enhancer.enhance_batch(torch.randn(2000), seed=0).shape
    torch.Size([2000])
    """
    path = pathlib.Path(checkpoint_path).expanduser()
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(
            f"{path} has no hyper_parameters: it is not an sgmse Lightning "
            "checkpoint."
        )
    settings = sgmse_settings(hparams, ignore_keys)
    tensors, weights_used = backbone_tensors(checkpoint, use_ema)
    ignored = sorted(k for k in checkpoint if k not in ("state_dict", "ema"))
    source = {
        "format": "sgmse 0.1.2 Lightning checkpoint",
        "file": path.name,
        "sha256": file_sha256(path),
        "weights": weights_used,
        "lightning_version": str(checkpoint.get("pytorch-lightning_version")),
        "epoch": plain_value(checkpoint.get("epoch")),
        "global_step": plain_value(checkpoint.get("global_step")),
    }
    not_imported = {
        "entries": ignored,
        "why": "training state (optimizer, loops, callbacks) and "
        "metadata; hyper_parameters are recorded above",
    }
    sampler = sampler_with(settings.sampler, steps, snr, corrector_steps)
    return export_imported(
        out, hparams, settings, tensors, sampler, source, not_imported
    )


def sampler_with(default, steps=None, snr=None, corrector_steps=None):
    """The predictor-corrector ``default`` with the given settings changed.

    Example
    -------
    >>> sampler_with(Sampler("pc", 30, corrector_steps=1, snr=0.5), snr=0.33)
    Sampler('pc', steps=30, corrector_steps=1, snr=0.33)
    """
    return Sampler(
        "pc",
        default.steps if steps is None else steps,
        default.corrector_steps if corrector_steps is None else corrector_steps,
        default.snr if snr is None else snr,
    )


def export_imported(
    out, hparams, settings, tensors, sampler, source, not_imported
):
    """Build the network, load the mapped tensors, write the folder.

    The one writer of imported models, for sgmse checkpoints
    (:func:`import_sgmse`) and SpeechBrain SGMSE checkpoint folders
    (:func:`speechbrain_elbo.interop.speechbrain_sgmse.import_speechbrain_sgmse`).

    Arguments
    ---------
    out : str or pathlib.Path
        The folder to write.
    hparams : dict
        The sgmse ``hyper_parameters`` the settings came from.
    settings : SGMSESettings
        From :func:`sgmse_settings`; ``settings.backbone`` may be adjusted
        by the caller (e.g. ``decode_padded``).
    tensors : dict
        The backbone's tensors, sgmse names without ``dnn.``.
    sampler : speechbrain_elbo.sampling.Sampler
        The folder's default sampler.
    source : dict
        The model card's ``source`` entry (files, SHA-256, weights).
    not_imported : dict
        What of the source was not imported, and why.

    Returns
    -------
    pathlib.Path
        The written folder.
    """
    net = settings.network(**settings.backbone)
    net.load_state_dict(map_ncsnpp_state(tensors, net), strict=True)
    card = {
        "source": source,
        "settings_read": settings.read,
        "training_only_settings": settings.training_only,
        "not_imported": not_imported,
        "sgmse_backbone": hparams.get("backbone"),
        "score_parameterisation": net.score_parameterisation,
        "frame_padding": _padding_note(net),
        "training_loss": _loss_note(hparams),
    }
    if net.score_parameterisation == "sgmse_v2":
        card["preconditioning"] = net.preconditioning
    return export_enhancer(
        out,
        net,
        settings.sde,
        settings.transform,
        sampler,
        model_card=card,
        sample_rate=settings.sample_rate,
    )


def _padding_note(net):
    """How the imported model pads frames (sgmse's enhancement.py or not)."""
    order = (
        "the padded sample decoded, then the waveform cropped, as sgmse's "
        "enhancement.py"
        if net.decode_padded
        else "the sample's frames cropped, then decoded, as SpeechBrain's "
        "SGMSE recipe"
    )
    return (
        f"{net.frame_padding} to a multiple of {SGMSE_PAD_MULTIPLE} frames, "
        f"{order}"
    )


def _loss_note(hparams):
    """The model card's account of sgmse's training loss."""
    sgmse = {
        "loss_type": plain_value(hparams.get("loss_type", "score_matching")),
        "loss_weighting": plain_value(hparams.get("loss_weighting", "sigma^2")),
    }
    try:
        name, factor = equivalent_loss(hparams)
    except CheckpointError as error:
        return {"sgmse": sgmse, "equivalent": None, "why": str(error)}
    return {
        "sgmse": sgmse,
        "equivalent": name,
        "relation": f"L_sgmse = {factor} * C * F * T * L_{name}",
    }


def build_parser():
    """The argument parser of ``speechbrain-elbo-import``.

    Example
    -------
    >>> args = build_parser().parse_args(["m.ckpt", "--out", "m", "--no-ema"])
    >>> args.checkpoint, args.out, args.no_ema, args.steps, args.ignore_key
    ('m.ckpt', 'm', True, None, [])
    >>> build_parser().parse_args(["CKPT+x", "--out", "m",
    ...                            "--hparams", "h.yaml"]).hparams
    'h.yaml'
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Import an sgmse (SGMSE+) checkpoint, or a checkpoint "
        "folder of SpeechBrain's SGMSE recipe, as a folder that "
        "DiffusionEnhancement.from_hparams and speechbrain-elbo-enhance load.",
    )
    parser.add_argument(
        "checkpoint",
        help="sgmse 0.1.2 .ckpt file, or a CKPT+... folder of SpeechBrain's "
        "SGMSE recipe",
    )
    parser.add_argument(
        "--hparams",
        default=None,
        metavar="YAML",
        help="CKPT+... folder only: the run's hyperparams.yaml (default: "
        "FOLDER/../../hyperparams.yaml, the recipe's run folder)",
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument(
        "--no-ema",
        action="store_true",
        help="import the raw weights instead of the EMA weights",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="default number of sampler steps N (default: the checkpoint's)",
    )
    parser.add_argument(
        "--snr",
        type=float,
        default=None,
        help="default corrector snr (default 0.5; WSJ0-REVERB: 0.33)",
    )
    parser.add_argument(
        "--corrector-steps",
        type=int,
        default=None,
        help="default corrector steps per step (default 1)",
    )
    parser.add_argument(
        "--ignore-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept this unknown hyper-parameter (repeatable)",
    )
    return parser


def main(argv=None):
    """Run ``speechbrain-elbo-import``; returns the exit status.

    0 on success, 1 on a checkpoint that cannot be imported (one line on
    stderr), 2 on a malformed command line.

    Example
    -------
    >>> main([str(getfixture("tmp_path") / "none.ckpt"), "--out", "x"])
    1
    """
    args = build_parser().parse_args(argv)
    options = dict(
        use_ema=not args.no_ema,
        ignore_keys=args.ignore_key,
        steps=args.steps,
        snr=args.snr,
        corrector_steps=args.corrector_steps,
    )
    try:
        if pathlib.Path(args.checkpoint).expanduser().is_dir():
            from speechbrain_elbo.interop.speechbrain_sgmse import (
                import_speechbrain_sgmse,
            )

            folder = import_speechbrain_sgmse(
                args.checkpoint, args.out, args.hparams, **options
            )
        elif args.hparams is not None:
            raise CheckpointError(
                "--hparams is for a CKPT+... folder of SpeechBrain's SGMSE "
                "recipe; an sgmse .ckpt holds its own hyper_parameters."
            )
        else:
            folder = import_sgmse(args.checkpoint, args.out, **options)
    except (ValueError, OSError, RuntimeError) as error:
        message = " ".join(str(error).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    print(f"{PROG}: wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
