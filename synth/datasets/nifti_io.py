"""Reading NIfTI files with the checks real data needs; every failure is an InputError naming it.

Arrays stay in the NIfTI axis order here (`I x J x K`); readers convert them with
`NiftiVolume.zyx` (`core.volume.to_zyx` with the file's affine, so every scan ends up in one
orientation). Checks: unreadable, truncated or non-NIfTI files, 4D data where a 3D volume is
expected, NaN/inf voxels, labels that are not whole numbers, label ids outside a declared set,
and an image/label pair whose shape or affine differ.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from core.errors import InputError
from core.volume import from_zyx, spacing_zyx, to_zyx

# What nibabel raises on damaged files: bad gzip streams, short reads, bad headers.
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error, struct.error)
# Affines of an image and its label may differ by float noise from the writing tool (mm).
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class NiftiVolume:
    """One 3D NIfTI file in memory.

    data:   I x J x K array in file order (float32 for images; an integer dtype for labels).
    affine: 4 x 4 voxel-to-world matrix (mm).
    zooms:  voxel size in mm along (I, J, K).
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    zooms: tuple[float, float, float]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size in mm along (Z, H, W) of `core.volume.to_zyx`'s output."""
        return spacing_zyx(self.zooms, self.affine)

    def zyx(self, data: np.ndarray | None = None) -> np.ndarray:
        """`data` (default: this file's) on this file's grid, as `Z x H x W` (`core.volume`)."""
        return to_zyx(self.data if data is None else data, self.affine)


def load_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    """`nib.load(path)`, for a mixed-case extension (`scan.Nii.gz`) too.

    nibabel rebuilds the file name from the extension, lower-cased unless all upper case, so it
    looks for `scan.nii.gz` and misses the file; such a name is opened by its own path here.
    """
    match = re.search(r"\.nii(\.gz)?$", path.name, re.IGNORECASE)
    ext = match.group(0) if match else ""
    if ext in (ext.lower(), ext.upper()):
        return nib.load(path)
    with ImageOpener(str(path)) as f:  # decompresses by the extension, in any case
        block = f.read(nib.Nifti2Header.template_dtype.itemsize)
    cls = nib.Nifti2Image if nib.Nifti2Header.may_contain_header(block) else nib.Nifti1Image
    try:
        return cls.from_file_map({"image": nib.FileHolder(filename=str(path))})
    except (HeaderDataError, WrapStructError) as e:  # what nib.load reports as ImageFileError
        raise ImageFileError(f"not a NIfTI header ({e})") from None


