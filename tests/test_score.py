"""`fewsam evaluate score`: folders of label maps scored by hand-checkable numbers, the pipeline
mode equal to the folder mode, and bad folders refused in one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from reliability_files import assert_one_line_error, invoke

# RAS-stored, 0.8 x 0.8 x 2.5 mm: Z (the file's third axis) has the coarse spacing.
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
SHAPE = (8, 8, 8)  # I x J x K


def save(path: Path, label_ijk: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label_ijk.astype(np.uint8), affine), path)
    return path


def cube(shift: int = 0) -> np.ndarray:
    """A 4 x 4 x 4 cube of class 1 in an 8^3 volume, moved `shift` voxels along K."""
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 2:6, 2 + shift : 6 + shift] = 1
    return label


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Ground truth: one case, the cube; predictions (one method): the cube one voxel up."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    save(gt / "case1.nii.gz", cube())
    save(pred / "case1.nii.gz", cube(shift=1))
    return pred, gt


def score(*args: str | Path) -> Any:
    return invoke("evaluate", "score", *args)


# Shifted by one voxel: |P ∩ G| = 48 of 64 each, Dice = 2 * 48 / 128. Of the 56 + 56 surface
# voxels 72 lie on the other surface; 32 are one step along K away (the faces across the shift)
# and 8 one step along any axis, so the 95th percentile is one voxel along K: 1 voxel, 2.5 mm.
# Class 2 is in neither mask: transunet scores it (0, 0) and averages it in; strict excludes it.
@pytest.mark.parametrize(
    ("protocol", "mean_dice", "mean_hd95", "class2"),
    [("transunet", 0.375, 0.5, (0.0, 0.0)), ("strict", 0.75, 2.5, (None, None))],
)
def test_a_shifted_cube_scores_what_the_hand_count_says(
    tmp_path: Path,
    folders: tuple[Path, Path],
    protocol: str,
    mean_dice: float,
    mean_hd95: float,
    class2: tuple[float | None, float | None],
) -> None:
    pred, gt = folders
    out = tmp_path / "out"
    result = score("--pred", pred, "--gt", gt, "--out", out, "--protocol", protocol,
                   "--classes", "cube, absent")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == protocol and metrics["cases"] == 1
    block = metrics["methods"]["pred"]  # a flat folder is one method, named after it
    cube_hd95 = 1.0 if protocol == "transunet" else 2.5
    assert block["per_class"]["cube"] == {"dice": 0.75, "hd95": cube_hd95}
    assert (block["per_class"]["absent"]["dice"], block["per_class"]["absent"]["hd95"]) == class2
    assert (block["dice"], block["hd95"]) == (mean_dice, mean_hd95)
    rows = (out / "per_case.csv").read_text().splitlines()
    assert rows[1] == f"case1,pred,cube,both,0.75,{cube_hd95}"
    assert (out / "per_class.csv").read_text().splitlines()[1] == f"cube,pred,0.75,{cube_hd95}"


def test_method_subfolders(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    save(gt / "a.nii.gz", cube())
    save(pred / "mine" / "a.nii.gz", cube())
    save(pred / "prompted" / "a.nii.gz", cube(shift=1))
    out = tmp_path / "out"
    result = score("--pred", pred, "--gt", gt, "--out", out, "--classes", "cube")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "transunet"
    assert metrics["dsc"] == 0.75 and metrics["adapted"]["prompted"]["per_class"]["cube"]
    assert metrics["methods"]["mine"]["dice"] == 1.0
    methods = [line.split(",")[1] for line in (out / "per_case.csv").read_text().splitlines()[1:]]
    assert methods == ["prompted", "mine"]  # the pipeline's methods first


def test_gt_without_classes_needs_a_dataset_json(
    tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    """The ids found in the files cannot say how many classes there are: a class absent from
    every ground truth would silently vanish. Without --classes or a dataset.json naming them,
    one line names the option and nothing is written; a dataset.json just above --gt names
    them, an absent class included."""
    pred, gt = folders
    out = tmp_path / "out"
    result = score("--pred", pred, "--gt", gt, "--out", out)
    assert_one_line_error(result, "--classes: required with --gt", gt, "dataset.json")
    assert not out.exists()
    meta = {"labels": {"0": "background", "1": "cube", "2": "absent"}}
    (gt.parent / "dataset.json").write_text(json.dumps(meta))
    result = score("--pred", pred, "--gt", gt, "--out", out)
    assert result.exit_code == 0, result.output
    per_class = json.loads((out / "metrics.json").read_text())["methods"]["pred"]["per_class"]
    assert sorted(per_class) == ["absent", "cube"] and per_class["absent"]["dice"] == 0.0


def _bad(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """Write one bad prediction of case2 beside a good case1; (the file named, the message)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for case in ("case1", "case2"):
        save(gt / f"{case}.nii.gz", cube())
    save(pred / "case1.nii.gz", cube())
    bad = pred / "case2.nii.gz"
    if kind == "missing case":
        return bad, "missing: no pred prediction of case case2"
    if kind == "grid":
        save(bad, np.zeros((8, 8, 9), np.uint8))
        return bad, "grid 8x8x9 differs from the ground truth's 8x8x8"
    if kind == "affine":
        shifted = AFFINE.copy()
        shifted[2, 3] = 5.0
        save(bad, cube(), shifted)
        return bad, "affine differs from the ground truth's"
    if kind == "unreadable":
        bad.write_bytes(b"not a NIfTI file at all")
        return bad, "not a readable NIfTI file"
    if kind == "ids":
        save(bad, cube() * 3)
        return bad, "predicted label ids 3 outside 0..2 (2 classes)"
    assert kind == "extra"
    save(pred / "case3.nii.gz", cube())
    save(bad, cube())
    return pred / "case3.nii.gz", "case case3 is not among the ground truth in"


