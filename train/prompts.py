"""Class-aware point prompts: sample points inside each class, batch them, rescale them.

Coordinates are continuous pixel coordinates (x, y) = (column, row) with pixel centres at
half-integers: the centre of pixel (row r, column c) is (c + 0.5, r + 0.5). Resizing an image by
a factor s (align_corners=False, as torch and SAM do) maps such a point to (s * x, s * y), so
`scale_points` is a plain multiplication. `FewSam.decode` takes the points in this convention
(SAM's own prompt encoder adds the 0.5 itself to integer pixel indices).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

PAD_LABEL = -1  # SAM's "not a point": padding that the decoder ignores
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


def sample_class_points(
    label: np.ndarray, num_classes: int, points_per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Points drawn uniformly among the pixels of each class present in `label`.

    label: H x W integer class ids 0..num_classes (0 = background).
    Returns points P x 2 float32 (x, y) at pixel centres and classes P int64 in 1..num_classes,
    `points_per_class` per present class in ascending class order (P = 0 when only background).
    Pixels are drawn without replacement, or with replacement when a class has fewer pixels than
    `points_per_class`.
    """
    if label.ndim != 2:
        raise ValueError(f"label must be H x W, got shape {label.shape}")
    if points_per_class < 1:
        raise ValueError(f"points_per_class must be >= 1, got {points_per_class}")
    if label.size and (label.min() < 0 or label.max() > num_classes):
        raise ValueError(f"label ids must be in 0..{num_classes}, got {label.min()}..{label.max()}")
    points: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    for cls in range(1, num_classes + 1):
        rows, cols = np.nonzero(label == cls)
        if rows.size == 0:
            continue
        pick = rng.choice(rows.size, size=points_per_class, replace=rows.size < points_per_class)
        points.append(np.stack([cols[pick], rows[pick]], axis=1).astype(np.float32) + 0.5)
        classes.append(np.full(points_per_class, cls, dtype=np.int64))
    if not points:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    return np.concatenate(points), np.concatenate(classes)


def pad_points(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch per-image prompt sets of different lengths.

    items: B pairs (points P_i x 2 float (x, y), classes P_i int).
    Returns points B x Pmax x 2 float32 (padding at (0, 0)) and labels B x Pmax int64 (padding
    `PAD_LABEL`). The decoder masks padding out, so a padded set gives the result of the set alone.
    """
    width = max((len(c) for _, c in items), default=0)
    points = torch.zeros((len(items), width, 2), dtype=torch.float32)
    labels = torch.full((len(items), width), PAD_LABEL, dtype=torch.int64)
    for i, (p, c) in enumerate(items):
        if len(p) != len(c):
            raise ValueError(f"item {i}: {len(p)} points but {len(c)} classes")
        points[i, : len(c)] = torch.as_tensor(np.asarray(p, np.float32).reshape(-1, 2))
        labels[i, : len(c)] = torch.as_tensor(np.asarray(c, np.int64))
    return points, labels


def scale_points(points: ArrayOrTensor, from_hw: tuple[int, int], to_size: int) -> ArrayOrTensor:
    """(x, y) points (... x 2) on an H x W slice -> the same places on the to_size square input."""
    h, w = from_hw
    if isinstance(points, torch.Tensor):
        pts = points if points.is_floating_point() else points.float()
        factor = torch.tensor([to_size / w, to_size / h], dtype=pts.dtype, device=pts.device)
    else:
        pts = points if np.issubdtype(points.dtype, np.floating) else points.astype(np.float32)
        factor = np.array([to_size / w, to_size / h], dtype=pts.dtype)
    return pts * factor
