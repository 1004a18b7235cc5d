"""Abdominal CT phantom: HU volume and BTCV-labelled organs for one synthetic case.

Arrays are `Z x H x W` in display orientation: slice 0 is the most inferior, row 0 anterior and
column 0 the patient's right (radiological view), as in `core.volume`. Positions are given
relative to the body ellipse (x: -1 patient right .. +1 left, y: -1 anterior .. +1 posterior,
z: 0 inferior .. 1 superior end of the scan) and sizes in mm, so anatomy keeps its proportions at
any grid size. Label ids are BTCV's (1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder,
5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 IVC, 10 portal vein, 11 pancreas, 12/13 adrenals).
Intensities overlap as in contrast CT (pancreas, bowel and muscle; kidney cortex and IVC), so the
organs must be told apart by position and shape as well as by HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from phantom.shapes import Box, radius_field, textured

FOV_MM = 380.0  # in-plane field of view of an abdominal CT
SCAN_MM = 200.0  # craniocaudal extent: liver dome to below the kidneys


@dataclass(frozen=True)
class Organ:
    """A structure: centre (x, y body-relative; z fraction), semi-axes mm, HU, BTCV id (0: none)."""

    name: str
    label: int
    center: tuple[float, float, float]
    axes_mm: tuple[float, float, float]  # (x, y, z)
    hu: float
    wobble: float = 0.12


# Painted in this order (later ones win where shapes touch).
ORGANS = (
    Organ("liver", 6, (-0.45, -0.05, 0.80), (95, 90, 75), 60, 0.10),
    Organ("gallbladder", 4, (-0.33, -0.22, 0.56), (17, 22, 28), 10),
    Organ("stomach", 7, (0.33, -0.22, 0.80), (60, 45, 48), 15),
    Organ("spleen", 1, (0.68, 0.38, 0.76), (35, 55, 50), 50),
    Organ("right kidney", 2, (-0.42, 0.46, 0.38), (27, 30, 55), 150, 0.08),
    Organ("left kidney", 3, (0.42, 0.46, 0.44), (27, 30, 55), 150, 0.08),
    Organ("right adrenal", 12, (-0.30, 0.42, 0.70), (8, 12, 15), 30),
    Organ("left adrenal", 13, (0.27, 0.40, 0.72), (8, 12, 15), 30),
    Organ("pancreas head", 11, (-0.12, 0.05, 0.58), (28, 16, 22), 40),
    Organ("pancreas body", 11, (0.13, 0.10, 0.62), (32, 12, 18), 40),
    Organ("pancreas tail", 11, (0.40, 0.18, 0.66), (30, 12, 16), 40),
    Organ("portal vein", 10, (-0.18, 0.04, 0.66), (9, 9, 22), 160, 0.05),
    Organ("IVC", 9, (-0.10, 0.24, 0.45), (11, 9, 250), 150, 0.05),
    Organ("aorta", 8, (0.05, 0.26, 0.62), (10, 10, 100), 200, 0.04),  # down to the bifurcation
    Organ("right iliac artery", 0, (-0.06, 0.24, 0.0), (7, 7, 22), 200, 0.05),  # unlabelled
    Organ("left iliac artery", 0, (0.14, 0.24, 0.0), (7, 7, 22), 200, 0.05),
    Organ("esophagus", 5, (0.05, 0.16, 0.95), (7, 7, 25), 40, 0.05),
)


class _Canvas:
    """The HU and label volumes being painted, with the case's body geometry."""

    def __init__(self, rng: np.random.Generator, size: int, slices: int) -> None:
        self.rng = rng
        self.shape = (slices, size, size)
        self.mm = (SCAN_MM / slices, FOV_MM / size, FOV_MM / size)  # (z, y, x) voxel size
        self.hu = np.full(self.shape, -1000.0, np.float32)
        self.label = np.zeros(self.shape, np.uint8)
        s = rng.uniform(0.88, 1.08)  # body size of this patient
        self.half_mm = (165.0 * s * rng.uniform(0.95, 1.05), 120.0 * s * rng.uniform(0.95, 1.05))
        self.scale = s
        self.center_mm = (rng.uniform(-12, 12), rng.uniform(5, 25))  # (x, y) off the FOV centre
        self.z_shift = rng.uniform(-0.06, 0.06)  # where the scan starts relative to the anatomy

    def voxel(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """Body-relative (x, y, z) -> voxel (z, row, column)."""
        cz = (z + self.z_shift) * self.shape[0]
        cy = self.shape[1] / 2 + (self.center_mm[1] + y * self.half_mm[1]) / self.mm[1]
        cx = self.shape[2] / 2 + (self.center_mm[0] + x * self.half_mm[0]) / self.mm[2]
        return cz, cy, cx

    def axes(self, x_mm: float, y_mm: float, z_mm: float) -> tuple[float, float, float]:
        return (z_mm / self.mm[0], y_mm * self.scale / self.mm[1], x_mm * self.scale / self.mm[2])

    def paint(self, box: Box, mask: np.ndarray, hu: float | np.ndarray, label: int | None) -> None:
        self.hu[box][mask] = hu if np.isscalar(hu) else hu[mask]
        if label is not None:
            self.label[box][mask] = label


def _body(c: _Canvas) -> np.ndarray:
    """Skin, subcutaneous fat and muscle wall; returns the abdominal cavity mask (Z x H x W)."""
    center = c.voxel(0.0, 0.0, 0.5)
    axes = (10.0 * c.shape[0], c.half_mm[1] / c.mm[1], c.half_mm[0] / c.mm[2])
    box, r = radius_field(c.shape, center, axes, c.rng, wobble=0.04)
    fat = c.rng.uniform(0.06, 0.16)  # subcutaneous fat thickness, fraction of the radius
    c.paint(box, r < 1.0, -100.0, None)
    c.paint(box, r < 1.0 - fat, 45.0, None)  # abdominal wall muscle
    cavity = np.zeros(c.shape, bool)
    cavity[box] = r < 1.0 - fat - 0.06
    c.paint(box, cavity[box], -90.0, None)  # visceral fat
    return cavity


def _bowel(c: _Canvas, cavity: np.ndarray) -> None:
    """Unlabelled bowel loops (fluid and wall 25-50 HU, some with gas) filling the cavity."""
    for _ in range(int(c.rng.integers(14, 22))):
        x, y, z = c.rng.uniform(-0.7, 0.7), c.rng.uniform(-0.8, 0.3), c.rng.uniform(0.0, 0.7)
        size = c.rng.uniform(12, 26)
        found = radius_field(c.shape, c.voxel(x, y, z), c.axes(size, size, size * 1.5), c.rng)
        if found is None:
            continue
        box, r = found
        inside = (r < 1.0) & cavity[box]
        c.paint(box, inside, float(c.rng.uniform(25, 50)), None)
        if c.rng.random() < 0.35:  # gas rises to the anterior (upper) part of the loop
            c.paint(box, inside & (r < 0.6), -900.0, None)


def _organ(c: _Canvas, organ: Organ, cavity: np.ndarray) -> None:
    jitter = c.rng.uniform(-0.05, 0.05, 3) * (1.0, 1.0, 0.5)
    x, y, z = (p + j for p, j in zip(organ.center, jitter, strict=True))
    size = c.rng.uniform(0.85, 1.15)
    axes = c.axes(*(a * size for a in organ.axes_mm))
    found = radius_field(c.shape, c.voxel(x, y, z), axes, c.rng, organ.wobble)
    if found is None:
        return
    box, r = found
    inside = (r < 1.0) & cavity[box]
    hu = organ.hu + c.rng.uniform(-8, 8)
    c.paint(box, inside, hu, organ.label)
    if organ.label in (2, 3):  # kidney: cortex stays bright, medulla and sinus darker
        c.paint(box, inside & (r < 0.72), hu - 45.0, None)
        c.paint(box, inside & (r < 0.35), -20.0, None)
    elif organ.label == 7:  # stomach: enhancing wall, fluid, gas anteriorly (patient supine)
        rows = np.arange(box[1].start, box[1].stop)[None, :, None]
        level = c.voxel(0, y, z)[1] + axes[1] * c.rng.uniform(-0.9, -0.1)
        lumen = inside & (r < 0.82)
        c.paint(box, inside & ~lumen, 45.0, None)
        c.paint(box, lumen & (rows < level), -950.0, None)
    elif organ.label == 6:  # liver: enhancing vessels inside the parenchyma
        for _ in range(4):
            dx, dy = c.rng.uniform(-0.2, 0.2), c.rng.uniform(-0.4, 0.4)
            found = radius_field(c.shape, c.voxel(x + dx, y + dy, z), c.axes(5, 5, 40), c.rng)
            if found is not None:
                vbox, vr = found
                c.paint(vbox, (vr < 1.0) & (c.label[vbox] == organ.label), 140.0, None)


def _spine(c: _Canvas) -> None:
    """Vertebra (cortex ~700 HU, cancellous ~250 HU), spinous process and back muscles."""
    parts = (  # (x, y), semi-axes (x, y) mm, outer HU, inner HU
        ((-0.17, 0.72), (30, 20), 55.0, 55.0),  # paraspinal muscles
        ((0.17, 0.72), (30, 20), 55.0, 55.0),
        ((0.0, 0.84), (6, 14), 700.0, 700.0),  # spinous process
        ((0.0, 0.50), (21, 19), 700.0, 250.0),  # vertebral body: cortex, cancellous bone
    )
    for (x, y), (ax, ay), outer, inner in parts:
        box, r = radius_field(c.shape, c.voxel(x, y, 0.5), c.axes(ax, ay, 4000), c.rng, 0.03)
        c.paint(box, r < 1.0, outer, 0)
        c.paint(box, r < 0.78, inner, 0)
    for x in (-0.16, 0.16):  # psoas, widening towards the pelvis
        found = radius_field(c.shape, c.voxel(x, 0.36, 0.0), c.axes(20, 20, 90), c.rng, 0.1)
        if found is not None:
            c.paint(found[0], found[1] < 1.0, 50.0, 0)


def abdomen_case(rng: np.random.Generator, size: int, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic abdominal CT.

    Returns (hu, label): `Z x H x W` int16 Hounsfield units and uint8 BTCV ids, with
    Z = `slices` (inferior to superior), H = W = `size`; voxel size `voxel_size_mm(size, slices)`.
    """
    c = _Canvas(rng, size, slices)
    cavity = _body(c)
    _bowel(c, cavity)
    for organ in ORGANS:
        _organ(c, organ, cavity)
    _spine(c)
    # Partial-volume blur of edges (in-plane), then scanner noise: smooth texture plus white.
    ndimage.gaussian_filter(c.hu, sigma=(0.0, 0.6, 0.6), output=c.hu)
    hu = c.hu + 7.0 * textured(rng, c.shape, 1.5) + rng.normal(0.0, 11.0, c.shape)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), c.label


def voxel_size_mm(size: int, slices: int) -> tuple[float, float, float]:
    """Voxel size (z, y, x) in mm of `abdomen_case(size, slices)`."""
    return (SCAN_MM / slices, FOV_MM / size, FOV_MM / size)
