"""Read and check the ``hyper_parameters`` of an sgmse checkpoint.

An sgmse 0.1.2 Lightning checkpoint records every setting of the model
(backbone, SDE, STFT, sampler) and of its training under
``hyper_parameters``. :func:`sgmse_settings` checks each one against what
this package reproduces exactly, refuses anything else with one line
naming it (:class:`~speechbrain_elbo.interop.checkpoint.CheckpointError`),
and builds our components from the rest: the network class
(:class:`~speechbrain_elbo.interop.sgmse_network.SGMSENCSNpp`, or
:class:`~speechbrain_elbo.interop.sgmse_network.SGMSENCSNppV2` for
``ncsnpp_v2``) and its constructor arguments, the
:class:`~speechbrain_elbo.sde.OUVESDE`, the
:class:`~speechbrain_elbo.spectral.SpectralTransform` and the default
:class:`~speechbrain_elbo.sampling.Sampler` (docs/interop.md).

Example
-------
>>> settings = sgmse_settings({"backbone": "ncsnpp", "sde": "ouve",
...     "theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "N": 30,
...     "t_eps": 0.03, "n_fft": 510, "hop_length": 128, "sr": 16000})
>>> settings.sampler, settings.transform.alpha, settings.backbone["nf"]
(Sampler('pc', steps=30, corrector_steps=1, snr=0.5), 0.5, 128)
>>> sgmse_settings({"backbone": "dcunet", "sde": "ouve"})
Traceback (most recent call last):
...
speechbrain_elbo.interop.checkpoint.CheckpointError: backbone 'dcunet' is
not supported...
"""

from dataclasses import dataclass, field

from speechbrain_elbo.interop.checkpoint import CheckpointError, InertReference
from speechbrain_elbo.interop.sgmse_network import (
    SGMSE_PAD_MULTIPLE,
    SGMSENCSNpp,
    SGMSENCSNppV2,
)
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.score import check_preconditioning
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

__all__ = [
    "SGMSESettings",
    "sgmse_settings",
    "equivalent_loss",
    "plain_value",
    "BACKBONES",
    "NCSNPP_DEFAULTS",
    "NCSNPP_48K_DEFAULTS",
    "REQUIRED_VALUES",
    "TRAINING_ONLY",
    "READ",
]

#: sgmse ``ncsnpp`` constructor arguments and their defaults (sgmse 0.1.2).
NCSNPP_DEFAULTS = {
    "scale_by_sigma": True,
    "nonlinearity": "swish",
    "nf": 128,
    "ch_mult": (1, 1, 2, 2, 2, 2, 2),
    "num_res_blocks": 2,
    "attn_resolutions": (16,),
    "resamp_with_conv": True,
    "conditional": True,
    "fir": True,
    "fir_kernel": [1, 3, 3, 1],
    "skip_rescale": True,
    "resblock_type": "biggan",
    "progressive": "output_skip",
    "progressive_input": "input_skip",
    "progressive_combine": "sum",
    "init_scale": 0.0,
    "fourier_scale": 16,
    "image_size": 256,
    "embedding_type": "fourier",
    "dropout": 0.0,
    "centered": True,
}

#: sgmse ``ncsnpp_48k``: the same arguments, other defaults.
NCSNPP_48K_DEFAULTS = {
    **NCSNPP_DEFAULTS,
    "attn_resolutions": (),
    "progressive": "none",
    "progressive_input": "none",
}

#: Backbone name -> (constructor defaults, where the network divides by t:
#: None for ``ncsnpp_v2``, whose score model scales it, see PRECONDITIONING).
#: ``ncsnpp_v2`` has the defaults of ``ncsnpp`` (it takes no
#: ``scale_by_sigma``, ``conditional`` or ``centered``: they are fixed).
BACKBONES = {
    "ncsnpp": (NCSNPP_DEFAULTS, "features"),
    "ncsnpp_48k": (NCSNPP_48K_DEFAULTS, "output"),
    "ncsnpp_v2": (NCSNPP_DEFAULTS, None),
}

#: sgmse ScoreModel settings that define an ``ncsnpp_v2`` model's score
#: (training only for the other backbones), and their defaults.
PRECONDITIONING = {
    "loss_type": "score_matching",
    "network_scaling": None,
    "c_in": "1",
    "c_out": "1",
    "c_skip": "0",
    "sigma_data": 0.1,
}

