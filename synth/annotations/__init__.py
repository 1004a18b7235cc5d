"""The annotation folder of the label-a-few-slices path, owned by this package alone.

    <folder>/slices.csv             one row per slice to label (the manifest, the truth)
    <folder>/labels/<case>.nii.gz   a label volume on the scan's own grid, affine and header

`fewsam synth suggest` writes both; a person paints the listed slices (in `fewsam annotate`, in
ITK-SNAP or in 3D Slicer) and saves the label files in place; `dataset.annotations` points
extraction at the folder. Reading, checking and writing live here (`manifest` for slices.csv,
`labels` for one case's file, `folder` for the whole folder against a dataset), so that
`data check`, extraction, `suggest` and the page accept and refuse exactly the same things.

A real all-background slice (a negative exemplar) is marked on purpose: `negative` = 1 in its
row (or the page's "background slice"). Any other listed slice with no labeled voxel, or still
exactly as `suggest` drafted it in a file nobody saved since, is refused by every route.
"""

from synth.annotations.folder import FolderCheck, check_folder, has_manifest, manifest_problems
from synth.annotations.labels import (
    LABELS,
    AnnotationProblem,
    CaseLabels,
    canonical_z,
    grid_problem,
    label_path,
    read_case,
    sha256_bytes,
    slice_sha256,
    source_shape,
    write_case,
)
from synth.annotations.manifest import (
    FIELDS,
    MANIFEST,
    SliceRow,
    listed_cases,
    read_manifest,
    write_manifest,
)

__all__ = [
    "FIELDS",
    "LABELS",
    "MANIFEST",
    "AnnotationProblem",
    "CaseLabels",
    "FolderCheck",
    "SliceRow",
    "canonical_z",
    "check_folder",
    "grid_problem",
    "has_manifest",
    "label_path",
    "listed_cases",
    "manifest_problems",
    "read_case",
    "read_manifest",
    "sha256_bytes",
    "slice_sha256",
    "source_shape",
    "write_case",
    "write_manifest",
]
