"""A small working project in a folder, for the fault-injection tests (`test_reliability_*`).

`make_world` writes a Synapse-layout dataset (`dataset_files.make_synapse`: 6 x 16 x 16 volumes,
cases 5, 6, 7 train and 1, 2 test), a params file for a CPU run of the tiny SAM at 64 px with
random base weights, an exemplars file, a synthetic set, an adapter for the 8 Synapse organs and
one 3D CT scan. Each stage's good input is there, so a test changes one thing and runs one command.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from click.testing import Result
from dataset_files import make_synapse
from exemplar_sets import exemplar_set, write_exemplar_set
from synthetic_sets import bright_squares
from typer.testing import CliRunner

from core.params import parse_params, to_dict
from fewsam.cli import app
from synth.datasets.synapse import CLASSES
from train.adapter_io import save_adapter
from train.model import build_fewsam


@dataclass(frozen=True)
class World:
    """Paths of a project whose every stage input is valid."""

    tmp: Path
    root: Path  # Synapse dataset
    params: Path  # params.yaml for it
    data: dict[str, Any]  # the params as a mapping (copy before changing)
    exemplars: Path
    synthetic: Path
    adapter: Path  # 8 Synapse classes, CT, tiny at 64 px, random base
    scan: Path  # a 3D CT scan, 16 x 16 x 6 (I x J x K)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with `n` threads inside the block.

    One thread: on a machine whose cores are busy, two OpenMP threads per step can be 30x slower
    than one (measured: 2.4 s against 0.06 s for a 64 px training step at load 4 on 2 cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_params(params_dict: dict[str, Any], root: Path) -> dict[str, Any]:
    """Repository params for a seconds-long CPU run on the dataset at `root`."""
    data = copy.deepcopy(params_dict)
    data["exemplars"] = 3
    data["dataset"].update(format="synapse", root=str(root), slice_size=0)
    data["synth"].update(samples=8, workers=1, pool_per_case=2)
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(
        device="cpu", max_steps=2, batch_size=2, warmup_steps=0, save_every=1, num_workers=0
    )
    data["train"].update(resume="auto", compile=False)
    data["evaluate"].update(batch_size=4, zero_shot_prompts=[], overlays_per_case=1, max_cases=0)
    return data


def write_params(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def write_adapter(folder: Path, data: dict[str, Any], classes: tuple[str, ...] = CLASSES) -> Path:
    """An untrained adapter (LoRA and heads as initialized) for `classes`, CT, params' model."""
    params = parse_params(data)
    torch.manual_seed(0)
    model = build_fewsam(params.model, params.lora, len(classes))
    config = {"classes": list(classes), "channels": ["CT"], "dataset": to_dict(params.dataset)}
    save_adapter(model, folder, config)
    return folder


def write_scan(path: Path, shape: tuple[int, ...] = (16, 16, 6), seed: int = 0) -> Path:
    """A float32 NIfTI of HU-like noise (I x J x K [x ...]) with a 0.8 x 0.8 x 2.5 mm grid."""
    data = np.random.default_rng(seed).normal(40.0, 80.0, shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    return path


def make_world(tmp: Path, params_dict: dict[str, Any]) -> World:
    root = make_synapse(tmp / "ds")
    data = cpu_params(params_dict, root)
    return World(
        tmp=tmp,
        root=root,
        params=write_params(tmp / "params.yaml", data),
        data=data,
        exemplars=write_exemplar_set(tmp / "exemplars.h5", exemplar_set(n=4, pool=2, size=32)),
        synthetic=bright_squares(tmp / "synthetic.h5", n=4),
        adapter=write_adapter(tmp / "adapter", data),
        scan=write_scan(tmp / "scan.nii.gz"),
    )


def invoke(*args: str | Path) -> Result:
    """Run `fewsam ARGS` in this process (stderr kept apart from stdout)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def train_with_checkpoint(tmp: Path, world: World, checkpoint: Path) -> tuple[Result, Path]:
    """`fewsam train run` on the world's synthetic set with `model.checkpoint` set to
    `checkpoint`; returns the result and the adapter folder it was asked to write."""
    data = copy.deepcopy(world.data)
    data["model"]["checkpoint"] = str(checkpoint)
    params = write_params(tmp / "params.yaml", data)
    out = tmp / "adapter"
    result = invoke("train", "run", "-p", params, "--data", world.synthetic, "--out", out,
                    "--log", tmp / "log.csv")  # fmt: skip
    return result, out


def assert_one_line_error(result: Result, *fragments: str | Path) -> str:
    """Exit code 2, exactly one `error: ...` line on stderr holding every fragment, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


# The console script that `pip install` wrote beside this interpreter (`[project.scripts]`).
FEWSAM = Path(sys.executable).parent / "fewsam"


def run_installed(
    *args: str | Path, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed `fewsam ARGS` in a fresh process, in `cwd` (default: this one's). The
    environment, PYTHONPATH included, is inherited, so the code it imports is the code under
    test. `timeout` only stops a hung process; nothing is asserted about time."""
    assert FEWSAM.is_file(), f"{FEWSAM} missing: install the project (pip install -e .)"
    return subprocess.run(
        [str(FEWSAM), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        timeout=timeout,
    )


def assert_installed_one_line_error(
    proc: subprocess.CompletedProcess[str], *fragments: str | Path
) -> str:
    """The contract through a real process: exit code 2, exactly one line on stderr, starting
    with `error: ` and holding every fragment, and no traceback on either stream (Typer prints
    one for an unexpected exception; the test runner would have swallowed it)."""
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, output
    assert proc.returncode == 2, (proc.returncode, output)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    return lines[0]


def listing(folder: Path) -> list[str]:
    """Every path under `folder`, relative, sorted (hidden temporary files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# Fixtures of the reliability tests (registered by conftest.py's pytest_plugins): each module
# asks for them with `pytestmark = pytest.mark.usefixtures("one_thread")` and a `world` argument.
@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, params_dict: dict[str, Any]) -> World:
    return make_world(tmp_path_factory.mktemp("world"), params_dict)
