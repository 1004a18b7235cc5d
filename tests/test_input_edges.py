"""Edges of the label-a-few-slices path: an empty imagesTs, and `synth suggest --n 0`.

The dataset is the unlabeled nnU-Net layout of `phantom.annotator.unlabeled_copy` (imagesTr
without labelsTr, a dataset.json), written here with `dataset_files.make_nifti`: two training
scans, 6 x 16 x 16. Each bad input must end as one `error: ...` line naming the folder, exit
code 2 and nothing written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from dataset_files import make_nifti, params_file
from reliability_files import (
    assert_one_line_error,
    cpu_params,
    invoke,
    listing,
    write_adapter,
    write_params,
)

from core.params import load_params
from synth.datasets import open_dataset

LABELS = {"background": 0, "liver": 1, "spleen": 2}


def unlabeled_scans(root: Path, images_ts: bool) -> Path:
    """Training scans without labels; with `images_ts`, empty imagesTs and labelsTs folders
    (what `unlabeled_copy` leaves when none of the scans is a test case)."""
    make_nifti(root, cases=2, dataset_json={"channel_names": {"0": "CT"}, "labels": LABELS})
    shutil.rmtree(root / "labelsTr")
    if images_ts:
        (root / "imagesTs").mkdir()
        (root / "labelsTs").mkdir()
    return root


@pytest.fixture
def empty_test_folder(tmp_path: Path, params_dict: dict[str, Any]) -> tuple[Path, Path]:
    """(params file, dataset root) of unlabeled training scans beside an empty imagesTs."""
    root = unlabeled_scans(tmp_path / "scans", images_ts=True)
    return params_file(tmp_path, params_dict, format="nifti", root=str(root)), root


def test_score_refuses_an_empty_images_ts(empty_test_folder: tuple[Path, Path]) -> None:
    params, root = empty_test_folder
    out = params.parent / "reports"
    result = invoke("evaluate", "score", "-p", params, "--pred", out / "predictions",
                    "--out", out)  # fmt: skip
    assert_one_line_error(result, root / "imagesTs", "no test scans")
    assert listing(out) == []  # no metrics.json saying that nothing was scored


def test_infer_refuses_an_empty_images_ts(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    root = unlabeled_scans(tmp_path / "scans", images_ts=True)
    data = cpu_params(params_dict, root)
    data["dataset"]["format"] = "nifti"
    params = write_params(tmp_path / "params.yaml", data)
    adapter = write_adapter(tmp_path / "adapter", data, ("liver", "spleen"))  # one that fits
    out = tmp_path / "reports"
    result = invoke("evaluate", "infer", "-p", params, "--adapter", adapter, "--out", out)
    assert_one_line_error(result, root / "imagesTs", "no test scans")
    assert listing(out) == []  # no empty predictions/ folders for score to take as a run


def test_without_images_ts_score_says_nothing_was_scored(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    root = unlabeled_scans(tmp_path / "scans", images_ts=False)
    params = params_file(tmp_path, params_dict, format="nifti", root=str(root))
    out = tmp_path / "reports"
    result = invoke("evaluate", "score", "-p", params, "--pred", out / "predictions",
                    "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "nothing was scored" in result.stdout


def test_an_empty_images_ts_stops_evaluation_only(
    tmp_path: Path, empty_test_folder: tuple[Path, Path], params_dict: dict[str, Any]
) -> None:
    params, root = empty_test_folder
    reader = open_dataset(load_params(params).dataset, 0)
    assert reader.cases("train") == ["tr_000", "tr_001"] and reader.cases("test") == []
    assert reader.layout_problems() == []  # suggest, extract and data check still run
    assert reader.test_problem is not None and reader.test_problem.path == root / "imagesTs"
    # Labeled training scans: the test cases are split off them, an empty imagesTs is unused.
    labeled = make_nifti(tmp_path / "labeled", cases=4, dataset_json={"labels": LABELS})
    (labeled / "imagesTs").mkdir()
    (tmp_path / "l").mkdir()
    data = load_params(params_file(tmp_path / "l", params_dict, format="nifti", root=str(labeled)))
    reader = open_dataset(data.dataset, 0)
    assert reader.cases("test") and reader.test_problem is None


def test_suggest_zero_slices_is_one_error(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    root = unlabeled_scans(tmp_path / "scans", images_ts=False)
    params = params_file(tmp_path, params_dict, format="nifti", root=str(root))
    out = tmp_path / "annotate"
    out.mkdir()
    result = invoke("synth", "suggest", "-p", params, "--n", "0", "--out", out)
    assert listing(out) == []
    assert_one_line_error(result, "--n")
