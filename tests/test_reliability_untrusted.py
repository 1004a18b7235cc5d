"""Files handed to fewsam are data, never code: pickles with a payload are refused, not run.

The payload is a pickled object whose unpickling calls `open(marker, "w")`, creating a file: if
the marker exists afterwards, the pickle ran. `test_the_payload_runs_when_loaded_unsafely` shows
that each payload file written here does create its marker when loaded the unsafe way, so a
marker that stays absent means the loader refused the code, not that the payload was harmless.
Covered elsewhere: `train.base_weights.load_sam` on such a `.pth`
(test_checkpoint.test_pickle_payload_does_not_execute) and `yaml.safe_load` of a params file with
a python tag (test_params.test_yaml_is_read_safely).
"""

from __future__ import annotations

import copy
import json
import pickle
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from dataset_files import make_synapse_npz
from reliability_files import (
    World,
    assert_one_line_error,
    invoke,
    train_with_checkpoint,
    write_params,
)
from sam_helpers import perturbed_state
from test_checkpoint import _CreatesFile

from train.base_weights import sha256_file
from train.resume import STATE_FILE, load_state, resume_dir_for

pytestmark = pytest.mark.usefixtures("one_thread")


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A tiny-SAM state dict (64 px) with one tensor replaced by the payload, as a .pth."""
    state: dict[str, Any] = perturbed_state(input_size=64)
    state["image_encoder.neck.0.weight"] = _CreatesFile(marker)
    torch.save(state, path)
    return path


def evil_adapter_tensors(path: Path, marker: Path) -> Path:
    """The payload saved with torch.save as an adapter's tensor file."""
    torch.save({"sam.mask_decoder.mask_tokens.weight": _CreatesFile(marker)}, path)
    return path


