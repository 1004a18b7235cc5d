"""Empty-mask rules of both protocols, and how scores are averaged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluate.protocols import score_case, score_class, summarize, volume_diagonal

SHAPE = (6, 10, 12)
SPACING = (3.0, 0.5, 0.5)
DIAGONAL = math.sqrt((6 * 3.0) ** 2 + (10 * 0.5) ** 2 + (12 * 0.5) ** 2)


def box(z: int, dz: int = 3) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[z : z + dz, 2:6, 3:7] = True
    return mask


EMPTY = np.zeros(SHAPE, dtype=bool)


def test_volume_diagonal() -> None:
    assert volume_diagonal(SHAPE, SPACING) == pytest.approx(DIAGONAL)
    assert volume_diagonal((3, 4), (1.0, 1.0)) == pytest.approx(5.0)


def test_transunet_rules() -> None:
    # Both present: Dice and HD95 in voxels (spacing ignored); a shift of one slice gives 1.
    outcome, d, h = score_class(box(1), box(2), SPACING, "transunet")
    assert (outcome, d, h) == ("both", pytest.approx(2 / 3), pytest.approx(1.0))
    assert score_class(box(1), EMPTY, SPACING, "transunet") == ("pred_only", 1.0, 0.0)
    assert score_class(EMPTY, box(1), SPACING, "transunet") == ("gt_only", 0.0, 0.0)
    assert score_class(EMPTY, EMPTY, SPACING, "transunet") == ("both_empty", 0.0, 0.0)


def test_strict_rules() -> None:
    # Both present: HD95 in mm, so a one-slice shift costs the slice thickness.
    outcome, d, h = score_class(box(1), box(2), SPACING, "strict")
    assert (outcome, d, h) == ("both", pytest.approx(2 / 3), pytest.approx(3.0))
    outcome, d, h = score_class(box(1), EMPTY, SPACING, "strict")
    assert (outcome, d, h) == ("pred_only", 0.0, pytest.approx(DIAGONAL))
    outcome, d, h = score_class(EMPTY, box(1), SPACING, "strict")
    assert (outcome, d, h) == ("gt_only", 0.0, pytest.approx(DIAGONAL))
    assert score_class(EMPTY, EMPTY, SPACING, "strict") == ("both_empty", None, None)


def test_unknown_protocol_refused() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        score_class(box(1), box(1), SPACING, "nnunet")  # type: ignore[arg-type]


def two_cases() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Class 1 right in case A and missing in B; class 2 absent in A and hallucinated in B."""
    gt_a = np.zeros(SHAPE, dtype=np.uint8)
    gt_a[box(0)] = 1
    pred_a = gt_a.copy()
    gt_b = np.zeros(SHAPE, dtype=np.uint8)
    gt_b[box(0)] = 1
    pred_b = np.zeros(SHAPE, dtype=np.uint8)
    pred_b[box(3)] = 2
    return [pred_a, pred_b], [gt_a, gt_b]


def test_summary_transunet_counts_every_pair() -> None:
    preds, gts = two_cases()
    cases = [score_case(p, g, 2, SPACING, "transunet") for p, g in zip(preds, gts, strict=True)]
    summary = summarize(cases, 2)
    # class 1: (1 + 0) / 2; class 2: both empty in A -> 0, hallucinated in B -> 1; mean 0.5.
    assert summary.class_dice == [0.5, 0.5]
    assert summary.class_hd95 == [0.0, 0.0]
    assert summary.dice == 0.5
    assert summary.counts == {"both": 1, "gt_only": 1, "pred_only": 1, "both_empty": 1}


def test_summary_strict_excludes_both_empty() -> None:
    preds, gts = two_cases()
    cases = [score_case(p, g, 2, SPACING, "strict") for p, g in zip(preds, gts, strict=True)]
    summary = summarize(cases, 2)
    # class 1: A perfect (1, 0), B missed (0, diagonal); class 2: only B counts (0, diagonal).
    assert summary.class_dice == [0.5, 0.0]
    assert summary.class_hd95 == [pytest.approx(DIAGONAL / 2), pytest.approx(DIAGONAL)]
    assert summary.dice == 0.25
    assert summary.counts["both_empty"] == 1
    assert not cases[0][1].included


def test_class_never_scored_is_none_and_left_out() -> None:
    gt = np.zeros(SHAPE, dtype=np.uint8)
    gt[box(0)] = 1
    cases = [score_case(gt, gt, 2, SPACING, "strict")]
    summary = summarize(cases, 2)
    assert summary.class_dice == [1.0, None]
    assert summary.dice == 1.0
    assert summary.hd95 == 0.0
