"""Prompts for promptable-segmentation pretraining, as SAM's training simulates a user.

All coordinates are (x, y) pixel indices of the S x S image, the convention of SAM's
PromptEncoder (which adds the half-pixel shift itself); boxes are XYXY in the same pixels. Point
labels: 1 positive, 0 negative, -1 padding (no point). Masks are HxW bool, row/col indexed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Prompts:
    """Prompts of the P instances of one image (every instance has the same number of points).

    points: P x n x 2 float32 (x, y) px; labels: P x n float32; boxes: P x 4 float32 XYXY px or
    None. `multimask` is true for a single point, the ambiguous prompt SAM answers with 3 masks.
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    boxes: np.ndarray | None
    multimask: bool


def pick_instances(
    rng: np.random.Generator, labels: np.ndarray, count: int, min_area: int
) -> np.ndarray:
    """Masks of `count` instances of `labels` (HxW int, 0 background) with area >= `min_area`.

    Distinct instances while there are enough, then repeats. Returns count x H x W bool, or an
    empty 0 x H x W array when the image has no instance that large.
    """
    areas = np.bincount(labels.ravel())
    ids = np.flatnonzero(areas >= min_area)
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros((0, *labels.shape), bool)
    chosen = rng.permutation(ids)[:count]
    if chosen.size < count:
        chosen = np.concatenate([chosen, rng.choice(ids, count - chosen.size)])
    return labels[None] == chosen[:, None, None]


def _random_pixel(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int]:
    """A uniformly drawn (x, y) pixel of a non-empty HxW bool mask."""
    flat = np.flatnonzero(mask)
    index = int(flat[rng.integers(flat.size)])
    return index % mask.shape[1], index // mask.shape[1]


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight XYXY box (x0, y0, x1, y1) px of a non-empty HxW bool mask, float32."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def center_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel farthest from the mask's boundary: the evaluation's single click."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), mask.shape)
    return int(x), int(y)


def initial_prompts(
    rng: np.random.Generator,
    masks: np.ndarray,
    box_prob: float,
    multi_point_prob: float,
    max_points: int,
    box_jitter: float,
) -> Prompts:
    """First prompts for P x H x W bool `masks`, one kind for the whole image.

    A box (tight box, each side moved by Gaussian noise of `box_jitter` x its length, at most
    20 px, as SAM does) with probability `box_prob`; several points (2..`max_points` positives
    inside, and a negative near the object half the time) with probability `multi_point_prob`;
    otherwise one positive point drawn uniformly inside the mask.
    """
    p, h, w = masks.shape
    kind = rng.random()
    if kind < box_prob:
        boxes = np.stack([mask_box(m) for m in masks])
        width, height = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        side = np.stack([width, height, width, height], axis=1)
        noise = np.clip(rng.normal(0, box_jitter, (p, 4)) * side, -20, 20)
        boxes = np.clip(boxes + noise, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
        x0, x1 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
        y0, y1 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
        return Prompts(None, None, np.stack([x0, y0, x1, y1], 1), multimask=False)
    if kind < box_prob + multi_point_prob and max_points >= 2:
        n_pos = int(rng.integers(2, max_points + 1))
        n_neg = int(rng.random() < 0.5)
    else:
        n_pos, n_neg = 1, 0
    points = np.zeros((p, n_pos + n_neg, 2), np.float32)
    for i, mask in enumerate(masks):
        for j in range(n_pos):
            points[i, j] = _random_pixel(rng, mask)
        if n_neg:
            near = ndimage.binary_dilation(mask, iterations=8) & ~mask
            points[i, n_pos] = _random_pixel(rng, near)
    labels = np.array([1.0] * n_pos + [0.0] * n_neg, np.float32)
    return Prompts(points, np.tile(labels, (p, 1)), None, multimask=n_pos + n_neg == 1)


def corrective_prompts(
    rng: np.random.Generator, previous: Prompts, predicted: np.ndarray, masks: np.ndarray
) -> Prompts:
    """`previous` plus one point per instance in the error region of the prediction.

    `predicted` and `masks` are P x H x W bool. The point is drawn uniformly from the pixels the
    prediction got wrong: positive in a missed part, negative in a false one; an instance with no
    error gets a padding point. The result asks for a single mask.
    """
    p = masks.shape[0]
    new_points = np.zeros((p, 1, 2), np.float32)
    new_labels = np.full((p, 1), -1.0, np.float32)
    for i in range(p):
        wrong = predicted[i] ^ masks[i]
        if wrong.any():
            x, y = _random_pixel(rng, wrong)
            new_points[i, 0] = (x, y)
            new_labels[i, 0] = float(masks[i, y, x])
    if previous.points is None:
        return Prompts(new_points, new_labels, previous.boxes, multimask=False)
    points = np.concatenate([previous.points, new_points], axis=1)
    labels = np.concatenate([previous.labels, new_labels], axis=1)
    return Prompts(points, labels, previous.boxes, multimask=False)
