"""Class-aware point sampling, batching with padding, and rescaling to the model input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.prompts import PAD_LABEL, pad_points, sample_class_points, scale_points


def _label() -> np.ndarray:
    label = np.zeros((16, 20), np.uint8)
    label[2, 5] = 1  # one pixel: row 2, column 5
    label[8:12, 10:18] = 3  # 4 x 8 block; class 2 absent
    return label


def test_points_lie_inside_their_class_at_pixel_centres() -> None:
    label = _label()
    points, classes = sample_class_points(label, 3, 4, np.random.default_rng(0))
    assert points.dtype == np.float32 and classes.dtype == np.int64
    assert classes.tolist() == [1, 1, 1, 1, 3, 3, 3, 3]
    # The single pixel of class 1 is drawn with replacement: its centre (x, y) = (5.5, 2.5).
    assert points[:4].tolist() == [[5.5, 2.5]] * 4
    cols, rows = (points[4:] - 0.5).T.astype(int)
    assert (label[rows, cols] == 3).all()
    assert len({tuple(p) for p in points[4:]}) == 4  # without replacement when the class is large
    np.testing.assert_array_equal(points % 1, 0.5)


def test_sampling_is_seeded_and_covers_the_class_uniformly() -> None:
    label = _label()
    a = sample_class_points(label, 3, 2, np.random.default_rng([0, 7]))
    b = sample_class_points(label, 3, 2, np.random.default_rng([0, 7]))
    np.testing.assert_array_equal(a[0], b[0])
    rng = np.random.default_rng(1)
    hits = np.zeros((16, 20))
    for _ in range(3200):
        p, c = sample_class_points(label, 3, 1, rng)
        x, y = p[c == 3][0]
        hits[int(y), int(x)] += 1
    block = hits[8:12, 10:18]
    assert block.sum() == 3200 and block.min() > 100 / 2  # 32 pixels, 100 expected each


def test_background_only_and_bad_ids() -> None:
    points, classes = sample_class_points(
        np.zeros((4, 4), np.uint8), 2, 3, np.random.default_rng(0)
    )
    assert points.shape == (0, 2) and classes.shape == (0,)
    with pytest.raises(ValueError, match="0..2"):
        sample_class_points(np.full((4, 4), 3, np.uint8), 2, 1, np.random.default_rng(0))


def test_pad_points() -> None:
    items = [
        (np.array([[1.5, 2.5], [3.5, 4.5]], np.float32), np.array([2, 1])),
        (np.zeros((0, 2), np.float32), np.zeros(0, np.int64)),
        (np.array([[7.5, 8.5]], np.float32), np.array([3])),
    ]
    points, labels = pad_points(items)
    assert points.shape == (3, 2, 2) and points.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[2, 1], [PAD_LABEL, PAD_LABEL], [3, PAD_LABEL]]
    assert points[2].tolist() == [[7.5, 8.5], [0.0, 0.0]]
    empty_points, empty_labels = pad_points([items[1], items[1]])
    assert empty_points.shape == (2, 0, 2) and empty_labels.shape == (2, 0)


def test_scale_points_maps_pixel_centres() -> None:
    # Top-left pixel centre of a 64 x 32 (H x W) slice; in a 128 input that pixel covers
    # columns 0-3 and rows 0-1, whose centre is (2.0, 1.0).
    pts = np.array([[0.5, 0.5], [31.5, 63.5]], np.float32)
    np.testing.assert_allclose(scale_points(pts, (64, 32), 128), [[2.0, 1.0], [126.0, 127.0]])
    t = scale_points(torch.tensor([[[0.5, 0.5]]]), (64, 32), 128)
    assert isinstance(t, torch.Tensor) and t.tolist() == [[[2.0, 1.0]]]
    assert scale_points(np.array([[1, 1]]), (2, 2), 4).tolist() == [[2.0, 2.0]]
