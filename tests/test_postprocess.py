"""`evaluate.postprocess`: each class's largest 6-connected 3D component, against a flood fill."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from scipy import ndimage

from evaluate.postprocess import largest_components, postprocess

FACES = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


def flood_fill_reference(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Independent reference: breadth-first search over face neighbours, components visited in
    C order, the first of the largest kept."""
    out = np.zeros_like(label)
    for c in range(1, num_classes + 1):
        seen = np.zeros(label.shape, bool)
        best: list[tuple[int, int, int]] = []
        for start in zip(*np.nonzero(label == c), strict=True):
            if seen[start]:
                continue
            seen[start] = True
            queue, part = deque([start]), []
            while queue:
                z, y, x = queue.popleft()
                part.append((z, y, x))
                for dz, dy, dx in FACES:
                    n = (z + dz, y + dy, x + dx)
                    if all(0 <= n[i] < label.shape[i] for i in range(3)):
                        if not seen[n] and label[n] == c:
                            seen[n] = True
                            queue.append(n)
            if len(part) > len(best):
                best = part
        for voxel in best:
            out[voxel] = c
    return out


def test_keeps_each_class_largest_component_by_hand() -> None:
    label = np.zeros((3, 6, 6), np.uint8)
    label[1, 0:3, 0:3] = 1  # 9 voxels: kept
    label[1, 5, 5] = 1  # a speck far away: removed
    label[0:3, 4, 0] = 2  # 3 voxels through the slices: kept
    label[2, 0, 5] = 2  # removed
    label[0, 3, 3] = 1  # touches the 9-voxel part only by an edge: a separate component
    want = np.zeros_like(label)
    want[1, 0:3, 0:3] = 1
    want[0:3, 4, 0] = 2
    got = largest_components(label, 2)
    assert np.array_equal(got, want)
    assert np.array_equal(label[1, 5, 5], 1)  # the input is not changed


def test_a_tie_keeps_the_first_component_and_other_ids_are_untouched() -> None:
    label = np.zeros((1, 4, 5), np.uint8)
    label[0, 0, 0:2] = 1
    label[0, 3, 3:5] = 1
    label[0, 2, 0] = 7  # an id above num_classes is not this function's business
    got = largest_components(label, 2)
    assert got[0, 0, 0:2].tolist() == [1, 1] and got[0, 3, 3:5].tolist() == [0, 0]
    assert got[0, 2, 0] == 7


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(5, 9, 8), (40, 2, 3)])
def test_matches_a_flood_fill_on_random_maps(seed: int, shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(seed)
    label = rng.choice(4, size=shape, p=[0.4, 0.2, 0.2, 0.2]).astype(np.uint8)
    if shape[0] == 40:  # thin slices: more components than voxels per slice, larger chunks
        assert ndimage.label(label == 1)[1] + 1 > shape[1] * shape[2]
    want = flood_fill_reference(label, 3)
    assert (want != label).any()  # the maps have specks to remove
    assert np.array_equal(largest_components(label, 3), want)


def test_none_is_the_identity_and_unknown_is_refused() -> None:
    label = np.random.default_rng(0).integers(0, 3, (2, 4, 4)).astype(np.uint8)
    assert postprocess(label, 2, "none") is label
    assert np.array_equal(postprocess(label, 2, "largest_component"), largest_components(label, 2))
    with pytest.raises(ValueError, match="post-processing"):
        postprocess(label, 2, "opening")
