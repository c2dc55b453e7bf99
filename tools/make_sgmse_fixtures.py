"""Write the sgmse reference fixtures of tests/test_interop_sgmse.py.

Run it with the Python of a virtual environment that has the reference
package ``sgmse==0.1.2`` (created by ``tools/sgmse_reference_venv.sh``);
speechbrain_elbo is not imported here, and sgmse is never needed by the
package or its tests::

    tools/sgmse_reference_venv.sh /tmp/sgmse-venv
    /tmp/sgmse-venv/bin/python tools/make_sgmse_fixtures.py \
        --out tests/fixtures/sgmse

For each configuration it builds a small randomly initialised sgmse
``ScoreModel`` (backbones ``ncsnpp``, ``ncsnpp_48k`` and ``ncsnpp_v2``,
SDE ``ouve``) with sgmse's own classes,
perturbs every weight (so that the zero-initialised layers matter) and sets
EMA weights that differ from the raw ones, saves it as a real Lightning
checkpoint (``Trainer.save_checkpoint``, which stores ``ema`` through
sgmse's ``on_save_checkpoint``), loads it back with
``ScoreModel.load_from_checkpoint`` as sgmse's ``enhancement.py`` does, and
runs sgmse's transforms, network, predictor, corrector and the whole
``enhance`` chain on fixed inputs. Every ``torch.randn_like`` draw of the
samplers is recorded, so the tests replay the same noise. For
``ncsnpp_v2`` it also records the score under other settings of the
score model's scalings (``variants``: every value of ``c_in``, ``c_out``,
``c_skip``, ``network_scaling`` and ``loss_type`` that the importer
accepts), and for every model the waveform that SpeechBrain's SGMSE recipe
decodes from the same sample (frames cropped before the inverse STFT,
``enhanced_sb``).

``--only NAME`` rewrites one configuration and leaves the others' files
as they are.

Files written per configuration NAME: ``NAME.ckpt`` (the checkpoint) and
``NAME_reference.pt`` (a dict of tensors and numbers, loadable with
``torch.load(..., weights_only=True)``).
"""

import argparse
import pathlib
import tempfile

import torch

#: Small sgmse configurations: name -> hyper-parameters of the ScoreModel.
CONFIGS = {
    "ncsnpp_small": dict(
        backbone="ncsnpp",
        sde="ouve",
        theta=1.5,
        sigma_min=0.05,
        sigma_max=0.5,
        N=3,
        t_eps=0.03,
        n_fft=126,
        hop_length=32,
        num_frames=64,
        window="hann",
        spec_factor=0.15,
        spec_abs_exponent=0.5,
        transform_type="exponent",
        normalize="noisy",
        sr=16000,
        nf=4,
        ch_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_resolutions=[16],
        image_size=64,
        centered=True,
        num_eval_files=0,
        loss_type="score_matching",
        loss_weighting="sigma^2",
    ),
}
#: The 48 kHz backbone (EARS models) in the same small size.
CONFIGS["ncsnpp_48k_small"] = {
    **{
        k: v
        for k, v in CONFIGS["ncsnpp_small"].items()
        if k not in ("attn_resolutions",)
    },
    "backbone": "ncsnpp_48k",
    "sr": 48000,
}

#: sgmse's ncsnpp_v2 with scaled inputs and outputs, smaller still
#: (F = 32 bins, hop 16, three levels, shorter input: NUM_SAMPLES) to keep
#: the fixture files small.
CONFIGS["ncsnpp_v2_small"] = {
    **{
        k: v
        for k, v in CONFIGS["ncsnpp_small"].items()
        if k not in ("centered",)
    },
    "backbone": "ncsnpp_v2",
    "n_fft": 62,
    "hop_length": 16,
    "image_size": 32,
    "ch_mult": [1, 2, 2],
    "network_scaling": "1/sigma",
    "c_in": "edm",
    "c_out": "edm",
    "c_skip": "edm",
    "sigma_data": 0.2,
}

