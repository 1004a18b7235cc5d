"""Background pasting: cut labeled structures out of one slice and composite them onto another.

Conventions: images are C x H x W float32 in [0, 1], labels H x W uint8 class ids, offsets are
(rows, columns) in pixels. A *unit* is what moves as one piece: a whole class (`class`) or one
8-connected component of a class (`component`).

Feathering: the structure keeps its own pixels (alpha = 1 on its mask, so the label marks exactly
the pixels that came from the structure); outside the mask alpha falls off as the mask blurred by
a Gaussian of `feather` pixels, truncated at radius `feather_radius(feather)`. That rim blends the
structure's immediate surroundings into the new background, so no hard seam is left for a model to
learn. Beyond the rim alpha is exactly 0 and the canvas is not touched at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)
_TRUNCATE = 3.0


@dataclass(frozen=True)
class Unit:
    """One piece to paste: class id `cls` and its bool `mask` cropped to its bounding box.

    The box covers source rows [rows[0], rows[1]) and columns [cols[0], cols[1]).
    """

    cls: int
    mask: np.ndarray
    rows: tuple[int, int]
    cols: tuple[int, int]


def split_units(label: np.ndarray, mode: str) -> list[Unit]:
    """The units of `label` (H x W uint8), by increasing class id then component order.

    `mode` is `class` (one unit per class present) or `component` (one per 8-connected component).
    """
    boxes = ndimage.find_objects(label)  # entry k - 1: bounding box of class k, None if absent
    units = []
    for cls, box in enumerate(boxes, start=1):
        if box is None:
            continue
        if mode == "class":
            rows, cols = box
            units.append(
                Unit(cls, label[box] == cls, (rows.start, rows.stop), (cols.start, cols.stop))
            )
            continue
        # Components are searched inside the class's box only: cheap for small organs.
        r, c = box[0].start, box[1].start
        comps, _ = ndimage.label(label[box] == cls, structure=_EIGHT)
        for k, (rows, cols) in enumerate(ndimage.find_objects(comps), start=1):
            units.append(
                Unit(
                    cls,
                    comps[rows, cols] == k,
                    (rows.start + r, rows.stop + r),
                    (cols.start + c, cols.stop + c),
                )
            )
    return units


def feather_radius(feather: float) -> int:
    """Width in pixels of the band around a pasted mask where alpha is > 0 (0 for hard edges)."""
    return int(_TRUNCATE * feather + 0.5) if feather > 0 else 0


def random_offset(
    unit: Unit, shape: tuple[int, int], rng: np.random.Generator, max_shift: float = 1.0
) -> tuple[int, int]:
    """A uniform (rows, cols) shift that keeps the unit's bounding box inside an H x W slice.

    Each component of the shift is at most `max_shift` times the slice side (0 = in place).
    """
    h, w = shape
    rh, rw = int(max_shift * h), int(max_shift * w)
    dr = int(rng.integers(max(-unit.rows[0], -rh), min(h - unit.rows[1], rh) + 1))
    dc = int(rng.integers(max(-unit.cols[0], -rw), min(w - unit.cols[1], rw) + 1))
    return dr, dc


def _window(lo: int, hi: int, shift: int, pad: int, size: int) -> tuple[int, int]:
    # Source span [a, b) around [lo, hi), padded, clipped so that it and its shifted copy both
    # fit in [0, size). The unit itself always fits, so only the feather band can be clipped.
    return max(lo - pad, 0, -shift), min(hi + pad, size, size - shift)


def paste_unit(
    canvas_image: np.ndarray,
    canvas_label: np.ndarray,
    source_image: np.ndarray,
    unit: Unit,
    offset: tuple[int, int],
    feather: float,
) -> None:
    """Composite `unit` of `source_image` onto the canvas, shifted by `offset`, in place.

    canvas_image and source_image are C x H x W float32, canvas_label H x W uint8. The label
    becomes `unit.cls` on the shifted mask (a later paste overwrites an earlier one); the image is
    `alpha * source + (1 - alpha) * canvas` where alpha > 0 and untouched elsewhere.
    """
    h, w = canvas_label.shape
    dr, dc = offset
    assert 0 <= unit.rows[0] + dr and unit.rows[1] + dr <= h, "unit leaves the slice"
    assert 0 <= unit.cols[0] + dc and unit.cols[1] + dc <= w, "unit leaves the slice"
    pad = feather_radius(feather)
    r0, r1 = _window(*unit.rows, dr, pad, h)
    c0, c1 = _window(*unit.cols, dc, pad, w)
    mask = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    mask[unit.rows[0] - r0 : unit.rows[1] - r0, unit.cols[0] - c0 : unit.cols[1] - c0] = unit.mask
    if pad:
        blurred = ndimage.gaussian_filter(
            mask.astype(np.float32), feather, mode="constant", cval=0.0, radius=pad
        )
        alpha = np.maximum(blurred, mask)
    else:
        alpha = mask.astype(np.float32)
    band = alpha > 0
    src = source_image[:, r0:r1, c0:c1]
    dst = canvas_image[:, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
    a = alpha[band]
    dst[:, band] = a * src[:, band] + (1.0 - a) * dst[:, band]
    canvas_label[r0 + dr : r1 + dr, c0 + dc : c1 + dc][mask] = unit.cls


def paste_structures(
    canvas_image: np.ndarray,
    canvas_label: np.ndarray,
    source_image: np.ndarray,
    source_label: np.ndarray,
    mode: str,
    feather: float,
    rng: np.random.Generator,
    max_shift: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste every unit of the source, in a random order, each shifted at random.

    Shifts are drawn by `random_offset` (at most `max_shift` of the slice side).
    Returns new arrays (the canvas arguments are not modified): image C x H x W float32, label
    H x W uint8. Later pastes win where units overlap.
    """
    image = canvas_image.astype(np.float32, copy=True)
    label = canvas_label.astype(np.uint8, copy=True)
    units = split_units(source_label, mode)
    for k in rng.permutation(len(units)):
        unit = units[k]
        offset = random_offset(unit, label.shape, rng, max_shift)
        paste_unit(image, label, source_image, unit, offset, feather)
    return image, label
