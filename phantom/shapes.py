"""Smooth random shapes for the phantom scans: deformed ellipsoids in voxel coordinates.

All arrays are `Z x H x W` (axial slices first) and all centres/semi-axes are given in voxels as
(z, y, x) = (slice, row, column). Shapes are described by a "radius" field r: r < 1 inside the
deformed ellipsoid, r = 1 on its surface, so thresholds below 1 give concentric inner shells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice, slice]


def _basis(n: int, cells: int) -> np.ndarray:
    """n x cells weights of Gaussian bumps centred on a coarse grid, rows of unit energy."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n * cells - 0.5  # coarse-grid coordinate
    w = np.exp(-0.5 * ((t[:, None] - np.arange(cells, dtype=np.float32)[None, :]) / 0.6) ** 2)
    return w / np.sqrt((w**2).sum(axis=1, keepdims=True))


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int = 4) -> np.ndarray:
    """A smooth random field of `shape` (float32, zero mean, unit variance at every voxel).

    Random values on a coarse grid of `cells` points per axis, blended by Gaussian bumps: the
    deformation varies over about 1/cells of the box, like the lobes of an organ outline.
    Separable, so it costs a few multiply-adds per voxel.
    """
    field = rng.standard_normal([cells] * len(shape)).astype(np.float32)
    for axis, n in enumerate(shape):
        field = np.moveaxis(np.tensordot(_basis(n, cells), field, axes=(1, axis)), 0, axis)
    assert field.shape == tuple(shape), (field.shape, shape)
    return np.ascontiguousarray(field)


def radius_field(
    shape: tuple[int, int, int],
    center: tuple[float, float, float],
    axes: tuple[float, float, float],
    rng: np.random.Generator,
    wobble: float = 0.12,
) -> tuple[Box, np.ndarray] | None:
    """The box around a deformed ellipsoid and its radius field r there (float32).

    `shape` is the volume's Z x H x W, `center` and `axes` (semi-axes) are in voxels (z, y, x).
    The surface moves by up to about `wobble` of the radius, smoothly. None when the ellipsoid
    lies outside the volume.
    """
    reach = 1.05 + 2.0 * wobble  # the deformed surface stays inside the box
    box = []
    for c, a, n in zip(center, axes, shape, strict=True):
        lo, hi = int(np.floor(c - a * reach)), int(np.ceil(c + a * reach)) + 1
        lo, hi = max(lo, 0), min(hi, n)
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
    z, y, x = (np.arange(s.start, s.stop, dtype=np.float32) + 0.5 for s in box)
    r2 = (
        ((z - center[0]) / axes[0])[:, None, None] ** 2
        + ((y - center[1]) / axes[1])[None, :, None] ** 2
        + ((x - center[2]) / axes[2])[None, None, :] ** 2
    )
    bshape = tuple(s.stop - s.start for s in box)
    deform = 1.0 + wobble * np.clip(smooth_field(rng, bshape), -2.0, 2.0)
    return (box[0], box[1], box[2]), np.sqrt(r2) / deform


def textured(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Correlated noise (float32, std about 1): white noise blurred with `sigma` voxels in-plane."""
    noise = rng.standard_normal(shape).astype(np.float32)
    ndimage.gaussian_filter(noise, sigma=(0.5, sigma, sigma), output=noise)
    std = float(noise.std()) or 1.0
    return noise / std
