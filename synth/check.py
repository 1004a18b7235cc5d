"""`fewsam data check`: every problem of a dataset, one line each, naming the file.

The checks are the readers' own (`synth.datasets`): missing partner files, unreadable or truncated
files, non-NIfTI files, 4D images, NaN/inf voxels, float labels, label ids outside the declared set,
image/label shape or affine mismatch, empty label volumes, and (with `dataset.slice_size: 0`)
slices whose size differs between cases, and scans stored obliquely beyond
`core.volume.OBLIQUE_TOLERANCE_DEG` (they are cut along the nearest axis). Extraction runs the
same checks on the cases it reads and stops at the first problem.

When the annotation folder (`dataset.annotations`) holds a manifest, its problems are listed too
(`synth.annotations.case_problems`): a listed case that is no training scan, a label file missing,
unreadable, on another grid or with ids outside the classes, a listed slice outside the scan or
never saved, and labeled voxels on a slice the manifest does not list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import FewsamError
from core.params import Params
from core.progress import track
from core.volume import OBLIQUE_TOLERANCE_DEG, Volume, obliquity_deg
from synth.annotations import (
    MANIFEST,
    case_problems,
    listed_cases,
    manifest_problems,
    read_manifest,
)
from synth.datasets import BaseReader, Problem, open_dataset

__all__ = ["Problem", "find_problems", "iter_volumes", "run"]


def _slice_problem(volume: Volume, first: tuple[str, tuple[int, int]] | None) -> Problem | None:
    """A problem when `volume`'s slices differ in size from the first case's (H, W)."""
    size = (int(volume.image.shape[2]), int(volume.image.shape[3]))
    if first is None or size == first[1]:
        return None
    return Problem(
        volume.source,
        f"slices are {size[0]}x{size[1]}, those of {first[0]} {first[1][0]}x{first[1][1]}: "
        "set dataset.slice_size to resize every case to one size",
    )


def iter_volumes(
    reader: BaseReader, cases: Iterable[str], description: str = "reading"
) -> Iterator[Volume]:
    """Load `cases` one at a time, stopping with InputError at the first problem (layout first).

    Only one volume is held at a time, so memory does not grow with the number of cases.
    """
    layout = reader.layout_problems()
    if layout:
        raise layout[0].error()
    cases = list(cases)
    first: tuple[str, tuple[int, int]] | None = None
    for case in track(cases, description):
        volume = reader.load(case)
        problem = _slice_problem(volume, first)
        if problem is not None:
            raise problem.error()
        first = first or (case, (int(volume.image.shape[2]), int(volume.image.shape[3])))
        yield volume
        del volume  # before the next load, so two volumes are never held at once


def find_problems(reader: BaseReader, cases: Iterable[str] | None = None) -> list[Problem]:
    """Every problem of the dataset: layout problems, then those of each case in order.

    `cases` defaults to all train and test cases. Volumes are read one at a time.
    """
    problems = reader.layout_problems()
    if cases is None:
        cases = [*reader.cases("train"), *reader.cases("test")]
    first: tuple[str, tuple[int, int]] | None = None
    for case in track(list(cases), "checking"):
        volume, found = reader.read_case(case)
        problems.extend(found)
        tilt = obliquity_deg(volume.affine) if volume is not None else 0.0
        if volume is not None and tilt > OBLIQUE_TOLERANCE_DEG:
            problems.append(
                Problem(
                    volume.source,
                    f"oblique scan: its axes are {tilt:.1f} degrees off the world axes "
                    f"(more than {OBLIQUE_TOLERANCE_DEG:g}); resample it to the scanner axes",
                )
            )
        if volume is not None and reader.slice_size == 0:
            problem = _slice_problem(volume, first)
            if problem is not None:
                problems.append(problem)
            first = first or (case, (int(volume.image.shape[2]), int(volume.image.shape[3])))
        del volume  # before the next load, so two volumes are never held at once
    return problems


def annotation_problems(reader: BaseReader, folder: Path) -> list[Problem]:
    """Problems of the annotation folder `folder` (none when it holds no manifest)."""
    if not (folder / MANIFEST).is_file():
        return []
    rows = read_manifest(folder)
    problems = manifest_problems(folder, rows, reader.cases("train"))
    known = set(reader.cases("train"))
    for case, case_rows in track(list(listed_cases(rows).items()), "checking annotations"):
        if case in known:
            volume = reader.load(case, resize=False)
            problems.extend(case_problems(folder, case_rows, volume, len(reader.classes)))
    return problems


def run(params: Params, root: Path | None) -> None:
    """Check the dataset of `params.dataset` (at `root`, default `dataset.root`); print problems.

    Raises FewsamError (exit code 2 on the command line) when any problem is found.
    """
    reader = open_dataset(params.dataset, params.seed, root)
    train, test = reader.cases("train"), reader.cases("test")
    problems = find_problems(reader, [*train, *test])
    where = reader.root
    if not problems:
        where = Path(params.dataset.annotations)
        problems = annotation_problems(reader, where)
    for problem in problems:
        print(problem)
    summary = (
        f"{params.dataset.format} dataset {reader.root}: {len(train)} train and {len(test)} test cases, "
        f"classes {', '.join(reader.classes)}; channels {', '.join(reader.channels)}"
    )
    if problems:
        print(summary)
        raise FewsamError(f"{where}: {len(problems)} problem(s) found (listed above)")
    print(f"{summary}: no problems")
