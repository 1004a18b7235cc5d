"""Scoring protocols: what a (case, class) pair scores when a mask is empty, and how to average.

Two protocols (`evaluate.protocol`):

`transunet` — the rules of TransUNet's and SAMed's `calculate_metric_percase`, so numbers are
comparable with those papers: HD95 in voxel units (spacing ignored), and per class and case

    prediction and ground truth non-empty -> (Dice, HD95)
    prediction non-empty, ground truth empty -> (1, 0)
    anything else (ground truth non-empty and prediction empty, or both empty) -> (0, 0)

Every pair enters the means.

`strict` — HD95 in mm from the volume spacing; both empty -> excluded from the means (counted);
exactly one empty -> Dice 0 and HD95 = the volume's diagonal in mm (counted), the largest distance
two voxels of the volume can have, so a missed or hallucinated organ is never cheaper than a poor
segmentation of it.

Means: per class, the mean over its included cases; overall, the mean of the per-class means
(TransUNet's convention: classes weigh equally whatever their number of cases). A class with no
included case has mean None and is left out of the overall mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from evaluate.metrics import dice, hd95

# The protocol names (`evaluate.protocol`).
ProtocolName = Literal["transunet", "strict"]
PROTOCOLS: tuple[str, ...] = ("transunet", "strict")

# What happened to one (case, class) pair; the counts of the last three are reported.
Outcome = Literal["both", "gt_only", "pred_only", "both_empty"]


@dataclass(frozen=True)
class ClassScore:
    """Score of one class in one case. `dice`/`hd95` are None when the pair is excluded."""

    label: int
    outcome: Outcome
    dice: float | None
    hd95: float | None

    @property
    def included(self) -> bool:
        return self.dice is not None


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of the volume's extent in the units of `spacing`: sqrt(sum((n_i * s_i)^2))."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


def score_class(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], protocol: ProtocolName
) -> tuple[Outcome, float | None, float | None]:
    """(outcome, dice, hd95) of one binary pair under `protocol`.

    pred, gt: boolean masks of one class, same shape (Z x H x W or H x W).
    spacing: voxel size in mm per axis (used by `strict` only).
    """
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    outcome: Outcome
    if has_pred and has_gt:
        outcome = "both"
    elif has_gt:
        outcome = "gt_only"
    elif has_pred:
        outcome = "pred_only"
    else:
        outcome = "both_empty"
    if protocol == "transunet":
        if outcome == "both":
            return outcome, dice(pred, gt), hd95(pred, gt)
        if outcome == "pred_only":
            return outcome, 1.0, 0.0
        return outcome, 0.0, 0.0
    if protocol == "strict":
        if outcome == "both":
            return outcome, dice(pred, gt), hd95(pred, gt, spacing)
        if outcome == "both_empty":
            return outcome, None, None
        return outcome, 0.0, volume_diagonal(pred.shape, spacing)
    raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")


def score_case(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    spacing: Sequence[float],
    protocol: ProtocolName,
) -> list[ClassScore]:
    """Scores of classes 1..num_classes for one case.

    pred, gt: Z x H x W uint8 label maps (0 = background), same shape.
    spacing: voxel size in mm along (Z, H, W).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    scores = []
    for label in range(1, num_classes + 1):
        outcome, d, h = score_class(pred == label, gt == label, spacing, protocol)
        scores.append(ClassScore(label, outcome, d, h))
    return scores


@dataclass(frozen=True)
class Summary:
    """Means over cases of one method. Per-class lists are indexed by class id - 1."""

    dice: float | None
    hd95: float | None
    class_dice: list[float | None]
    class_hd95: list[float | None]
    counts: dict[str, int]  # outcome -> number of (case, class) pairs


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(cases: Sequence[Sequence[ClassScore]], num_classes: int) -> Summary:
    """Per-class means over cases, the mean of those, and how many pairs had each outcome."""
    class_dice: list[float | None] = []
    class_hd95: list[float | None] = []
    for label in range(1, num_classes + 1):
        kept = [s for case in cases for s in case if s.label == label and s.included]
        class_dice.append(_mean([s.dice for s in kept if s.dice is not None]))
        class_hd95.append(_mean([s.hd95 for s in kept if s.hd95 is not None]))
    counts = {o: 0 for o in ("both", "gt_only", "pred_only", "both_empty")}
    for case in cases:
        for s in case:
            counts[s.outcome] += 1
    return Summary(
        dice=_mean([v for v in class_dice if v is not None]),
        hd95=_mean([v for v in class_hd95 if v is not None]),
        class_dice=class_dice,
        class_hd95=class_hd95,
        counts=counts,
    )
