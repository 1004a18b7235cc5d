"""Where a slice has body: the pixels that are not air, with enclosed air (lungs, bowel gas) in.

Synthesis uses it so that a pasted structure lands on tissue, never in the air around a patient;
`suggest` uses the same level to skip slices that are mostly air.
"""

from __future__ import annotations

import cv2
import numpy as np

# Intensity in [0, 1] above which a pixel counts as body: CT windowed to [-125, 275] HU puts air at
# 0 and fat near 0.06; MRI normalized by percentiles keeps the background at 0.
AIR_LEVEL = 0.02


def body_mask(image: np.ndarray) -> np.ndarray:
    """H x W bool: pixels of `image` (C x H x W float32 in [0, 1]) inside the body.

    A pixel is body when any channel exceeds AIR_LEVEL, or when it is air enclosed by body.
    """
    body = (image > AIR_LEVEL).any(axis=0)
    # Air reached from outside the slice, by a flood fill from a one-pixel frame of air.
    outside = np.pad(~body, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    return outside[1:-1, 1:-1] != 2


def midline(body: np.ndarray) -> float | None:
    """Column (pixels, may be fractional) halfway across the body's extent; None without body.

    `body` is H x W bool. Left and right structures lie on either side of it.
    """
    cols = np.flatnonzero(body.any(axis=0))
    if cols.size == 0:
        return None
    return (cols[0] + cols[-1]) / 2.0
