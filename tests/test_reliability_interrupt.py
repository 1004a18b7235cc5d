"""Runs killed half-way with SIGKILL (no chance to clean up): nothing that looks finished is left,
and running the same command again finishes, with the same result as an uninterrupted run.

Covered elsewhere: an exception inside synthesis or its writer leaves no file
(test_synthesize), a training run stopped after a checkpoint resumes to the same weights in
process (test_train_loop.test_resume_gives_the_same_weights).
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from exemplar_sets import exemplar_set, write_exemplar_set
from reliability_files import (
    assert_one_line_error,
    cpu_params,
    invoke,
    write_adapter,
    write_params,
    write_scan,
)
from safetensors.torch import load_file
from synthetic_sets import bright_squares

import train.loop
from core.atomic import clean_stale, write_text
from core.errors import InputError
from core.params import parse_params
from core.schema import read_synthetic_info
from train.resume import LOG_FILE, STATE_FILE, resume_dir_for
from train.run import run as train_run

FEWSAM = Path(sys.executable).parent / "fewsam"
# One torch thread in the killed processes and in this one: identical arithmetic, and no
# slowdown from two OpenMP threads fighting over busy cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


def temp_files(folder: Path) -> list[Path]:
    """Hidden temporary files of atomic writes (`.name.XXXXXXXX....tmp`) under `folder`."""
    return sorted(p for p in folder.rglob(".*.tmp"))


def kill_when(args: list[Any], ready: Callable[[], bool], tmp: Path, timeout: float = 120) -> None:
    """Start `fewsam ARGS`, wait until `ready()`, then SIGKILL it and its worker processes."""
    with open(tmp / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [FEWSAM, *map(str, args)], env=ENV, stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(
                    f"finished before it could be killed: {(tmp / 'killed.log').read_text()}"
                )
            assert time.monotonic() < deadline, "never reached the point to kill at"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already: the failure above says why
            os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers, as a crash would
        proc.wait()
    # Worker processes (forked while the output was open) hold its HDF5 lock until they are gone.
    deadline = time.monotonic() + 10
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.05)
    (tmp / "killed.log").unlink()


# ---- synthesis ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_synthesis_leaves_nothing_finished_and_reruns(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    data = copy.deepcopy(params_dict)
    data["synth"].update(samples=3000, workers=2)  # about 14 MB, a few seconds
    params = write_params(tmp_path / "params.yaml", data)
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", exemplar_set())
    out = tmp_path / "synthetic.h5"
    args = ["synth", "run", "-p", params, "--exemplars", exemplars, "--out", out]

    def a_third_written() -> bool:
        return any(p.stat().st_size > 4_000_000 for p in temp_files(tmp_path))

    kill_when(args, a_third_written, tmp_path)
    assert not out.exists()
    (leftover,) = temp_files(tmp_path)  # SIGKILL gives no chance to remove it
    # What training reads refuses it: its HDF5 metadata was never flushed, or `complete` never set.
    with pytest.raises(InputError, match="not a readable HDF5|not a fewsam-synth|incomplete") as e:
        read_synthetic_info(leftover)
    assert "lock" not in str(e.value)

    result = subprocess.run([FEWSAM, *map(str, args)], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert read_synthetic_info(out).length == 3000
    # The rerun removed the killed run's temporary file.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exemplars.h5",
        "params.yaml",
        "synthetic.h5",
    ]


# ---- training ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, params_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rerun resumes: it says so, keeps the killed run's log rows, runs only the rest.

    Every step is seeded by its index, so the same weights would also come from a rerun that
    silently started at step 0; the resumed line, the kept timings and the steps this process
    executes are what show that it continued.
    """
    data = cpu_params(params_dict, tmp_path)
    data["train"].update(max_steps=80, batch_size=2, warmup_steps=4, save_every=5)
    params = write_params(tmp_path / "params.yaml", data)
    synthetic = bright_squares(tmp_path / "synthetic.h5", n=8)

    reference = tmp_path / "reference"
    train_run(parse_params(data), synthetic, reference / "adapter", reference / "log.csv")

    out, log = tmp_path / "models" / "adapter", tmp_path / "log.csv"
    state = resume_dir_for(out) / STATE_FILE
    args = ["train", "run", "-p", params, "--data", synthetic, "--out", out, "--log", log]
    partial_log = resume_dir_for(out) / LOG_FILE  # written after each checkpoint

    def past_step_20() -> bool:
        return partial_log.is_file() and len(partial_log.read_text().splitlines()) > 20

    kill_when(args, past_step_20, tmp_path)
    assert not out.exists() and not log.exists()
    step = torch.load(state, weights_only=True)["step"]
    assert 20 <= step < 80 and step % 5 == 0, step
    # Rows of the steps before the checkpoint, as the killed process wrote them (a kill between
    # the state and the log write leaves fewer, never other ones).
    before = partial_log.read_text().splitlines()[: 1 + step]
    assert len(before) > 20

    executed: list[int] = []
    step_fn = train.loop._step

    def recording(run: Any, batch: Any, index: int, params: Any, ctx: Any) -> Any:
        executed.append(index)
        return step_fn(run, batch, index, params, ctx)

    monkeypatch.setattr(train.loop, "_step", recording)
    result = invoke(*args)  # the same command again: `train.resume: auto`, in this process
    assert result.exit_code == 0, result.output
    assert f"resumed from step {step} ({state})" in result.stderr
    assert executed == list(range(step, 80))
    assert not resume_dir_for(out).exists()
    # The killed run's rows are kept byte for byte, their `seconds` included.
    assert log.read_text().splitlines()[: len(before)] == before
    mine, theirs = (
        load_file(str(out / "adapter.safetensors")),
        load_file(str(reference / "adapter" / "adapter.safetensors")),
    )
    assert mine.keys() == theirs.keys() and mine
    for name, tensor in theirs.items():
        assert torch.equal(mine[name], tensor), name
    # The log is whole too: every step once, with the uninterrupted run's losses.
    rows = [line.split(",")[:2] for line in log.read_text().splitlines()]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(80)]
    assert rows == [r.split(",")[:2] for r in (reference / "log.csv").read_text().splitlines()]


