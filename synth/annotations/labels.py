"""One case's label file of the annotation folder: read it against its scan, check it, write it.

`labels/<case>.nii.gz` must lie on its scan's own grid: the same I x J x K shape and the same
affine (to `AFFINE_TOLERANCE_MM`, the readers' tolerance), so the same orientation. A file saved
flipped, re-oriented, cropped or resampled is refused, never resampled or re-oriented here: a
mirrored label would otherwise train the model on the wrong side of the body.

The rules of the listed slices (the same for `data check`, extraction, `suggest` and the page):

- a listed slice lies inside the scan, along the scan's slice axis;
- no voxel is labeled on a slice the manifest does not list;
- a listed slice whose row says `negative` (a negative exemplar marked on purpose: the column
  `negative` = 1, or the page's "background slice") must have no labeled voxel; it needs no save;
- any other listed slice still exactly as drafted, in a file whose bytes are those `suggest` (or
  the page) last wrote, was never saved: refused (an *unfinished* problem);
- any other listed slice with no labeled voxel is refused (unfinished): an empty slice never
  reaches training unless a person said it is empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.orientations import aff2axcodes

from core.atomic import atomic_path
from core.errors import InputError
from core.volume import Volume, file_slice, from_zyx, to_zyx
from synth.annotations.manifest import MANIFEST, SliceRow
from synth.datasets.base import Problem
from synth.datasets.nifti_io import (
    AFFINE_TOLERANCE_MM,
    check_label_ids,
    label_nifti_bytes,
    read_label,
)

LABELS = "labels"


@dataclass(frozen=True)
class AnnotationProblem(Problem):
    """A problem of the annotation folder. `unfinished`: a listed slice not painted or saved yet
    (the state `suggest` leaves); `suggest` and the page may still write such a file."""

    unfinished: bool = False


@dataclass(frozen=True)
class CaseLabels:
    """One case's label file as checked against its scan.

    label:    Z x H x W uint8 class ids in the `core.volume` orientation, on the scan's source
              grid (None when the file is missing or unusable).
    problems: every problem found, in the order the checks run.
    done:     file indices of the listed slices that are ready for training (painted and saved,
              or marked negative); empty when the file itself has a problem.
    """

    label: np.ndarray | None
    problems: list[AnnotationProblem]
    done: frozenset[int] = frozenset()  # file indices of the listed slices with no problem

    @property
    def usable(self) -> bool:
        """The file exists and may be rewritten: only unfinished slices are wrong with it."""
        return self.label is not None and all(p.unfinished for p in self.problems)


def label_path(folder: Path, case: str) -> Path:
    """`<folder>/labels/<case>.nii.gz`."""
    return Path(folder) / LABELS / f"{case}.nii.gz"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def slice_sha256(plane: np.ndarray) -> str:
    """SHA-256 of one label slice (any integer dtype; hashed as uint8 C-order bytes)."""
    return sha256_bytes(np.ascontiguousarray(plane, dtype=np.uint8).tobytes())


def source_shape(volume: Volume) -> tuple[int, int, int]:
    """The I x J x K shape of the file `volume` was read from."""
    shape = getattr(volume.header, "get_data_shape", lambda: None)()
    if shape is not None and len(shape) >= 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    _, z, h, w = volume.image.shape  # formats without a header: stored canonically
    return w, h, z


def canonical_z(index: int, volume: Volume) -> int:
    """Axial index (Z of `to_zyx`) of file slice `index` along the scan's slice axis."""
    # The flip along the slice axis is its own inverse, so the same mapping goes both ways.
    return file_slice(index, source_shape(volume), volume.affine)[1]


def _codes(affine: np.ndarray) -> str:
    return ",".join(str(c) for c in aff2axcodes(affine))