@pytest.mark.parametrize("kind", ["missing case", "grid", "affine", "unreadable", "ids", "extra"])
def test_bad_predictions_fail_in_one_line_naming_the_file(tmp_path: Path, kind: str) -> None:
    named, message = _bad(tmp_path, kind)
    out = tmp_path / "out"
    result = score("--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--out", out,
                   "--classes", "a,b")  # fmt: skip
    assert_one_line_error(result, named, message)
    assert not (out / "metrics.json").exists()


def test_bad_options_fail_in_one_line(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    pred, gt = folders
    result = score("--pred", pred, "--gt", gt, "--protocol", "dice")
    assert_one_line_error(result, "--protocol: 'dice' is not one of transunet, strict")
    result = score("--pred", pred, "--gt", gt, "--classes", "a,,b")
    assert_one_line_error(result, "--classes: empty class name")
    result = score("--pred", pred, "--gt", tmp_path / "nowhere")
    assert_one_line_error(result, tmp_path / "nowhere", "ground-truth folder not found")
    save(gt / "case1.nii.gz", cube() * 4)  # the ground truth itself above the classes
    result = score("--pred", pred, "--gt", gt, "--classes", "a")
    assert_one_line_error(result, gt / "case1.nii.gz", "ground-truth label ids 4 outside 0..1")


def test_pipeline_mode_equals_folder_mode(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    """The dataset reader's test cases (source grid, slices resized for the models) scored
    against the same predictions give the very bytes the label folder gives."""
    from test_inference import stage_params, write_dataset

    root = tmp_path / "data"
    write_dataset(root)  # test cases c, d; classes liver, spleen in dataset.json
    pred = tmp_path / "reports" / "predictions"
    rng = np.random.default_rng(0)
    for case in ("c", "d"):
        truth = nib.load(root / "labelsTs" / f"{case}.nii.gz")
        label = np.asarray(truth.dataobj).astype(np.uint8)
        for method, moved in (("prompt_free", 1), ("prompted", 0)):
            noisy = np.roll(label, moved, axis=0)
            noisy[rng.random(noisy.shape) < 0.01] = 2
            save(pred / method / f"{case}.nii.gz", noisy, truth.affine)
    data = stage_params(params_dict, root)
    data["dataset"]["slice_size"] = 16  # the models' slices; scores stay on the source grid
    for protocol in ("transunet", "strict"):
        data["evaluate"]["protocol"] = protocol
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump(data))
        piped, alone = tmp_path / f"piped_{protocol}", tmp_path / f"alone_{protocol}"
        result = score("-p", params, "--pred", pred, "--out", piped)
        assert result.exit_code == 0, result.output
        result = score("--pred", pred, "--gt", root / "labelsTs", "--out", alone,
                       "--protocol", protocol)  # fmt: skip
        assert result.exit_code == 0, result.output
        for name in ("metrics.json", "per_case.csv", "per_class.csv"):
            assert (piped / name).read_bytes() == (alone / name).read_bytes(), name
        metrics = json.loads((piped / "metrics.json").read_text())
        assert metrics["cases"] == 2 and 0.5 < metrics["dsc_prompt_free"] < metrics["dsc"] < 1


def test_pipeline_mode_wants_every_test_case(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    from test_inference import stage_params, write_dataset

    root = tmp_path / "data"
    write_dataset(root)
    truth = nib.load(root / "labelsTs" / "c.nii.gz")
    pred = tmp_path / "predictions"
    save(pred / "prompted" / "c.nii.gz", np.asarray(truth.dataobj), truth.affine)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(stage_params(params_dict, root)))
    result = score("-p", params, "--pred", pred, "--out", tmp_path / "out")
    assert_one_line_error(
        result, pred / "prompted" / "d.nii.gz", "no prompted prediction of case d"
    )
    result = score("-p", params, "--pred", pred, "--classes", "a,b")
    assert_one_line_error(result, "--classes goes with --gt")
