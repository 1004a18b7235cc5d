"""The whole annotation folder checked against a dataset: the one validation every route uses.

`data check`, extraction (the DVC stage), `suggest` rounds and the labeling page all call
`check_folder`, so they accept and refuse exactly the same things, each problem one line naming
its file. Problems of the manifest as a whole (a listed case that is no training scan, a row
listed twice) come first, then each listed case's (`labels.read_case`), cases sorted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.progress import track
from synth.annotations.labels import AnnotationProblem, canonical_z, read_case
from synth.annotations.manifest import MANIFEST, SliceRow, listed_cases, read_manifest
from synth.datasets import BaseReader


@dataclass(frozen=True)
class FolderCheck:
    """What `check_folder` found.

    rows:     the manifest's rows, in file order.
    problems: every problem, manifest-wide first.
    slices:   case -> axial index -> H x W uint8 label of each listed slice on the scan's source
              grid (only when asked for, and only of cases without a problem).
    """

    rows: list[SliceRow]
    problems: list[AnnotationProblem]
    slices: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    @property
    def blocking(self) -> list[AnnotationProblem]:
        """The problems that forbid writing into the folder (all but unfinished slices)."""
        return [p for p in self.problems if not p.unfinished]


def has_manifest(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def manifest_problems(
    folder: Path, rows: list[SliceRow], train_cases: list[str]
) -> list[AnnotationProblem]:
    """Rows listed twice, and listed cases that are not training scans of the dataset."""
    path = Path(folder) / MANIFEST
    problems = []
    first: dict[tuple[str, int], int] = {}
    for row in rows:
        key = (row.case, row.slice)
        if key in first:
            why = f"case {row.case} slice {row.slice} is listed twice (lines {first[key]} and {row.line})"
            problems.append(AnnotationProblem(path, why))
        first.setdefault(key, row.line)
    known = set(train_cases)
    problems.extend(
        AnnotationProblem(path, f"case {case} is listed but is not a training scan of the dataset")
        for case in listed_cases(rows)
        if case not in known
    )
    return problems


def check_folder(reader: BaseReader, folder: Path, keep_slices: bool = False) -> FolderCheck:
    """Check `folder` (which must hold a manifest) against `reader`'s training scans.

    InputError when the manifest cannot be read at all. A scan the reader cannot load is skipped
    here: it is a dataset problem, which `synth.check.find_problems` names.
    """
    rows = read_manifest(folder)
    problems = manifest_problems(folder, rows, reader.cases("train"))
    known = set(reader.cases("train"))
    slices: dict[str, dict[int, np.ndarray]] = {}
    for case, case_rows in track(list(listed_cases(rows).items()), "checking annotations"):
        if case not in known:
            continue
        try:
            volume = reader.load(case, resize=False)
        except InputError:
            continue
        found = read_case(folder, case_rows, volume, len(reader.classes))
        problems.extend(found.problems)
        if keep_slices and found.label is not None and not found.problems:
            planes = {}
            for row in case_rows:
                z = canonical_z(row.slice, volume)
                planes[z] = np.ascontiguousarray(found.label[z], dtype=np.uint8)
            slices[case] = planes
        del volume  # before the next load, so two volumes are never held at once
    return FolderCheck(rows, problems, slices)
