"""Every random stream of fewsam, by key: each stage draws from rng([seed, KEY, ...]).

One table, so that no two stages can share a stream by accident (a test checks the keys are
unique) and a reader can see at a glance what is random where. The values are the ones the
shipped artifacts were made with: changing one changes those artifacts.
"""

from __future__ import annotations

import numpy as np

# Pipeline stages.
EXEMPLARS = 1  # synth.exemplars: the `random` exemplar choice
POOL = 2  # synth.exemplars: background-pool slices per volume
TRAIN = 3  # train: shuffling, prompts and prompt dropout (sub-keys in train.data), torch seeds
EVALUATE = 4  # evaluate: ground-truth prompts per (case, slice)
BASELINE = 5  # baseline: the U-Net's initialization (its batches follow TRAIN's order)
PHANTOM = 11  # phantom: the phantom cases
SYNTH = 21  # synth.synthesize: everything random about synthetic sample i
PREVIEW = 22  # fewsam.preview: which samples a seeded preview shows
SUGGEST = 31  # suggest: the picks of the `random` strategy
SPLIT = 101  # synth.datasets: the seeded train/test split (brats, nifti)
REPLICATE = 102  # core.streams.stream_seed: the seed of replicate r > 0 of an experiment

# Pretraining of the tiny base model.
PRETRAIN_PROMPTS = 73
PRETRAIN_INIT = 74
PRETRAIN_SHAPES = 71  # generated training images
PRETRAIN_HELD_OUT = 72  # generated held-out images (mIoU)

# Sub-keys under TRAIN: rng([seed, TRAIN, sub-key, ...]).
TRAIN_SHUFFLE = 0
TRAIN_PROMPTS = 1
TRAIN_DROPOUT = 2
TRAIN_TORCH = 3  # the torch generator of each step (LoRA dropout)


def stream_seed(seed: int, replicate: int) -> int:
    """The seed of the exemplar choice, background pool, synthesis and training of a replicate.

    Replicate 0 is the master seed itself (the shipped artifacts); replicate r > 0 gets an
    independent 32-bit seed derived from (seed, REPLICATE, r). The data (phantom), the train/test
    split and the evaluation prompts keep the master seed, so replicates are scored on the same
    cases with the same prompts and differ only in what the method itself draws.
    """
    if replicate == 0:
        return seed
    return int(np.random.SeedSequence([seed, REPLICATE, replicate]).generate_state(1)[0])