#: Settings whose value must be exactly this for the import to be faithful.
REQUIRED_VALUES = {
    "scale_by_sigma": True,
    "resamp_with_conv": True,
    "conditional": True,
    "fir": True,
    "resblock_type": "biggan",
    "embedding_type": "fourier",
    "centered": True,
    "window": "hann",
    "sampler_type": "pc",
}

#: sgmse's defaults of the required settings that are not network arguments.
OTHER_DEFAULTS = {"window": "hann", "sampler_type": "pc"}

#: Settings that only concern training, data loading or logging.
TRAINING_ONLY = (
    "lr",
    "ema_decay",
    "num_eval_files",
    "loss_type",
    "loss_weighting",
    "loss_abs_exponent",
    "sigma_data",
    "l1_weight",
    "pesq_weight",
    "network_scaling",
    "c_in",
    "c_out",
    "c_skip",
    "data_module_cls",
    "base_dir",
    "format",
    "batch_size",
    "num_frames",
    "num_workers",
    "dummy",
    "normalize",
    "gpu",
    "gpus",
    "nolog",
    "no_wandb",
    "wandb_name",
    "log_dir",
    "save_ckpt_interval",
)

#: Settings that define the model, read by the importer.
READ = (
    "backbone",
    "sde",
    "theta",
    "sigma_min",
    "sigma_max",
    "N",
    "sampler_type",
    "t_eps",
    "n_fft",
    "hop_length",
    "window",
    "spec_factor",
    "spec_abs_exponent",
    "transform_type",
    "sr",
    *NCSNPP_DEFAULTS,
)


@dataclass
class SGMSESettings:
    """What an sgmse checkpoint's ``hyper_parameters`` define.

    Attributes
    ----------
    backbone : dict
        Constructor arguments of ``network``.
    sde : speechbrain_elbo.sde.OUVESDE
    transform : speechbrain_elbo.spectral.SpectralTransform
    sampler : speechbrain_elbo.sampling.Sampler
        sgmse's ``enhancement.py`` defaults with the checkpoint's N.
    sample_rate : int
    read : dict
        Every setting read from the checkpoint (value as found, plain).
    training_only : dict
        Settings that concern training only, recorded but not used.
    network : type
        :class:`~speechbrain_elbo.interop.sgmse_network.SGMSENCSNpp` or,
        for ``ncsnpp_v2``,
        :class:`~speechbrain_elbo.interop.sgmse_network.SGMSENCSNppV2`.

    Example
    -------
    >>> settings = sgmse_settings({"backbone": "ncsnpp_48k", "sde": "ouve",
    ...                            "sr": 48000, "lr": 1e-4})
    >>> settings.sample_rate, settings.training_only
    (48000, {'lr': 0.0001})
    >>> settings.backbone["divide_by_t"], settings.backbone["progressive"]
    ('output', 'none')
    """

    backbone: dict
    sde: OUVESDE
    transform: SpectralTransform
    sampler: Sampler
    sample_rate: int
    read: dict = field(default_factory=dict)
    training_only: dict = field(default_factory=dict)
    network: type = SGMSENCSNpp


