"""The annotation folder of the label-a-few-slices path: which slices a person labeled, and how.

    <folder>/slices.csv             one row per slice to label (the manifest, the truth)
    <folder>/labels/<case>.nii.gz   a label volume on the scan's own grid, affine and header

`fewsam synth suggest` writes both; a person paints the listed slices in ITK-SNAP or 3D Slicer
and saves the label files in place; `dataset.annotations` points extraction at the folder.

Manifest columns:

    case          training case id (as the dataset reader names it)
    slice         voxel index of the slice along `axis` of the file
    axis          the file's voxel axis (0/1/2) closest to superior-inferior (2 for axial storage)
    position_mm   world coordinate of the slice centre along that direction (mm)
    rank          order of suggestion within its round (1 = first)
    strategy      how it was chosen (spread, random, diverse, uncertain, or manual)
    score         the strategy's score for it (distance, entropy; empty when none)
    round         1 for the first suggestions, 2 for the next, ...
    draft_sha256  SHA-256 of the slice as `suggest` wrote it (zeros or the model's draft)
    file_sha256   SHA-256 of the label file right after `suggest` last wrote it

A listed slice whose label is all background is a real negative exemplar. A listed slice still
exactly as drafted, in a file whose bytes are still those `suggest` wrote, was never saved by a
person: `data check` reports it rather than train on an unreviewed draft.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from core.atomic import write_text
from core.errors import InputError
from core.volume import Volume, file_slice, to_zyx
from synth.datasets.base import Problem
from synth.datasets.nifti_io import AFFINE_TOLERANCE_MM, check_label_ids, read_label

MANIFEST = "slices.csv"
LABELS = "labels"


@dataclass(frozen=True)
class SliceRow:
    """One listed slice (see the module docstring for the columns)."""

    case: str
    slice: int
    axis: int
    position_mm: float
    rank: int
    strategy: str
    score: float | None
    round: int
    draft_sha256: str
    file_sha256: str


FIELDS = tuple(f.name for f in fields(SliceRow))


def label_path(folder: Path, case: str) -> Path:
    """`<folder>/labels/<case>.nii.gz`."""
    return Path(folder) / LABELS / f"{case}.nii.gz"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def slice_sha256(plane: np.ndarray) -> str:
    """SHA-256 of one label slice (any integer dtype; hashed as uint8 C-order bytes)."""
    return sha256_bytes(np.ascontiguousarray(plane, dtype=np.uint8).tobytes())


def _parse_row(raw: dict[str, str], path: Path, line: int) -> SliceRow:
    try:
        score = raw["score"].strip()
        return SliceRow(
            case=raw["case"].strip(),
            slice=int(raw["slice"]),
            axis=int(raw["axis"]),
            position_mm=float(raw["position_mm"] or "nan"),
            rank=int(raw["rank"] or 0),
            strategy=raw["strategy"].strip() or "manual",
            score=float(score) if score else None,
            round=int(raw["round"] or 1),
            draft_sha256=raw["draft_sha256"].strip(),
            file_sha256=raw["file_sha256"].strip(),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(path, f"line {line}: not a valid row ({e})") from None


def read_manifest(folder: Path) -> list[SliceRow]:
    """The rows of `<folder>/slices.csv`; InputError on a missing file, column or bad value."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(path, "annotation manifest not found (run `fewsam synth suggest`)")
    reader = csv.DictReader(io.StringIO(path.read_text()))
    missing = [f for f in ("case", "slice", "axis") if f not in (reader.fieldnames or [])]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    rows = []
    for line, raw in enumerate(reader, start=2):
        full = {f: raw.get(f) or "" for f in FIELDS}
        rows.append(_parse_row(full, path, line))
    seen: set[tuple[str, int]] = set()
    for row in rows:
        if (row.case, row.slice) in seen:
            raise InputError(path, f"case {row.case} slice {row.slice} is listed twice")
        seen.add((row.case, row.slice))
    return rows


