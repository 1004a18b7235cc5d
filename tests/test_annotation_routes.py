"""The annotation folder's checks through the routes a person takes: the installed command, and
`dvc repro` right after `suggest`.

The in-process tests (`test_annotations.py`) inject one fault at a time. Here several faults
that do not hide each other sit in one folder at once (a row listed twice, an unknown case, a
label file saved mirrored, a listed slice wiped and not marked negative), and the installed
`fewsam data check` and `fewsam synth extract` must list the same four lines, each naming its
file, in fresh processes (the console script, its entry point, no test runner catching
anything). Then the pipeline: `dvc repro extract` on a micro project whose dataset is the
phantom's unlabeled copy refuses a folder nobody painted, refuses a mirrored label file, and
runs once the folder is right.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from dvc_project import make_project, set_params, sh
from reliability_files import assert_installed_one_line_error, listing, run_installed
from test_annotations import (  # noqa: F401 (annotated, setup and sources are fixtures)
    FAULTS,
    Setup,
    _edit_label,
    annotated,
    mirror_along_i,
    setup,
    sources,
)

from phantom import annotator
from synth.annotations import label_path, read_manifest


def _wipe_case0005_slice5(s: Setup) -> tuple[Path, str]:
    """case0005 slice 5 (listed, painted by the annotator) wiped and saved, not marked negative."""

    def wipe(data: np.ndarray) -> np.ndarray:
        data[:, :, 5] = 0
        return data

    return _edit_label(s.folder, "case0005", wipe), (
        "case case0005 slice 5 has no labeled voxel: paint it, or mark it a negative exemplar "
        "(negative = 1 in its slices.csv row) if it shows none of the classes"
    )


def _problem_lines(stdout: str, folder: Path) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(str(folder))]


def test_installed_check_and_extract_list_the_same_four_problems(
    annotated: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Manifest-wide problems first (in this order: the duplicate at line 5, the unknown case at
    # line 6), then each case's file, cases sorted: case0005's wiped slice, case0006's flip.
    injected = [
        FAULTS["row listed twice"](annotated),
        FAULTS["listed case unknown"](annotated),
        _wipe_case0005_slice5(annotated),
        FAULTS["label saved mirrored (R,P,S)"](annotated),
    ]
    expected = [f"{path}: {message}" for path, message in injected]
    assert len(set(expected)) == 4
    out = tmp_path / "out"
    out.mkdir()
    params = annotated.params_file
    commands = [
        ("data", "check", "-p", params),
        ("synth", "extract", "-p", params, "--out", out / "ex.h5", "--csv", out / "ex.csv"),
    ]
    with ThreadPoolExecutor(len(commands)) as pool:
        check, extract = pool.map(lambda args: run_installed(*args, cwd=tmp_path), commands)
    folder = annotated.folder
    assert_installed_one_line_error(check, folder, "4 problem(s) found")
    assert_installed_one_line_error(extract, folder, "4 problem(s) found", "nothing written")
    assert _problem_lines(check.stdout, folder) == expected, check.stdout
    assert _problem_lines(extract.stdout, folder) == expected, extract.stdout
    assert listing(out) == []  # not even a temporary file


@pytest.mark.slow
def test_dvc_repro_refuses_unpainted_and_mirrored_labels_then_runs(tmp_path: Path) -> None:
    """`suggest`, then `dvc repro extract` at each step a person may stop at: the stage fails
    with the lines `data check` gives until the folder is right, and only then writes."""
    root = make_project(tmp_path)
    truth = tmp_path / "outside" / "phantom" / "synapse"
    scans = annotator.unlabeled_copy(truth, tmp_path / "outside" / "unlabeled")
    folder = tmp_path / "outside" / "annotations"  # absolute, outside the repo, as dataset.root
    set_params(
        root,
        **{
            "dataset.format": "nifti",
            "dataset.root": str(scans),
            "dataset.annotations": str(folder),
            "exemplars": "all",
        },
    )
    sh(root, "fewsam", "synth", "suggest", "--n", "2", "--strategy", "spread", "--out", str(folder))
    rows = read_manifest(folder)
    assert [(r.case, r.slice) for r in rows] == [("case0005", 4), ("case0006", 4)]
    exemplars = root / "data" / "exemplars.h5"

    # 1. Nothing painted yet: every listed slice is named, nothing written.
    done = sh(root, "dvc", "repro", "extract", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    for row in rows:
        line = (
            f"{label_path(folder, row.case)}: case {row.case} slice {row.slice} is listed but "
            "was never saved (still as `suggest` wrote it)"
        )
        assert line in output.splitlines(), output
    assert "Traceback" not in output
    assert not exemplars.exists()

    # 2. Painted, but case0006's file saved mirrored: its orientation line, nothing written.
    assert annotator.annotate_from_truth(folder, truth) == 2
    path = label_path(folder, "case0006")
    good = path.read_bytes()
    mirror_along_i(path)
    done = sh(root, "dvc", "repro", "extract", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    line = (
        f"{path}: orientation R,P,S differs from the scan case0006_0000.nii.gz (L,P,S): "
        "saved flipped or re-oriented; save it on the scan's own grid"
    )
    assert line in output.splitlines(), output
    assert "never saved" not in output
    assert not exemplars.exists()

    # 3. The file as the annotator saved it: the stage runs and writes.
    path.write_bytes(good)
    done = sh(root, "dvc", "repro", "extract", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert exemplars.is_file()
