"""The annotation folder (`synth.annotations`) and its checks (`synth.check`, `fewsam data check`).

A small phantom (2 training and 2 test scans, 32 x 32 x 8, stored (L, P, S)) is copied into the
unlabeled nnU-Net layout; `suggest` (spread, 3 slices) lists case0005 slices 2 and 5 and case0006
slice 4: 3 over 2 scans gives quotas 2 and 1, and every one of the 8 slices is body, so the picks
are free[(j + 1) * 8 // (k + 1)]. Each fault below is injected into a folder that otherwise has no
problem, and must come out as exactly one problem naming the file.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from dvc_project import MICRO_PHANTOM
from typer.testing import CliRunner

from core.errors import FewsamError, InputError
from core.params import Params, parse_params
from fewsam.cli import app
from phantom import annotator
from phantom import generate as phantom
from suggest import run as suggest
from synth.annotations import (
    FIELDS,
    MANIFEST,
    SliceRow,
    label_path,
    read_manifest,
    write_manifest,
)
from synth.check import annotation_problems, find_problems
from synth.datasets import open_dataset
from synth.datasets.synapse import map_labels

LISTED = {("case0005", 2), ("case0005", 5), ("case0006", 4)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, params_dict: dict[str, Any]) -> Path:
    """Folder with `ph/synapse` (phantom with truth) and `unl` (its unlabeled copy); read-only."""
    base = tmp_path_factory.mktemp("annotation_sources")
    data = _shrunk(params_dict)
    phantom.run(parse_params(data), base / "ph")
    annotator.unlabeled_copy(base / "ph" / "synapse", base / "unl")
    return base


def _shrunk(params_dict: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(params_dict)
    data["phantom"].update(MICRO_PHANTOM)
    data["train"]["device"] = "cpu"
    data["exemplars"] = "all"  # every listed slice (3 on 2 training scans)
    data["synth"]["pool_per_case"] = 2
    return data


@dataclasses.dataclass
class Setup:
    params: Params
    params_file: Path
    folder: Path
    truth: Path  # synapse root holding the ground truth

    def problems(self) -> list[Any]:
        reader = open_dataset(self.params.dataset, self.params.seed)
        return annotation_problems(reader, self.folder)


@pytest.fixture
def setup(sources: Path, params_dict: dict[str, Any], tmp_path: Path) -> Setup:
    """A fresh annotation folder in which `suggest` listed LISTED (nothing saved yet)."""
    folder = tmp_path / "annotations"
    data = _shrunk(params_dict)
    data["dataset"].update(format="nifti", root=str(sources / "unl"), annotations=str(folder))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    params = parse_params(data)
    rows = suggest.run(params, folder, 3, "spread")
    assert {(r.case, r.slice) for r in rows} == LISTED
    return Setup(params, path, folder, sources / "ph" / "synapse")


@pytest.fixture
def annotated(setup: Setup) -> Setup:
    """`setup` after the scripted annotator saved the truth of every listed slice."""
    assert annotator.annotate_from_truth(setup.folder, setup.truth) == 3
    return setup


def _check(params_file: Path) -> Any:
    return CliRunner().invoke(app, ["data", "check", "-p", str(params_file)])


def _edit_label(folder: Path, case: str, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    path = label_path(folder, case)
    img = nib.load(path)
    data = change(np.asarray(img.dataobj).copy())
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(data.dtype)
    nib.save(out, path)
    return path


def _add_row(folder: Path, case: str, slice_: int, axis: int = 2) -> Path:
    rows = read_manifest(folder)
    extra = dataclasses.replace(rows[0], case=case, slice=slice_, axis=axis, rank=4)
    write_manifest(folder, [*rows, extra])
    return folder / MANIFEST


def _not_training(s: Setup) -> tuple[Path, str]:
    # case0001 is a (labeled) test scan of the unlabeled copy: never a slice to annotate.
    return _add_row(s.folder, "case0001", 3), (
        "case case0001 is listed but is not a training scan of the dataset"
    )


def _unknown_case(s: Setup) -> tuple[Path, str]:
    return _add_row(s.folder, "case0099", 3), (
        "case case0099 is listed but is not a training scan of the dataset"
    )


def _label_missing(s: Setup) -> tuple[Path, str]:
    path = label_path(s.folder, "case0006")
    path.unlink()
    return path, "listed slice(s) 4 of case case0006 never saved: no label file"


def _other_shape(s: Setup) -> tuple[Path, str]:
    path = label_path(s.folder, "case0006")
    img = nib.load(path)
    data = np.zeros((32, 32, 7), np.uint8)
    data[10, 10, 4] = 1
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return path, "shape 32x32x7 does not match the scan case0006_0000.nii.gz (32x32x8)"


def _other_affine(s: Setup) -> tuple[Path, str]:
    path = label_path(s.folder, "case0006")
    img = nib.load(path)
    affine = img.affine.copy()
    affine[0, 3] += 2.0  # moved 2 mm
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
    return path, "affine differs from the scan case0006_0000.nii.gz (by up to 2 mm)"


def turn(path: Path, degrees: float) -> np.ndarray:
    """Save the NIfTI at `path` with its axes turned `degrees` about the world z axis (voxels,
    header and origin kept), as a tilted acquisition is stored; returns the old affine."""
    img = nib.load(path)
    t = np.radians(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0, 0, 1]])
    affine = img.affine.copy()
    affine[:3, :3] = rotation @ img.affine[:3, :3]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header), path)
    return img.affine


def _label_tilted(s: Setup) -> tuple[Path, str]:
    path = label_path(s.folder, "case0006")
    before = turn(path, 30.0)
    diff = float(np.abs(nib.load(path).affine - before).max())
    return path, f"affine differs from the scan case0006_0000.nii.gz (by up to {diff:.4g} mm)"


def mirror_along_i(path: Path) -> None:
    """Save the file flipped along i with the affine adjusted, as a viewer saving in its own
    orientation does: the same anatomy in world space, stored R,P,S instead of L,P,S."""
    img = nib.load(path)
    data = np.asarray(img.dataobj)[::-1].copy()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, data.shape[0] - 1
    nib.save(nib.Nifti1Image(data, img.affine @ flip), path)


def _mirrored(s: Setup) -> tuple[Path, str]:
    path = label_path(s.folder, "case0006")
    mirror_along_i(path)
    assert nib.aff2axcodes(nib.load(path).affine) == ("R", "P", "S")
    return path, (
        "orientation R,P,S differs from the scan case0006_0000.nii.gz (L,P,S): "
        "saved flipped or re-oriented; save it on the scan's own grid"
    )


def _ids_above(s: Setup) -> tuple[Path, str]:
    def paint(data: np.ndarray) -> np.ndarray:
        data[16, 16, 4] = 9  # 8 classes: ids 0..8
        return data

    return _edit_label(s.folder, "case0006", paint), ("label ids 9 outside the declared set {0..8}")


def _slice_outside(s: Setup) -> tuple[Path, str]:
    _add_row(s.folder, "case0005", 8)
    return label_path(s.folder, "case0005"), "slice 8 is outside the scan (0..7)"


def _slice_negative(s: Setup) -> tuple[Path, str]:
    _add_row(s.folder, "case0005", -1)  # Python would read it as the last slice
    return label_path(s.folder, "case0005"), "slice -1 is outside the scan (0..7)"


def _slice_far_outside(s: Setup) -> tuple[Path, str]:
    _add_row(s.folder, "case0006", 40)
    return label_path(s.folder, "case0006"), "slice 40 is outside the scan (0..7)"


def _duplicated_row(s: Setup) -> tuple[Path, str]:
    rows = read_manifest(s.folder)
    write_manifest(s.folder, [*rows, rows[0]])
    return s.folder / MANIFEST, "case case0005 slice 2 is listed twice (lines 2 and 5)"


def _set_row(folder: Path, case: str, slice_: int, **change: Any) -> None:
    rows = read_manifest(folder)
    changed = [
        dataclasses.replace(r, **change) if (r.case, r.slice) == (case, slice_) else r for r in rows
    ]
    write_manifest(folder, changed)


def _emptied(s: Setup) -> tuple[Path, str]:
    def wipe(data: np.ndarray) -> np.ndarray:
        data[:, :, 4] = 0  # painted, then wiped and saved: empty, and nobody said it is
        return data

    return _edit_label(s.folder, "case0006", wipe), (
        "case case0006 slice 4 has no labeled voxel: paint it, or mark it a negative exemplar "
        "(negative = 1 in its slices.csv row) if it shows none of the classes"
    )


def _negative_painted(s: Setup) -> tuple[Path, str]:
    _set_row(s.folder, "case0006", 4, negative=True)
    return label_path(s.folder, "case0006"), (
        "case case0006 slice 4 is marked negative but has labeled voxels"
    )


def _wrong_axis(s: Setup) -> tuple[Path, str]:
    _add_row(s.folder, "case0005", 7, axis=0)
    return label_path(s.folder, "case0005"), "slice 7: axis 0 but the scan is cut along axis 2"


def _unlisted_voxels(s: Setup) -> tuple[Path, str]:
    def paint(data: np.ndarray) -> np.ndarray:
        data[3:5, 3:5, 0] = 1  # slice 0 of case0005 is not listed
        return data

    return _edit_label(s.folder, "case0005", paint), (
        "case case0005 slice 0 has labeled voxels but is not listed in slices.csv"
    )


FAULTS: dict[str, Callable[[Setup], tuple[Path, str]]] = {
    "listed case is a test scan": _not_training,
    "listed case unknown": _unknown_case,
    "label file missing": _label_missing,
    "label on another shape": _other_shape,
    "label with another affine": _other_affine,
    "label saved mirrored (R,P,S)": _mirrored,
    "label tilted 30 degrees off its scan": _label_tilted,
    "label ids above the classes": _ids_above,
    "listed slice outside the scan": _slice_outside,
    "listed slice -1": _slice_negative,
    "listed slice 40": _slice_far_outside,
    "row listed twice": _duplicated_row,
    "listed slice wiped, not marked negative": _emptied,
    "slice marked negative but painted": _negative_painted,
    "listed slice along another axis": _wrong_axis,
    "labeled voxels on an unlisted slice": _unlisted_voxels,
}


def test_suggested_folder_lists_three_slices(setup: Setup) -> None:
    rows = read_manifest(setup.folder)
    assert [(r.case, r.slice, r.axis, r.rank, r.round) for r in rows] == [
        ("case0005", 2, 2, 1, 1),
        ("case0005", 5, 2, 2, 1),
        ("case0006", 4, 2, 3, 1),
    ]
    # Slice centres: 8 slices of 25 mm centred on the origin -> k * 25 - 87.5 mm.
    assert [r.position_mm for r in rows] == [-37.5, 37.5, 12.5]
    assert sorted(p.name for p in (setup.folder / "labels").iterdir()) == [
        "case0005.nii.gz",
        "case0006.nii.gz",
    ]


def test_unlabeled_copy_has_no_dataset_problem(setup: Setup) -> None:
    reader = open_dataset(setup.params.dataset, setup.params.seed)
    assert reader.cases("train") == ["case0005", "case0006"]
    assert reader.cases("test") == ["case0001", "case0002"]
    assert find_problems(reader) == []


def test_annotated_folder_has_no_problem(annotated: Setup) -> None:
    assert annotated.problems() == []
    result = _check(annotated.params_file)
    assert result.exit_code == 0, result.output
    assert "no problems" in result.stdout
    # The annotator wrote the truth of exactly the listed slices.
    truth = np.asarray(nib.load(annotated.truth / "label" / "label0005.nii.gz").dataobj)
    saved = np.asarray(nib.load(label_path(annotated.folder, "case0005")).dataobj)
    for k in range(8):
        if k in (2, 5):
            np.testing.assert_array_equal(saved[:, :, k], map_labels(truth[:, :, k]))
            assert saved[:, :, k].any()
        else:
            assert not saved[:, :, k].any()


def _extract(s: Setup) -> Any:
    """`fewsam synth extract` in this process, outputs beside the params file."""
    out = s.params_file.parent / "out"
    args = ["synth", "extract", "-p", str(s.params_file)]
    return CliRunner().invoke(
        app, [*args, "--out", str(out / "ex.h5"), "--csv", str(out / "ex.csv")]
    )


def _problem_lines(output: str, folder: Path) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(str(folder))]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_annotation_problem_names_its_file(annotated: Setup, fault: str) -> None:
    """`data check` and extraction refuse each fault with the same single line; extraction
    writes nothing."""
    path, message = FAULTS[fault](annotated)
    problems = annotated.problems()
    assert [(p.path, p.problem) for p in problems] == [(path, message)]
    result = _check(annotated.params_file)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stdout.splitlines() if message in line]
    assert lines == [f"{path}: {message}"], result.stdout
    assert "1 problem(s) found" in result.stderr and str(annotated.folder) in result.stderr
    assert "Traceback" not in result.output
    extracted = _extract(annotated)
    assert extracted.exit_code == 2, (extracted.output, extracted.exception)
    assert _problem_lines(extracted.stdout, annotated.folder) == [f"{path}: {message}"]
    assert extracted.stderr.count("\n") == 1 and "nothing written" in extracted.stderr
    assert not (annotated.params_file.parent / "out").exists() or not any(
        (annotated.params_file.parent / "out").iterdir()
    )


def test_tilted_scan_with_its_annotation_is_refused_as_data_check_does(
    annotated: Setup, tmp_path: Path
) -> None:
    """A training scan turned 30 degrees, its annotation saved on its grid (so no grid problem):
    `data check` and extraction name the scan oblique in the same single line, and extraction
    writes nothing. The annotated route into training is as strict about tilt as `data check`."""
    root = tmp_path / "tilted"
    shutil.copytree(annotated.params.dataset.root, root)  # the shared sources stay untouched
    scan = root / "imagesTr" / "case0006_0000.nii.gz"
    turn(scan, 30.0)
    turn(label_path(annotated.folder, "case0006"), 30.0)
    data = yaml.safe_load(annotated.params_file.read_text())
    data["dataset"]["root"] = str(root)
    annotated.params_file.write_text(yaml.safe_dump(data))
    line = (
        f"{scan}: oblique scan: its axes are 30.0 degrees off the world axes (more than 20); "
        "resample it to the scanner axes"
    )
    checked = _check(annotated.params_file)
    assert checked.exit_code == 2, checked.output
    assert _problem_lines(checked.stdout, tmp_path) == [line], checked.stdout  # root and folder
    extracted = _extract(annotated)
    assert extracted.exit_code == 2, (extracted.output, extracted.exception)
    assert _problem_lines(extracted.stdout, tmp_path) == [line], extracted.stdout
    assert extracted.stderr.count("\n") == 1 and "nothing written" in extracted.stderr
    assert not (annotated.params_file.parent / "out" / "ex.h5").exists()


def test_clean_folder_extracts(annotated: Setup) -> None:
    """The control of the test above: without a fault, extraction runs and writes."""
    result = _extract(annotated)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (annotated.params_file.parent / "out" / "ex.h5").is_file()


def test_unsaved_slices_are_reported(setup: Setup) -> None:
    problems = setup.problems()
    expected = [
        ("case0005", 2),
        ("case0005", 5),
        ("case0006", 4),
    ]
    assert [(p.path, p.problem) for p in problems] == [
        (
            label_path(setup.folder, case),
            f"case {case} slice {k} is listed but was never saved (still as `suggest` wrote it)",
        )
        for case, k in expected
    ]
    result = _check(setup.params_file)
    assert result.exit_code == 2
    assert f"{label_path(setup.folder, 'case0006')}: case case0006 slice 4 is listed" in (
        result.stdout
    )
    assert "3 problem(s) found" in result.stderr
    # `dvc repro` straight after `suggest`: extraction refuses the same three lines.
    extracted = _extract(setup)
    assert extracted.exit_code == 2
    assert _problem_lines(extracted.stdout, setup.folder) == _problem_lines(
        result.stdout, setup.folder
    )


def test_saved_empty_slice_needs_the_negative_mark(setup: Setup) -> None:
    """A person paints slice 2 of case0005 and saves: slice 5, left empty in the same file, is
    not taken as a negative exemplar until its row says so."""

    def paint(data: np.ndarray) -> np.ndarray:
        data[10:14, 10:14, 2] = 5
        return data

    path = _edit_label(setup.folder, "case0005", paint)
    unsaved = "case case0006 slice 4 is listed but was never saved (still as `suggest` wrote it)"
    empty = (
        "case case0005 slice 5 has no labeled voxel: paint it, or mark it a negative exemplar "
        "(negative = 1 in its slices.csv row) if it shows none of the classes"
    )
    assert [(p.path, p.problem) for p in setup.problems()] == [
        (path, empty),
        (path.parent / "case0006.nii.gz", unsaved),
    ]
    _set_row(setup.folder, "case0005", 5, negative=True)
    _set_row(setup.folder, "case0006", 4, negative=True)  # no save needed for a marked one
    assert setup.problems() == []
    assert "negative" in (setup.folder / MANIFEST).read_text().splitlines()[0]


def test_resaved_unchanged_file_still_needs_paint(setup: Setup) -> None:
    """Saved again with other bytes (a viewer's own writer) but the same all-zero voxels: no
    longer "never saved", but still empty, and refused as such."""
    for case in ("case0005", "case0006"):
        _edit_label(setup.folder, case, lambda data: data)
    problems = [p.problem for p in setup.problems()]
    assert len(problems) == 3 and all("has no labeled voxel" in p for p in problems)


def test_annotator_marks_an_empty_truth_slice_negative(setup: Setup, tmp_path: Path) -> None:
    truth = tmp_path / "truth"
    shutil.copytree(setup.truth, truth)
    # The ground truth of case0006 slice 4 (its only listed slice) becomes empty.
    path = truth / "label" / "label0006.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[:, :, 4] = 0
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    annotator.annotate_from_truth(setup.folder, truth)
    assert not np.asarray(nib.load(label_path(setup.folder, "case0006")).dataobj).any()
    assert [(r.case, r.negative) for r in read_manifest(setup.folder)] == [
        ("case0005", False),
        ("case0005", False),
        ("case0006", True),
    ]
    assert setup.problems() == []


def test_no_manifest_means_no_annotation_problem(setup: Setup, tmp_path: Path) -> None:
    reader = open_dataset(setup.params.dataset, setup.params.seed)
    assert annotation_problems(reader, tmp_path / "elsewhere") == []


# ---- read_manifest ----

HEADER = ",".join(FIELDS)
ROW = "case0005,2,2,-37.500,1,spread,,1,aa,bb,"


def _manifest(tmp_path: Path, text: str) -> Path:
    (tmp_path / MANIFEST).write_text(text)
    return tmp_path


def test_read_manifest_round_trip(tmp_path: Path) -> None:
    rows = [
        SliceRow("case0005", 2, 2, -37.5, 1, "spread", None, 1, "aa", "bb"),
        SliceRow("case0006", 4, 0, 12.25, 2, "diverse", 0.5, 2, "cc", "dd"),
    ]
    write_manifest(tmp_path, rows)
    lines = (tmp_path / MANIFEST).read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1] == ROW
    assert read_manifest(tmp_path) == rows


def test_read_manifest_minimal_columns(tmp_path: Path) -> None:
    """Only case, slice and axis are needed (a hand-written manifest)."""
    rows = read_manifest(_manifest(tmp_path, "case,slice,axis\ncase0005,3,2\n"))
    assert len(rows) == 1
    row = rows[0]
    assert (row.case, row.slice, row.axis, row.strategy, row.round, row.rank) == (
        "case0005",
        3,
        2,
        "manual",
        1,
        0,
    )
    assert row.score is None and np.isnan(row.position_mm)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("case,slice\ncase0005,2\n", "missing column(s) axis"),
        ("slice,axis\n2,2\n", "missing column(s) case"),
        ("case,slice,axis\ncase0005,2.5,2\n", "line 2: not a valid row (slice '2.5'"),
        ("case,slice,axis,negative\ncase0005,2,2,maybe\n", "line 2: not a valid row (negative"),
        ("case,slice,axis\ncase0005,2,2,7\n", "line 2: more cells than columns"),
        ("", "empty manifest"),
        (f"{HEADER}\ncase0005,two,2,0,1,spread,,1,aa,bb,\n", "line 2: not a valid row"),
        (f"{HEADER}\n{ROW}\ncase0006,4,2,0,1,spread,high,1,aa,bb,\n", "line 3: not a valid row"),
        (f"{HEADER}\ncase0005,2,z,0,1,spread,,1,aa,bb,\n", "line 2: not a valid row"),
    ],
    ids=[
        "no axis",
        "no case",
        "half slice",
        "bad negative",
        "extra cell",
        "empty",
        "bad slice",
        "bad score",
        "bad axis",
    ],
)
def test_read_manifest_errors_name_the_manifest(tmp_path: Path, text: str, message: str) -> None:
    _manifest(tmp_path, text)
    with pytest.raises(InputError) as err:
        read_manifest(tmp_path)
    assert err.value.path == tmp_path / MANIFEST
    assert message in err.value.problem
    assert str(err.value).startswith(f"{tmp_path / MANIFEST}: ")


def test_read_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        read_manifest(tmp_path)
    assert err.value.path == tmp_path / MANIFEST and "not found" in err.value.problem


def test_read_manifest_as_spreadsheets_save_it(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" (BOM, CRLF), a trailing blank line and a row of empty cells, columns
    in another order with spaces and capitals, an extra column, `3.0` for 3: read as written,
    and the extra column kept when fewsam writes the manifest back."""
    text = (
        "\ufeffAxis , Case,note,slice,negative\r\n"
        "2,case0005,liver looks odd,3.0,\r\n"
        "2,case0006,,4,yes\r\n"
        ",,,,\r\n"
        "\r\n"
    )
    (tmp_path / MANIFEST).write_bytes(text.encode("utf-8"))
    rows = read_manifest(tmp_path)
    assert [(r.case, r.slice, r.axis, r.negative, r.extra, r.line) for r in rows] == [
        ("case0005", 3, 2, False, (("note", "liver looks odd"),), 2),
        ("case0006", 4, 2, True, (("note", ""),), 3),
    ]
    write_manifest(tmp_path, rows)
    lines = (tmp_path / MANIFEST).read_text().splitlines()
    assert lines[0] == HEADER + ",note"
    assert lines[1].endswith(",liver looks odd") and lines[2].split(",")[-2:] == ["1", ""]
    again = read_manifest(tmp_path)  # (position_mm is NaN here, which equals nothing)
    assert [dataclasses.replace(r, position_mm=0.0) for r in again] == [
        dataclasses.replace(r, position_mm=0.0) for r in rows
    ]


def test_read_manifest_semicolons(tmp_path: Path) -> None:
    """A spreadsheet in a comma-decimal locale separates with `;`."""
    rows = read_manifest(_manifest(tmp_path, "case;slice;axis;position_mm\ncase0005;3;2;12.5\n"))
    assert [(r.case, r.slice, r.axis, r.position_mm) for r in rows] == [("case0005", 3, 2, 12.5)]


def test_read_manifest_not_utf8(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_bytes("case,slice,axis\ncas\xe9,3,2\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_manifest(tmp_path)


# ---- a later `suggest` round ----


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_second_round_refuses_a_mirrored_file_and_leaves_it(annotated: Setup) -> None:
    """Round 2 would rewrite case0006's file on the scan's grid, hiding the flip for good: it
    stops with the line `data check` gives, and the folder keeps every byte."""
    path, message = _mirrored(annotated)
    before = _snapshot(annotated.folder)
    with pytest.raises(FewsamError):
        suggest.run(annotated.params, annotated.folder, 2, "spread")
    assert _snapshot(annotated.folder) == before
    args = ["synth", "suggest", "--n", "2", "--strategy", "spread", "--out", str(annotated.folder)]
    result = CliRunner().invoke(app, [*args, "-p", str(annotated.params_file)])
    assert result.exit_code == 2, result.output
    assert _problem_lines(result.stdout, annotated.folder) == [f"{path}: {message}"]
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    assert _snapshot(annotated.folder) == before


def test_second_round_goes_on_over_unfinished_slices(setup: Setup) -> None:
    """Slices not painted yet are the normal state between rounds: no reason to stop."""
    rows = suggest.run(setup.params, setup.folder, 2, "spread")
    assert len(rows) == 2 and len(read_manifest(setup.folder)) == 5


def test_check_lists_dataset_and_annotation_problems_together(
    annotated: Setup, tmp_path: Path
) -> None:
    """A damaged test scan does not hide an annotation problem (nor the reverse)."""
    root = tmp_path / "scans"
    shutil.copytree(annotated.params.dataset.root, root)
    damaged = root / "imagesTs" / "case0001_0000.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:200])
    data = yaml.safe_load(annotated.params_file.read_text())
    data["dataset"]["root"] = str(root)
    annotated.params_file.write_text(yaml.safe_dump(data))
    path, message = _mirrored(annotated)
    result = _check(annotated.params_file)
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    assert f"{path}: {message}" in lines
    assert [line for line in lines if line.startswith(f"{damaged}: ")], result.stdout
    assert "2 problem(s) found" in result.stderr
