"""Learning rate schedule and optimizer: linear warmup, polynomial decay, AdamW.

Steps are counted from 0; step `s` is the (s+1)-th optimizer update. With W = warmup_steps and
M = max_steps:

    s < W:   lr * (s + 1) / W                      (reaches lr on the last warmup step)
    s >= W:  lr * (1 - (s - W) / (M - W)) ** power  (lr at s = W, 0 at s = M, never reached)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from core.params import BaselineParams, TrainParams

# Both schedules (the adapter's and the U-Net baseline's) have the same fields and shape.
ScheduleParams = TrainParams | BaselineParams


def lr_at(step: int, params: ScheduleParams) -> float:
    """Learning rate of optimizer step `step` (0-based), a pure function of the params."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    warmup = params.warmup_steps
    if step < warmup:
        return params.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (params.max_steps - warmup))
    return params.lr * (1.0 - progress) ** params.poly_power


def make_optimizer(
    named_params: Iterable[tuple[str, torch.nn.Parameter]], params: ScheduleParams
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on matrices (dim >= 2).

    As in nanoGPT: decaying biases, norms' gains and single vectors pulls them towards 0, which
    is not a useful prior; the LoRA factors, tokens and head weights are the matrices.
    """
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": params.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=params.lr, betas=(0.9, 0.999))
