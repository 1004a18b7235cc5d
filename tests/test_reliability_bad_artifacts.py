"""Bad files between the stages, bad models and unwritable outputs, through the command line:
exit code 2, one line naming the file, nothing finished left.

Channel counts under `predict` and adapters of other classes under `evaluate infer` are in
test_predict.py and test_inference.py; checkpoint loading in test_checkpoint.py; adapter loading
in test_adapter_io.py. Bad datasets and params: test_reliability_bad_input.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from reliability_files import (
    World,
    assert_one_line_error,
    invoke,
    listing,
    train_with_checkpoint,
    write_adapter,
    write_params,
    write_scan,
)

from synth.datasets.synapse import CLASSES

pytestmark = pytest.mark.usefixtures("one_thread")


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
    result, out = train_with_checkpoint(tmp_path, world, ckpt)
    assert_one_line_error(result, ckpt, "do not fit model.arch tiny", "look like vit_b")
    assert not out.exists()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"input_size": 128}, "adapter has input_size 64, params say model.input_size 128"),
        ({"arch": "vit_b"}, "adapter has arch tiny, params say model.arch vit_b"),
    ],
)
def test_infer_refuses_an_adapter_of_another_size(
    tmp_path: Path, world: World, model: dict[str, Any], message: str
) -> None:
    data = copy.deepcopy(world.data)
    data["model"].update(model)
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "reports"
    result = invoke("evaluate", "infer", "-p", params, "--adapter", world.adapter, "--out", out)
    assert_one_line_error(result, world.adapter / "config.json", message)
    assert listing(out) == []


def test_infer_refuses_an_adapter_of_other_classes_in_one_line(
    tmp_path: Path, world: World
) -> None:
    adapter = write_adapter(tmp_path / "adapter", world.data, classes=("liver", "spleen"))
    out = tmp_path / "reports"
    result = invoke("evaluate", "infer", "-p", world.params, "--adapter", adapter, "--out", out)
    # Both class lists in full, the dataset's being the 8 Synapse organs of the params' dataset.
    line = assert_one_line_error(result)
    assert line == (
        f"error: {adapter / 'config.json'}: adapter classes ['liver', 'spleen'] differ from the "
        f"dataset's {list(CLASSES)}"
    )
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
        ((16, 16, 6, 2), "has 2 channel(s) but the model takes 1 channel (CT)"),
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
        "evaluate infer --out": ["evaluate", "infer", *p, "--adapter", world.adapter,
                                 "--out", blocked / "reports"],
        "evaluate score --out": ["evaluate", "score", *p, "--pred", world.tmp,
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
        "evaluate infer --out",
        "evaluate score --out",
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