def write_manifest(folder: Path, rows: list[SliceRow]) -> None:
    """Write `<folder>/slices.csv` atomically, rows in the given order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = asdict(row)
        values["position_mm"] = f"{row.position_mm:.3f}"
        values["score"] = "" if row.score is None else f"{row.score:.6g}"
        writer.writerow(values)
    write_text(Path(folder) / MANIFEST, buffer.getvalue())


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


def _grid_problem(path: Path, label: np.ndarray, affine: np.ndarray, volume: Volume) -> str | None:
    want = source_shape(volume)
    if tuple(label.shape) != want:
        return f"shape {'x'.join(map(str, label.shape))} does not match the scan ({'x'.join(map(str, want))})"
    if not np.allclose(affine, volume.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        return f"affine differs from the scan {volume.source.name}"
    return None


def case_problems(
    folder: Path, rows: list[SliceRow], volume: Volume, num_classes: int
) -> list[Problem]:
    """Every problem of the listed slices of one case (`volume` read on its source grid)."""
    path = label_path(folder, volume.case)
    if not path.is_file():
        listed = ", ".join(str(r.slice) for r in rows)
        return [
            Problem(
                path, f"listed slice(s) {listed} of case {volume.case} never saved: no label file"
            )
        ]
    try:
        nii = read_label(path)
        ids = check_label_ids(nii, set(range(num_classes + 1)))
    except InputError as e:
        return [Problem(path, e.problem)]
    grid = _grid_problem(path, ids, nii.affine, volume)
    if grid is not None:
        return [Problem(path, grid)]
    axis = file_slice(0, ids.shape, volume.affine)[0]
    problems = []
    listed = {r.slice for r in rows}
    for row in rows:
        if row.axis != axis:
            problems.append(
                Problem(
                    path,
                    f"slice {row.slice}: axis {row.axis} but the scan is cut along axis {axis}",
                )
            )
        elif not 0 <= row.slice < ids.shape[axis]:
            problems.append(
                Problem(path, f"slice {row.slice} is outside the scan (0..{ids.shape[axis] - 1})")
            )
    if problems:
        return problems
    planes = np.moveaxis(ids, axis, 0)
    for k in np.flatnonzero(planes.reshape(planes.shape[0], -1).any(axis=1)):
        if int(k) not in listed:
            problems.append(
                Problem(
                    path,
                    f"case {volume.case} slice {int(k)} has labeled voxels but is not listed in {MANIFEST}",
                )
            )
    unsaved = sha256_bytes(path.read_bytes())
    for row in rows:
        if row.file_sha256 == unsaved and slice_sha256(planes[row.slice]) == row.draft_sha256:
            problems.append(
                Problem(
                    path,
                    f"case {volume.case} slice {row.slice} is listed but was never saved (still as `suggest` wrote it)",
                )
            )
    return problems


def listed_cases(rows: list[SliceRow]) -> dict[str, list[SliceRow]]:
    """Rows grouped by case, cases sorted, each case's rows by slice."""
    out: dict[str, list[SliceRow]] = {}
    for row in sorted(rows, key=lambda r: (r.case, r.slice)):
        out.setdefault(row.case, []).append(row)
    return out


def manifest_problems(folder: Path, rows: list[SliceRow], train_cases: list[str]) -> list[Problem]:
    """Listed cases that are not training scans of the dataset."""
    known = set(train_cases)
    manifest = Path(folder) / MANIFEST
    return [
        Problem(manifest, f"case {case} is listed but is not a training scan of the dataset")
        for case in listed_cases(rows)
        if case not in known
    ]


def annotated_slices(
    folder: Path, rows: list[SliceRow], volume: Volume, num_classes: int
) -> dict[int, np.ndarray]:
    """Axial index -> H x W uint8 label of each listed slice of `volume`'s case.

    `volume` is the case as the stages see it (resized to `dataset.slice_size` if set); labels
    are read on the source grid, brought to the same orientation and resized nearest-neighbour.
    InputError on the first problem (`case_problems` lists them all).
    """
    path = label_path(folder, volume.case)
    nii = read_label(path) if path.is_file() else None
    if nii is None:
        raise InputError(path, "label file not found")
    ids = check_label_ids(nii, set(range(num_classes + 1)))
    label = to_zyx(ids, volume.affine)
    _, _, h, w = volume.image.shape
    out = {}
    for row in rows:
        z = canonical_z(row.slice, volume)
        plane = label[z]
        if plane.shape != (h, w):
            plane = cv2.resize(plane, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        out[z] = np.ascontiguousarray(plane, dtype=np.uint8)
    return out