# ---- predict -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_predict_leaves_whole_outputs_or_none(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    data = cpu_params(params_dict, tmp_path)
    data["evaluate"]["batch_size"] = 2
    params = write_params(tmp_path / "params.yaml", data)
    adapter = write_adapter(tmp_path / "adapter", data)
    shape = (48, 40, 60)  # I x J x K: 60 slices per scan, about a second each
    names = [f"scan{i}" for i in range(6)]
    for i, name in enumerate(names):
        write_scan(tmp_path / "in" / f"{name}.nii.gz", shape, seed=i)
    out = tmp_path / "out"
    args = ["predict", "--adapter", adapter, "-i", tmp_path / "in", "-o", out, "-p", params]

    def first_written() -> bool:
        return out.is_dir() and any(p.name.endswith(".nii.gz") for p in out.iterdir()
                                    if not p.name.startswith("."))  # fmt: skip

    kill_when(args, first_written, tmp_path)
    finished = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 1 <= len(finished) < len(names)
    # Scans are done in order: the finished ones are the first, each one whole.
    assert finished == [f"{n}.nii.gz" for n in names[: len(finished)]]
    for name in finished:
        seg = nib.load(out / name)
        assert seg.shape == shape and np.asarray(seg.dataobj).dtype == np.uint8
    # A kill during a write may leave one hidden temporary file, never anything else.
    assert len(temp_files(out)) <= 1

    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.nii.gz" for n in names]


# ---- temporary files of killed writes ------------------------------------------------------------


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path: Path) -> None:
    final = tmp_path / "seg.nii.gz"
    stale = tmp_path / ".seg.nii.gz.k2j4_x9q.nii.gz.tmp"  # a killed process's, as mkstemp names
    fresh = tmp_path / ".seg.nii.gz.a1b2c3d4.nii.gz.tmp"  # this process's own, still being written
    other = tmp_path / ".seg.nii.gz.old.k2j4_x9q.tmp"  # the temporary file of `seg.nii.gz.old`
    for path in (stale, fresh, other):
        path.write_text("partial")
    past = time.time() - 3600
    for path in (stale, other):
        os.utime(path, (past, past))
    write_text(final, "done")
    assert final.read_text() == "done"
    assert not stale.exists() and fresh.exists() and other.exists()
    os.utime(fresh, (past, past))
    assert clean_stale(final) == [fresh]
    assert clean_stale(tmp_path / "missing folder" / "x.h5") == []


def test_a_stale_temporary_file_is_not_an_output(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    """What a killed synthesis leaves (a hidden, incomplete file) is refused by training."""
    synthetic = bright_squares(tmp_path / "synthetic.h5", n=2)
    partial = tmp_path / ".synthetic.h5.k2j4_x9q.h5.tmp"
    partial.write_bytes(synthetic.read_bytes()[:3000])
    params = write_params(tmp_path / "params.yaml", cpu_params(params_dict, tmp_path))
    result = invoke("train", "run", "-p", params, "--data", partial,
                    "--out", tmp_path / "adapter", "--log", tmp_path / "log.csv")  # fmt: skip
    assert_one_line_error(result, partial, "not a readable HDF5 file")
