"""Background pasting: units, placement, feathering band, compositing order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synth.paste import (
    Unit,
    feather_radius,
    paste_structures,
    paste_unit,
    random_offset,
    split_units,
)


def two_class_label() -> np.ndarray:
    """64 x 64: class 2 in two separate squares, class 1 in one 8-connected diagonal pair."""
    label = np.zeros((64, 64), np.uint8)
    label[4:10, 5:12] = 2
    label[30:40, 40:44] = 2
    label[50, 50] = label[51, 51] = 1  # touch only at a corner: one 8-connected component
    return label


def test_units_per_class_and_per_component():
    label = two_class_label()
    by_class = split_units(label, "class")
    assert [(u.cls, u.rows, u.cols) for u in by_class] == [
        (1, (50, 52), (50, 52)),
        (2, (4, 40), (5, 44)),
    ]
    by_comp = split_units(label, "component")
    assert [(u.cls, u.rows, u.cols) for u in by_comp] == [
        (1, (50, 52), (50, 52)),
        (2, (4, 10), (5, 12)),
        (2, (30, 40), (40, 44)),
    ]
    for u in by_comp:  # here each component's box holds only that component
        box = label[u.rows[0] : u.rows[1], u.cols[0] : u.cols[1]]
        np.testing.assert_array_equal(u.mask, box == u.cls)
    assert sum(u.mask.sum() for u in by_comp) == (label > 0).sum()


@pytest.mark.parametrize("feather", [0.0, 1.5])
def test_paste_puts_the_class_where_the_label_says_and_leaves_the_rest_untouched(feather):
    rng = np.random.default_rng(0)
    canvas = rng.uniform(0, 1, (2, 64, 64)).astype(np.float32)
    canvas_label = np.zeros((64, 64), np.uint8)
    canvas_label[0:5, 0:5] = 1  # an earlier structure far from the paste
    source = rng.uniform(0, 1, (2, 64, 64)).astype(np.float32)
    source_label = np.zeros((64, 64), np.uint8)
    source_label[10:20, 5:15] = 3
    (unit,) = split_units(source_label, "class")
    image, label = canvas.copy(), canvas_label.copy()
    paste_unit(image, label, source, unit, offset=(30, 40), feather=feather)

    # By hand: rows 10:20 + 30 = 40:50, columns 5:15 + 40 = 45:55.
    target = np.zeros((64, 64), bool)
    target[40:50, 45:55] = True
    expected_label = canvas_label.copy()
    expected_label[target] = 3
    np.testing.assert_array_equal(label, expected_label)
    np.testing.assert_array_equal(image[:, target], source[:, 10:20, 5:15].reshape(2, -1))
    # Outside the square grown by the feather radius, the canvas is bit-identical.
    radius = feather_radius(feather)
    band = ndimage.binary_dilation(target, np.ones((3, 3)), iterations=radius) if radius else target
    np.testing.assert_array_equal(image[:, ~band], canvas[:, ~band])
    if radius:  # inside the band, a blend of the two (strictly between where they differ)
        rim = band & ~target
        shifted = np.zeros_like(source)  # the source as moved by (30, 40)
        shifted[:, 30:, 40:] = source[:, :34, :24]
        lo, hi = np.minimum(canvas, shifted), np.maximum(canvas, shifted)
        assert np.all(image[:, rim] >= lo[:, rim] - 1e-6) and np.all(
            image[:, rim] <= hi[:, rim] + 1e-6
        )
        assert not np.array_equal(image[:, rim], canvas[:, rim])


def test_later_pastes_win():
    image = np.zeros((1, 32, 32), np.float32)
    label = np.zeros((32, 32), np.uint8)
    source = np.ones((1, 32, 32), np.float32)
    a = Unit(1, np.ones((8, 8), bool), (0, 8), (0, 8))
    b = Unit(2, np.ones((8, 8), bool), (0, 8), (0, 8))
    paste_unit(image, label, source, a, (10, 10), 0.0)
    paste_unit(image, label, source, b, (14, 14), 0.0)
    assert (label[10:14, 10:18] == 1).all() and (label[14:22, 14:22] == 2).all()
    assert (label == 1).sum() == 64 - 16 and (label == 2).sum() == 64


def test_random_offsets_keep_the_unit_inside():
    rng = np.random.default_rng(3)
    unit = Unit(1, np.ones((10, 50), bool), (5, 15), (2, 52))
    offsets = np.array([random_offset(unit, (40, 60), rng) for _ in range(500)])
    rows, cols = offsets[:, 0], offsets[:, 1]
    assert rows.min() == -5 and rows.max() == 40 - 15  # every row position is reachable
    assert cols.min() == -2 and cols.max() == 60 - 52


def test_paste_structures_returns_new_arrays_with_the_source_classes():
    rng = np.random.default_rng(4)
    canvas = rng.uniform(0, 1, (1, 64, 64)).astype(np.float32)
    canvas_label = np.zeros((64, 64), np.uint8)
    source = rng.uniform(0, 1, (1, 64, 64)).astype(np.float32)
    source_label = two_class_label()
    before = canvas.copy()
    image, label = paste_structures(
        canvas, canvas_label, source, source_label, "component", 1.0, rng
    )
    np.testing.assert_array_equal(canvas, before)
    assert not canvas_label.any()
    assert set(np.unique(label)) <= {0, 1, 2} and (label == 1).sum() == 2
    # Every labeled pixel carries exactly a source pixel of the same class (alpha 1 on masks).
    assert np.isin(image[0][label == 1], source[0][source_label == 1]).all()
    assert np.isin(image[0][label == 2], source[0][source_label == 2]).all()


def test_random_offsets_respect_the_largest_shift():
    rng = np.random.default_rng(5)
    unit = Unit(1, np.ones((4, 4), bool), (2, 6), (50, 54))
    offsets = np.array([random_offset(unit, (100, 60), rng, max_shift=0.1) for _ in range(500)])
    # By hand: rows within +-10 (0.1 * 100); columns within -6 (0.1 * 60) .. +6 = 60 - 54.
    assert offsets[:, 0].min() == -2 and offsets[:, 0].max() == 10  # the top edge limits -2
    assert offsets[:, 1].min() == -6 and offsets[:, 1].max() == 6
    assert random_offset(unit, (100, 60), rng, max_shift=0.0) == (0, 0)