def grid_problem(label: np.ndarray, affine: np.ndarray, volume: Volume) -> str | None:
    """Why a label array (file order) with `affine` is not on `volume`'s source grid, or None."""
    want = source_shape(volume)
    scan = volume.source.name
    if tuple(label.shape) != want:
        got = "x".join(map(str, label.shape))
        return f"shape {got} does not match the scan {scan} ({'x'.join(map(str, want))})"
    if _codes(affine) != _codes(volume.affine):
        return (
            f"orientation {_codes(affine)} differs from the scan {scan} ({_codes(volume.affine)}):"
            " saved flipped or re-oriented; save it on the scan's own grid"
        )
    if not np.allclose(affine, volume.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        diff = float(np.abs(np.asarray(affine) - volume.affine).max())
        return f"affine differs from the scan {scan} (by up to {diff:.4g} mm)"
    return None


def _row_problems(path: Path, rows: list[SliceRow], shape: tuple[int, ...], volume: Volume):
    axis = file_slice(0, shape, volume.affine)[0]
    out = []
    for row in rows:
        if row.axis != axis:
            why = f"slice {row.slice}: axis {row.axis} but the scan is cut along axis {axis}"
        elif not 0 <= row.slice < shape[axis]:
            why = f"slice {row.slice} is outside the scan (0..{shape[axis] - 1})"
        else:
            continue
        out.append(AnnotationProblem(path, why))
    return axis, out


def read_case(folder: Path, rows: list[SliceRow], volume: Volume, num_classes: int) -> CaseLabels:
    """Read and check `volume.case`'s label file for its listed `rows`.

    `volume` is the case on its source grid (`reader.load(case, resize=False)`). Every problem
    is listed (one line each, naming the file); `label` is set unless the file itself is
    unusable (missing, unreadable, unknown ids, another grid, a listed slice off the scan).
    """
    path = label_path(folder, volume.case)
    case = volume.case
    if not path.is_file():
        listed = ", ".join(str(r.slice) for r in rows)
        why = f"listed slice(s) {listed} of case {case} never saved: no label file"
        return CaseLabels(None, [AnnotationProblem(path, why, unfinished=True)])
    try:
        nii = read_label(path)
        ids = check_label_ids(nii, set(range(num_classes + 1)))
    except InputError as e:
        return CaseLabels(None, [AnnotationProblem(path, e.problem)])
    grid = grid_problem(ids, nii.affine, volume)
    if grid is not None:
        return CaseLabels(None, [AnnotationProblem(path, grid)])
    axis, problems = _row_problems(path, rows, ids.shape, volume)
    if problems:
        return CaseLabels(None, problems)
    planes = np.moveaxis(ids, axis, 0)
    listed = {r.slice for r in rows}
    painted = planes.reshape(planes.shape[0], -1).any(axis=1)
    for k in np.flatnonzero(painted):
        if int(k) not in listed:
            why = f"case {case} slice {int(k)} has labeled voxels but is not listed in {MANIFEST}"
            problems.append(AnnotationProblem(path, why))
    unsaved = sha256_bytes(path.read_bytes())
    done = set()
    for row in rows:
        k = row.slice
        before = len(problems)
        if row.negative:  # marked on purpose: no save needed for an all-background slice
            if painted[k]:
                why = f"case {case} slice {k} is marked negative but has labeled voxels"
                problems.append(AnnotationProblem(path, why))
        elif row.file_sha256 == unsaved and slice_sha256(planes[k]) == row.draft_sha256:
            why = (
                f"case {case} slice {k} is listed but was never saved (still as `suggest` wrote it)"
            )
            problems.append(AnnotationProblem(path, why, unfinished=True))
        elif not painted[k]:
            why = (
                f"case {case} slice {k} has no labeled voxel: paint it, or mark it a negative "
                f"exemplar (negative = 1 in its {MANIFEST} row) if it shows none of the classes"
            )
            problems.append(AnnotationProblem(path, why, unfinished=True))
        if len(problems) == before:
            done.add(k)
    return CaseLabels(to_zyx(ids, volume.affine), problems, frozenset(done))


def write_case(
    folder: Path, volume: Volume, planes: Mapping[int, np.ndarray], num_classes: int
) -> tuple[str, dict[int, str]]:
    """Write `planes` (axial index -> H x W uint8 on the source grid) into `volume.case`'s file.

    Every other slice of an existing file is kept; a file that `read_case` finds unusable
    (other grid, unreadable, unknown ids) is refused with its problem and left as it is. The
    file is written atomically with the scan's affine and the file's (else the scan's) header.
    Returns (SHA-256 of the file, file slice index -> SHA-256 of that slice as written).
    """
    path = label_path(folder, volume.case)
    shape = source_shape(volume)
    header = volume.header
    if path.is_file():
        nii = read_label(path)  # InputError when unreadable
        ids = check_label_ids(nii, set(range(num_classes + 1)))
        grid = grid_problem(ids, nii.affine, volume)
        if grid is not None:
            raise InputError(path, grid)
        label, header = to_zyx(ids, volume.affine), nii.header
    else:
        label = to_zyx(np.zeros(shape, np.uint8), volume.affine)
    for z, plane in planes.items():
        if plane.shape != label.shape[1:]:
            raise ValueError(f"slice {z}: {plane.shape} is not the scan's {label.shape[1:]}")
        label[z] = plane
    data = label_nifti_bytes(label, volume.affine, header, compress=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    ijk = from_zyx(label, volume.affine)
    hashes = {}
    for z in planes:
        axis, index = file_slice(z, shape, volume.affine)
        hashes[index] = slice_sha256(np.moveaxis(ijk, axis, 0)[index])
    return sha256_bytes(data), hashes
