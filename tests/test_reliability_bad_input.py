"""Bad input through the command line: exit code 2, one line naming the file, nothing finished left.

Dataset faults under `fewsam data check` (every fault), extraction stopping at the first one
(truncated file, label ids, missing partner), a missing or empty root under `data check`, channel
counts under `predict` and adapters of other classes under `evaluate run` are in test_check.py,
test_predict.py and test_inference.py; this file adds each remaining stage and input.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from dataset_files import btcv_label, make_synapse, write_nifti
from reliability_files import (
    World,
    assert_one_line_error,
    invoke,
    listing,
    make_world,
    torch_threads,
    write_adapter,
    write_params,
    write_scan,
)
from test_check import FAULTS

from synth.schema import read_exemplars


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, params_dict: dict[str, Any]) -> World:
    return make_world(tmp_path_factory.mktemp("world"), params_dict)


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


@pytest.mark.parametrize("kind", ["missing", "empty", "a file"])
def test_extract_refuses_missing_empty_or_file_root(
    tmp_path: Path, world: World, kind: str
) -> None:
    root = tmp_path / "dataset root"
    if kind == "empty":
        root.mkdir()
    elif kind == "a file":
        root.write_text("not a folder")
    data = copy.deepcopy(world.data)
    data["dataset"]["root"] = str(root)
    out, csv = tmp_path / "ex.h5", tmp_path / "ex.csv"
    assert_one_line_error(_extract(write_params(tmp_path / "p.yaml", data), out, csv), root)
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
    """The real console script, not the test runner: one line on stderr, exit 2, no traceback."""
    root = make_synapse(tmp_path / "ds")
    image = root / "img" / "img0007.nii.gz"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    data = copy.deepcopy(world.data)
    data["dataset"]["root"] = str(root)
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "ex.h5"
    fewsam = Path(sys.executable).parent / "fewsam"
    proc = subprocess.run(
        [fewsam, "synth", "extract", "-p", params, "--out", out, "--csv", tmp_path / "ex.csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {image}: truncated file " + "(the compressed "
                                        "stream ends early)"]  # fmt: skip
    assert not out.exists()


# ---- exemplar counts and params ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (13, "exemplars: 13 requested but the 3 training cases have only 12 labeled slices"),
        (0, "exemplars: must be >= 1 or `all`"),
        (-3, "exemplars: must be >= 1 or `all`"),
        (2.5, "exemplars: must be an integer"),
    ],
)
def test_exemplar_counts_refused(tmp_path: Path, world: World, value: Any, message: str) -> None:
    data = copy.deepcopy(world.data)
    data["exemplars"] = value
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "ex.h5"
    # Too many names the dataset whose slices were counted; a bad value names the params file.
    where = world.root if value == 13 else params
    assert_one_line_error(_extract(params, out, tmp_path / "ex.csv"), f"{where}: {message}")
    assert listing(tmp_path) == ["params.yaml"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"synth": {"paste_probability": 0.5}}, "synth.paste_probability: unknown key"),
        ({"trian": {"max_steps": 3}}, "trian: unknown key"),
        ({"train": {"max_steps": "ten"}}, "train.max_steps: must be an integer"),
        ({"train": {"lr": "fast"}}, "train.lr: must be a number"),
        ({"synth": {"scale": "0.9-1.1"}}, "synth.scale"),
        ({"model": {"arch": "vit_s"}}, "model.arch: must be one of"),
        ({"lora": 4}, "lora: must be a mapping"),
    ],
)
def test_unknown_and_mistyped_params_through_the_cli(
    tmp_path: Path, world: World, change: dict[str, Any], message: str
) -> None:
    data = copy.deepcopy(world.data)
    for section, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section].update(value)
        else:
            data[section] = value
    params = write_params(tmp_path / "params.yaml", data)
    result = invoke("train", "run", "-p", params, "--data", world.synthetic,
                    "--out", tmp_path / "adapter", "--log", tmp_path / "log.csv")  # fmt: skip
    assert_one_line_error(result, f"error: {params}: ", message)
    assert listing(tmp_path) == ["params.yaml"]


@pytest.mark.parametrize(
    ("text", "message"), [("seed: [0\n", "not valid YAML"), ("- 1\n- 2\n", "must be a mapping")]
)
def test_params_that_are_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    result = invoke("synth", "extract", "-p", params, "--out", tmp_path / "x.h5")
    assert_one_line_error(result, params, message)


# ---- the synthetic set, the base checkpoint, the adapter ---------------------------------------


def _damaged_synthetic(kind: str, world: World, path: Path) -> str:
    """Write a bad synthetic.h5 of `kind` at `path`; returns the expected message."""
    raw = world.synthetic.read_bytes()
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
        return "not a readable HDF5 file (Unable to synchronously open file (truncated file"
    if kind == "not HDF5":
        path.write_text("image,label\n1,2\n")
        return "not a readable HDF5 file"
    if kind == "empty file":
        path.write_bytes(b"")
        return "not a readable HDF5 file"
    if kind == "foreign HDF5":
        with h5py.File(path, "w") as f:
            f["image"] = np.zeros((2, 1, 8, 8), np.float16)
        return "not a fewsam-synthetic file"
    if kind == "exemplars file":
        path.write_bytes(world.exemplars.read_bytes())
        return "not a fewsam-synthetic file"
    if kind == "incomplete":
        path.write_bytes(raw)
        with h5py.File(path, "a") as f:
            f.attrs["complete"] = 0
        return "incomplete synthetic set (interrupted write)"
    if kind == "shapes disagree":
        path.write_bytes(raw)
        with h5py.File(path, "a") as f:
            del f["label"]
            f["label"] = np.zeros((3, 64, 64), np.uint8)
        return "inconsistent synthetic array shapes"
    assert kind == "missing"
    return "not found (run the previous pipeline stage first)"


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "not HDF5",
        "empty file",
        "foreign HDF5",
        "exemplars file",
        "incomplete",
        "shapes disagree",
        "missing",
    ],
)
def test_train_refuses_a_bad_synthetic_set(tmp_path: Path, world: World, kind: str) -> None:
    data = tmp_path / "synthetic.h5"
    message = _damaged_synthetic(kind, world, data)
    out, log = tmp_path / "models" / "adapter", tmp_path / "log.csv"
    result = invoke("train", "run", "-p", world.params, "--data", data, "--out", out, "--log", log)
    assert_one_line_error(result, f"{data}: {message}")
    assert not out.exists() and not log.exists() and not (tmp_path / "models" / ".resume").exists()


def _fake_vit_b() -> dict[str, torch.Tensor]:
    """The tensor names and shapes by which a vit_b checkpoint is recognized (no real weights)."""
    state = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(768) for i in range(12)})
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_train_refuses_a_checkpoint_of_another_arch(
    tmp_path: Path, world: World, suffix: str
) -> None:
    from safetensors.torch import save_file

    ckpt = tmp_path / f"sam_vit_b{suffix}"
    if suffix == ".pth":
        torch.save(_fake_vit_b(), ckpt)
    else:
        save_file(_fake_vit_b(), str(ckpt))
    data = copy.deepcopy(world.data)
    data["model"]["checkpoint"] = str(ckpt)
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "adapter"
    result = invoke("train", "run", "-p", params, "--data", world.synthetic, "--out", out,
                    "--log", tmp_path / "log.csv")  # fmt: skip
    assert_one_line_error(result, ckpt, "do not fit model.arch tiny", "look like vit_b")
    assert not out.exists()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"input_size": 128}, "adapter has input_size 64, params say model.input_size 128"),
        ({"arch": "vit_b"}, "adapter has arch tiny, params say model.arch vit_b"),
    ],
)
def test_evaluate_refuses_an_adapter_of_another_size(
    tmp_path: Path, world: World, model: dict[str, Any], message: str
) -> None:
    data = copy.deepcopy(world.data)
    data["model"].update(model)
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "reports"
    result = invoke("evaluate", "run", "-p", params, "--adapter", world.adapter, "--out", out)
    assert_one_line_error(result, world.adapter / "config.json", message)
    assert listing(out) == []


def test_evaluate_refuses_an_adapter_of_other_classes_in_one_line(
    tmp_path: Path, world: World
) -> None:
    adapter = write_adapter(tmp_path / "adapter", world.data, classes=("liver", "spleen"))
    out = tmp_path / "reports"
    result = invoke("evaluate", "run", "-p", world.params, "--adapter", adapter, "--out", out)
    assert_one_line_error(result, adapter / "config.json", "adapter classes ['liver', 'spleen']")
    assert listing(out) == []


def test_predict_refuses_an_adapter_whose_tensors_and_config_disagree(
    tmp_path: Path, world: World
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter.safetensors").write_bytes(
        (world.adapter / "adapter.safetensors").read_bytes()
    )
    config = json.loads((world.adapter / "config.json").read_text())
    (adapter / "config.json").write_text(json.dumps({**config, "num_classes": 3}))
    out = tmp_path / "seg.nii.gz"
    result = invoke("predict", "--adapter", adapter, "-i", world.scan, "-o", out,
                    "-p", world.params)  # fmt: skip
    assert_one_line_error(
        result, adapter / "adapter.safetensors", "holds 8 classes, its config says 3"
    )
    assert not out.exists()


# ---- predict inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((16, 16), "2D image (16x16): expected 3D or 4D"),
        ((16, 16, 6, 2, 2), "5D image (16x16x6x2x2): expected 3D or 4D"),
        ((16, 16, 6, 2), "has 2 channel(s) but the adapter takes 1 channel (CT)"),
    ],
)
def test_predict_refuses_images_of_the_wrong_dimensionality(
    tmp_path: Path, world: World, shape: tuple[int, ...], message: str
) -> None:
    scan = write_scan(tmp_path / "scan.nii.gz", shape)
    out = tmp_path / "out"
    result = invoke("predict", "--adapter", world.adapter, "-i", scan, "-o", out,
                    "-p", world.params)  # fmt: skip
    assert_one_line_error(result, scan, message)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["truncated", "not NIfTI"])
def test_predict_refuses_damaged_scans(tmp_path: Path, world: World, kind: str) -> None:
    scan = tmp_path / "scan.nii.gz"
    if kind == "truncated":
        big = write_scan(tmp_path / "big.nii.gz", (64, 64, 32))
        scan.write_bytes(big.read_bytes()[:20_000])
        message = "truncated"
    else:
        scan.write_text("patient,age\nA,40\n")
        message = "not a readable NIfTI file"
    out = tmp_path / "out"
    result = invoke("predict", "--adapter", world.adapter, "-i", scan, "-o", out,
                    "-p", world.params)  # fmt: skip
    assert_one_line_error(result, scan, message)
    assert not out.exists() or listing(out) == []


# ---- output paths that cannot be written -------------------------------------------------------


def _commands(world: World, blocked: Path) -> dict[str, list[Any]]:
    """Each stage with one output under `blocked`, a regular file (a folder cannot be made)."""
    p = ("-p", world.params)
    return {
        "extract --out": ["synth", "extract", *p, "--out", blocked / "ex.h5",
                          "--csv", world.tmp / "never.csv"],
        "extract --csv": ["synth", "extract", *p, "--out", world.tmp / "never.h5",
                          "--csv", blocked / "ex.csv"],
        "synth run --out": ["synth", "run", *p, "--exemplars", world.exemplars,
                            "--out", blocked / "synthetic.h5"],
        "train run --out": ["train", "run", *p, "--data", world.synthetic,
                            "--out", blocked / "adapter", "--log", world.tmp / "never_log.csv"],
        "train run --out file": ["train", "run", *p, "--data", world.synthetic,
                                 "--out", blocked, "--log", world.tmp / "never_log.csv"],
        "train run --log": ["train", "run", *p, "--data", world.synthetic,
                            "--out", world.tmp / "never_adapter", "--log", blocked / "log.csv"],
        "evaluate run --out": ["evaluate", "run", *p, "--adapter", world.adapter,
                               "--out", blocked / "reports"],
        "predict -o file": ["predict", *p, "--adapter", world.adapter, "-i", world.scan,
                            "-o", blocked / "seg.nii.gz"],
        "predict -o folder": ["predict", *p, "--adapter", world.adapter, "-i", world.scan,
                              "-o", blocked / "sub"],
    }  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        "extract --out",
        "extract --csv",
        "synth run --out",
        "train run --out",
        "train run --out file",
        "train run --log",
        "evaluate run --out",
        "predict -o file",
        "predict -o folder",
    ],
)
def test_unwritable_outputs_fail_before_the_work(world: World, command: str) -> None:
    blocked = world.tmp / "blocked"
    blocked.write_text("a regular file where a folder is needed\n")
    before = listing(world.tmp)
    args = _commands(world, blocked)[command]
    line = assert_one_line_error(invoke(*args), blocked)
    assert "cannot be written" in line or "is a file" in line, line
    assert listing(world.tmp) == before  # nothing written anywhere, not even a resume state
