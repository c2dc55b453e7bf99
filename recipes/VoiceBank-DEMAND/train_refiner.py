#!/usr/bin/env python3
"""Stage 2 on VoiceBank-DEMAND: cache stage-1 estimates, train the refiner,
test noisy / stage 1 / stage 1+2 with the ELBO terms, export both stages.

One GPU::

    python train_refiner.py hparams/refiner.yaml --data_folder /path/VB \\
        --stage1_folder results/score/1234/model

Several GPUs (the cache generation is split across ranks too)::

    torchrun --nproc_per_node=4 train_refiner.py hparams/refiner.yaml \\
        --data_folder /path/VB --stage1_folder results/score/1234/model

The cache is resumable and reused by later runs; ``--regenerate_cache=True``
rebuilds it. The logic lives in ``speechbrain_elbo.training`` and
``speechbrain_elbo.cache``.
"""

import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import infer_device, run_on_main

from speechbrain_elbo.cache import (
    Stage1Cache,
    cache_settings,
    generate_stage1_cache,
    make_refiner_datasets,
)
from speechbrain_elbo.dataio import make_datasets
from speechbrain_elbo.dataprep.voicebank import prepare_voicebank
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.training import (
    RefinerBrain,
    frame_multiple_of,
    load_enhancer_folder,
    parse_arguments,
)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv=None):
    """Run stage 2; returns the Brain (None with ``cache_only``)."""
    hparams_file, run_opts, overrides = parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    prep_kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["prep_folder"],
        "valid_speakers": hparams["valid_speakers"],
        "sample_rate": hparams["sample_rate"],
        "skip_prep": hparams["skip_prep"],
    }
    run_on_main(prepare_voicebank, kwargs=prep_kwargs)
    manifests = prepare_voicebank(**{**prep_kwargs, "skip_prep": True})

    # The frozen stage 1, with the sampler used at inference.
    device = run_opts["device"] or infer_device()
    stage1 = load_enhancer_folder(hparams["stage1_folder"], device)
    if hparams["stage1_steps"] is not None:
        exported = stage1.sampler
        stage1.sampler = Sampler(
            exported.name,
            steps=hparams["stage1_steps"],
            corrector_steps=exported.corrector_steps,
            snr=exported.snr,
        )

    # Stage-1 estimates of the training and validation sets, once.
    cache = Stage1Cache(
        hparams["cache_folder"], hparams["samples_per_utterance"]
    )
    # padded for sampling as the exported two-stage model will pad
    multiple = frame_multiple_of(stage1.backbone, hparams["refiner"])
    settings = cache_settings(
        stage1, hparams["seed"], hparams["cache_batch_size"], multiple
    )
    cache.claim(settings, regenerate=hparams["regenerate_cache"])
    for split in ("train", "valid"):
        generate_stage1_cache(
            cache,
            split,
            manifests[split],
            stage1,
            device=device,
            seed=hparams["seed"],
            sample_rate=hparams["sample_rate"],
            batch_size=hparams["cache_batch_size"],
            frame_multiple=multiple,
            precision=PRECISIONS[run_opts["eval_precision"]],
            progress=not run_opts["noprogressbar"],
        )
    if hparams["cache_only"]:
        return None
    datasets = make_refiner_datasets(
        {split: manifests[split] for split in ("train", "valid")},
        cache,
        stage1.transform,
        crop_frames=hparams["crop_frames"],
        sample_rate=hparams["sample_rate"],
    )
    test_set = make_datasets(
        {"test": manifests["test"]},
        hop_length=stage1.transform.hop_length,
        sample_rate=hparams["sample_rate"],
    )["test"]

    brain = RefinerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        stage1=stage1,
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.evaluate(
        test_set,
        decoder_fit_set=datasets["valid"],
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )
    brain.export(
        hparams["export_folder"],
        model_card={
            "task": "speech denoising (VoiceBank-DEMAND)",
            "stage": "1+2 (score model and refiner)",
            "stage1_folder": str(stage1.folder),
            "refiner_epoch": hparams["epoch_counter"].current,
            "test_results": hparams["test_csv"],
        },
    )
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