#: Input samples of a configuration, if not --num-samples (57 frames for
#: ncsnpp_v2_small: still padded to 64).
NUM_SAMPLES = {"ncsnpp_v2_small": 900}

#: Padding of the spectrogram in sgmse's enhancement.py, per backbone.
PAD_MODES = {
    "ncsnpp": "zero_pad",
    "ncsnpp_48k": "reflection",
    "ncsnpp_v2": "reflection",
}

#: ncsnpp_v2 only: other settings of the score model's scalings whose
#: score is recorded too (same weights, same inputs).
V2_VARIANTS = {
    "recipe": dict(network_scaling="1/t", c_in="1", c_out="1", c_skip="0"),
    "plain": dict(network_scaling=None, c_in="1", c_out="1", c_skip="0"),
    "c_out_sigma": dict(network_scaling="1/t", c_out="sigma", c_skip="0"),
    "c_out_inv_sigma": dict(network_scaling=None, c_out="1/sigma"),
    "denoiser": dict(loss_type="denoiser", network_scaling="1/sigma"),
    "denoiser_edm_in": dict(loss_type="denoiser", c_in="edm"),
}


class NoiseRecorder:
    """Wrap ``torch.randn_like`` and keep a copy of every draw."""

    def __init__(self):
        self.draws = []
        self._original = torch.randn_like

    def __enter__(self):
        def recording(*args, **kwargs):
            value = self._original(*args, **kwargs)
            self.draws.append(value.detach().clone())
            return value

        torch.randn_like = recording
        return self

    def __exit__(self, *exc):
        torch.randn_like = self._original


def build_checkpoint(name, hparams, out_dir, seed):
    """Build, perturb and save one sgmse model; return the checkpoint path."""
    import pytorch_lightning as pl
    from sgmse.data_module import SpecsDataModule
    from sgmse.model import ScoreModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as base_dir:
        settings = dict(base_dir=base_dir, batch_size=1, num_workers=0, gpus=0)
        settings.update(hparams)
        model = ScoreModel(data_module_cls=SpecsDataModule, **settings)
    with torch.no_grad():
        for p in model.dnn.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        model.ema.shadow_params = [
            p.detach().clone() + 0.02 * torch.randn_like(p)
            if p.requires_grad
            else p.detach().clone()
            for p in model.dnn.parameters()
        ]
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=0,
    )
    trainer.strategy.connect(model)
    path = out_dir / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


def load_like_enhancement(path):
    """Load a checkpoint as sgmse's enhancement.py does (CPU)."""
    from sgmse.model import ScoreModel

    with tempfile.TemporaryDirectory() as base_dir:
        model = ScoreModel.load_from_checkpoint(
            path,
            base_dir=base_dir,
            batch_size=1,
            num_workers=0,
            kwargs=dict(gpu=False),
            map_location="cpu",
            # our own file, just written: sgmse's loader needs the full
            # unpickler for data_module_cls (the importer does not)
            weights_only=False,
        )
    return model


def v2_variants(model, x_t, y, t):
    """ncsnpp_v2: the EMA score under each of V2_VARIANTS; model restored."""
    keys = ("loss_type", "network_scaling", "c_in", "c_out", "c_skip")
    saved = {k: getattr(model, k) for k in keys}
    out = {}
    with torch.no_grad():
        for name, change in V2_VARIANTS.items():
            settings = {**saved, **change}
            for key, value in settings.items():
                setattr(model, key, value)
            out[name] = {**settings, "score": model(x_t, y, t)}
    for key, value in saved.items():
        setattr(model, key, value)
    return out