def _open(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise InputError(path, f"{what} file not found")
    try:
        img = load_nifti(path)
    except _READ_ERRORS as e:
        raise InputError(path, _diagnose(path, e)) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(path, f"not a NIfTI file (read as {type(img).__name__})")
    return img


def _diagnose(path: Path, error: BaseException) -> str:
    """Why nibabel could not open `path`: truncated gzip, not gzip at all, or not NIfTI inside."""
    if path.stat().st_size == 0:
        return "empty file"
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except EOFError:
            return "truncated file (the compressed stream ends early)"
        except (OSError, zlib.error):
            return "not a readable NIfTI file (not gzip-compressed or corrupt)"
    return f"not a readable NIfTI file ({error})"


def _shape3d(path: Path, shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    """The 3D shape of `shape`, dropping trailing axes of length 1; InputError otherwise."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    text = "x".join(str(d) for d in shape)
    if len(dims) > 3:
        raise InputError(path, f"{len(dims)}D {what} ({text}) where a 3D volume is expected")
    if len(dims) < 3:
        raise InputError(path, f"{len(dims)}D {what} ({text}) where a 3D volume is expected")
    if min(dims) < 1:
        raise InputError(path, f"empty {what} ({text})")
    return dims[0], dims[1], dims[2]


def _read(path: Path, what: str, dtype: type | None) -> NiftiVolume:
    img = _open(path, what)
    shape = _shape3d(path, img.shape, what)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(zooms) != 3 or min(zooms) <= 0 or not np.isfinite(zooms).all():
        raise InputError(path, f"invalid voxel size {zooms}")
    try:
        if dtype is None:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=dtype)
    except EOFError:
        raise InputError(path, "truncated file (the compressed stream ends early)") from None
    except _READ_ERRORS as e:
        raise InputError(path, f"unreadable or truncated data ({e})") from None
    if data.dtype.kind not in "biuf":
        raise InputError(path, f"unsupported voxel type {data.dtype}")
    data = np.asarray(data).reshape(shape)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise InputError(path, "affine contains NaN or inf")
    return NiftiVolume(path, data, affine, img.header, (zooms[0], zooms[1], zooms[2]))


def read_image(path: Path) -> NiftiVolume:
    """A 3D intensity volume as float32 (scaling applied); NaN/inf voxels are an error."""
    vol = _read(path, "image", np.float32)
    finite = np.isfinite(vol.data)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise InputError(path, f"{bad} NaN or inf voxels")
    return vol


def read_label(path: Path) -> NiftiVolume:
    """A 3D label volume with whole-number ids (any integer dtype, or floats holding integers)."""
    vol = _read(path, "label", None)
    data = vol.data
    if data.dtype.kind == "f":
        for k in range(data.shape[2]):  # slice by slice: no full-size temporaries
            plane = data[:, :, k]
            if not np.isfinite(plane).all():
                raise InputError(path, "label volume contains NaN or inf")
            frac = plane != np.round(plane)
            if frac.any():
                example = float(plane[frac].flat[0])
                raise InputError(path, f"float labels with non-integer values (e.g. {example:g})")
        small = data.size == 0 or (data.min() >= 0 and data.max() <= 255)
        data = data.astype(np.uint8 if small else np.int32)
    elif data.dtype.kind == "b":
        data = data.astype(np.uint8)
    return NiftiVolume(vol.path, data, vol.affine, vol.header, vol.zooms)


def label_ids(data: np.ndarray) -> np.ndarray:
    """Sorted distinct ids of an integer label array (any shape)."""
    if data.size == 0:
        return np.zeros(0, np.int64)
    low, high = int(data.min()), int(data.max())
    if 0 <= low and high <= 255:  # bincount is far faster than unique on big volumes
        small = data.astype(np.uint8, copy=False).reshape(-1, data.shape[-1], order="F")
        counts = np.zeros(256, np.int64)
        for k in range(small.shape[1]):  # per slice: bincount's int64 copy stays small
            counts += np.bincount(small[:, k], minlength=256)
        return np.flatnonzero(counts)
    return np.unique(data).astype(np.int64)


def check_label_ids(label: NiftiVolume, allowed: set[int]) -> np.ndarray:
    """The label data as uint8 (I x J x K); InputError when an id is outside `allowed`."""
    present = label_ids(label.data)
    bad = [int(i) for i in present if int(i) not in allowed]
    if bad:
        shown = ", ".join(str(i) for i in bad[:8])
        raise InputError(
            label.path, f"label ids {shown} outside the declared set {_describe(allowed)}"
        )
    return label.data.astype(np.uint8, copy=False)


def _describe(ids: set[int]) -> str:
    ordered = sorted(ids)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{{{ordered[0]}..{ordered[-1]}}}"
    return "{" + ", ".join(str(i) for i in ordered) + "}"


def check_same_grid(image: NiftiVolume, other: NiftiVolume) -> None:
    """InputError naming `other` when its shape or affine differ from `image`'s."""
    if image.data.shape != other.data.shape:
        a = "x".join(map(str, other.data.shape))
        b = "x".join(map(str, image.data.shape))
        raise InputError(other.path, f"shape {a} does not match {image.path.name} ({b})")
    if not np.allclose(image.affine, other.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        diff = float(np.abs(image.affine - other.affine).max())
        raise InputError(
            other.path, f"affine differs from {image.path.name} (by up to {diff:.4g} mm)"
        )


def label_nifti_bytes(
    label_zyx: np.ndarray, affine: np.ndarray, header: object | None, compress: bool
) -> bytes:
    """A label map as NIfTI-1 file bytes with the source affine and header.

    label_zyx: Z x H x W uint8 in the `core.volume` convention (written back as the file's
    I x J x K by `from_zyx` with the same affine).
    The header keeps the source geometry (qform/sform and their codes, units, description); its
    data type becomes uint8, intensity scaling and display range are cleared.
    """
    hdr = nib.Nifti1Header.from_header(header) if isinstance(header, nib.Nifti1Header) else None
    img = nib.Nifti1Image(from_zyx(label_zyx.astype(np.uint8, copy=False), affine), affine, hdr)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0.0
    img.header["cal_max"] = 0.0
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw
