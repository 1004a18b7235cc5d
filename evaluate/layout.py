"""What the `infer` and `score` stages share: which test cases, where the label maps go.

    <out>/predictions/<method>/<case>.nii.gz   one label map per case and method (NIfTI, uint8,
                                               the case's source grid, affine and header)
    <out>/overlays/<case>_z<k>.png             a few slices per case, every method side by side

Methods are named `prompt_free` and `prompted` (the adapted model), `unet` (the supervised
baseline trained on the same synthetic set, prompt-free), `zero_shot` and
`zero_shot_box` (base SAM with point and box prompts), `prompt_free_refined` and `unet_refined`
(those two label maps refined by SAM from boxes, `evaluate.refine`); a folder of predictions scored on its own
may hold any other method names too.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import InputError
from synth.datasets import BaseReader

PREDICTIONS = "predictions"
OVERLAYS = "overlays"
# The methods of the pipeline, in the order of every report.
METHODS = (
    "prompt_free",
    "prompted",
    "unet",
    "zero_shot",
    "zero_shot_box",
    "prompt_free_refined",
    "unet_refined",
)
# `evaluate.zero_shot_prompts` entry -> the method of that zero-shot SAM baseline.
ZERO_SHOT_METHODS = {"point": "zero_shot", "box": "zero_shot_box"}

_NII = re.compile(r"^(?P<case>[^.].*?)\.nii(\.gz)?$")  # hidden files (temporaries) excluded


def evaluation_cases(reader: BaseReader, max_cases: int) -> list[str]:
    """The test cases evaluation covers: the first `max_cases` (0 = all) in sorted order.

    May be empty (a dataset of unlabeled training scans without imagesTs): infer then writes no
    label map and score says that nothing was scored. InputError when the reader found the test
    split empty by mistake (`test_problem`: an imagesTs folder without scans).
    """
    cases = reader.cases("test")
    if not cases and reader.test_problem is not None:
        raise reader.test_problem.error()
    if max_cases:
        cases = cases[:max_cases]
    return cases


def prediction_path(folder: Path, method: str, case: str) -> Path:
    """Where the label map of `case` by `method` goes under a predictions folder."""
    return folder / method / f"{case}.nii.gz"


def nifti_cases(folder: Path) -> dict[str, Path]:
    """case -> file of every `<case>.nii.gz` (or `.nii`) directly in `folder`."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        m = _NII.match(path.name)
        if m and path.is_file():
            case = m.group("case")
            if case in found:
                raise InputError(path, f"a second file for case {case} (beside {found[case].name})")
            found[case] = path
    return found


def method_order(methods: list[str]) -> list[str]:
    """The pipeline's methods in their report order, then any others by name."""
    known = [m for m in METHODS if m in methods]
    return known + sorted(m for m in methods if m not in METHODS)
