"""Small exemplar sets of discs, squares and bars, built in code for the synthesis tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.schema import ExemplarSet, write_exemplars

CLASSES = ("disc", "square", "bar")


def _body(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 / (0.42 * size) ** 2 + (xx - size / 2) ** 2 / (0.46 * size) ** 2
    return np.where(inside < 1, 0.35 + rng.normal(0, 0.02, (size, size)), 0.0)


def exemplar_set(
    n: int = 6, pool: int = 4, size: int = 64, channels: tuple[str, ...] = ("CT",), seed: int = 0
) -> ExemplarSet:
    """`n` slices: a disc (class 1) in all, a square (2) in two of three, a bar (3) in one of four.

    Images are len(channels) x size x size in [0, 1]; the pool holds `pool` bodies without shapes.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for i in range(n):
        image, label = _body(size, rng), np.zeros((size, size), np.uint8)
        cy, cx = rng.uniform(0.4, 0.6, 2) * size
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (0.1 * size) ** 2
        image[disc], label[disc] = 0.8, 1
        side = size // 8
        if i % 3 != 2:
            r, c = (rng.uniform(0.15, 0.25, 2) * size).astype(int)
            image[r : r + side, c : c + side], label[r : r + side, c : c + side] = 0.6, 2
        if i % 4 == 0:
            r, c = int(0.72 * size), int(0.55 * size)
            image[r : r + 2, c : c + side * 2], label[r : r + 2, c : c + side * 2] = 0.95, 3
        images.append(
            np.stack([np.clip(image * (1 + 0.2 * k), 0, 1) for k in range(len(channels))])
        )
        labels.append(label)
    pool_images = [np.stack([np.clip(_body(size, rng), 0, 1)] * len(channels)) for _ in range(pool)]
    empty = np.zeros((0, len(channels), size, size), np.float32)
    return ExemplarSet(
        image=np.stack(images).astype(np.float32),
        label=np.stack(labels),
        case=tuple(f"case{i:04d}" for i in range(n)),
        slice=np.arange(n) * 3,
        pool_image=np.stack(pool_images).astype(np.float32) if pool else empty,
        pool_case=tuple(f"case{i:04d}" for i in range(pool)),
        pool_slice=np.arange(pool),
        classes=CLASSES,
        channels=channels,
        dataset_format="synapse",
    )


def write_exemplar_set(path: Path, ex: ExemplarSet) -> Path:
    """Write `ex` as an exemplars.h5 with a params record like the extraction stage's."""
    write_exemplars(path, ex, {"dataset": {"format": "synapse"}, "exemplars": len(ex.image)})
    return path