def plain_value(value):
    """A YAML/JSON-writable form of a hyper-parameter value.

    Example
    -------
    >>> from speechbrain_elbo.interop.checkpoint import inert_reference
    >>> plain_value({"dm": inert_reference("a.B"), 1: (2, 3.0), "x": None})
    {'dm': 'a.B', '1': [2, 3.0], 'x': None}
    >>> plain_value(object())
    '<object object at ...>'
    """
    if isinstance(value, type) and issubclass(value, InertReference):
        return value.qualified_name
    if isinstance(value, tuple | list):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def sgmse_settings(hparams, ignore_keys=()):
    """Check an sgmse ``hyper_parameters`` dict; build our components.

    Arguments
    ---------
    hparams : dict
        The checkpoint's ``hyper_parameters``.
    ignore_keys : sequence of str
        Unknown keys to accept anyway (recorded as such); any other
        unknown key is refused.

    Returns
    -------
    SGMSESettings

    Raises
    ------
    CheckpointError
        A backbone, SDE or setting that is not supported, or an unknown key.

    Example
    -------
    >>> sgmse_settings({"backbone": "ncsnpp", "sde": "sbve"})
    Traceback (most recent call last):
    ...
    speechbrain_elbo.interop.checkpoint.CheckpointError: SDE 'sbve' is not
    supported...
    >>> sgmse_settings({"backbone": "ncsnpp", "sde": "ouve", "fir": False})
    Traceback (most recent call last):
    ...
    speechbrain_elbo.interop.checkpoint.CheckpointError: setting fir=False
    is not supported...
    >>> sgmse_settings({"backbone": "ncsnpp_v2", "sde": "ouve",
    ...                 "network_scaling": "1/t"}).backbone["network_scaling"]
    '1/t'
    """
    defaults, divide_by_t = _check_names(hparams, ignore_keys)
    net = {k: hparams.get(k, v) for k, v in defaults.items()}
    for key, wanted in REQUIRED_VALUES.items():
        value = net.get(key, hparams.get(key, OTHER_DEFAULTS.get(key)))
        if value != wanted:
            raise CheckpointError(
                f"setting {key}={value!r} is not supported (only {wanted!r} "
                "is reproduced exactly)."
            )
    alpha, beta = _compression(hparams)
    n_fft = int(hparams.get("n_fft", 510))
    _check_attention(net, n_fft)
    try:
        transform = SpectralTransform(
            n_fft, int(hparams.get("hop_length", 128)), alpha, beta
        )
        sde = OUVESDE(
            GeometricGNS(
                float(hparams.get("sigma_min", 0.05)),
                float(hparams.get("sigma_max", 0.5)),
            ),
            gamma=float(hparams.get("theta", 1.5)),
            t_eps=float(hparams.get("t_eps", 0.03)),
        )
        sampler = Sampler(
            "pc", int(hparams.get("N", 30)), corrector_steps=1, snr=0.5
        )
    except ValueError as error:
        raise CheckpointError(f"invalid setting: {error}") from None
    # ncsnpp_v2: the score model's scaling settings define the model
    used = (*READ, *PRECONDITIONING) if divide_by_t is None else READ
    read = {k: plain_value(hparams[k]) for k in used if k in hparams}
    training = {
        k: plain_value(hparams[k])
        for k in (*TRAINING_ONLY, *ignore_keys)
        if k in hparams and k not in read
    }
    config = _backbone_config(net, divide_by_t)
    network = SGMSENCSNpp
    if divide_by_t is None:
        network = SGMSENCSNppV2
        config.update(_preconditioning(hparams))
    return SGMSESettings(
        config,
        sde,
        transform,
        sampler,
        int(hparams.get("sr", 16000)),
        read,
        training,
        network,
    )


def _preconditioning(hparams):
    """SGMSENCSNppV2's scaling arguments; refuse what is not reproduced."""
    settings = {k: hparams.get(k, v) for k, v in PRECONDITIONING.items()}
    try:
        check_preconditioning(settings)
    except ValueError as error:
        raise CheckpointError(
            f"ncsnpp_v2 setting {error} Such a model cannot be imported."
        ) from None
    return settings


def equivalent_loss(hparams):
    """This package's loss that sgmse's training loss is a multiple of.

    sgmse's ``score_matching`` loss with ``loss_weighting: sigma^2`` sums
    ``|sigma_t s + z|^2`` over the C F T bins of an example, halves it and
    averages over the batch; ``speechbrain_elbo.losses.SigmaSquaredLoss``
    ("sigma2", docs/method.md, section 4) averages over the bins, so
    ``L_sgmse = 0.5 * C * F * T * L_sigma2``. Any other loss (``denoiser``,
    ``data_prediction``, another weighting) has no equivalent here.

    Arguments
    ---------
    hparams : dict
        The checkpoint's ``hyper_parameters``.

    Returns
    -------
    name : str
        ``"sigma2"`` (:func:`speechbrain_elbo.losses.make_loss`).
    factor : float
        0.5: ``L_sgmse = factor * (bins per example) * L_ours``.

    Raises
    ------
    CheckpointError
        A loss that this package does not reproduce, named.

    Example
    -------
    >>> equivalent_loss({"loss_type": "score_matching"})
    ('sigma2', 0.5)
    >>> equivalent_loss({"loss_type": "denoiser", "loss_weighting": "edm"})
    Traceback (most recent call last):
    ...
    speechbrain_elbo.interop.checkpoint.CheckpointError: sgmse's training
    loss loss_type='denoiser', loss_weighting='edm' has no equivalent...
    """
    loss_type = hparams.get("loss_type", "score_matching")
    weighting = hparams.get("loss_weighting", "sigma^2")
    if loss_type == "score_matching" and weighting == "sigma^2":
        return "sigma2", 0.5
    raise CheckpointError(
        f"sgmse's training loss loss_type={loss_type!r}, "
        f"loss_weighting={weighting!r} has no equivalent in "
        "speechbrain_elbo.losses (only score_matching with sigma^2 is "
        "reproduced, as 'sigma2'); the model imports for enhancement, but "
        "its training loss is not reproduced."
    )


