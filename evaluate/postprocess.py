"""Post-processing of a trained model's label map: each organ's largest connected component.

An abdominal organ is one connected structure in 3D, so any part of a class's mask that does not
touch its largest component is a false positive (a blob on a far slice, a speck in a neighbour):
nnU-Net removes them the same way when cross-validation says it helps. A few-exemplar run has no
validation labels to decide that per class, so it is a prior set in `evaluate.postprocess`
(`largest_component` for organs; `none` where a class may have several parts, such as a
multifocal tumour). Connectivity is by faces (6-neighbourhood): the one measured slightly better
than 26 on the default run (BENCHMARKS.md, *Post-processing*).

Applied to the label maps of trained models (fewsam prompt-free and prompted, the U-Net) in
`fewsam evaluate infer` and `fewsam predict`, before a refiner sees them. Not to zero-shot SAM,
whose masks come one per slice from the ground truth's prompts: it marks nothing outside them,
and the step removed correct parts there (BENCHMARKS.md). Not to the teachers of `fewsam synth
pseudo` either, which label a subset of slices (exemplar slices left out, `selftrain.stride`),
not whole volumes: the self-training study was measured without it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

POSTPROCESS = ("none", "largest_component")


def largest_components(
    label: np.ndarray, num_classes: int, structure: np.ndarray | None = None
) -> np.ndarray:
    """`label` (Z x H x W ids, 0 = background) with every voxel of class c outside c's largest
    connected component set to background; a class's first component wins a tie. Connectivity:
    `structure` as scipy.ndimage.label takes it, faces (6-connected) when None."""
    out = label.copy()
    # Each class is labelled inside its bounding box only: its components are the same there, in
    # the same (raster) order, and a small organ costs a small array instead of a whole volume.
    boxes = ndimage.find_objects(label, max_label=num_classes)
    for c, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mask = label[box] == c
        components, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        # Counted in chunks: np.bincount copies its input to int64, which for the whole box would
        # be twice the int32 component map. A chunk is a slice of the box, or n voxels when there
        # are more components than that (a speckled map), so the n + 1 counts each chunk returns
        # cost no more than reading it.
        sizes = np.zeros(n + 1, np.int64)
        flat = components.ravel()  # a view: ndimage.label returns a contiguous array
        step = max(components[0].size, n + 1)
        for start in range(0, flat.size, step):
            sizes += np.bincount(flat[start : start + step], minlength=n + 1)
        mask &= components != int(np.argmax(sizes[1:])) + 1
        out[box][mask] = 0
    return out


def postprocess(label: np.ndarray, num_classes: int, how: str) -> np.ndarray:
    """`label` after the post-processing `how` (one of POSTPROCESS)."""
    if how == "none":
        return label
    if how == "largest_component":
        return largest_components(label, num_classes)
    raise ValueError(f"unknown post-processing {how!r} (one of {', '.join(POSTPROCESS)})")
