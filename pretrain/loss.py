"""Losses of promptable-segmentation pretraining, as in the SAM paper.

Mask logits and targets are N x M x H x W (N prompts, M masks per prompt, H x W pixels);
targets are 0/1 floats. Every function returns one value per mask, N x M, so the caller can take
the minimum over SAM's three ambiguity outputs before averaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Focal loss constants of RetinaNet, which SAM uses.
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels, N x M."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of sigmoid probabilities (smoothed by 1 so empty masks are defined), N x M."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(-2, -1))
    total = prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
    return 1 - (2 * inter + 1) / (total + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the masks `logits > 0` with the targets, N x M; 1 when both are empty."""
    pred = logits > 0
    truth = target > 0.5
    inter = (pred & truth).sum(dim=(-2, -1)).float()
    union = (pred | truth).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class SamLossParts:
    """Scalar total and its parts (focal and Dice of the kept masks, MSE of the IoU head)."""

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    iou_mse: torch.Tensor
    chosen: torch.Tensor  # N, index of the mask that was trained (lowest loss)


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    target: torch.Tensor,
    focal_weight: float,
    dice_weight: float,
    iou_weight: float,
) -> SamLossParts:
    """SAM's loss for N prompts with M outputs each (logits N x M x H x W, iou_pred N x M).

    `target` is N x 1 x H x W. With several outputs only the one of lowest mask loss is trained
    (so the others are free to cover other readings of an ambiguous prompt); the IoU head learns
    the actual IoU of every output, which is what lets it rank them at inference.
    """
    target = target.expand_as(logits)
    focal, dice = focal_loss(logits, target), dice_loss(logits, target)
    mask_loss = focal_weight * focal + dice_weight * dice
    chosen = mask_loss.detach().argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    iou_mse = ((iou_pred - mask_iou(logits.detach(), target)) ** 2).mean(dim=1)
    total = (mask_loss[rows, chosen] + iou_weight * iou_mse).mean()
    return SamLossParts(
        total=total,
        focal=focal[rows, chosen].mean().detach(),
        dice=dice[rows, chosen].mean().detach(),
        iou_mse=iou_mse.mean().detach(),
        chosen=chosen,
    )