def evil_resume_state(path: Path, marker: Path) -> Path:
    """A resume state (`state.pt`) whose model entry is the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 1, "hash": "x", "model": _CreatesFile(marker)}, path)
    return path


def evil_npz(path: Path, marker: Path) -> Path:
    """A TransUNet slice whose image is an object array holding the payload."""
    payload = np.empty(1, dtype=object)
    payload[0] = _CreatesFile(marker)
    np.savez(path, image=payload, label=np.zeros((16, 16), np.float32))
    return path


def evil_params(path: Path, marker: Path) -> Path:
    """A params file whose YAML python tag runs `touch marker` when constructed."""
    command = f"touch {shlex.quote(str(marker))}"  # a JSON string is a valid YAML scalar
    path.write_text(f"seed: !!python/object/apply:os.system [{json.dumps(command)}]\n")
    return path


# The only unsafe loads of the project, on purpose and on files this module writes: they prove
# each payload fixture really runs when loaded without the guards (`weights_only=False`,
# `allow_pickle=True`, `yaml.unsafe_load`), so the tests that it never runs through fewsam's
# loaders can fail.
UNSAFE_LOADS: dict[str, Callable[[Path, Path], object]] = {
    "pickle of the payload object": lambda tmp, marker: pickle.loads(
        pickle.dumps(_CreatesFile(marker))
    ),
    "checkpoint .pth": lambda tmp, marker: torch.load(
        evil_checkpoint(tmp / "sam.pth", marker), weights_only=False
    ),
    # (named .pth: this torch reads a file named .safetensors with safetensors whatever it holds)
    "adapter tensors": lambda tmp, marker: torch.load(
        evil_adapter_tensors(tmp / "adapter.pth", marker), weights_only=False
    ),
    "resume state": lambda tmp, marker: torch.load(
        evil_resume_state(tmp / "state.pt", marker), weights_only=False
    ),
    "npz slice": lambda tmp, marker: np.load(evil_npz(tmp / "s.npz", marker), allow_pickle=True)[
        "image"
    ],
    "params YAML tag": lambda tmp, marker: yaml.unsafe_load(
        evil_params(tmp / "params.yaml", marker).read_text()
    ),
}


@pytest.mark.parametrize("kind", list(UNSAFE_LOADS))
def test_the_payload_runs_when_loaded_unsafely(tmp_path: Path, kind: str) -> None:
    """The control of every test below: the same files, loaded the unsafe way (pickle.loads,
    torch.load(weights_only=False), np.load(allow_pickle=True), yaml.unsafe_load), do run the
    payload and create the marker."""
    marker = tmp_path / "payload_ran"
    assert not marker.exists()
    UNSAFE_LOADS[kind](tmp_path, marker)
    assert marker.is_file()


def test_checkpoint_payload_through_train_run(tmp_path: Path, world: World) -> None:
    marker = tmp_path / "payload_ran"
    ckpt = evil_checkpoint(tmp_path / "sam.pth", marker)
    result, out = train_with_checkpoint(tmp_path, world, ckpt)
    assert_one_line_error(result, ckpt, "refused: holds pickled objects other than tensors")
    assert not marker.exists() and not out.exists()


def _adapter_on_evil_base(tmp_path: Path, world: World, marker: Path) -> tuple[Path, Path]:
    """An adapter whose config records the payload .pth as its base, with that file's SHA-256:
    the hash check passes, so only the weights-only loader stands between the file and the code."""
    ckpt = evil_checkpoint(tmp_path / "base.pth", marker)
    adapter = tmp_path / "adapter"
    shutil.copytree(world.adapter, adapter)
    config = json.loads((adapter / "config.json").read_text())
    config.update(base_checkpoint=str(ckpt), base_sha256=sha256_file(ckpt))
    (adapter / "config.json").write_text(json.dumps(config))
    return adapter, ckpt


def test_base_payload_recorded_by_an_adapter_through_predict(tmp_path: Path, world: World) -> None:
    marker = tmp_path / "payload_ran"
    adapter, ckpt = _adapter_on_evil_base(tmp_path, world, marker)
    out = tmp_path / "seg.nii.gz"
    result = invoke("predict", "--adapter", adapter, "-i", world.scan, "-o", out,
                    "-p", world.params)  # fmt: skip
    assert_one_line_error(result, ckpt, "refused")
    assert not marker.exists() and not out.exists()


def test_base_payload_through_evaluate_infer(tmp_path: Path, world: World) -> None:
    marker = tmp_path / "payload_ran"
    adapter, ckpt = _adapter_on_evil_base(tmp_path, world, marker)
    data = copy.deepcopy(world.data)
    data["model"]["checkpoint"] = str(ckpt)
    params = write_params(tmp_path / "params.yaml", data)
    result = invoke("evaluate", "infer", "-p", params, "--adapter", adapter,
                    "--out", tmp_path / "reports")  # fmt: skip
    assert_one_line_error(result, ckpt, "refused")
    assert not marker.exists() and not (tmp_path / "reports" / "predictions").exists()


@pytest.mark.parametrize("name", ["adapter.safetensors", "adapter.pth"])
def test_adapter_payload_through_predict(tmp_path: Path, world: World, name: str) -> None:
    """A pickle saved as the adapter's tensors (or beside its config as a .pth) is never read as
    a pickle: adapters are safetensors only."""
    marker = tmp_path / "payload_ran"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copy(world.adapter / "config.json", adapter)
    evil_adapter_tensors(adapter / name, marker)
    out = tmp_path / "seg.nii.gz"
    result = invoke("predict", "--adapter", adapter, "-i", world.scan, "-o", out,
                    "-p", world.params)  # fmt: skip
    assert_one_line_error(result, adapter / "adapter.safetensors", "not a readable adapter")
    assert not marker.exists() and not out.exists()


def test_payload_in_the_resume_state_is_ignored_and_the_run_starts_over(
    tmp_path: Path, world: World
) -> None:
    marker = tmp_path / "payload_ran"
    out = tmp_path / "models" / "adapter"
    state = evil_resume_state(resume_dir_for(out) / STATE_FILE, marker)
    assert load_state(state.parent, "x", quiet=True) is None
    result = invoke("train", "run", "-p", world.params, "--data", world.synthetic, "--out", out,
                    "--log", tmp_path / "log.csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unreadable" in result.stderr and "starting over" in result.stderr
    assert not marker.exists()
    assert (out / "adapter.safetensors").is_file() and not state.exists()


def test_params_with_a_python_tag_through_the_cli(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    params = evil_params(tmp_path / "params.yaml", marker)
    result = invoke("synth", "extract", "-p", params, "--out", tmp_path / "ex.h5")
    assert_one_line_error(result, params, "not valid YAML")
    assert not marker.exists()


def test_npz_slice_with_a_payload_through_data_check(tmp_path: Path, world: World) -> None:
    """TransUNet's preprocessed slices are .npz files; an object array in one is a pickle."""
    marker = tmp_path / "payload_ran"
    root = make_synapse_npz(tmp_path / "npz data")
    evil = evil_npz(root / "train_npz" / "case0005_slice001.npz", marker)
    data = copy.deepcopy(world.data)
    data["dataset"].update(format="synapse-npz", root=str(root))
    result = invoke("data", "check", "-p", write_params(tmp_path / "params.yaml", data))
    assert result.exit_code == 2
    assert f"{evil}: " in result.stdout and "1 problem(s)" in result.stderr
    assert not marker.exists()
