"""Dice and HD95: answers worked out by hand, and agreement with medpy on random cases."""

from __future__ import annotations

import numpy as np
import pytest
from medpy.metric.binary import hd95 as medpy_hd95

from evaluate.metrics import dice, hd95, union_box


def cube(shape: tuple[int, int, int], start: tuple[int, int, int], side: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + side) for s in start)] = True
    return mask


def test_identical_masks_score_perfectly() -> None:
    mask = cube((20, 20, 20), (4, 5, 6), 8)
    assert dice(mask, mask) == 1.0
    assert hd95(mask, mask) == 0.0
    assert hd95(mask, mask, spacing=(3.0, 0.7, 0.7)) == 0.0


def test_dice_by_hand() -> None:
    pred = np.zeros((4, 4), dtype=bool)
    gt = np.zeros((4, 4), dtype=bool)
    pred[0, :4] = True  # 4 voxels
    gt[0, 1:4] = True
    gt[1, :3] = True  # 6 voxels, 3 shared with pred
    assert dice(pred, gt) == pytest.approx(2 * 3 / 10)
    assert dice(pred, np.zeros_like(gt)) == 0.0
    with pytest.raises(ValueError, match="empty"):
        dice(np.zeros_like(gt), np.zeros_like(gt))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cube_shifted_by_k(k: int) -> None:
    # A 10-voxel cube moved k voxels along z. The bottom face of each cube (100 of its 488 surface
    # voxels, more than 5 %) lies exactly k from the other cube's nearest face, and no surface
    # voxel is farther than that, so the 95th percentile is k.
    a = cube((24, 24, 24), (5, 6, 7), 10)
    b = cube((24, 24, 24), (5 + k, 6, 7), 10)
    assert hd95(a, b) == pytest.approx(k)
    assert dice(a, b) == pytest.approx((10 - k) / 10)


def test_anisotropic_spacing_scales_the_shift_axis_only() -> None:
    a = cube((24, 24, 24), (5, 6, 7), 10)
    along_z = cube((24, 24, 24), (7, 6, 7), 10)
    along_w = cube((24, 24, 24), (5, 6, 9), 10)
    spacing = (2.5, 0.8, 0.6)  # (Z, H, W) in mm
    assert hd95(a, along_z, spacing) == pytest.approx(2 * 2.5)
    assert hd95(a, along_w, spacing) == pytest.approx(2 * 0.6)
    assert hd95(a, along_w) == pytest.approx(2.0)


def test_percentile_interpolates_pooled_distances() -> None:
    # pred: one voxel at w=0; gt: voxels at w=0 and w=10. Distances pred->gt [0], gt->pred [0, 10];
    # pooled [0, 0, 10]; 95th percentile at rank 0.95 * 2 = 1.9 -> 0 + 0.9 * 10 = 9.
    pred = np.zeros((3, 15), dtype=bool)
    gt = np.zeros((3, 15), dtype=bool)
    pred[1, 0] = True
    gt[1, [0, 10]] = True
    assert hd95(pred, gt) == pytest.approx(9.0)
    assert hd95(gt, pred) == pytest.approx(9.0)
    assert hd95(pred, gt, spacing=(1.0, 0.5)) == pytest.approx(4.5)


def test_empty_mask_refused() -> None:
    mask = cube((8, 8, 8), (2, 2, 2), 3)
    with pytest.raises(ValueError, match="non-empty"):
        hd95(mask, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        hd95(mask, mask[:-1])


def test_union_box_has_margin_and_stays_inside() -> None:
    a = np.zeros((10, 10), dtype=bool)
    a[0, 3] = True
    b = np.zeros((10, 10), dtype=bool)
    b[4, 9] = True
    assert union_box(a, b) == (slice(0, 6), slice(2, 10))


def random_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Blobs: smoothed noise thresholded, sometimes touching the array border, sometimes sparse."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random(shape), sigma=rng.uniform(0.5, 2.5))
    mask = noise > np.quantile(noise, rng.uniform(0.6, 0.97))
    if rng.random() < 0.3:  # confine to a sub-box so the crop is far from the array border
        keep = np.zeros(shape, dtype=bool)
        keep[tuple(slice(s // 4, s - s // 4) for s in shape)] = True
        mask &= keep
    return mask


@pytest.mark.parametrize("ndim", [2, 3])
def test_agrees_with_medpy_on_random_cases(ndim: int) -> None:
    rng = np.random.default_rng([2024, ndim])
    checked = 0
    for _ in range(25):
        shape = tuple(int(s) for s in rng.integers(6, 40 if ndim == 3 else 90, size=ndim))
        pred, gt = random_mask(rng, shape), random_mask(rng, shape)
        if not pred.any() or not gt.any():
            continue
        spacing = None if rng.random() < 0.3 else tuple(rng.uniform(0.3, 5.0, size=ndim))
        expected = medpy_hd95(pred, gt, voxelspacing=spacing)
        assert hd95(pred, gt, spacing) == pytest.approx(expected, abs=1e-6)
        checked += 1
    assert checked >= 20
