"""Background pasting: cut labeled structures out of one slice and composite them onto a canvas.

Conventions: images are C x H x W float32 in [0, 1], labels H x W uint8 class ids, offsets are
(rows, columns) in pixels. A *unit* is what moves as one piece: a whole class (`class`) or one
8-connected component of a class (`component`).

Structures are moved, never copied (`move_structures`): every unit is cut out of the source and
its place is in-filled (`synth.infill`), then each unit is put down once, at a random shift that
passes `placement_ok`: the canvas has body under it, it keeps its side of the body's midline, and
it does not touch a unit already placed. So a sample holds each structure at most once, inside
the body, on its own side, and no structure is split by another one pasted over it.

Feathering: the structure keeps its own pixels (alpha = 1 on its mask, so the label marks exactly
the pixels that came from the structure); outside the mask alpha falls off as the mask blurred by
a Gaussian of `feather` pixels, truncated at radius `feather_radius(feather)`. That rim blends the
structure's immediate surroundings into the new background, so no hard seam is left for a model to
learn. Beyond the rim alpha is exactly 0 and the canvas is not touched at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from synth.body import body_mask, midline
from synth.infill import infill

_EIGHT = np.ones((3, 3), dtype=bool)
_KERNEL = _EIGHT.astype(np.uint8)
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


def random_offsets(
    unit: Unit, shape: tuple[int, int], rng: np.random.Generator, max_shift: float, n: int
) -> np.ndarray:
    """n x 2 int64 uniform (rows, cols) shifts that keep the unit's box inside an H x W slice.

    Each component of a shift is at most `max_shift` times the slice side (0 = in place).
    """
    h, w = shape
    rh, rw = int(max_shift * h), int(max_shift * w)
    lo = (max(-unit.rows[0], -rh), max(-unit.cols[0], -rw))
    hi = (min(h - unit.rows[1], rh) + 1, min(w - unit.cols[1], rw) + 1)
    return rng.integers(lo, hi, size=(n, 2))


def random_offset(
    unit: Unit, shape: tuple[int, int], rng: np.random.Generator, max_shift: float = 1.0
) -> tuple[int, int]:
    """One shift drawn as by `random_offsets`."""
    dr, dc = random_offsets(unit, shape, rng, max_shift, 1)[0]
    return int(dr), int(dc)


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
    rim_image: np.ndarray | None = None,
) -> None:
    """Composite `unit` of `source_image` onto the canvas, shifted by `offset`, in place.

    canvas_image and source_image are C x H x W float32, canvas_label H x W uint8. The label
    becomes `unit.cls` on the shifted mask (a later paste overwrites an earlier one); the image is
    `alpha * source + (1 - alpha) * canvas` where alpha > 0 and untouched elsewhere. With
    `rim_image` (C x H x W), the feathered rim outside the mask blends from it instead of from
    the source (the source with its structures in-filled, so no neighbouring organ travels along).
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
        size = (2 * pad + 1, 2 * pad + 1)
        blurred = cv2.GaussianBlur(mask.astype(np.float32), size, feather, cv2.BORDER_CONSTANT)
        alpha = np.maximum(blurred, mask)
    else:
        alpha = mask.astype(np.float32)
    band = alpha > 0
    src = source_image[:, r0:r1, c0:c1]
    if rim_image is not None:
        src = np.where(mask, src, rim_image[:, r0:r1, c0:c1])
    dst = canvas_image[:, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
    a = alpha[band]
    dst[:, band] = a * src[:, band] + (1.0 - a) * dst[:, band]
    canvas_label[r0 + dr : r1 + dr, c0 + dc : c1 + dc][mask] = unit.cls


# A placement is kept when at least this fraction of the piece lies on body: organs at the body
# wall (liver, spleen) may graze its edge after a geometric transform, but not hang in the air.
BODY_FRACTION = 0.97
# Pieces whose centre lies within this fraction of the body's width from its midline (aorta,
# spine-adjacent structures) may cross it; the others keep their side (left and right kidney).
MIDLINE_MARGIN = 0.08
# Random shifts tried per piece before every shift of the window is checked (`choose_offset`).
TRIES = 20


@dataclass(frozen=True)
class Canvas:
    """What a placement is checked against: `body` H x W bool, its `midline` column (None when
    there is no body) and the body's `width` in pixels."""

    body: np.ndarray
    midline: float | None
    width: float

    @classmethod
    def of(cls, image: np.ndarray) -> Canvas:
        """The canvas of `image` (C x H x W float32 in [0, 1])."""
        body = body_mask(image)
        cols = np.flatnonzero(body.any(axis=0))
        width = float(cols[-1] - cols[0] + 1) if cols.size else 0.0
        return cls(body, midline(body), width)


def centre_col(unit: Unit) -> float:
    """Column (pixels) of the centre of mass of `unit`'s mask."""
    return unit.cols[0] + float(np.nonzero(unit.mask)[1].mean())


class Placed:
    """The units put down so far on an H x W canvas.

    `label` (H x W uint8) is the canvas label they were pasted into. For classes with several
    units, `halo` keeps each class's placed pixels grown by one pixel (8-neighbourhood): two
    pieces of one class that touch would merge into one component, pieces of different classes
    may touch (a gallbladder in its notch of the liver).
    """

    def __init__(self, label: np.ndarray, units: list[Unit]) -> None:
        self.label = label
        counts = np.bincount([u.cls for u in units], minlength=1)
        self.halo = {int(c): np.zeros(label.shape, bool) for c in np.flatnonzero(counts > 1)}

    def free(self, unit: Unit, rows: slice, cols: slice) -> bool:
        """Whether `unit`'s mask at rows x cols overlaps no placed piece and touches none of its
        own class."""
        if self.label[rows, cols][unit.mask].any():
            return False
        halo = self.halo.get(unit.cls)
        return halo is None or not halo[rows, cols][unit.mask].any()

    def add(self, unit: Unit, offset: tuple[int, int]) -> None:
        """Record `unit` as placed at `offset` (its label is written by `paste_unit`)."""
        halo = self.halo.get(unit.cls)
        if halo is None:
            return
        h, w = halo.shape
        padded = np.zeros((unit.mask.shape[0] + 2, unit.mask.shape[1] + 2), np.uint8)
        padded[1:-1, 1:-1] = unit.mask
        grown = cv2.dilate(padded, _KERNEL) > 0
        r0, c0 = unit.rows[0] + offset[0] - 1, unit.cols[0] + offset[1] - 1
        top, left = max(-r0, 0), max(-c0, 0)
        bottom, right = min(grown.shape[0], h - r0), min(grown.shape[1], w - c0)
        halo[r0 + top : r0 + bottom, c0 + left : c0 + right] |= grown[top:bottom, left:right]


def placement_ok(
    unit: Unit,
    offset: tuple[int, int],
    canvas: Canvas,
    placed: Placed,
    centre: float | None = None,
) -> bool:
    """Whether `unit` shifted by `offset` lies on body, keeps its side and is free of `placed`.

    `centre` is `centre_col(unit)`, passed by callers that test many offsets.
    """
    dr, dc = offset
    rows = slice(unit.rows[0] + dr, unit.rows[1] + dr)
    cols = slice(unit.cols[0] + dc, unit.cols[1] + dc)
    if not placed.free(unit, rows, cols):
        return False
    if canvas.body[rows, cols][unit.mask].mean() < BODY_FRACTION:
        return False
    if canvas.midline is None:
        return True
    side = (centre_col(unit) if centre is None else centre) - canvas.midline
    if abs(side) <= MIDLINE_MARGIN * canvas.width:
        return True
    return (side + dc) * side > 0


def _counts_under(plane: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For each placement of `mask` (h x w bool) fully inside `plane` (H x W), the sum of
    `plane` under it: (H - h + 1) x (W - w + 1) float32, indexed by the placement's top-left."""
    return cv2.matchTemplate(plane.astype(np.float32), mask.astype(np.float32), cv2.TM_CCORR)


def valid_offsets(
    unit: Unit, canvas: Canvas, placed: Placed, max_shift: float, centre: float
) -> np.ndarray:
    """K x 2 int64: every shift within `max_shift` of the side that passes `placement_ok`.

    Computed at once for the whole window by correlating the mask with the blocked pixels and
    with the body, for the pieces that random tries could not place (a crowded slice).
    """
    h, w = canvas.body.shape
    rh, rw = int(max_shift * h), int(max_shift * w)
    top, left = max(unit.rows[0] - rh, 0), max(unit.cols[0] - rw, 0)
    bottom, right = min(unit.rows[1] + rh, h), min(unit.cols[1] + rw, w)
    blocked = placed.label[top:bottom, left:right] > 0
    halo = placed.halo.get(unit.cls)
    if halo is not None:
        blocked = blocked | halo[top:bottom, left:right]
    area = float(unit.mask.sum())
    conflict = _counts_under(blocked, unit.mask)
    on_body = _counts_under(canvas.body[top:bottom, left:right], unit.mask)
    ok = (conflict < 0.5) & (on_body >= BODY_FRACTION * area - 1e-3)
    rows, cols = np.nonzero(ok)
    offsets = np.stack([rows + top - unit.rows[0], cols + left - unit.cols[0]], axis=1)
    if canvas.midline is not None:
        side = centre - canvas.midline
        if abs(side) > MIDLINE_MARGIN * canvas.width:
            offsets = offsets[(side + offsets[:, 1]) * side > 0]
    return offsets.astype(np.int64)


def choose_offset(
    unit: Unit,
    canvas: Canvas,
    placed: Placed,
    rng: np.random.Generator,
    max_shift: float,
) -> tuple[int, int] | None:
    """A random shift (at most `max_shift` of the side) that passes `placement_ok`, or None when
    none does. TRIES random shifts first (cheap, and enough on most slices), then one drawn
    uniformly from `valid_offsets`."""
    centre = centre_col(unit)
    for dr, dc in random_offsets(unit, canvas.body.shape, rng, max_shift, TRIES).tolist():
        if placement_ok(unit, (dr, dc), canvas, placed, centre):
            return dr, dc
    offsets = valid_offsets(unit, canvas, placed, max_shift, centre)
    if len(offsets) == 0:
        return None
    dr, dc = offsets[int(rng.integers(len(offsets)))].tolist()
    return dr, dc


@dataclass(frozen=True)
class Moved:
    """Result of `move_structures`: the new `image` (C x H x W float32) and `label` (H x W
    uint8); `canvas` (C x H x W), the background before anything was put down; `filled` (H x W
    bool), the pixels in-filled where structures were cut out; `dropped`, units left out because
    no placement passed."""

    image: np.ndarray
    label: np.ndarray
    canvas: np.ndarray
    filled: np.ndarray
    dropped: int


def move_structures(
    source_image: np.ndarray,
    source_label: np.ndarray,
    background: np.ndarray | None,
    mode: str,
    feather: float,
    rng: np.random.Generator,
    max_shift: float = 1.0,
) -> Moved:
    """Cut every unit of the source out and put each down once on a canvas.

    The canvas is `background` (C x H x W, a pool slice; its own structures are unlabeled and
    stay as they are) or, when None, the source itself with its structures in-filled. Units are
    placed largest first (the hardest to fit), each at a shift drawn by `choose_offset`; a unit
    for which no shift passes is left out (counted in `dropped`). Feathered
    rims blend from the in-filled source. The arguments are not modified.
    """
    foreground = source_label > 0
    filled_source = infill(source_image, foreground, rng)
    base = filled_source if background is None else background.astype(np.float32, copy=True)
    canvas = Canvas.of(base)
    image = base.copy()
    label = np.zeros_like(source_label, dtype=np.uint8)
    units = sorted(split_units(source_label, mode), key=lambda u: -int(u.mask.sum()))
    placed = Placed(label, units)
    dropped = 0
    for unit in units:
        offset = choose_offset(unit, canvas, placed, rng, max_shift)
        if offset is None:
            dropped += 1
            continue
        paste_unit(image, label, source_image, unit, offset, feather, filled_source)
        placed.add(unit, offset)
    filled = foreground if background is None else np.zeros_like(foreground)
    return Moved(image, label, base, filled, dropped)