def reference_outputs(model, seed, num_samples, snr):
    """Run sgmse's pieces on fixed inputs; return a dict of results."""
    from sgmse.sampling import get_pc_sampler
    from sgmse.sampling.correctors import AnnealedLangevinDynamics
    from sgmse.sampling.predictors import ReverseDiffusionPredictor
    from sgmse.util.other import pad_spec

    out = {}
    gen = torch.Generator().manual_seed(seed)
    noisy = 0.3 * torch.randn(1, num_samples, generator=gen)
    out["noisy"] = noisy.clone()

    # raw weights first (no_ema), then the EMA weights of eval()
    bins = model.data_module.n_fft // 2 + 1
    x_t = 0.2 * torch.randn(1, 1, bins, 64, generator=gen, dtype=torch.cfloat)
    y = 0.2 * torch.randn(1, 1, bins, 64, generator=gen, dtype=torch.cfloat)
    t = torch.tensor([0.4])
    out["net_x_t"], out["net_y"], out["net_t"] = x_t, y, t
    with torch.no_grad():
        model.eval(no_ema=True)
        out["score_raw"] = model(x_t, y, t)
        model.train(True)
        model.eval()
        out["score_ema"] = model(x_t, y, t)
    if model.backbone == "ncsnpp_v2":
        out["variants"] = v2_variants(model, x_t, y, t)

    # spectral transform (as enhance(): peak-normalise, STFT, compress)
    norm_factor = noisy.abs().max().item()
    out["norm_factor"] = norm_factor
    Y = torch.unsqueeze(
        model._forward_transform(model._stft(noisy / norm_factor)), 0
    )
    out["Y"] = Y.clone()
    out["Y_back"] = model.to_audio(Y.squeeze(), num_samples)

    sde = model.sde.copy()
    # one predictor step and one corrector step at t = 0.5
    with torch.no_grad():
        vec_t = torch.tensor([0.5])
        stepsize = torch.tensor(0.1)
        predictor = ReverseDiffusionPredictor(sde, model)
        with NoiseRecorder() as rec:
            x_new, x_mean = predictor.update_fn(x_t, y, vec_t, stepsize)
        out["pred_x"], out["pred_mean"] = x_new, x_mean
        out["pred_noise"] = rec.draws[0]
        out["pred_t"], out["pred_stepsize"] = vec_t, stepsize
        corrector = AnnealedLangevinDynamics(sde, model, snr=snr, n_steps=1)
        with NoiseRecorder() as rec:
            x_new, x_mean = corrector.update_fn(x_t, y, vec_t)
        out["corr_x"], out["corr_mean"] = x_new, x_mean
        out["corr_noise"] = rec.draws[0]
        out["snr"] = snr

    # the score-matching loss of one batch (sgmse's ScoreModel._loss, as
    # _step calls it), with t and z drawn here and recorded
    with torch.no_grad():
        x0 = 0.2 * torch.randn(
            2, 1, bins, 16, generator=gen, dtype=torch.cfloat
        )
        y0 = x0 + 0.1 * torch.randn(
            2, 1, bins, 16, generator=gen, dtype=torch.cfloat
        )
        u = torch.rand(2, generator=gen)
        t = u * (sde.T - model.t_eps) + model.t_eps
        mean, std = sde.marginal_prob(x0, y0, t)
        z = torch.randn(2, 1, bins, 16, generator=gen, dtype=torch.cfloat)
        x_t = mean + std[:, None, None, None] * z
        loss = model._loss(model(x_t, y0, t), x_t, z, t, mean, x0)
    out["loss_x0"], out["loss_y"], out["loss_t"], out["loss_z"] = x0, y0, t, z
    out["loss"] = loss

    # the whole chain of enhancement.py, on the CPU: once for an input
    # that needs padding frames, once for one of exactly 64 frames
    pad_mode = PAD_MODES[model.backbone]
    out["pad_mode"] = pad_mode
    exact = (64 - 1) * model.data_module.hop_length + 5
    out["noisy64"] = 0.3 * torch.randn(1, exact, generator=gen)
    for tag, wav in (("", noisy), ("64", out["noisy64"])):
        factor = wav.abs().max().item()
        spec = model._forward_transform(model._stft(wav / factor))
        Yp = pad_spec(torch.unsqueeze(spec, 0), mode=pad_mode)
        sampler = get_pc_sampler(
            "reverse_diffusion",
            "ald",
            sde=sde,
            score_fn=model,
            y=Yp,
            denoise=True,
            eps=model.t_eps,
            snr=snr,
            corrector_steps=1,
            intermediate=False,
        )
        torch.manual_seed(seed + 1)
        with NoiseRecorder() as rec:
            sample, nfe = sampler()
        out[f"enh{tag}_noise"] = torch.stack(rec.draws)
        out[f"enh{tag}_sample"] = sample
        out[f"enh{tag}_nfe"] = nfe
        x_hat = model.to_audio(sample.squeeze(), wav.shape[-1]) * factor
        out[f"enhanced{tag}"] = x_hat.reshape(1, -1)
        # SpeechBrain's SGMSE recipe (its Brain.enhance) crops the sample
        # to the input's frames before the inverse STFT
        frames = spec.shape[-1]
        x_sb = model.to_audio(sample[..., :frames].squeeze(), wav.shape[-1])
        out[f"enhanced{tag}_sb"] = (x_sb * factor).reshape(1, -1)
    out["N"] = sde.N
    return out


