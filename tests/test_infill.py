"""In-fill of cut-out structures, and the body mask and midline that placement relies on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synth.body import AIR_LEVEL, body_mask, midline
from synth.infill import infill, push_pull

SIZE = 128


def square_region(top: int, bottom: int, size: int = SIZE) -> np.ndarray:
    region = np.zeros((size, size), bool)
    region[top:bottom, top:bottom] = True
    return region


def noisy_constant(levels, stds, seed: int = 0) -> np.ndarray:
    """C x 128 x 128 float32: channel c is levels[c] plus white Gaussian noise of std stds[c]."""
    rng = np.random.default_rng(seed)
    planes = [
        level + rng.normal(0.0, std, (SIZE, SIZE)) for level, std in zip(levels, stds, strict=True)
    ]
    return np.stack(planes).astype(np.float32)


def test_infill_leaves_every_pixel_outside_the_region_as_it_was():
    image = noisy_constant([0.4, 0.6], [0.03, 0.01])
    before = image.copy()
    region = square_region(30, 70)
    region[100:110, 5:50] = True  # and a second, thin one
    out = infill(image, region, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == image.shape and out is not image
    np.testing.assert_array_equal(out[:, ~region], image[:, ~region])
    np.testing.assert_array_equal(image, before)  # the argument is not modified
    assert (out[:, region] != image[:, region]).mean() > 0.99  # the region itself is new


def test_an_empty_region_changes_nothing():
    image = noisy_constant([0.4], [0.03])
    out = infill(image, np.zeros((SIZE, SIZE), bool), np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)
    assert out is not image


LEVELS, STDS = (0.5, 0.3), (0.03, 0.01)


def bright_square_cut_out(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two channels of known level and white noise (0.5 with std 0.03, 0.3 with std 0.01), a
    bright 60 x 60 structure in the middle to cut out, and its fill."""
    image = noisy_constant(LEVELS, STDS, seed=seed)
    region = square_region(34, 94)
    image[:, region] = 0.9
    return image, region, infill(image, region, np.random.default_rng(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fill_matches_the_level_around_it(seed):
    image, region, out = bright_square_cut_out(seed)
    for c, std in enumerate(STDS):  # each channel on its own
        filled, around = out[c][region], image[c][~region]
        # The mean of 3600 filled pixels: within a sixth of the noise std of the surroundings.
        assert abs(around.mean() - LEVELS[c]) < std / 6
        assert abs(filled.mean() - around.mean()) < std / 6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fill_matches_the_noise_around_it(seed):
    _, region, out = bright_square_cut_out(seed)
    for c, std in enumerate(STDS):
        assert out[c][region].std() == pytest.approx(std, rel=0.2)


def test_a_small_bone_beside_the_region_is_not_smeared_into_it():
    image = noisy_constant([0.4], [0.02], seed=3)
    region = square_region(30, 60)
    image[0, 40:46, 60:66] = 1.0  # a bone touching the region's right side: a few ring pixels
    out = infill(image, region, np.random.default_rng(0))
    filled = out[0][region]
    # The tissue level, not pulled up towards the bone (nearest columns included).
    assert abs(filled.mean() - 0.4) < 0.01
    assert abs(out[0, 40:46, 55:60].mean() - 0.4) < 0.05
    assert filled.max() < 0.7  # halfway to the bone


def test_the_fill_stays_in_range():
    image = noisy_constant([0.99], [0.05])
    image = np.clip(image, 0.0, 1.0)
    region = square_region(30, 90)
    out = infill(image, region, np.random.default_rng(0))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out[0][region] == 1.0).any()  # the noise did reach the top and was clipped


def test_infill_is_deterministic_for_one_generator_seed():
    image = noisy_constant([0.5], [0.03])
    region = square_region(40, 80)
    a = infill(image, region, np.random.default_rng(7))
    b = infill(image, region, np.random.default_rng(7))
    c = infill(image, region, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, region], c[:, region])


def test_a_region_without_texture_around_it_is_filled_smoothly():
    image = np.full((1, 64, 64), 0.45, np.float32)  # no noise at all
    region = square_region(20, 44, size=64)
    out = infill(image, region, np.random.default_rng(0))
    np.testing.assert_allclose(out, image, atol=1e-5)


