"""`fewsam data check`: every problem of a dataset, one line each, naming the file.

The checks are the readers' own (`synth.datasets`): missing partner files, unreadable or truncated
files, non-NIfTI files, 4D images, NaN/inf voxels, float labels, label ids outside the declared set,
image/label shape or affine mismatch, empty label volumes, and (with `dataset.slice_size: 0`)
slices whose size differs between cases, and scans stored obliquely beyond
`core.volume.OBLIQUE_TOLERANCE_DEG` (they are cut along the nearest axis).

When the annotation folder (`dataset.annotations`) holds a manifest, its problems are listed too,
with the dataset's (`synth.annotations.check_folder`): a listed case that is no training scan, a
row listed twice, a label file missing, unreadable, on another grid, shape or orientation, or
with ids outside the classes, a listed slice outside the scan, never saved, or empty without
being marked negative, and labeled voxels on a slice the manifest does not list.

Extraction refuses the same, in the same words, for the cases it reads (the training cases):
with a manifest it runs `find_problems` on them (tilt included) and `check_folder` on the
annotation folder, prints every line and stops before writing anything; without one (the
paper's protocol, fully labeled volumes) `iter_volumes` stops at the first problem of a case,
tilt included. A label file turned off its scan is refused by the annotation grid check (its
affine differs from the scan's); a scan turned with its labels is refused as oblique.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import FewsamError
from core.params import Params
from core.progress import track
from core.volume import OBLIQUE_TOLERANCE_DEG, Volume, obliquity_deg
from synth.annotations import check_folder, has_manifest
from synth.datasets import BaseReader, Problem, open_dataset

__all__ = ["Problem", "find_problems", "iter_volumes", "problems", "refuse", "run"]


def tilt_problem(volume: Volume) -> Problem | None:
    """A problem when `volume`'s axes are more than OBLIQUE_TOLERANCE_DEG off the world axes."""
    tilt = obliquity_deg(volume.affine)
    if tilt <= OBLIQUE_TOLERANCE_DEG:
        return None
    return Problem(
        volume.source,
        f"oblique scan: its axes are {tilt:.1f} degrees off the world axes "
        f"(more than {OBLIQUE_TOLERANCE_DEG:g}); resample it to the scanner axes",
    )


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
        problem = tilt_problem(volume) or _slice_problem(volume, first)
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
        tilt = tilt_problem(volume) if volume is not None else None
        if tilt is not None:
            problems.append(tilt)
        if volume is not None and reader.slice_size == 0:
            problem = _slice_problem(volume, first)
            if problem is not None:
                problems.append(problem)
            first = first or (case, (int(volume.image.shape[2]), int(volume.image.shape[3])))
        del volume  # before the next load, so two volumes are never held at once
    return problems


def annotation_problems(reader: BaseReader, folder: Path) -> list[Problem]:
    """Problems of the annotation folder `folder` (none when it holds no manifest)."""
    if not has_manifest(folder):
        return []
    return list(check_folder(reader, folder).problems)


def problems(reader: BaseReader, folder: Path, cases: Iterable[str] | None = None) -> list[Problem]:
    """Every problem `data check` reports: the dataset's (of `cases`, default all), then the
    annotation folder's."""
    return [*find_problems(reader, cases), *annotation_problems(reader, folder)]


def refuse(found: list[Problem], where: Path, what: str) -> None:
    """Print each problem on its own line and raise FewsamError (exit code 2) when there is any."""
    for problem in found:
        print(problem)
    if found:
        raise FewsamError(f"{where}: {len(found)} problem(s) found (listed above); {what}")


def run(params: Params, root: Path | None) -> None:
    """Check the dataset of `params.dataset` (at `root`, default `dataset.root`) and its
    annotation folder; print every problem.

    Raises FewsamError (exit code 2 on the command line) when any problem is found.
    """
    reader = open_dataset(params.dataset, params.seed, root)
    train, test = reader.cases("train"), reader.cases("test")
    folder = Path(params.dataset.annotations)
    found = problems(reader, folder, [*train, *test])
    summary = (
        f"{params.dataset.format} dataset {reader.root}: {len(train)} train and {len(test)} test cases, "
        f"classes {', '.join(reader.classes)}; channels {', '.join(reader.channels)}"
    )
    if has_manifest(folder):
        summary += f"; annotations {folder}"
    if found:
        where = folder if all(p.path.is_relative_to(folder) for p in found) else reader.root
        for problem in found:
            print(problem)
        print(summary)
        raise FewsamError(f"{where}: {len(found)} problem(s) found (listed above)")
    print(f"{summary}: no problems")
