"""`fewsam data check` and the extraction guard: each kind of bad input, exit code 2, file named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from dataset_files import (
    AFFINE,
    SHAPE,
    btcv_image,
    btcv_label,
    make_brats,
    make_synapse,
    params_file,
    write_nifti,
)
from typer.testing import CliRunner

from core.errors import InputError
from core.params import parse_params
from fewsam.cli import app
from synth.check import find_problems
from synth.datasets import open_dataset
from synth.datasets.nifti_io import read_image
from synth.datasets.synapse import CLASSES, TEST_IDS, TRAIN_IDS

IMG = "img/img0006.nii.gz"
LABEL = "label/label0006.nii.gz"


def _float_image(value: float) -> Callable[[Path], str]:
    def fault(root: Path) -> str:
        hu = btcv_image(btcv_label(6)).astype(np.float32)
        hu[2, 3, 3] = value
        write_nifti(root / IMG, hu)
        return IMG

    return fault


def _label(data: np.ndarray, affine: np.ndarray = AFFINE) -> Callable[[Path], str]:
    def fault(root: Path) -> str:
        write_nifti(root / LABEL, data, affine)
        return LABEL

    return fault


def _remove(rel: str, named: str) -> Callable[[Path], str]:
    def fault(root: Path) -> str:
        (root / rel).unlink()
        return named

    return fault


def _truncate(root: Path) -> str:
    data = (root / IMG).read_bytes()
    (root / IMG).write_bytes(data[: len(data) // 2])
    return IMG


def _not_nifti(root: Path) -> str:
    (root / LABEL).write_text("this is a CSV file, not NIfTI\n1,2,3\n")
    return LABEL


def _four_d(root: Path) -> str:
    hu = btcv_image(btcv_label(6))
    write_nifti(root / IMG, np.stack([hu, hu], axis=-1))
    return IMG


shifted = AFFINE.copy()
shifted[0, 3] = 5.0
bad_ids = btcv_label(6)
bad_ids[0, 0, 0] = 20
float_labels = btcv_label(6).astype(np.float32)
float_labels[1, 3, 3] = 5.5
only_unmapped = np.zeros(SHAPE, np.uint8)
only_unmapped[2, 2:4, 2:4] = 9  # IVC: not one of the 8 evaluated organs

FAULTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "image without label": (_remove(LABEL, IMG), "image without label"),
    "label without image": (_remove(IMG, LABEL), "label without image"),
    "shape mismatch": (_label(np.zeros((6, 16, 12), np.uint8)), "shape 12x16x6 does not match"),
    "affine mismatch": (_label(btcv_label(6), shifted), "affine differs"),
    "label ids outside": (_label(bad_ids), "label ids 20 outside the declared set"),
    "NaN voxels": (_float_image(np.nan), "NaN or inf"),
    "inf voxels": (_float_image(np.inf), "NaN or inf"),
    "truncated": (_truncate, "truncated"),
    "not NIfTI": (_not_nifti, "not a readable NIfTI"),
    "empty label": (_label(np.zeros(SHAPE, np.uint8)), "no labeled voxel"),
    "no evaluated organ": (_label(only_unmapped), "no voxel of the 8 evaluated organs"),
    "4D image": (_four_d, "4D image"),
    "float labels": (_label(float_labels), "float labels with non-integer values"),
}


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_check_reports_each_fault_with_its_file(
    tmp_path: Path, params_dict: dict[str, Any], fault: str
) -> None:
    root = make_synapse(tmp_path / "ds")
    inject, message = FAULTS[fault]
    rel = inject(root)
    params = params_file(tmp_path, params_dict, root=str(root))
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stdout.splitlines() if message in line]
    assert len(lines) == 1 and str(root / rel) in lines[0], result.stdout
    assert "1 problem(s)" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("fault", ["truncated", "label ids outside", "image without label"])
def test_extract_stops_at_the_first_problem(
    tmp_path: Path, params_dict: dict[str, Any], fault: str
) -> None:
    root = make_synapse(tmp_path / "ds")
    inject, message = FAULTS[fault]
    rel = inject(root)
    params = params_file(tmp_path, params_dict, root=str(root))
    out, csv = tmp_path / "ex.h5", tmp_path / "ex.csv"
    args = ["synth", "extract", "--params", str(params), "--out", str(out), "--csv", str(csv)]
    result = _invoke([*args])
    assert result.exit_code == 2
    assert str(root / rel) in result.stderr and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not csv.exists()
    assert not list(tmp_path.glob(".ex*"))  # no temporary file left behind


def test_check_lists_every_problem_then_fails(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    root = make_synapse(tmp_path / "ds")
    _truncate(root)
    write_nifti(root / "label" / "label0007.nii.gz", bad_ids)
    (root / "img" / "img0002.nii.gz").unlink()
    params = params_file(tmp_path, params_dict, root=str(root))
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 2
    assert "3 problem(s)" in result.stderr
    for name in ("img0006.nii.gz", "label0007.nii.gz", "label0002.nii.gz"):
        assert name in result.stdout


def _clean_summary(root: Path, numbers: tuple[int, ...]) -> str:
    """What `data check` must say of a clean Synapse dataset of BTCV scans `numbers`: its folder,
    how many of them are in each TransUNet split, the 8 organs and the one CT channel."""
    train = len(set(numbers) & set(TRAIN_IDS))
    test = len(set(numbers) & set(TEST_IDS))
    return (
        f"synapse dataset {root}: {train} train and {test} test cases, "
        f"classes {', '.join(CLASSES)}; channels CT: no problems"
    )


def test_clean_dataset_passes(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    numbers = (5, 6, 7, 9, 1, 2)  # 4 training and 2 test scans of the TransUNet split
    root = make_synapse(tmp_path / "ds", numbers)
    params = params_file(tmp_path, params_dict, root=str(root), format="synapse")
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [_clean_summary(root, numbers)]
    assert result.stderr == ""


def test_brats_label_outside_0124_and_missing_modality(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    root = make_brats(tmp_path / "ds", hgg=2, lgg=1)
    case = root / "HGG" / "Brats18_TEST_000_1"
    seg = np.zeros(SHAPE, np.uint8)
    seg[2, 4:6, 4:6] = 3
    write_nifti(case / "Brats18_TEST_000_1_seg.nii.gz", seg)
    (root / "LGG" / "Brats18_TEST_002_1" / "Brats18_TEST_002_1_t1ce.nii.gz").unlink()
    params = params_file(tmp_path, params_dict, root=str(root), format="brats")
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 2
    assert "Brats18_TEST_000_1_seg.nii.gz: label ids 3 outside the declared set" in result.stdout
    assert "Brats18_TEST_002_1_t1ce.nii.gz: missing modality file" in result.stdout


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("missing", "dataset folder not found (set dataset.root)"),
        ("empty", "dataset folder is empty"),
        ("a file", "dataset root is not a folder"),
        ("spaced ñame/missing", "dataset folder not found (set dataset.root)"),
    ],
)
def test_missing_or_empty_root_exit_2(
    tmp_path: Path, params_dict: dict[str, Any], where: str, problem: str
) -> None:
    root = tmp_path / where
    if where == "empty":
        root.mkdir()
    elif where == "a file":
        root.write_text("img0001.nii.gz\n")
    params = params_file(tmp_path, params_dict, root=str(root))
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {root}: {problem}"]


# The tolerance RELIABILITY.md documents for an image and its label: 0.001 mm. The values are
# written out (not taken from nifti_io.AFFINE_TOLERANCE_MM), so widening the constant fails here.
@pytest.mark.parametrize("element", [(0, 3), (1, 1)], ids=["origin x", "row spacing"])
@pytest.mark.parametrize(("shift_mm", "accepted"), [(0.0005, True), (0.01, False)])
def test_affine_tolerance_is_a_thousandth_of_a_millimetre(
    tmp_path: Path,
    params_dict: dict[str, Any],
    element: tuple[int, int],
    shift_mm: float,
    accepted: bool,
) -> None:
    root = make_synapse(tmp_path / "ds")
    moved = AFFINE.copy()
    moved[element] -= shift_mm
    write_nifti(root / LABEL, btcv_label(6), moved)
    params = params_file(tmp_path, params_dict, root=str(root), format="synapse")
    result = _invoke(["data", "check", "--params", str(params)])
    if accepted:
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith(": no problems\n"), result.stdout
    else:
        assert result.exit_code == 2, result.output
        expected = f"{root / LABEL}: affine differs from img0006.nii.gz (by up to {shift_mm:g} mm)"
        assert expected in result.stdout.splitlines(), result.stdout
        assert "1 problem(s)" in result.stderr


def test_root_with_spaces_and_non_ascii_works(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    numbers = (5, 6, 7, 1, 2)
    root = make_synapse(tmp_path / "my data ñ", numbers)
    params = params_file(tmp_path, params_dict, root=str(root), format="synapse")
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [_clean_summary(root, numbers)]


def test_truncated_data_behind_a_valid_header(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(24, 48, 48)).astype(np.float32)
    for name in ("big.nii.gz", "big.nii"):
        path = write_nifti(tmp_path / name, data)
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * 0.6)])
        assert nib.load(path).shape == (48, 48, 24)  # the header alone still reads
        with pytest.raises(InputError, match="truncated") as err:
            read_image(path)
        assert err.value.path == path


def test_trailing_singleton_axis_is_3d_and_2d_is_refused(tmp_path: Path) -> None:
    data = np.zeros((6, 16, 16, 1), np.int16)
    assert read_image(write_nifti(tmp_path / "a.nii.gz", data)).data.shape == (16, 16, 6)
    img = nib.Nifti1Image(np.zeros((16, 16), np.int16), np.eye(4))
    nib.save(img, tmp_path / "b.nii.gz")
    with pytest.raises(InputError, match="2D image"):
        read_image(tmp_path / "b.nii.gz")


def _rotated(degrees: float) -> np.ndarray:
    """AFFINE with its axes turned `degrees` about the world z axis (the origin kept)."""
    t = np.radians(degrees)
    turn = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    affine = AFFINE.copy()
    affine[:3, :3] = turn @ AFFINE[:3, :3]
    return affine


def _tilted_dataset(tmp_path: Path, params_dict: dict[str, Any], degrees: float) -> Path:
    """The clean Synapse dataset with training scan 6 (image and label alike) turned `degrees`;
    returns its params file."""
    root = make_synapse(tmp_path / "ds")
    label = btcv_label(6)
    write_nifti(root / IMG, btcv_image(label), _rotated(degrees))
    write_nifti(root / LABEL, label, _rotated(degrees))
    return params_file(tmp_path, params_dict, root=str(root), format="synapse")


def _reader(params: Path) -> Any:
    p = parse_params(yaml.safe_load(params.read_text()))
    return open_dataset(p.dataset, p.seed)


@pytest.mark.parametrize("degrees", [30.0, -30.0])
def test_scan_tilted_30_degrees_is_named_oblique(
    tmp_path: Path, params_dict: dict[str, Any], degrees: float
) -> None:
    """30 degrees is past the 20-degree tolerance whichever way it turns: one problem, the scan
    named, image and label agreeing (no mismatch line beside it)."""
    params = _tilted_dataset(tmp_path, params_dict, degrees)
    found = find_problems(_reader(params))
    assert len(found) == 1, found
    assert found[0].path.name == "img0006.nii.gz"
    assert "oblique scan" in found[0].problem and "30.0 degrees" in found[0].problem
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 2, result.output
    assert [line for line in result.stdout.splitlines() if "oblique" in line] == [str(found[0])]
    assert "1 problem(s)" in result.stderr


def test_scan_tilted_10_degrees_passes(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    params = _tilted_dataset(tmp_path, params_dict, 10.0)
    assert find_problems(_reader(params)) == []
    result = _invoke(["data", "check", "--params", str(params)])
    assert result.exit_code == 0, result.output


def test_extract_refuses_a_scan_tilted_30_degrees(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    params = _tilted_dataset(tmp_path, params_dict, 30.0)
    out, csv = tmp_path / "ex.h5", tmp_path / "ex.csv"
    args = ["synth", "extract", "--params", str(params), "--out", str(out), "--csv", str(csv)]
    result = _invoke(args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(tmp_path / "ds" / IMG) in lines[0] and "oblique scan" in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists() and not csv.exists()