def _check_names(hparams, ignore_keys):
    """The backbone's (defaults, divide_by_t); refuse unknown names."""
    backbone = hparams.get("backbone")
    if backbone not in BACKBONES:
        raise CheckpointError(
            f"backbone {backbone!r} is not supported: this importer reads "
            "sgmse 'ncsnpp' (SGMSE+), 'ncsnpp_48k' and 'ncsnpp_v2' "
            "checkpoints (dcunet is not implemented)."
        )
    sde_name = hparams.get("sde")
    if sde_name != "ouve":
        raise CheckpointError(
            f"SDE {sde_name!r} is not supported: only 'ouve' (SGMSE+) is; "
            "'sbve' (Schroedinger bridge) and 'bbed' models cannot be imported."
        )
    unknown = sorted(
        set(hparams) - set(READ) - set(TRAINING_ONLY) - set(ignore_keys)
    )
    if unknown:
        raise CheckpointError(
            f"unknown hyper-parameter(s) {unknown} in the checkpoint: they "
            "may change the model; if they do not, pass --ignore-key for "
            "each."
        )
    return BACKBONES[backbone]


def _compression(hparams):
    """(alpha, beta) of the spectral transform from ``transform_type``."""
    transform_type = hparams.get("transform_type", "exponent")
    if transform_type == "exponent":
        alpha = float(hparams.get("spec_abs_exponent", 0.5))
        beta = float(hparams.get("spec_factor", 0.15))
        return alpha, beta
    if transform_type == "none":
        return 1.0, 1.0
    raise CheckpointError(
        f"transform_type {transform_type!r} is not supported (only "
        "'exponent' and 'none')."
    )


def _check_attention(net, n_fft):
    """Refuse settings that put attention at other levels than at build."""
    num_freqs = n_fft // 2 + 1
    image_size = int(net["image_size"])
    attn = tuple(int(r) for r in net["attn_resolutions"])
    levels = len(net["ch_mult"])
    at_build = [i for i in range(levels) if image_size // 2**i in attn]
    at_run = [i for i in range(levels) if num_freqs // 2**i in attn]
    if at_build != at_run:
        raise CheckpointError(
            f"image_size={image_size} and n_fft={n_fft} put attention at "
            f"different levels ({at_build} vs {at_run}); sgmse itself cannot "
            "run this checkpoint."
        )


def _backbone_config(net, divide_by_t):
    """SGMSENCSNpp's constructor arguments from the network settings."""
    config = dict(
        in_channels=4,
        out_channels=2,
        nf=int(net["nf"]),
        ch_mult=[int(m) for m in net["ch_mult"]],
        num_res_blocks=int(net["num_res_blocks"]),
        attn_resolutions=[int(r) for r in net["attn_resolutions"]],
        dropout=float(net["dropout"]),
        fir_kernel=[float(v) for v in net["fir_kernel"]],
        skip_rescale=bool(net["skip_rescale"]),
        resblock_type="biggan",
        progressive=str(net["progressive"]),
        progressive_input=str(net["progressive_input"]),
        progressive_combine=str(net["progressive_combine"]),
        init_scale=float(net["init_scale"]),
        fourier_scale=float(net["fourier_scale"]),
        conditional=True,
        nonlinearity=str(net["nonlinearity"]),
        num_freqs=int(net["image_size"]),
        patch_size=1,
        pad_multiple=SGMSE_PAD_MULTIPLE,
        # enhancement.py: pad_spec(Y, mode="reflection") for ncsnpp_48k
        # and ncsnpp_v2, zeros for ncsnpp
        pad_mode="zeros" if divide_by_t == "features" else "reflection",
    )
    if divide_by_t is not None:
        config["divide_by_t"] = divide_by_t
    if config["progressive"] not in ("output_skip", "none") or (
        config["progressive_input"] not in ("input_skip", "none")
    ):
        raise CheckpointError(
            "progressive='residual' or progressive_input='residual' is not "
            "supported by the weight mapping (only output_skip/input_skip "
            "or none)."
        )
    return config
