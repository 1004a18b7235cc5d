"""Bad datasets and params through the command line: exit code 2, one line naming the file,
nothing finished left.

Dataset faults under `fewsam data check` (every fault), extraction stopping at the first one
(truncated file, label ids, missing partner) and a missing or empty root under `data check` are
in test_check.py; params parsing is in test_params.py. Bad files between the stages, models and
output paths: test_reliability_bad_artifacts.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dataset_files import SHAPE, btcv_label, make_synapse, write_nifti
from reliability_files import (
    World,
    assert_installed_one_line_error,
    assert_one_line_error,
    invoke,
    listing,
    run_installed,
    write_params,
)
from test_check import FAULTS

from core.schema import read_exemplars
from synth.datasets.synapse import TEST_IDS

pytestmark = pytest.mark.usefixtures("one_thread")


def _extract(params: Path, out: Path, csv: Path) -> Any:
    return invoke("synth", "extract", "--params", params, "--out", out, "--csv", csv)


# ---- datasets: extraction (the stage) refuses what `data check` lists -------------------------

# test_check.test_extract_stops_at_the_first_problem runs these three through extraction already.
EXTRACT_FAULTS = sorted(set(FAULTS) - {"truncated", "label ids outside", "image without label"})


@pytest.mark.parametrize("fault", EXTRACT_FAULTS)
def test_extract_refuses_each_dataset_fault(tmp_path: Path, world: World, fault: str) -> None:
    root = make_synapse(tmp_path / "ds")
    inject, message = FAULTS[fault]
    rel = inject(root)
    data = copy.deepcopy(world.data)
    data["dataset"]["root"] = str(root)
    params = write_params(tmp_path / "params.yaml", data)
    out, csv = tmp_path / "out" / "ex.h5", tmp_path / "out" / "ex.csv"
    assert_one_line_error(_extract(params, out, csv), root / rel, message)
    assert listing(tmp_path / "out") == []  # nothing finished, no temporary file


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("missing", "dataset folder not found (set dataset.root)"),
        ("empty", "dataset folder is empty"),
        ("a file", "dataset root is not a folder"),
    ],
)
def test_extract_refuses_missing_empty_or_file_root(
    tmp_path: Path, world: World, kind: str, problem: str
) -> None:
    root = tmp_path / "dataset root"
    if kind == "empty":
        root.mkdir()
    elif kind == "a file":
        root.write_text("not a folder")
    data = copy.deepcopy(world.data)
    data["dataset"]["root"] = str(root)
    out, csv = tmp_path / "ex.h5", tmp_path / "ex.csv"
    result = _extract(write_params(tmp_path / "p.yaml", data), out, csv)
    assert_one_line_error(result, f"{root}: {problem}")
    assert not out.exists() and not csv.exists()


def test_float_labels_holding_whole_numbers_are_accepted(tmp_path: Path, world: World) -> None:
    """Real datasets store labels as float32 (TransUNet's npz, some NIfTI exports): accepted when
    every value is a whole number, and read exactly as the integer file would be."""
    results = {}
    for dtype in (np.uint8, np.float32):
        root = make_synapse(tmp_path / f"ds_{np.dtype(dtype).name}")
        for n in (5, 6, 7):
            write_nifti(root / "label" / f"label{n:04d}.nii.gz", btcv_label(n).astype(dtype))
        data = copy.deepcopy(world.data)
        data["dataset"]["root"] = str(root)
        params = write_params(tmp_path / f"{np.dtype(dtype).name}.yaml", data)
        out = tmp_path / f"{np.dtype(dtype).name}.h5"
        result = _extract(params, out, tmp_path / f"{np.dtype(dtype).name}.csv")
        assert result.exit_code == 0, result.output
        results[dtype] = read_exemplars(out)
    assert results[np.float32].label.any()
    np.testing.assert_array_equal(results[np.float32].label, results[np.uint8].label)


def test_truncated_file_through_the_installed_command(tmp_path: Path, world: World) -> None:
    """The real console script, not the test runner: one line on stderr, exit 2, no traceback
    (every other bad-input case goes through it in test_installed_cli.py)."""
    root = make_synapse(tmp_path / "ds")
    image = root / "img" / "img0007.nii.gz"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    data = copy.deepcopy(world.data)
    data["dataset"]["root"] = str(root)
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "ex.h5"
    proc = run_installed("synth", "extract", "-p", params, "--out", out,
                         "--csv", tmp_path / "ex.csv")  # fmt: skip
    line = assert_installed_one_line_error(proc)
    assert line == f"error: {image}: truncated file (the compressed stream ends early)"
    assert not out.exists()


# ---- an empty label in the test split ----------------------------------------------------------


@pytest.mark.parametrize(
    "stage", ["data check", "evaluate infer", "evaluate infer, last case", "evaluate score"]
)
def test_empty_label_in_the_test_split_is_refused(tmp_path: Path, world: World, stage: str) -> None:
    """RELIABILITY.md: a case with no labeled voxel is refused in the test split as in the
    training split, by every command that reads the test cases, naming the label file. When the
    bad case comes last, the label maps infer already wrote for the others are removed too."""
    root = make_synapse(tmp_path / "ds")
    tests = [n for n in TEST_IDS if (root / "label" / f"label{n:04d}.nii.gz").is_file()]
    assert len(tests) > 1  # so that "last case" has earlier cases to leave behind
    bad = max(tests) if stage.endswith("last case") else min(tests)
    label = write_nifti(root / "label" / f"label{bad:04d}.nii.gz", np.zeros(SHAPE, np.uint8))
    data = copy.deepcopy(world.data)
    data["dataset"]["root"] = str(root)
    params = write_params(tmp_path / "params.yaml", data)
    problem = f"{label}: no labeled voxel (the label volume is empty)"
    out = tmp_path / "reports"
    if stage == "data check":
        result = invoke("data", "check", "-p", params)
        assert result.exit_code == 2, result.output
        assert [line for line in result.stdout.splitlines() if str(root) + "/" in line] == [problem]
        assert result.stderr.splitlines() == [f"error: {root}: 1 problem(s) found (listed above)"]
        return
    if stage.startswith("evaluate infer"):
        result = invoke("evaluate", "infer", "-p", params, "--adapter", world.adapter, "--out", out)
    else:  # label maps of every test case, so only the ground truth can be refused
        pred = tmp_path / "pred" / "prompt_free"
        for case in sorted(root.glob("label/label*.nii.gz")):
            n = int(case.name[5:9])
            if n in TEST_IDS:
                write_nifti(pred / f"case{n:04d}.nii.gz", btcv_label(n) % 9)
        result = invoke("evaluate", "score", "-p", params, "--pred", pred.parent, "--out", out)
    assert_one_line_error(result, problem)
    assert not [p for p in out.rglob("*") if p.is_file()]  # no label map, no metrics


# ---- exemplar counts and params ---------------------------------------------------------------


# (exemplars value, message); also run through the installed command (test_installed_cli.py).
EXEMPLAR_COUNTS: list[tuple[Any, str]] = [
    (13, "exemplars: 13 requested but the 3 training cases have only 12 labeled slices"),
    (0, "exemplars: must be >= 1 or `all`"),
    (-3, "exemplars: must be >= 1 or `all`"),
    (2.5, "exemplars: must be an integer"),
]


@pytest.mark.parametrize(("value", "message"), EXEMPLAR_COUNTS)
def test_exemplar_counts_refused(tmp_path: Path, world: World, value: Any, message: str) -> None:
    data = copy.deepcopy(world.data)
    data["exemplars"] = value
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "ex.h5"
    # Too many names the dataset whose slices were counted; a bad value names the params file.
    where = world.root if value == 13 else params
    assert_one_line_error(_extract(params, out, tmp_path / "ex.csv"), f"{where}: {message}")
    assert listing(tmp_path) == ["params.yaml"]


# (change to the params, message); also run through the installed command.
PARAMS_CHANGES: list[tuple[dict[str, Any], str]] = [
    ({"synth": {"paste_probability": 0.5}}, "synth.paste_probability: unknown key"),
    ({"trian": {"max_steps": 3}}, "trian: unknown key"),
    ({"train": {"max_steps": "ten"}}, "train.max_steps: must be an integer"),
    ({"train": {"lr": "fast"}}, "train.lr: must be a number"),
    ({"synth": {"scale": "0.9-1.1"}}, "synth.scale"),
    ({"model": {"arch": "vit_s"}}, "model.arch: must be one of"),
    ({"lora": 4}, "lora: must be a mapping"),
]


def changed_params(data: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """A copy of params `data` with `change` merged in (a section's keys, or a whole value)."""
    data = copy.deepcopy(data)
    for section, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section].update(value)
        else:
            data[section] = value
    return data


@pytest.mark.parametrize(("change", "message"), PARAMS_CHANGES)
def test_unknown_and_mistyped_params_through_the_cli(
    tmp_path: Path, world: World, change: dict[str, Any], message: str
) -> None:
    params = write_params(tmp_path / "params.yaml", changed_params(world.data, change))
    result = invoke("train", "run", "-p", params, "--data", world.synthetic,
                    "--out", tmp_path / "adapter", "--log", tmp_path / "log.csv")  # fmt: skip
    assert_one_line_error(result, f"error: {params}: ", message)
    assert listing(tmp_path) == ["params.yaml"]


# (params file text, message); also run through the installed command.
PARAMS_TEXTS: list[tuple[str, str]] = [
    ("seed: [0\n", "not valid YAML"),
    ("- 1\n- 2\n", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), PARAMS_TEXTS)
def test_params_that_are_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    result = invoke("synth", "extract", "-p", params, "--out", tmp_path / "x.h5")
    assert_one_line_error(result, params, message)
