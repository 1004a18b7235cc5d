"""Segmentation loss: `ce_weight` x cross-entropy + `dice_weight` x soft Dice (as in SAMed).

Dice is computed per class on softmax probabilities against one-hot targets, summed over the
whole batch and every pixel (one Dice per class, not per image, so a class absent from one image
does not produce a 0/0 term), then averaged over the classes. The background class 0 takes part
only when `loss.dice_background` is true.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from core.params import LossParams

# Keeps the ratio defined for a class absent from both prediction and target (Dice -> 1, loss 0).
DICE_SMOOTH = 1e-5


class LossParts(NamedTuple):
    """Scalar tensors: the weighted total (what is back-propagated) and its two terms."""

    total: torch.Tensor
    ce: torch.Tensor
    dice: torch.Tensor


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, background: bool) -> torch.Tensor:
    """1 - mean over classes of (2 |P.Y| + s) / (|P| + |Y| + s).

    probs:  B x (K+1) x H x W probabilities (softmax over dim 1).
    target: B x H x W int64 class ids 0..K.
    """
    num = probs.shape[1]
    one_hot = F.one_hot(target, num).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    denominator = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + DICE_SMOOTH) / (denominator + DICE_SMOOTH)
    if not background:
        dice = dice[1:]
    return 1.0 - dice.mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, params: LossParams) -> LossParts:
    """Weighted CE + Dice of `logits` (B x (K+1) x H x W) against `target` (B x H x W int64).

    Computed in float32 whatever the autocast dtype of the logits, so bf16 training does not
    lose precision in the log-sum-exp.
    """
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match target {tuple(target.shape)}")
    log_probs = F.log_softmax(logits.float(), dim=1)
    ce = -log_probs.gather(1, target[:, None]).mean()
    dice = soft_dice_loss(log_probs.exp(), target, params.dice_background)
    total = params.ce_weight * ce + params.dice_weight * dice
    return LossParts(total=total, ce=ce.detach(), dice=dice.detach())
