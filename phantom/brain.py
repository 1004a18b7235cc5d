"""Brain MRI phantom with a glioma: four skull-stripped modalities and a BraTS segmentation.

Arrays are `Z x H x W` (slice 0 inferior, row 0 anterior, column 0 the patient's right). Labels are
BraTS's: 1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour. High-grade cases have an
enhancing rim around necrosis; low-grade cases a non-enhancing core, rarely with a small enhancing
focus. Intensities are arbitrary scanner units that differ between cases (as between scanners),
with a smooth bias field and noise; outside the brain every modality is 0, as in BraTS.
"""

from __future__ import annotations

import numpy as np

from phantom.shapes import radius_field, smooth_field

MODALITIES = ("flair", "t1", "t1ce", "t2")
FOV_MM = (155.0, 240.0, 240.0)  # (z, y, x) extent of a BraTS volume
# Mean intensity per tissue for (flair, t1, t1ce, t2).
TISSUE = {
    "csf": (80.0, 250.0, 260.0, 1000.0),
    "gm": (420.0, 430.0, 450.0, 520.0),
    "wm": (340.0, 620.0, 640.0, 360.0),
    "edema": (720.0, 380.0, 390.0, 780.0),
    "necrosis": (360.0, 220.0, 240.0, 900.0),
    "core": (650.0, 320.0, 340.0, 850.0),  # non-enhancing tumour core (low grade)
    "enhancing": (600.0, 420.0, 1000.0, 600.0),
}


def brain_case(
    rng: np.random.Generator, size: int, slices: int, high_grade: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One synthetic BraTS case.

    Returns ({modality: Z x H x W int16}, seg Z x H x W uint8 with ids 0/1/2/4), Z = `slices`,
    H = W = `size`; voxel size `voxel_size_mm(size, slices)`.
    """
    shape = (slices, size, size)
    tissue = np.zeros(shape, np.uint8)  # 0 outside, then index into `names`
    names = ["csf", "gm", "wm", "edema", "necrosis", "core", "enhancing"]
    seg = np.zeros(shape, np.uint8)
    center = (slices * rng.uniform(0.45, 0.55), size * rng.uniform(0.47, 0.53), size / 2)
    axes = (
        slices * rng.uniform(0.40, 0.46),
        size * rng.uniform(0.34, 0.38),
        size * rng.uniform(0.27, 0.31),
    )
    box, r = radius_field(shape, center, axes, rng, wobble=0.04)
    view = tissue[box]
    view[r < 1.0] = 1 + names.index("csf")  # sulcal CSF at the surface
    view[r < 0.95] = 1 + names.index("gm")
    folds = 0.05 * smooth_field(rng, r.shape, cells=9)  # a gyral grey/white boundary
    view[r < 0.80 + folds] = 1 + names.index("wm")
    brain = tissue > 0
    for side in (-1.0, 1.0):  # lateral ventricles beside the midline
        vc = (
            center[0] + axes[0] * 0.1,
            center[1] - axes[1] * 0.05,
            center[2] + side * axes[2] * 0.18,
        )
        va = (axes[0] * 0.25, axes[1] * 0.35, axes[2] * 0.09)
        found = radius_field(shape, vc, va, rng, wobble=0.15)
        if found is not None:
            tissue[found[0]][found[1] < 1.0] = 1 + names.index("csf")
    _tumour(rng, shape, center, axes, brain, tissue, seg, names, high_grade)
    scale = rng.uniform(0.6, 1.6, len(MODALITIES))  # scanner gain differs per case and sequence
    bias = 1.0 + 0.12 * smooth_field(rng, shape, cells=3)
    images = {}
    for m, name in enumerate(MODALITIES):
        lut = np.array([0.0] + [TISSUE[t][m] for t in names], np.float32) * scale[m]
        image = lut[tissue] * bias
        image += rng.normal(0.0, 0.035 * float(lut[1 + names.index("wm")]), shape)
        image[~brain] = 0.0
        images[name] = np.clip(np.rint(image), 1, 32767).astype(np.int16) * brain
    return images, seg


def _tumour(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    center: tuple[float, float, float],
    axes: tuple[float, float, float],
    brain: np.ndarray,
    tissue: np.ndarray,
    seg: np.ndarray,
    names: list[str],
    high_grade: bool,
) -> None:
    """Paint edema (2), then core: necrosis (1) in an enhancing rim (4), or a non-enhancing core."""
    side = rng.choice([-1.0, 1.0])
    tc = (
        center[0] + axes[0] * rng.uniform(-0.35, 0.35),
        center[1] + axes[1] * rng.uniform(-0.5, 0.5),
        center[2] + side * axes[2] * rng.uniform(0.3, 0.55),
    )
    radius = min(shape[1], shape[2]) * rng.uniform(0.07, 0.13)
    z_radius = radius * shape[0] / shape[1] * FOV_MM[1] / FOV_MM[0]
    core_axes = (z_radius, radius, radius)
    grow = rng.uniform(1.5, 2.2)
    edema = radius_field(shape, tc, tuple(a * grow for a in core_axes), rng, wobble=0.2)
    core = radius_field(shape, tc, core_axes, rng, wobble=0.15)
    assert edema is not None and core is not None  # the centre lies inside the brain
    box, r = edema
    inside = (r < 1.0) & brain[box]
    tissue[box][inside] = 1 + names.index("edema")
    seg[box][inside] = 2
    box, r = core
    inside = (r < 1.0) & brain[box]
    if high_grade:
        rim = rng.uniform(0.45, 0.7)
        parts = (("enhancing", 4, inside), ("necrosis", 1, inside & (r < rim)))
    else:
        focus = inside & (r < 0.3) if rng.random() < 0.3 else np.zeros_like(inside)
        parts = (("core", 1, inside), ("enhancing", 4, focus))
    for name, label, mask in parts:
        tissue[box][mask] = 1 + names.index(name)
        seg[box][mask] = label


def voxel_size_mm(size: int, slices: int) -> tuple[float, float, float]:
    """Voxel size (z, y, x) in mm of `brain_case(size, slices)`."""
    return (FOV_MM[0] / slices, FOV_MM[1] / size, FOV_MM[2] / size)