@pytest.mark.parametrize(
    ("gradient", "hole"),
    [
        ((0.006, 0.003), (24, 40, 24, 40)),
        ((0.0, 0.01), (16, 48, 16, 48)),
        ((-0.008, 0.002), (10, 30, 35, 60)),
    ],
)
def test_push_pull_follows_a_linear_ramp_across_a_hole(gradient, hole):
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    plane = 0.5 + gradient[0] * (xx - 32) + gradient[1] * (yy - 32)
    known = np.ones((64, 64), bool)
    r0, r1, c0, c1 = hole
    known[r0:r1, c0:c1] = False
    filled = push_pull(plane, known)
    assert filled.dtype == np.float32
    np.testing.assert_array_equal(filled[known], plane[known])
    truth, estimate = plane[~known], filled[~known]
    # Against the best constant fill (the hole's true mean), which cannot follow a ramp at all:
    # the fill follows the ramp closely and its error is a fraction of the constant's.
    assert np.corrcoef(truth, estimate)[0, 1] > 0.98
    constant_error = np.abs(truth - truth.mean()).mean()
    assert np.abs(estimate - truth).mean() < constant_error / 3
    assert abs(estimate.mean() - truth.mean()) < 0.05 * np.ptp(truth)


def test_push_pull_with_nothing_missing_is_the_plane_itself():
    plane = np.random.default_rng(0).uniform(0, 1, (40, 40)).astype(np.float32)
    np.testing.assert_array_equal(push_pull(plane, np.ones((40, 40), bool)), plane)


# ---- body mask and midline -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("density", [0.3, 0.55, 0.8])
def test_body_mask_is_non_air_with_enclosed_air_filled(channels, density):
    rng = np.random.default_rng(int(density * 100) + channels)
    for _ in range(10):
        h, w = rng.integers(5, 60, size=2)
        tissue = rng.random((channels, h, w)) < density / channels
        # Air below or at AIR_LEVEL (the level itself is air), tissue above it.
        air = rng.choice([0.0, AIR_LEVEL / 2, AIR_LEVEL], size=(channels, h, w))
        image = np.where(tissue, rng.uniform(AIR_LEVEL + 1e-3, 1.0, (channels, h, w)), air)
        image = image.astype(np.float32)
        expected = ndimage.binary_fill_holes(tissue.any(axis=0))
        np.testing.assert_array_equal(body_mask(image), expected)


def test_body_mask_worked_out_by_hand():
    image = np.zeros((1, 9, 12), np.float32)
    image[0, 1:6, 1:6] = 0.5
    image[0, 2:5, 2:5] = 0.0  # a 3 x 3 pocket of air inside a ring: body (a lung)
    image[0, 1:6, 7:11] = 0.5
    image[0, 3, 9:11] = 0.0  # a notch open to the outside at column 10: stays air
    image[0, 7, 0] = 0.02  # exactly the air level: air
    expected = np.zeros((9, 12), bool)
    expected[1:6, 1:6] = True
    expected[1:6, 7:11] = True
    expected[3, 9:11] = False
    np.testing.assert_array_equal(body_mask(image), expected)
    # Air touching the pocket only at a corner does not let it out (4-connected air).
    image = np.full((1, 5, 5), 0.5, np.float32)
    image[0, 2, 2] = 0.0
    image[0, 1, 1] = image[0, 0, 0] = 0.0  # a diagonal chain of air to the corner
    expected = np.ones((5, 5), bool)
    expected[0, 0] = False
    np.testing.assert_array_equal(body_mask(image), expected)


def test_midline_worked_out_by_hand():
    body = np.zeros((6, 20), bool)
    body[2, 3] = body[4, 10] = True  # extent: columns 3..10
    assert midline(body) == 6.5
    body[0, 15] = True  # now columns 3..15
    assert midline(body) == 9.0
    one = np.zeros((6, 20), bool)
    one[:, 7] = True
    assert midline(one) == 7.0
    assert midline(np.zeros((6, 20), bool)) is None
