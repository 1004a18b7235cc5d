"""Background pasting: units, placement, feathering band, compositing order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synth.body import AIR_LEVEL
from synth.paste import (
    BODY_FRACTION,
    MIDLINE_MARGIN,
    Canvas,
    Placed,
    Unit,
    centre_col,
    choose_offset,
    feather_radius,
    move_structures,
    paste_unit,
    placement_ok,
    random_offset,
    split_units,
    valid_offsets,
)


def two_class_label() -> np.ndarray:
    """64 x 64: class 2 in two separate squares, class 1 in one 8-connected diagonal pair."""
    label = np.zeros((64, 64), np.uint8)
    label[4:10, 5:12] = 2
    label[30:40, 40:44] = 2
    label[50, 50] = label[51, 51] = 1  # touch only at a corner: one 8-connected component
    return label


def test_units_per_class_and_per_component():
    label = two_class_label()
    by_class = split_units(label, "class")
    assert [(u.cls, u.rows, u.cols) for u in by_class] == [
        (1, (50, 52), (50, 52)),
        (2, (4, 40), (5, 44)),
    ]
    by_comp = split_units(label, "component")
    assert [(u.cls, u.rows, u.cols) for u in by_comp] == [
        (1, (50, 52), (50, 52)),
        (2, (4, 10), (5, 12)),
        (2, (30, 40), (40, 44)),
    ]
    for u in by_comp:  # here each component's box holds only that component
        box = label[u.rows[0] : u.rows[1], u.cols[0] : u.cols[1]]
        np.testing.assert_array_equal(u.mask, box == u.cls)
    assert sum(u.mask.sum() for u in by_comp) == (label > 0).sum()


@pytest.mark.parametrize("feather", [0.0, 1.5])
def test_paste_puts_the_class_where_the_label_says_and_leaves_the_rest_untouched(feather):
    rng = np.random.default_rng(0)
    canvas = rng.uniform(0, 1, (2, 64, 64)).astype(np.float32)
    canvas_label = np.zeros((64, 64), np.uint8)
    canvas_label[0:5, 0:5] = 1  # an earlier structure far from the paste
    source = rng.uniform(0, 1, (2, 64, 64)).astype(np.float32)
    source_label = np.zeros((64, 64), np.uint8)
    source_label[10:20, 5:15] = 3
    (unit,) = split_units(source_label, "class")
    image, label = canvas.copy(), canvas_label.copy()
    paste_unit(image, label, source, unit, offset=(30, 40), feather=feather)

    # By hand: rows 10:20 + 30 = 40:50, columns 5:15 + 40 = 45:55.
    target = np.zeros((64, 64), bool)
    target[40:50, 45:55] = True
    expected_label = canvas_label.copy()
    expected_label[target] = 3
    np.testing.assert_array_equal(label, expected_label)
    np.testing.assert_array_equal(image[:, target], source[:, 10:20, 5:15].reshape(2, -1))
    # Outside the square grown by the feather radius, the canvas is bit-identical.
    radius = feather_radius(feather)
    band = ndimage.binary_dilation(target, np.ones((3, 3)), iterations=radius) if radius else target
    np.testing.assert_array_equal(image[:, ~band], canvas[:, ~band])
    if radius:  # inside the band, a blend of the two (strictly between where they differ)
        rim = band & ~target
        shifted = np.zeros_like(source)  # the source as moved by (30, 40)
        shifted[:, 30:, 40:] = source[:, :34, :24]
        lo, hi = np.minimum(canvas, shifted), np.maximum(canvas, shifted)
        assert np.all(image[:, rim] >= lo[:, rim] - 1e-6) and np.all(
            image[:, rim] <= hi[:, rim] + 1e-6
        )
        assert not np.array_equal(image[:, rim], canvas[:, rim])


def test_later_pastes_win():
    image = np.zeros((1, 32, 32), np.float32)
    label = np.zeros((32, 32), np.uint8)
    source = np.ones((1, 32, 32), np.float32)
    a = Unit(1, np.ones((8, 8), bool), (0, 8), (0, 8))
    b = Unit(2, np.ones((8, 8), bool), (0, 8), (0, 8))
    paste_unit(image, label, source, a, (10, 10), 0.0)
    paste_unit(image, label, source, b, (14, 14), 0.0)
    assert (label[10:14, 10:18] == 1).all() and (label[14:22, 14:22] == 2).all()
    assert (label == 1).sum() == 64 - 16 and (label == 2).sum() == 64


def test_random_offsets_keep_the_unit_inside():
    rng = np.random.default_rng(3)
    unit = Unit(1, np.ones((10, 50), bool), (5, 15), (2, 52))
    offsets = np.array([random_offset(unit, (40, 60), rng) for _ in range(500)])
    rows, cols = offsets[:, 0], offsets[:, 1]
    assert rows.min() == -5 and rows.max() == 40 - 15  # every row position is reachable
    assert cols.min() == -2 and cols.max() == 60 - 52


def test_random_offsets_respect_the_largest_shift():
    rng = np.random.default_rng(5)
    unit = Unit(1, np.ones((4, 4), bool), (2, 6), (50, 54))
    offsets = np.array([random_offset(unit, (100, 60), rng, max_shift=0.1) for _ in range(500)])
    # By hand: rows within +-10 (0.1 * 100); columns within -6 (0.1 * 60) .. +6 = 60 - 54.
    assert offsets[:, 0].min() == -2 and offsets[:, 0].max() == 10  # the top edge limits -2
    assert offsets[:, 1].min() == -6 and offsets[:, 1].max() == 6
    assert random_offset(unit, (100, 60), rng, max_shift=0.0) == (0, 0)


# ---- moving structures: cut out, in-filled, each put down once -------------------------------

SIZE = 96
ELLIPSE = (48, 48, 40, 44)  # body: centre row, centre column, half-height, half-width


def ellipse(cy: float, cx: float, ry: float, rx: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def body_slice(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1 x 96 x 96 image of a noisy body ellipse (columns 5..91, midline 48) and its label.

    Class 1 (a liver) left of the midline; class 2 in two components, one on each side (the
    kidneys); class 3 (the aorta) on the midline; class 4 (a spleen) right of the midline.
    """
    rng = np.random.default_rng(seed)
    image = np.where(ellipse(*ELLIPSE), 0.35 + rng.normal(0, 0.02, (SIZE, SIZE)), 0.0)
    label = np.zeros((SIZE, SIZE), np.uint8)
    shapes = [
        (1, ellipse(40, 26, 11, 8), 0.8),
        (2, ellipse(62, 30, 5, 4), 0.6),
        (2, ellipse(62, 66, 6, 4), 0.6),
        (3, ellipse(58, 48, 3, 3), 0.9),
        (4, ellipse(36, 70, 8, 6), 0.7),
    ]
    for cls, mask, value in shapes:
        label[mask] = cls
        image[mask] = value + rng.normal(0, 0.02, int(mask.sum()))
    return np.clip(image, 0, 1)[None].astype(np.float32), label


