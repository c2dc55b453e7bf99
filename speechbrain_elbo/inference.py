"""Pretrained diffusion enhancer: load an exported folder, enhance audio.

:class:`DiffusionEnhancement` is a SpeechBrain ``Pretrained`` interface over
a folder written by :func:`speechbrain_elbo.export.export_enhancer` (stage 1
alone, or both stages). It enhances

- batches of waveforms (:meth:`DiffusionEnhancement.enhance_batch`),
- one long waveform in overlapping chunks joined by cross-fades, with
  memory bounded by the chunk size (:meth:`DiffusionEnhancement.enhance_long`),
- audio files, streamed from disk chunk by chunk and written atomically
  (:meth:`DiffusionEnhancement.enhance_file`).

(The last two come from :class:`speechbrain_elbo.long_audio.LongAudioMixin`.)

The enhancement itself is :mod:`speechbrain_elbo.pipeline`, the one
pipeline of the package (docs/method.md, sections 1, 5 and 7): peak
normalisation by the noisy peak, compressed complex STFT, frame padding to
the networks' multiple, reverse diffusion (predictor-corrector or
probability-flow ODE), optional refinement of the same sample, cropping,
inverse STFT and de-normalisation. Sampler, number of steps, corrector,
refiner and seed can be chosen per call; the same seed gives the same
output on the same device. :meth:`DiffusionEnhancement.enhance_stages`
returns both stages of one sample.

The interface delegates the jobs around it: loading the folder to
:func:`speechbrain_elbo.export.load_folder`, the overlapping-chunk split and
cross-fade join to :mod:`speechbrain_elbo.chunking`, input checks and
loading to :mod:`speechbrain_elbo.audio_input`, atomic writing to
:mod:`speechbrain_elbo.fileio`.

Example
-------
>>> from speechbrain_elbo.export import export_enhancer
>>> from speechbrain_elbo.lobes.ncsnpp import NCSNpp
>>> from speechbrain_elbo.sampling import Sampler
>>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
>>> from speechbrain_elbo.spectral import SpectralTransform
>>> config = dict(nf=4, ch_mult=[1, 2, 2, 2], num_res_blocks=1,
...               attn_resolutions=[])
>>> net = NCSNpp(**config)
>>> net.config = config
>>> folder = export_enhancer(getfixture("tmp_path") / "model", net,
...     OUVESDE(GeometricGNS()), SpectralTransform(), Sampler("pc", 30))
>>> enhancer = DiffusionEnhancement.from_hparams(source=folder,
...     run_opts={"device": "cpu"})
>>> noisy = torch.randn(2, 4000)
>>> enhanced = enhancer.enhance_batch(noisy, steps=2, seed=0)
>>> enhanced.shape, enhancer.last_nfe
(torch.Size([2, 4000]), 4)
"""

import logging

import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.fetching import LocalStrategy

from speechbrain_elbo.audio_input import (
    EnhancementInputError,
    check_waveforms,
)
from speechbrain_elbo.chunking import check_chunking, crossfade_windows
from speechbrain_elbo.export import HPARAMS_FILE, ModelFolderError, load_folder
from speechbrain_elbo.long_audio import LongAudioMixin, first_given
from speechbrain_elbo.output_check import EnhancementOutputError, departures
from speechbrain_elbo.pipeline import (
    enhance_spectrogram,
    enhance_waveforms,
    frame_multiple_of,
    frame_padding_of,
)
from speechbrain_elbo.runtime import (
    AutocastNetwork,
    check_backend,
    check_precision,
    set_threads,
)
from speechbrain_elbo.sampling import SAMPLERS, Sampler
from speechbrain_elbo.score import ScoreModel
from speechbrain_elbo.spectral import peak_normalize

__all__ = ["DiffusionEnhancement", "SAMPLER_ALIASES", "check_device"]

logger = logging.getLogger(__name__)

