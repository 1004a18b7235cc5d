"""CE + Dice loss: a 2x2 case worked out by hand, and CE against torch's own cross_entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.params import LossParams
from train.loss import segmentation_loss


def _two_by_two() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes; class-1 logit ln 3 (p1 = 3/4) on three pixels, -ln 3 (p1 = 1/4) on one."""
    l3 = math.log(3.0)
    logits = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    logits[0, 1] = torch.tensor([[l3, l3], [l3, -l3]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    return logits, target


def test_two_by_two_by_hand() -> None:
    logits, target = _two_by_two()
    # CE: pixels (1, 1, 0, 0) get p = 3/4, 3/4, 1/4, 3/4 for their own class.
    ce = (3 * math.log(4 / 3) + math.log(4)) / 4
    # Class 1: |P.Y| = 3/4 + 3/4, |P| = 3 * 3/4 + 1/4 = 5/2, |Y| = 2 -> Dice = 3 / 4.5 = 2/3.
    # Class 0: |P.Y| = 1/4 + 3/4, |P| = 3/2, |Y| = 2 -> Dice = 2 / 3.5 = 4/7.
    dice_fg = 1 - 2 / 3
    dice_all = 1 - (2 / 3 + 4 / 7) / 2
    parts = segmentation_loss(logits, target, LossParams(1.0, 0.8, dice_background=False))
    assert parts.ce.item() == pytest.approx(ce, abs=1e-6)
    assert parts.dice.item() == pytest.approx(dice_fg, abs=1e-5)
    assert parts.total.item() == pytest.approx(ce + 0.8 * dice_fg, abs=1e-5)
    parts = segmentation_loss(logits, target, LossParams(0.5, 2.0, dice_background=True))
    assert parts.dice.item() == pytest.approx(dice_all, abs=1e-5)
    assert parts.total.item() == pytest.approx(0.5 * ce + 2.0 * dice_all, abs=1e-5)


def test_cross_entropy_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, 6, generator=gen) * 3
    target = torch.randint(0, 5, (3, 7, 6), generator=gen)
    parts = segmentation_loss(logits, target, LossParams(1.0, 0.0, dice_background=False))
    expected = F.cross_entropy(logits, target)
    assert torch.allclose(parts.ce, expected, atol=1e-6)
    assert torch.allclose(parts.total, expected, atol=1e-6)


def test_perfect_prediction_and_gradient() -> None:
    target = torch.tensor([[[0, 1], [2, 2]]])
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).double() * 50
    logits.requires_grad_(True)
    parts = segmentation_loss(logits, target, LossParams(1.0, 1.0, dice_background=True))
    assert parts.total.item() == pytest.approx(0.0, abs=1e-6)
    parts.total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_absent_class_costs_nothing_when_not_predicted() -> None:
    # Class 2 is neither in the target nor predicted: its Dice is 1, so only class 1 counts.
    target = torch.tensor([[[1, 1], [0, 0]]])
    logits = torch.full((1, 3, 2, 2), -40.0, dtype=torch.float64)
    logits[0, 0, 1] = 40.0
    logits[0, 1, 0] = 40.0
    parts = segmentation_loss(logits, target, LossParams(0.0, 1.0, dice_background=False))
    assert parts.dice.item() == pytest.approx(0.0, abs=1e-6)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="do not match"):
        segmentation_loss(
            torch.zeros(1, 2, 4, 4),
            torch.zeros(1, 3, 3, dtype=torch.long),
            LossParams(1.0, 1.0, False),
        )
