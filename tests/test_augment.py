"""Geometric and intensity transforms: alignment, label ids, ranges, seeding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from core.params import Params, SynthParams
from synth.augment import Augmenter

NO_AUG = dict(
    affine_prob=0.0,
    hflip_prob=0.0,
    vflip_prob=0.0,
    elastic_prob=0.0,
    gamma_prob=0.0,
    brightness_contrast_prob=0.0,
    noise_prob=0.0,
    blur_prob=0.0,
)


def synth_params(params: Params, **changes: object) -> SynthParams:
    return dataclasses.replace(params.synth, **{**NO_AUG, **changes})


def square_slice(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A 1 x size x size image, 1.0 on a square at rows 8:20, columns 30:46, with label 2 there."""
    image = np.zeros((1, size, size), np.float32)
    label = np.zeros((size, size), np.uint8)
    image[0, 8:20, 30:46], label[8:20, 30:46] = 1.0, 2
    return image, label


@pytest.mark.parametrize(("hflip", "vflip"), [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_flips_move_the_square_where_worked_out_by_hand(params, hflip, vflip):
    aug = Augmenter(synth_params(params, hflip_prob=hflip, vflip_prob=vflip))
    image, label = square_slice()
    out_image, out_label = aug.geometric(image, label, seed=5)
    # By hand: a horizontal flip maps columns 30:46 to 64-46:64-30 = 18:34, a vertical flip rows
    # 8:20 to 44:56.
    rows = slice(44, 56) if vflip else slice(8, 20)
    cols = slice(18, 34) if hflip else slice(30, 46)
    expected = np.zeros_like(label)
    expected[rows, cols] = 2
    np.testing.assert_array_equal(out_label, expected)
    np.testing.assert_array_equal(out_image[0], (expected == 2).astype(np.float32))


def test_translation_moves_image_and_label_together_within_the_range(params):
    aug = Augmenter(
        synth_params(
            params, affine_prob=1.0, rotate_deg=0.0, scale=(1.0, 1.0), shear_deg=0.0, translate=0.1
        )
    )
    image, label = square_slice()
    shifts = []
    for seed in range(8):
        out_image, out_label = aug.geometric(image, label, seed)
        assert (out_label == 2).sum() == pytest.approx(12 * 16, abs=32)
        label_centre = np.array(ndimage.center_of_mass(out_label == 2))
        image_centre = np.array(ndimage.center_of_mass(out_image[0]))
        assert np.abs(label_centre - image_centre).max() < 0.6  # same shift, to interpolation
        shift = label_centre - np.array([13.5, 37.5])
        assert np.abs(shift).max() <= 0.1 * 64 + 0.5
        shifts.append(shift)
    assert np.abs(np.array(shifts)).max() > 1.0  # it did move


def test_full_geometric_pipeline_keeps_shapes_aligned_and_ids_in_the_set(params):
    aug = Augmenter(
        synth_params(
            params,
            affine_prob=1.0,
            elastic_prob=1.0,
            hflip_prob=0.5,
            rotate_deg=30.0,
            shear_deg=10.0,
        )
    )
    image, label = square_slice()
    image[0, 40:50, 10:20], label[40:50, 10:20] = 1.0, 5
    for seed in range(10):
        out_image, out_label = aug.geometric(image, label, seed)
        assert out_image.shape == image.shape and out_image.dtype == np.float32
        assert out_label.shape == label.shape and out_label.dtype == np.uint8
        assert set(np.unique(out_label)) <= {0, 2, 5}
        bright, labelled = out_image[0] > 0.5, out_label > 0
        iou = (bright & labelled).sum() / max((bright | labelled).sum(), 1)
        assert iou > 0.9


def test_same_seed_same_output_whatever_came_before(params):
    aug = Augmenter(synth_params(params, affine_prob=1.0, elastic_prob=1.0, noise_prob=1.0))
    image, label = square_slice()
    first = aug.geometric(image, label, seed=7)
    aug.geometric(image, label, seed=8)
    again = aug.geometric(image, label, seed=7)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], aug.geometric(image, label, seed=8)[0])


def test_intensity_stays_in_range_and_is_per_modality(params):
    p = synth_params(
        params,
        gamma_prob=1.0,
        brightness_contrast_prob=1.0,
        noise_prob=1.0,
        blur_prob=1.0,
        brightness=0.5,
        contrast=0.5,
    )
    aug = Augmenter(p)
    plane = np.random.default_rng(0).uniform(0, 1, (32, 32)).astype(np.float32)
    image = np.stack([plane, plane, plane])
    out = aug.intensity(image, ("flair", "t1ce", "t1ce"), seeds=[1, 2])
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out[1], out[2])  # same modality name: same draw
    assert not np.array_equal(out[0], out[1])  # another modality: its own draw
    np.testing.assert_array_equal(aug.intensity(image, ("flair", "t1ce", "t1ce"), [1, 2]), out)


def test_intensity_off_is_identity(params):
    aug = Augmenter(synth_params(params))
    image = np.random.default_rng(1).uniform(0, 1, (1, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(aug.intensity(image, ("CT",), [3]), image)
