"""Every random stream of fewsam, by key: each stage draws from rng([seed, KEY, ...]).

One table, so that no two stages can share a stream by accident (a test checks the keys are
unique) and a reader can see at a glance what is random where. The values are the ones the
shipped artifacts were made with: changing one changes those artifacts.
"""

from __future__ import annotations

# Pipeline stages.
EXEMPLARS = 1  # synth.exemplars: the `random` exemplar choice
POOL = 2  # synth.exemplars: background-pool slices per volume
TRAIN = 3  # train: shuffling, prompts and prompt dropout (sub-keys in train.data), torch seeds
EVALUATE = 4  # evaluate: ground-truth prompts per (case, slice)
PHANTOM = 11  # phantom: the phantom cases
SYNTH = 21  # synth.synthesize: everything random about synthetic sample i
PREVIEW = 22  # fewsam.preview: which samples a seeded preview shows
SUGGEST = 31  # suggest: the picks of the `random` strategy
SPLIT = 101  # synth.datasets: the seeded train/test split (brats, nifti)

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