#: Extra sampler names accepted per call: "ode" is the 2nd-order ODE solver.
SAMPLER_ALIASES = {"ode": "heun"}


def check_device(device, what="device"):
    """Refuse a device this machine does not have, in one clear line.

    The command line (``--device``) and ``from_hparams`` (``run_opts``)
    share it, so that both say the same thing.

    Arguments
    ---------
    device : str or torch.device or None
        ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``xpu``; None is the
        default choice (always fine).
    what : str
        How the caller names the setting in the message.

    Raises
    ------
    ValueError
        An unknown device type, or a CUDA device this machine lacks.

    Example
    -------
    >>> check_device("cpu")
    >>> check_device("tpu:0", what="--device")
    Traceback (most recent call last):
    ...
    ValueError: --device tpu:0: unknown device type; use cpu or cuda
    """
    if device is None:
        return
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(
            f"{what} {device}: unknown device type; use cpu or cuda"
        )
    if kind != "cuda":
        return
    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError(
            f"{what} {device}: no CUDA device is available on this machine; "
            "use cpu"
        )
    if index and (not index.isdigit() or int(index) >= count):
        raise ValueError(
            f"{what} {device}: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}"
        )


class DiffusionEnhancement(LongAudioMixin, Pretrained):
    """Score-based (diffusion) speech enhancement from an exported folder.

    Load it with :meth:`from_hparams` from a folder written by
    :func:`speechbrain_elbo.export.export_enhancer`. The folder's
    ``hyperparams.yaml`` defines ``sde``, ``transform``, ``sampler`` (the
    default sampling settings), ``sample_rate`` and the modules
    ``score_model`` (the backbone) and optionally ``refiner``.

    Arguments
    ---------
    *args, **kwargs
        Forwarded to ``speechbrain.inference.interfaces.Pretrained``
        (``modules``, ``hparams``, ``run_opts``, ``freeze_params``).
    chunk_seconds : float
        Audio longer than this is enhanced in overlapping chunks of this
        length by :meth:`enhance_long` and :meth:`enhance_file` (default
        10 s, or ``chunk_seconds`` from the hyperparameters).
    overlap_seconds : float
        Overlap of consecutive chunks, cross-faded (default 1 s).
    max_batch : int
        Chunks enhanced together in one batch (default 1: the least
        memory; raise it on a GPU).
    crossfade : str
        Shape of the cross-fade, see :func:`crossfade_windows`.
    backend : str
        What runs the networks: ``"torch"`` (default) or ``"onnxruntime"``
        (the ``onnx`` extra; the networks are exported to ONNX once and
        cached, :mod:`speechbrain_elbo.onnx_backend`). The sampler, STFT
        and SDE are the library's own either way.
    threads : int
        CPU threads of PyTorch (set for the whole process) and of ONNX
        Runtime. Default: PyTorch's current setting capped at the cores
        that other processes leave free
        (:func:`speechbrain_elbo.runtime.check_threads`).
    precision : str
        ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: autocast of the
        networks only (:class:`speechbrain_elbo.runtime.AutocastNetwork`),
        for GPUs and CPUs with bf16 instructions; elsewhere a clear error.
        Default: SpeechBrain's ``run_opts["precision"]``.

    Attributes
    ----------
    last_nfe : int or None
        Score-network evaluations per utterance of the last call.
    last_refined : bool or None
        Whether the last call applied the refiner.
    last_num_chunks : int or None
        Chunks the last long-audio call was cut into.
    last_departures : list of (str or None) or None
        Per waveform of the last call, why its output departs grossly from
        its input (:mod:`speechbrain_elbo.output_check`), or None; each
        departure is also logged as a warning.
    score_model : speechbrain_elbo.score.ScoreModel
        The backbone turned into the score of the SDE.
    """

    HPARAMS_NEEDED = ["sde", "transform", "sampler", "sample_rate"]
    MODULES_NEEDED = ["score_model"]

    def __init__(
        self,
        *args,
        chunk_seconds=None,
        overlap_seconds=None,
        max_batch=None,
        crossfade=None,
        backend=None,
        threads=None,
        precision=None,
        **kwargs,
    ):
        run_opts = kwargs.get("run_opts") or {}
        check_device(run_opts.get("device"), 'run_opts["device"]')
        super().__init__(*args, **kwargs)
        for name in self.MODULES_NEEDED:
            if name not in self.mods:
                raise ModelFolderError(
                    f"The hyperparameters define no module {name!r}: the "
                    "folder was not written by export_enhancer."
                )
        hp = vars(self.hparams)
        self.sde = self.hparams.sde
        self.transform = self.hparams.transform
        self.sample_rate = int(self.hparams.sample_rate)
        self.default_sampler = self.hparams.sampler
        self.score_model = ScoreModel(self.mods.score_model, self.sde).eval()
        self.refiner = self.mods["refiner"] if "refiner" in self.mods else None
        self.chunk_seconds = float(
            first_given(chunk_seconds, hp.get("chunk_seconds"), 10.0)
        )
        self.overlap_seconds = float(
            first_given(overlap_seconds, hp.get("overlap_seconds"), 1.0)
        )
        self.max_batch = int(first_given(max_batch, hp.get("max_batch"), 1))
        self.crossfade = first_given(
            crossfade, hp.get("crossfade"), "raised_cosine"
        )
        check_chunking(self.chunk_seconds, self.overlap_seconds)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}.")
        crossfade_windows(1, self.crossfade)  # validates the name
        self.last_nfe = None
        self.last_refined = None
        self.last_num_chunks = None
        self.last_departures = None
        self._prepare_runtime(backend, threads, precision)

    # -- loading ----------------------------------------------------------
    @classmethod
    def from_hparams(
        cls,
        source,
        hparams_file=HPARAMS_FILE,
        savedir=None,
        overrides=None,
        local_strategy=LocalStrategy.SYMLINK,
        verify_checksums=True,
        revision=None,
        check_yaml=False,
        **kwargs,
    ):
        """Load a model folder, a bundled model or a Hugging Face Hub model.

        Like SpeechBrain's own interfaces, ``source`` is, in this order, an
        existing local folder, the name of a bundled model
        (:func:`speechbrain_elbo.pretrained.available`) or a hub id
        ``org/name`` (:func:`speechbrain_elbo.hub.resolve_source`). A hub
        model is fetched through SpeechBrain's fetching (the Hugging Face
        cache and ``HF_HUB_OFFLINE=1`` apply); a local or bundled one is
        never fetched from the network. The folder is then loaded and
        checked by :func:`speechbrain_elbo.export.load_folder` (a clear
        error names a missing, corrupt or foreign file, or a checkpoint
        whose SHA-256 differs from the recorded one).

        Arguments
        ---------
        source : str or pathlib.Path
            A folder written by
            :func:`speechbrain_elbo.export.export_enhancer`, a bundled
            model's name (``"minivb-small"``), or a hub id ``org/name``
            holding such a folder. A ``pathlib.Path`` is always a folder.
        hparams_file : str
            Name of the hyperparameter file in the folder.
        savedir : str or pathlib.Path, optional
            Where SpeechBrain links (or copies, see ``local_strategy``) the
            files. Default None: a local folder is read where it is, a hub
            model from the Hugging Face cache.
        overrides : dict, optional
            HyperPyYAML overrides, e.g. ``{"sampler": ...}``
            (``pretrained_path`` is always the folder).
        local_strategy : speechbrain.utils.fetching.LocalStrategy
            How files are brought into ``savedir`` (symlink by default).
        verify_checksums : bool
            Check each checkpoint against the SHA-256 recorded at export.
        revision : str, optional
            Branch, tag or commit of a hub model (default ``main``).
        check_yaml : bool
            Loading a folder executes its ``hyperparams.yaml``, which can
            construct any Python object. With True, a file that would
            import or call anything outside the allow-list
            (:data:`speechbrain_elbo.trust.ALLOWED`) is refused, in one
            line, before anything is built. Use it for folders you did not
            make (the command line does, by default).
        **kwargs
            Forwarded to the constructor: ``run_opts={"device": ...}``,
            ``chunk_seconds``, ``overlap_seconds``, ``max_batch``,
            ``backend``, ``threads``, ``precision``...

        Returns
        -------
        DiffusionEnhancement

        Example
        -------
        >>> enhancer = DiffusionEnhancement.from_hparams("minivb-small")
        >>> enhancer.sample_rate, enhancer.has_refiner
        (16000, True)
        """
        from speechbrain_elbo.hub import resolve_source

        run_opts = kwargs.get("run_opts") or {}
        check_device(run_opts.get("device"), 'run_opts["device"]')
        resolved = resolve_source(
            source, savedir, revision, hparams_file, local_strategy
        )
        # a hub model is already in savedir (or read from the cache)
        fetched = resolved.kind == "hub"
        hparams = load_folder(
            resolved.folder,
            hparams_file=hparams_file,
            overrides=overrides,
            savedir=None if fetched else savedir,
            local_strategy=local_strategy,
            verify_checksums=verify_checksums,
            check_yaml=check_yaml,
        )
        hparams["savedir"] = savedir
        # only a plain folder may hold the ONNX cache (not the package's
        # bundled models, not a hub snapshot)
        hparams["source_kind"] = resolved.kind
        return cls(modules=hparams["modules"], hparams=hparams, **kwargs)

    # -- runtime ----------------------------------------------------------
    def _prepare_runtime(self, backend, threads, precision):
        """Backend, CPU threads and precision of the networks.

        The score model's backbone and the refiner's backbone are replaced
        by an :class:`~speechbrain_elbo.onnx_backend.OnnxNetwork`
        (``backend="onnxruntime"``) or an
        :class:`~speechbrain_elbo.runtime.AutocastNetwork` (bf16, fp16);
        the sampler, STFT and SDE are untouched.
        """
        hp = vars(self.hparams)
        self.backend = check_backend(backend)
        self.threads = set_threads(threads)
        name = first_given(precision, getattr(self, "precision", None))
        dtype = check_precision(name, self.device, self.backend)
        self.precision = "fp32" if name is None else str(name).lower()
        holders = {"score_model": self.score_model, "refiner": self.refiner}
        holders = {k: v for k, v in holders.items() if v is not None}
        if self.backend == "torch" and dtype == torch.float32:
            return
        for key, holder in holders.items():
            backbone = getattr(holder, "backbone", None)
            if not isinstance(backbone, torch.nn.Module):
                raise ValueError(
                    f"The {key} has no backbone network to run with "
                    f"backend={self.backend!r}, precision={self.precision!r}; "
                    "use backend='torch', precision='fp32'."
                )
        if self.backend == "torch":
            for holder in holders.values():
                holder.backbone = AutocastNetwork(
                    holder.backbone, dtype, self.device_type
                )
            return
        from speechbrain_elbo.onnx_backend import cache_roots, onnx_network

        roots = cache_roots(
            hp.get("pretrained_path"),
            hp.get("savedir"),
            in_folder=hp.get("source_kind", "folder") == "folder",
        )
        for key, holder in holders.items():
            holder.backbone = onnx_network(
                holder.backbone,
                key,
                roots,
                num_freqs=self.transform.n_fft // 2 + 1,
                threads=self.threads,
                device=self.device,
            )
        # the PyTorch weights are not needed any more
        self.mods["score_model"] = self.score_model.backbone

    # -- settings ---------------------------------------------------------
    @property
    def has_refiner(self):
        """Whether the model has a stage-2 refiner."""
        return self.refiner is not None

    def make_sampler(
        self, sampler=None, steps=None, corrector_steps=None, snr=None
    ):
        """The default sampler with the given settings changed.

        Arguments
        ---------
        sampler : str, optional
            ``"pc"``, ``"euler"``, ``"heun"`` or ``"ode"`` (= ``"heun"``).
        steps : int, optional
            Grid points N (>= 1).
        corrector_steps : int, optional
            Langevin steps per predictor step (``"pc"`` only).
        snr : float, optional
            Corrector step-size ratio (``"pc"`` only).

        Returns
        -------
        speechbrain_elbo.sampling.Sampler
        """
        default = self.default_sampler
        name = default.name if sampler is None else str(sampler).lower()
        name = SAMPLER_ALIASES.get(name, name)
        if name not in SAMPLERS:
            choices = sorted([*SAMPLERS, *SAMPLER_ALIASES])
            raise ValueError(
                f"Unknown sampler {sampler!r}; choose one of {choices}."
            )
        if name != "pc" and (corrector_steps or snr is not None):
            raise ValueError(
                "corrector_steps and snr apply to the 'pc' sampler only, "
                f"not to {name!r}."
            )
        # Sampler checks the settings
        return Sampler(
            name,
            default.steps if steps is None else steps,
            default.corrector_steps
            if corrector_steps is None
            else corrector_steps,
            default.snr if snr is None else snr,
        )

    def _use_refiner(self, use_refiner):
        if use_refiner is None:
            return self.has_refiner
        if use_refiner and not self.has_refiner:
            raise ValueError(
                "use_refiner=True, but this model has no refiner (it was "
                "exported with stage 1 only)."
            )
        return bool(use_refiner)

    def _generator(self, seed, generator):
        if seed is not None and generator is not None:
            raise ValueError("Pass either seed or generator, not both.")
        if isinstance(seed, list | tuple):
            # one generator per waveform: no draw depends on the neighbours
            return [self._generator(item, None) for item in seed]
        if seed is not None:
            return torch.Generator(device=self.device).manual_seed(int(seed))
        if generator is not None:
            if (
                torch.device(generator.device).type
                != torch.device(self.device).type
            ):
                raise ValueError(
                    f"The generator is on {generator.device} but the model "
                    f"runs on {self.device}; create it on {self.device}."
                )
        return generator

    @property
    def min_samples(self):
        """Shortest input (in samples) the model accepts: one FFT window."""
        return int(self.transform.n_fft)

    # -- input checks -----------------------------------------------------
    def check_waveforms(self, noisy, lengths=None, names=None):
        """Check a batch for this model; raise a clear error if unusable.

        :func:`speechbrain_elbo.audio_input.check_waveforms` (same
        arguments, results and errors) with the model's :attr:`min_samples`
        and sample rate.
        """
        return check_waveforms(
            noisy, lengths, self.min_samples, self.sample_rate, names
        )

    def _resample(self, waveform, sample_rate, what):
        if sample_rate is None or int(sample_rate) == self.sample_rate:
            return waveform
        import torchaudio.functional as AF

        logger.info(
            "%s: resampling from %d Hz to the model's %d Hz.",
            what,
            int(sample_rate),
            self.sample_rate,
        )
        return AF.resample(waveform, int(sample_rate), self.sample_rate)

    # -- enhancement ------------------------------------------------------
    def _enhance_normalized(
        self, wav, lengths, sampler, use_refiner, generator
    ):
        """Enhance peak-normalised waveforms (B, L) already on the device.

        The spectrogram pass is
        :func:`speechbrain_elbo.pipeline.enhance_spectrogram`, padded to the
        frame multiple of the networks that run, and decoded before or after
        cropping as the backbone declares
        (:func:`~speechbrain_elbo.pipeline.frame_padding_of`).
        """
        refiner = self.refiner if use_refiner else None
        out = enhance_spectrogram(
            self.score_model,
            self.sde,
            self.transform.encode(wav, lengths),
            sampler,
            refiner=refiner,
            generator=generator,
            frame_multiple=frame_multiple_of(self.mods.score_model, refiner),
            autocast=None,  # precision: in the networks (_prepare_runtime)
            crop=not frame_padding_of(self.score_model)[1],
        )
        self.last_nfe = out.nfe
        self.last_refined = use_refiner
        x = out.stage1 if refiner is None else out.refined
        return self.transform.decode(x, wav.shape[-1], lengths)

    def enhance_batch(
        self,
        noisy,
        lengths=None,
        sampler=None,
        steps=None,
        corrector_steps=None,
        snr=None,
        use_refiner=None,
        seed=None,
        generator=None,
        return_nfe=False,
        check_output=False,
    ):
        """Enhance a batch of waveforms at the model's sample rate.

        Arguments
        ---------
        noisy : torch.Tensor
            Noisy waveforms (B, L) (or one waveform (L,)), float, on any
            device.
        lengths : torch.Tensor, optional
            Relative lengths (B,) of a padded batch (SpeechBrain
            convention); samples past each length are ignored and zero in
            the output.
        sampler : str, optional
            ``"pc"``, ``"euler"``, ``"heun"`` or ``"ode"``; default that of
            the model folder.
        steps, corrector_steps, snr : optional
            Sampler settings, default those of the model folder.
        use_refiner : bool, optional
            Apply the stage-2 refiner; default True when the model has one.
        seed : int or list of int, optional
            Seed of a fresh generator on the model's device: the same seed
            gives the same output on the same device. A list has one seed
            per waveform, each waveform's noise drawn from its own
            generator: its noise then does not depend on the other
            waveforms of the batch (its output does only through float
            rounding in the networks).
        generator : torch.Generator, optional
            Alternative to ``seed``.
        return_nfe : bool
            Also return the number of score-network evaluations.
        check_output : bool
            Raise an ``EnhancementOutputError``
            (:mod:`speechbrain_elbo.output_check`) instead of logging a
            warning when an output departs grossly from its input; the
            error's ``departures`` and ``enhanced`` hold every waveform's
            reason (or None) and the whole batch, so that a caller can
            keep the others.

        Returns
        -------
        enhanced : torch.Tensor
            Like ``noisy`` (same shape and device), float32, at the input's
            level: not scaled into full scale (a file writer does that,
            :class:`speechbrain_elbo.fileio.AtomicAudioWriter`), so a loud
            or clipped input may give samples beyond 1.0.
        nfe : int
            Only with ``return_nfe``.

        An output that departs grossly from its input (too few steps, a
        wrong setting; :mod:`speechbrain_elbo.output_check`) is named in
        :attr:`last_departures` and logged as a warning, or raised with
        ``check_output``.
        """
        plan = self.make_sampler(sampler, steps, corrector_steps, snr)
        refine = self._use_refiner(use_refiner)
        squeeze = torch.is_tensor(noisy) and noisy.dim() == 1
        noisy, lengths = self.check_waveforms(noisy, lengths)
        out_device = noisy.device
        with torch.inference_mode():
            wav = noisy.to(self.device, torch.float32)
            lengths = lengths.to(self.device)
            wav, _, scale = peak_normalize(wav, lengths=lengths)
            gen = self._generator(seed, generator)
            enhanced = self._enhance_normalized(wav, lengths, plan, refine, gen)
            reasons = departures(wav, enhanced, plan, lengths)
            enhanced = (enhanced * scale).to(out_device)
        if squeeze:
            enhanced = enhanced[0]
        self._report_departures(reasons, None, check_output, enhanced)
        return (enhanced, self.last_nfe) if return_nfe else enhanced

    def _report_departures(self, reasons, names, check_output, enhanced=None):
        """Record outputs that depart from their inputs; log them, or raise
        one :class:`EnhancementOutputError` with ``check_output``."""
        self.last_departures = list(reasons)
        names = names or [f"waveform {i}" for i in range(len(reasons))]
        found = [
            f"{name}: {reason}"
            for name, reason in zip(names, reasons, strict=True)
            if reason is not None
        ]
        if found and check_output:
            error = EnhancementOutputError(
                "; ".join(found) + "; nothing written"
            )
            error.departures = self.last_departures
            error.enhanced = enhanced
            raise error
        for line in found:
            logger.warning("%s", line)

    def forward(self, noisy, lengths=None, **options):
        """Same as :meth:`enhance_batch`."""
        return self.enhance_batch(noisy, lengths, **options)

    def enhance_stages(self, noisy, sampler=None, steps=None, seed=0):
        """Stage 1 and stage 1+2 of one waveform, from one stage-1 sample.

        :func:`speechbrain_elbo.pipeline.enhance_waveforms` run once, the
        refiner applied to the same stage-1 sample (docs/method.md, section
        7), padded for both networks. With the same ``seed``, ``"stage1+2"``
        equals ``enhance_batch(noisy, seed=seed, use_refiner=True)``, and
        ``"stage1"`` equals ``enhance_batch(..., use_refiner=False)``
        whenever both networks have the same frame multiple (as the bundled
        configurations do).

        Arguments
        ---------
        noisy : torch.Tensor
            One waveform (L,) at the model's sample rate.
        sampler : str, optional
            Sampler name; default that of the model.
        steps : int, optional
            Sampler steps; default that of the model.
        seed : int
            Seed of the sampler's generator.

        Returns
        -------
        dict
            ``"stage1"`` and, with a refiner, ``"stage1+2"`` (float32
            waveforms (L,) on the CPU), ``"nfe"`` (score evaluations) and
            ``"seconds"`` (wall time of ``"stage1"`` and of
            ``"stage1+2"``, stage 1 included).

        Example
        -------
        >>> from speechbrain_elbo.sampling import Sampler
        >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
        >>> from speechbrain_elbo.spectral import SpectralTransform
        >>> class Zero(torch.nn.Module):
        ...     def forward(self, x, t):
        ...         return torch.zeros_like(x[:, :2])
        >>> enhancer = DiffusionEnhancement(
        ...     modules={"score_model": Zero(), "refiner": None},
        ...     hparams={"sde": OUVESDE(GeometricGNS()),
        ...              "sampler": Sampler("euler", 3), "sample_rate": 16000,
        ...              "transform": SpectralTransform()},
        ...     run_opts={"device": "cpu"})
        >>> out = enhancer.enhance_stages(torch.randn(2000), steps=2)
        >>> sorted(out), out["stage1"].shape, out["nfe"]
        (['nfe', 'seconds', 'stage1'], torch.Size([2000]), 2)
        """
        if torch.is_tensor(noisy) and noisy.dim() != 1:
            raise EnhancementInputError(
                f"enhance_stages takes one waveform (L,), got shape "
                f"{tuple(noisy.shape)}; enhance batches with enhance_batch."
            )
        plan = self.make_sampler(sampler, steps)
        noisy, _ = self.check_waveforms(noisy)
        with torch.inference_mode():
            out = enhance_waveforms(
                noisy.to(self.device, torch.float32),
                self.transform,
                self.score_model,
                self.sde,
                plan,
                refiner=self.refiner,
                generator=self._generator(seed, None),
                frame_multiple=frame_multiple_of(
                    self.mods.score_model, self.refiner
                ),
                autocast=None,
            )
        self.last_nfe = out.nfe
        self.last_refined = self.has_refiner
        stages = {"stage1": out.stage1[0].cpu()}
        if out.refined is not None:
            stages["stage1+2"] = out.refined[0].cpu()
        return {**stages, "nfe": out.nfe, "seconds": dict(out.seconds)}
