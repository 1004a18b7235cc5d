"""What every dataset reader returns: a volume in one array convention, with its geometry.

Array convention used everywhere after reading: axial slices first, `Z x H x W`, where H runs
along the NIfTI second axis (j) and W along the first (i). `to_zyx` and `from_zyx` convert
between a NIfTI data array (`i x j x k`) and this convention, so predictions go back to the
source geometry exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def to_zyx(data_ijk: np.ndarray) -> np.ndarray:
    """NIfTI array `I x J x K [x C]` -> `Z x H x W` (`[C x] Z x H x W` when 4D): Z=K, H=J, W=I."""
    if data_ijk.ndim == 4:
        return np.ascontiguousarray(np.transpose(data_ijk, (3, 2, 1, 0)))
    return np.ascontiguousarray(np.transpose(data_ijk, (2, 1, 0)))


def from_zyx(data_zyx: np.ndarray) -> np.ndarray:
    """Inverse of `to_zyx` for a `Z x H x W` array."""
    return np.ascontiguousarray(np.transpose(data_zyx, (2, 1, 0)))


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
