"""In-fill: replace the pixels of a region by plausible surrounding tissue.

When a structure is moved within its own slice, the place it leaves must look like what surrounds
it, or the model learns that an organ-shaped patch of nothing is background. The fill has two
parts:
- a smooth interpolation from the surrounding tissue (`tissue`: pixels outside the region whose
  intensity is typical of the region's rim, so neither bone nor air is smeared in), by
  push-pull: the image and a
  known-pixel weight are averaged down a Gaussian pyramid, and each level's holes are filled
  from the next coarser one on the way up, so a hole of any size is filled from its rim inward
  in O(H x W);
- noise matched to the surroundings: the standard deviation of the fine-scale residual (image
  minus its Gaussian blur) in a ring of known body pixels around the region, corrected for what
  the blur removes from white noise, drawn from the caller's generator.
Conventions: image C x H x W float32 in [0, 1]; region H x W bool (True = replace).
"""

from __future__ import annotations

import cv2
import numpy as np

from synth.body import AIR_LEVEL

# The noise matches the texture in a ring from _GAP to _GAP + _RING pixels around the region:
# nearer pixels' blur would still see the region's own intensities.
_GAP = 3
_RING = 5
# Robust standard deviations around the ring's median that count as the tissue the fill continues.
TISSUE_SPREAD = 3.0
_SIGMA = 1.5  # Gaussian that separates smooth intensity from fine-scale texture
_KSIZE = 7
_W = cv2.getGaussianKernel(_KSIZE, _SIGMA) @ cv2.getGaussianKernel(_KSIZE, _SIGMA).T
# Std of (white noise - its blur) relative to the noise's own std: 1 - 2 w0 + sum(w^2).
_RESIDUAL_GAIN = float(np.sqrt(1.0 - 2.0 * _W[_KSIZE // 2, _KSIZE // 2] + (_W**2).sum()))


def push_pull(plane: np.ndarray, known: np.ndarray) -> np.ndarray:
    """H x W float32: `plane` where `known` (H x W bool), smoothly interpolated elsewhere."""
    weight = known.astype(np.float32)
    levels = [(plane.astype(np.float32) * weight, weight)]
    while min(levels[-1][1].shape) > 2 and levels[-1][1].min() == 0:
        value, w = levels[-1]
        levels.append((cv2.pyrDown(value), cv2.pyrDown(w)))
    value, w = levels[-1]
    # Coarsest level: a weighted mean where there is any weight, the global mean elsewhere.
    total = float(w.sum())
    mean = float(value.sum()) / total if total > 0 else 0.0
    filled = np.where(w > 1e-6, value / np.maximum(w, 1e-6), mean).astype(np.float32)
    for value, w in reversed(levels[:-1]):
        up = cv2.pyrUp(filled, dstsize=(w.shape[1], w.shape[0]))
        # `value` is premultiplied by `w` <= 1: known pixels keep their own value, holes take
        # the coarser estimate, partly known pixels a blend of both.
        filled = value + (1.0 - np.minimum(w, 1.0)) * up
    return filled


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def texture_std(plane: np.ndarray, ring: np.ndarray) -> float:
    """Estimated std of the fine-scale noise of `plane` (H x W float32) on the `ring` pixels:
    the robust std of the residual (`_robust_std`), so that an edge in the ring does not count
    as texture and the noise's own tails are not cut off."""
    if ring.sum() < 8:
        return 0.0
    residual = plane - cv2.GaussianBlur(plane, (_KSIZE, _KSIZE), _SIGMA)
    return _robust_std(residual[ring]) / _RESIDUAL_GAIN


def infill(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new C x H x W float32 image: `region` replaced by interpolated tissue plus matched noise.

    Pixels outside `region` are unchanged. Each channel is filled and textured on its own.
    """
    out = image.astype(np.float32, copy=True)
    if not region.any():
        return out
    ring = _dilate(region, _GAP + _RING) & ~_dilate(region, _GAP)
    noise = rng.standard_normal((image.shape[0], int(region.sum()))).astype(np.float32)
    for c in range(image.shape[0]):
        plane = out[c]
        known = tissue(plane, region, ring)
        std = texture_std(plane, ring & (plane > AIR_LEVEL))
        filled = push_pull(plane, known)
        plane[region] = np.clip(filled[region] + std * noise[c], 0.0, 1.0)
    return out


def tissue(plane: np.ndarray, region: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """H x W bool: the pixels the fill interpolates from. Outside `region`, and within
    TISSUE_SPREAD robust standard deviations (1.4826 x MAD) of the median of the `ring`'s body
    pixels: a bone or an air pocket beside the region would otherwise be smeared into it,
    however much of the ring it takes, as long as the typical tissue holds the majority (all of
    outside `region` when the ring has too few body pixels to tell)."""
    values = plane[ring & (plane > AIR_LEVEL)]
    if values.size < 8:
        return ~region
    median = float(np.median(values))
    spread = TISSUE_SPREAD * _robust_std(values - median) + 1e-6
    return ~region & (np.abs(plane - median) <= spread)


def _robust_std(x: np.ndarray) -> float:
    """1.4826 x the median absolute deviation from 0: the std of Gaussian noise, unmoved by a
    minority of outliers (an organ edge or a bone in the ring)."""
    return 1.4826 * float(np.median(np.abs(x)))
