"""Small `synthetic.h5` files written in code for the training tests (schema: core.schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from core.schema import SYNTHETIC_KIND


def write_synthetic(
    path: Path, image: np.ndarray, label: np.ndarray, classes: tuple[str, ...], channels=("CT",)
) -> Path:
    """Write N x C x H x W images in [0, 1] and N x H x W labels as a complete synthetic set."""
    n = image.shape[0]
    params: dict[str, Any] = {"dataset": {"format": "synapse", "window": [-125.0, 275.0]}}
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image.astype(np.float16), track_times=False)
        f.create_dataset("label", data=label.astype(np.uint8), track_times=False)
        f.create_dataset("exemplar", data=np.arange(n, dtype=np.int32), track_times=False)
        f.create_dataset("background", data=np.full(n, -1, np.int32), track_times=False)
        f.attrs["kind"] = SYNTHETIC_KIND
        f.attrs["classes"] = json.dumps(list(classes))
        f.attrs["channels"] = json.dumps(list(channels))
        f.attrs["params"] = json.dumps(params)
        f.attrs["seed"] = 0
        f.attrs["versions"] = json.dumps({})
        f.attrs["complete"] = 1
    return path


def bright_squares(path: Path, n: int = 8, size: int = 64, seed: int = 0) -> Path:
    """`n` dark noisy slices, each with one bright square of class 1 at a random place.

    Trivially learnable: class 1 is exactly the bright pixels.
    """
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.0, 0.2, size=(n, 1, size, size))
    label = np.zeros((n, size, size), np.uint8)
    side = size // 3
    for i in range(n):
        r, c = rng.integers(0, size - side, size=2)
        image[i, 0, r : r + side, c : c + side] += 0.7
        label[i, r : r + side, c : c + side] = 1
    return write_synthetic(path, image, label, classes=("square",))