def train_py_defaults():
    """The hyper-parameters sgmse's train.py passes with no options given.

    Built from the argparse groups of sgmse's own classes, as train.py does
    (ScoreModel, OUVESDE, NCSNpp, SpecsDataModule), with ``nolog``.
    """
    from sgmse.backbones.ncsnpp import NCSNpp
    from sgmse.data_module import SpecsDataModule
    from sgmse.model import ScoreModel
    from sgmse.sdes import OUVESDE

    parser = argparse.ArgumentParser()
    for cls in (ScoreModel, OUVESDE, NCSNpp, SpecsDataModule):
        cls.add_argparse_args(parser.add_argument_group(cls.__name__))
    hparams = vars(parser.parse_args(["--base_dir", "dataset"]))
    hparams.update(backbone="ncsnpp", sde="ouve", nolog=True)
    return hparams


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=pathlib.Path, default="tests/fixtures/sgmse"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num-samples", type=int, default=1800)
    parser.add_argument(
        "--only",
        choices=sorted(CONFIGS),
        help="write this configuration only (seeds as in a full run)",
    )
    parser.add_argument(
        "--full-size",
        type=pathlib.Path,
        metavar="CKPT",
        help="instead, write one checkpoint of the full SGMSE+ "
        "configuration (sgmse defaults: ncsnpp, 65.6 M parameters, random "
        "weights) to CKPT, for timing",
    )
    args = parser.parse_args(argv)
    from importlib.metadata import version

    import sgmse  # noqa: F401  (fails clearly outside the reference venv)

    if version("sgmse") != "0.1.2":
        raise SystemExit(f"Need sgmse==0.1.2, found {version('sgmse')}.")
    if args.full_size is not None:
        args.full_size.parent.mkdir(parents=True, exist_ok=True)
        full = train_py_defaults()
        path = build_checkpoint(
            args.full_size.stem, full, args.full_size.parent, args.seed
        )
        if path != args.full_size:
            path.rename(args.full_size)
        print(f"full-size sgmse checkpoint written to {args.full_size}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for index, (name, hparams) in enumerate(CONFIGS.items()):
        if args.only not in (None, name):
            continue
        path = build_checkpoint(name, hparams, args.out, args.seed + index)
        model = load_like_enhancement(path)
        num_samples = NUM_SAMPLES.get(name, args.num_samples)
        ref = reference_outputs(model, args.seed + index, num_samples, 0.5)
        ref["sgmse_version"] = "0.1.2"
        ref["torch_version"] = str(torch.__version__)
        torch.save(ref, args.out / f"{name}_reference.pt")
        sizes = [p.stat().st_size for p in args.out.glob(f"{name}*")]
        print(f"{name}: {sum(sizes) / 1e6:.2f} MB written to {args.out}")


if __name__ == "__main__":
    main()
