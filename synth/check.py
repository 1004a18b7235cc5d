"""`fewsam data check`: every problem of a dataset, one line each, naming the file.

The checks are the readers' own (`synth.datasets`): missing partner files, unreadable or truncated
files, non-NIfTI files, 4D images, NaN/inf voxels, float labels, label ids outside the declared set,
image/label shape or affine mismatch, empty label volumes, and (with `dataset.slice_size: 0`)
slices whose size differs between cases. Extraction runs the same checks on the cases it reads and
stops at the first problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import FewsamError
from core.params import Params
from core.progress import track
from core.volume import Volume
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
        volume, case_problems = reader.read_case(case)
        problems.extend(case_problems)
        if volume is not None and reader.slice_size == 0:
            problem = _slice_problem(volume, first)
            if problem is not None:
                problems.append(problem)
            first = first or (case, (int(volume.image.shape[2]), int(volume.image.shape[3])))
        del volume  # before the next load, so two volumes are never held at once
    return problems


def run(params: Params, root: Path | None) -> None:
    """Check the dataset of `params.dataset` (at `root`, default `dataset.root`); print problems.

    Raises FewsamError (exit code 2 on the command line) when any problem is found.
    """
    reader = open_dataset(params.dataset, params.seed, root)
    train, test = reader.cases("train"), reader.cases("test")
    problems = find_problems(reader, [*train, *test])
    for problem in problems:
        print(problem)
    where = f"{params.dataset.format} dataset {reader.root}"
    summary = (
        f"{where}: {len(train)} train and {len(test)} test cases, "
        f"classes {', '.join(reader.classes)}; channels {', '.join(reader.channels)}"
    )
    if problems:
        print(summary)
        raise FewsamError(f"{reader.root}: {len(problems)} problem(s) found (listed above)")
    print(f"{summary}: no problems")