def pieces(label: np.ndarray) -> list[tuple[int, tuple[slice, slice], np.ndarray]]:
    """(class, box, cropped mask) of every 8-connected component of every class of `label`."""
    out = []
    for cls in np.unique(label[label > 0]):
        comps, _ = ndimage.label(label == cls, structure=np.ones((3, 3)))
        for k, box in enumerate(ndimage.find_objects(comps), start=1):
            out.append((int(cls), box, comps[box] == k))
    return out


def matched(source_label: np.ndarray, label: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """For each component of `label`: the source pixels (rows, columns) of the source component
    of that class with exactly the same shape, and the row and column shift between the two.
    Each source component is used once at most."""
    free = pieces(source_label)
    out = []
    for cls, box, mask in pieces(label):
        same = [
            i
            for i, (c, _, m) in enumerate(free)
            if c == cls and m.shape == mask.shape and np.array_equal(m, mask)
        ]
        assert same, f"a piece of class {cls} that is no source component moved"
        _, src_box, src_mask = free.pop(same[0])
        rows, cols = np.nonzero(src_mask)
        pixels = np.stack([rows + src_box[0].start, cols + src_box[1].start])
        out.append((pixels, box[0].start - src_box[0].start, box[1].start - src_box[1].start))
    return out


def reference_body(image: np.ndarray) -> np.ndarray:
    """Body as defined in synth.body, computed independently: non-air with enclosed air in."""
    return ndimage.binary_fill_holes((image > AIR_LEVEL).any(axis=0))


def component_sizes(label: np.ndarray, cls: int) -> list[int]:
    comps, n = ndimage.label(label == cls, structure=np.ones((3, 3)))
    return sorted(np.bincount(comps.ravel(), minlength=n + 1)[1:].tolist())


@pytest.mark.parametrize("max_shift", [0.15, 1.0])
def test_every_component_is_moved_once_with_its_own_pixels(max_shift):
    source, source_label = body_slice()
    pad = feather_radius(1.5)
    for seed in range(40):
        moved = move_structures(
            source, source_label, None, "component", 1.5, np.random.default_rng(seed), max_shift
        )
        assert moved.dropped == 0  # there is room for everything on this body
        for cls in range(1, 5):  # same components, same sizes: nothing copied, nothing lost
            assert component_sizes(moved.label, cls) == component_sizes(source_label, cls)
        assert (moved.label > 0).sum() == (source_label > 0).sum()
        # Each piece is a source component shifted whole, and carries that component's pixels
        # exactly, except within the feather band of a piece put down after it (pieces go
        # down largest first; here every piece has its own size).
        sizes = np.zeros(source_label.shape, np.int64)  # each output pixel: its piece's size
        for (rows, cols), dr, dc in matched(source_label, moved.label):
            sizes[rows + dr, cols + dc] = rows.size
        for (rows, cols), dr, dc in matched(source_label, moved.label):
            later = (sizes > 0) & (sizes < rows.size)
            near = ndimage.binary_dilation(later, np.ones((3, 3)), iterations=pad)
            keep = ~near[rows + dr, cols + dc]
            assert keep.all() or rows.size > sizes[sizes > 0].min()  # the last one: all exact
            np.testing.assert_array_equal(
                moved.image[:, rows + dr, cols + dc][:, keep], source[:, rows, cols][:, keep]
            )


def test_moving_by_class_moves_both_components_of_a_class_together():
    source, source_label = body_slice()
    for seed in range(20):
        moved = move_structures(
            source, source_label, None, "class", 1.5, np.random.default_rng(seed), 0.15
        )
        assert moved.dropped == 0
        src_rows, src_cols = np.nonzero(source_label == 2)
        rows, cols = np.nonzero(moved.label == 2)
        dr, dc = rows.min() - src_rows.min(), cols.min() - src_cols.min()
        np.testing.assert_array_equal(rows, src_rows + dr)  # one rigid shift for both kidneys
        np.testing.assert_array_equal(cols, src_cols + dc)
        for cls in range(1, 5):
            assert component_sizes(moved.label, cls) == component_sizes(source_label, cls)


@pytest.mark.parametrize("background", ["self", "pool"])
def test_every_piece_lies_on_the_canvas_body(background):
    source, source_label = body_slice()
    pool = body_slice(seed=1)[0] if background == "pool" else None
    for seed in range(30):
        rng = np.random.default_rng(seed)
        moved = move_structures(source, source_label, pool, "component", 1.5, rng, 1.0)
        body = reference_body(moved.canvas)
        for _, box, mask in pieces(moved.label):
            assert body[box][mask].mean() >= BODY_FRACTION


def test_structures_away_from_the_midline_keep_their_side():
    source, source_label = body_slice()
    body_cols = np.flatnonzero(reference_body(source).any(axis=0))
    centre = (body_cols[0] + body_cols[-1]) / 2
    width = body_cols[-1] - body_cols[0] + 1
    assert centre == 48 and width == 87  # the ellipse, by hand: columns 5..91

    def side(label: np.ndarray, cls: int) -> list[int]:
        """Signs of the centres of the pieces of class `cls` relative to the midline."""
        out = []
        for c, box, mask in pieces(label):
            if c == cls:
                out.append(int(np.sign(box[1].start + np.nonzero(mask)[1].mean() - centre)))
        return sorted(out)

    for _, box, mask in pieces(source_label):  # in the source, all but the aorta are far out
        offset = box[1].start + np.nonzero(mask)[1].mean() - centre
        assert (abs(offset) > MIDLINE_MARGIN * width) == (source_label[box][mask][0] != 3)
    assert side(source_label, 1) == [-1] and side(source_label, 4) == [1]
    crossed = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        moved = move_structures(source, source_label, None, "component", 1.5, rng, 1.0)
        crossed += side(moved.label, 3) != side(source_label, 3)
        assert side(moved.label, 1) == [-1]
        assert side(moved.label, 2) == [-1, 1]  # one kidney on each side
        assert side(moved.label, 4) == [1]
    assert crossed > 0  # the aorta, on the midline, may go to either side


def test_self_pasting_fills_where_the_structures_were():
    source, source_label = body_slice()
    pad = feather_radius(1.5)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        moved = move_structures(source, source_label, None, "component", 1.5, rng, 0.15)
        np.testing.assert_array_equal(moved.filled, source_label > 0)
        # The canvas is the source with only the structures replaced ...
        outside = source_label == 0
        np.testing.assert_array_equal(moved.canvas[:, outside], source[:, outside])
        assert not np.array_equal(moved.canvas[:, ~outside], source[:, ~outside])
        # ... and the sample is the canvas except where pieces and their rims went down.
        band = ndimage.binary_dilation(moved.label > 0, np.ones((3, 3)), iterations=pad)
        np.testing.assert_array_equal(moved.image[:, ~band], moved.canvas[:, ~band])


def test_pool_pasting_leaves_the_pool_slice_as_it_was_outside_the_pieces():
    source, source_label = body_slice()
    pool = body_slice(seed=1)[0]  # its own structures stay there, unlabeled
    pad = feather_radius(1.5)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        moved = move_structures(source, source_label, pool, "component", 1.5, rng, 0.15)
        assert moved.filled.shape == source_label.shape and not moved.filled.any()
        np.testing.assert_array_equal(moved.canvas, pool)
        band = ndimage.binary_dilation(moved.label > 0, np.ones((3, 3)), iterations=pad)
        assert band.any() and (~band).any()
        np.testing.assert_array_equal(moved.image[:, ~band], pool[:, ~band])


def test_move_structures_does_not_modify_its_arguments():
    source, source_label = body_slice()
    pool = body_slice(seed=1)[0]
    copies = source.copy(), source_label.copy(), pool.copy()
    for background in (None, pool):
        rng = np.random.default_rng(3)
        moved = move_structures(source, source_label, background, "component", 1.5, rng, 0.15)
        assert moved.image is not source and moved.label is not source_label
        for arg, before in zip((source, source_label, pool), copies, strict=True):
            np.testing.assert_array_equal(arg, before)


def test_a_piece_that_fits_nowhere_is_dropped():
    # Pool body: a 10 x 10 square. A 4 x 4 piece fits on it; a 20 x 20 piece never can.
    pool = np.zeros((1, 48, 48), np.float32)
    pool[0, 20:30, 20:30] = 0.4
    source = np.full((1, 48, 48), 0.4, np.float32)
    source_label = np.zeros((48, 48), np.uint8)
    source_label[5:9, 5:9] = 1
    source_label[24:44, 24:44] = 2
    for seed in range(5):
        rng = np.random.default_rng(seed)
        moved = move_structures(source, source_label, pool, "component", 0.0, rng, 1.0)
        assert moved.dropped == 1
        assert not (moved.label == 2).any()
        rows, cols = np.nonzero(moved.label == 1)
        assert rows.size == 16 and (moved.label > 0).sum() == 16
        # on the body, and left of its midline (24.5) as it was in the source
        assert rows.min() >= 20 and rows.max() < 30 and cols.min() >= 20
        assert cols.mean() < 24.5


# ---- placement rules, by hand and against a brute force ---------------------------------------


def square(cls: int, top: int, left: int, side: int = 4) -> Unit:
    return Unit(cls, np.ones((side, side), bool), (top, top + side), (left, left + side))


def test_placement_ok_worked_out_by_hand():
    canvas = Canvas(np.ones((32, 32), bool), None, 0.0)  # all body, no midline
    label = np.zeros((32, 32), np.uint8)
    a, b, c = square(1, 0, 0), square(1, 0, 0), square(2, 0, 0)
    placed = Placed(label, [a, b, c])  # class 1 has two pieces: they must not touch
    image = np.zeros((1, 32, 32), np.float32)
    paste_unit(image, label, np.ones_like(image), a, (10, 10), 0.0)  # rows/cols 10:14
    placed.add(a, (10, 10))
    assert placement_ok(b, (20, 20), canvas, placed)  # well apart
    assert not placement_ok(b, (12, 12), canvas, placed)  # overlaps
    assert not placement_ok(c, (12, 12), canvas, placed)  # overlaps, another class
    assert not placement_ok(b, (10, 14), canvas, placed)  # side by side: would merge
    assert not placement_ok(b, (14, 14), canvas, placed)  # corner to corner: 8-connected
    assert placement_ok(b, (10, 15), canvas, placed)  # one column of gap
    assert placement_ok(c, (10, 14), canvas, placed)  # another class may touch ...
    assert placement_ok(c, (14, 14), canvas, placed)  # ... also at a corner


def test_placement_ok_needs_body_under_the_piece_and_keeps_the_side():
    body = np.zeros((40, 40), bool)
    body[:, 0:30] = True  # columns 0..29: midline 14.5, width 30, margin 0.08 * 30 = 2.4
    canvas = Canvas(body, 14.5, 30.0)
    placed = Placed(np.zeros((40, 40), np.uint8), [])
    left = square(1, 0, 0, side=10)  # centre column 4.5: left of the midline
    assert placement_ok(left, (5, 0), canvas, placed)
    assert placement_ok(left, (5, 9), canvas, placed)  # centre 13.5 < 14.5
    assert not placement_ok(left, (5, 10), canvas, placed)  # centre 14.5: not left any more
    mid = square(1, 0, 10, side=10)  # centre column 14.5: on the midline, may go either way
    assert placement_ok(mid, (0, -10), canvas, placed) and placement_ok(
        mid, (0, 10), canvas, placed
    )
    # Columns 20..29 + 1: 10 of 100 pixels off the body, 0.9 < BODY_FRACTION.
    assert not placement_ok(mid, (0, 11), canvas, placed)
    big = Unit(1, np.ones((10, 100), bool)[:, :100], (0, 10), (0, 100))
    assert big.mask.shape == (10, 100)
    wide = np.zeros((40, 120), bool)
    wide[:, 0:97] = True  # 97 of 100 columns: exactly BODY_FRACTION on body
    ok = Canvas(wide, None, 97.0)
    assert placement_ok(big, (0, 0), ok, Placed(np.zeros((40, 120), np.uint8), []))
    wide[:, 96] = False  # 96 of 100
    assert not placement_ok(big, (0, 0), ok, Placed(np.zeros((40, 120), np.uint8), []))


def brute_force_offsets(
    unit: Unit, canvas: Canvas, placed: Placed, max_shift: float
) -> set[tuple[int, int]]:
    h, w = canvas.body.shape
    rh, rw = int(max_shift * h), int(max_shift * w)
    rows = range(max(-unit.rows[0], -rh), min(h - unit.rows[1], rh) + 1)
    cols = range(max(-unit.cols[0], -rw), min(w - unit.cols[1], rw) + 1)
    return {(r, c) for r in rows for c in cols if placement_ok(unit, (r, c), canvas, placed)}


@pytest.mark.parametrize("everywhere", [False, True])
@pytest.mark.parametrize("max_shift", [0.05, 0.2, 1.0])
def test_valid_offsets_are_every_offset_that_passes_placement_ok(max_shift, everywhere):
    source, source_label = body_slice()
    if everywhere:  # body up to the slice's edges: the window's borders count
        source = np.maximum(source, 0.3)
    canvas = Canvas.of(source)
    assert canvas.body.all() == everywhere
    rng = np.random.default_rng(11)
    units = sorted(split_units(source_label, "component"), key=lambda u: -int(u.mask.sum()))
    label = np.zeros_like(source_label)
    placed = Placed(label, units)
    image = source.copy()
    # Put the liver and one kidney down, then check the others against a crowded canvas.
    for unit in units[:1] + [u for u in units if u.cls == 2][:1]:
        offset = (int(rng.integers(-3, 4)), int(rng.integers(-3, 4)))
        assert placement_ok(unit, offset, canvas, placed)
        paste_unit(image, label, source, unit, offset, 0.0)
        placed.add(unit, offset)
    for unit in units:
        found = valid_offsets(unit, canvas, placed, max_shift, centre_col(unit))
        assert found.dtype == np.int64 and found.shape[1:] == (2,)
        as_set = {(int(r), int(c)) for r, c in found}
        assert len(as_set) == len(found)  # no offset twice
        assert as_set == brute_force_offsets(unit, canvas, placed, max_shift)


def test_choose_offset_returns_a_passing_shift_or_none():
    source, source_label = body_slice()
    canvas = Canvas.of(source)
    (unit,) = [u for u in split_units(source_label, "component") if u.cls == 1]
    for seed in range(20):
        placed = Placed(np.zeros_like(source_label), [unit])
        offset = choose_offset(unit, canvas, placed, np.random.default_rng(seed), 0.2)
        assert offset is not None and placement_ok(unit, offset, canvas, placed)
        assert max(abs(offset[0]), abs(offset[1])) <= int(0.2 * SIZE)
    nowhere = Canvas(np.zeros((SIZE, SIZE), bool), None, 0.0)  # no body at all
    placed = Placed(np.zeros_like(source_label), [unit])
    assert choose_offset(unit, nowhere, placed, np.random.default_rng(0), 1.0) is None


def test_paste_unit_takes_the_rim_from_rim_image():
    rng = np.random.default_rng(6)
    source = np.ones((1, 40, 40), np.float32)
    rim = rng.uniform(0.1, 0.9, (1, 40, 40)).astype(np.float32)
    unit = square(2, 10, 12, side=6)
    offset = (7, -5)
    # With a source of ones on a zero canvas, the plain paste is alpha itself.
    alpha = np.zeros_like(source)
    paste_unit(alpha, np.zeros((40, 40), np.uint8), source, unit, offset, 1.5)
    image, label = np.zeros_like(source), np.zeros((40, 40), np.uint8)
    paste_unit(image, label, source, unit, offset, 1.5, rim_image=rim)
    target = np.zeros((40, 40), bool)
    target[17:23, 7:13] = True  # rows 10:16 + 7, columns 12:18 - 5
    np.testing.assert_array_equal(label == 2, target)
    assert (image[0, target] == 1.0).all()  # the structure itself still comes from the source
    # The rim is alpha times rim_image, read where the source pixel was (before the shift).
    shifted_rim = np.zeros_like(rim)
    shifted_rim[:, 7:, :-5] = rim[:, :-7, 5:]
    ring = (alpha[0] > 0) & ~target
    assert ring.sum() > 0
    np.testing.assert_allclose(image[0, ring], alpha[0, ring] * shifted_rim[0, ring], rtol=1e-6)
    assert (image[0, alpha[0] == 0] == 0).all()
