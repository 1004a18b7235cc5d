"""What every dataset reader returns: a volume in one array convention, with its geometry.

Array convention used everywhere after reading: axial slices first, `Z x H x W`, in one
anatomical orientation whatever the file's storage: Z runs inferior -> superior, H anterior ->
posterior, W from the patient's right to their left (so an array shown with W as columns is in
the radiological view). That is the axis order of a DICOM-derived scan stored as NIfTI with an
(L, P, S) affine, as BTCV and BraTS are, for which the conversion is a plain transpose.

`to_zyx(data, affine)` reads the orientation from the affine (nibabel's nearest-axis
`io_orientation`), so a coronal, sagittal, flipped or RAS-stored scan is cut along the axis
closest to superior-inferior and flipped to the same in-plane orientation; `from_zyx` undoes
exactly that, so label maps go back to the source grid voxel for voxel. Scans tilted away from
the world axes by more than `OBLIQUE_TOLERANCE_DEG` are still cut along the nearest axis, and
`fewsam data check` names them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

# Axis codes of the NIfTI array that `to_zyx` turns into Z x H x W by a plain transpose.
CANONICAL_AXCODES = ("L", "P", "S")
# Largest angle (degrees) between a voxel axis and its nearest world axis for a scan to count as
# stored along the world axes; beyond it `data check` reports the scan as oblique.
OBLIQUE_TOLERANCE_DEG = 20.0


def _transform(affine: np.ndarray | None) -> np.ndarray | None:
    """Orientation transform (nibabel `ornt`) from the file's axes to the canonical ones."""
    if affine is None:
        return None
    ornt = ornt_transform(
        io_orientation(np.asarray(affine, np.float64)), axcodes2ornt(CANONICAL_AXCODES)
    )
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=ornt.dtype)
    return None if np.array_equal(ornt, identity) else ornt


def to_zyx(data_ijk: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """NIfTI array `I x J x K [x C]` -> `Z x H x W` (`[C x] Z x H x W` when 4D).

    With the file's `affine`, the axes are first brought to the canonical (L, P, S) order (see
    the module docstring); without one, the file is taken as stored canonically (Z=K, H=J, W=I).
    """
    ornt = _transform(affine)
    if ornt is not None:
        data_ijk = apply_orientation(data_ijk, ornt)
    if data_ijk.ndim == 4:
        return np.ascontiguousarray(np.transpose(data_ijk, (3, 2, 1, 0)))
    return np.ascontiguousarray(np.transpose(data_ijk, (2, 1, 0)))


def from_zyx(data_zyx: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `to_zyx` for a `Z x H x W` array: back to the file's `I x J x K` order."""
    out = np.transpose(data_zyx, (2, 1, 0))
    ornt = _transform(affine)
    if ornt is not None:
        back = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), io_orientation(np.asarray(affine)))
        out = apply_orientation(out, back)
    return np.ascontiguousarray(out)


def spacing_zyx(
    zooms_ijk: tuple[float, float, float], affine: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Voxel size in mm along (Z, H, W) of `to_zyx`'s output, from the file's voxel sizes."""
    ornt = _transform(affine)
    if ornt is None:
        i, j, k = zooms_ijk
        return (float(k), float(j), float(i))
    canonical = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _) in enumerate(ornt):
        canonical[int(target_axis)] = float(zooms_ijk[source_axis])
    return (canonical[2], canonical[1], canonical[0])


def file_slice(z: int, shape_ijk: tuple[int, ...], affine: np.ndarray | None) -> tuple[int, int]:
    """(file voxel axis, index along it) of axial slice `z` of `to_zyx`'s output."""
    ornt = _transform(affine)
    if ornt is None:
        return 2, int(z)
    source_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    flipped = ornt[source_axis, 1] < 0
    n = int(shape_ijk[source_axis])
    return source_axis, (n - 1 - int(z)) if flipped else int(z)


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle in degrees between a voxel axis and the world axis nearest to it."""
    rotation = np.asarray(affine, np.float64)[:3, :3]
    norms = np.linalg.norm(rotation, axis=0)
    norms[norms == 0] = 1.0
    cosines = np.abs(rotation / norms).max(axis=0)
    return float(max(math.degrees(math.acos(min(1.0, c))) for c in cosines))


@dataclass(frozen=True)
class Volume:
    """One case, read and normalized.

    image:   C x Z x H x W float32 in [0, 1] (C = channels, e.g. 1 for CT, 3 MRI modalities).
    label:   Z x H x W uint8 class ids 0..K (0 = background), or None for unlabeled scans.
    affine:  4 x 4 voxel-to-world matrix of the source file (identity for formats without one).
    spacing: voxel size in mm along (Z, H, W).
    source:  the file the geometry came from (first modality for multi-file cases).
    header:  the source NIfTI header, kept so predictions are written with it (None otherwise).
    """

    case: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source: Path
    header: object | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        assert self.image.ndim == 4 and self.image.dtype == np.float32, self.image.shape
        if self.label is not None:
            assert self.label.shape == self.image.shape[1:], (self.label.shape, self.image.shape)
            assert self.label.dtype == np.uint8
