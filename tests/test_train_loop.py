"""The training loop end to end on a tiny random-weight SAM at 64 px (CPU, a few seconds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO
from safetensors.torch import load_file
from synthetic_sets import bright_squares

import train.loop
from core.params import Params, parse_params
from train.resume import LOG_FILE, STATE_FILE, resume_dir_for
from train.run import run

# Each test trains for a few seconds (dozens of steps of a tiny SAM in all).
pytestmark = pytest.mark.slow


def tiny_params(**train: Any) -> Params:
    """Repository params with a 64 px random-weight tiny model and a short CPU run."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(
        max_steps=8, batch_size=4, lr=3e-3, warmup_steps=2, num_workers=0, save_every=100
    )
    data["train"].update(device="cpu", resume="auto", compile=False, prompt_dropout=0.5)
    data["train"].update(train)
    return parse_params(data)


def train_once(tmp: Path, data: Path, params: Params, **kwargs: Any) -> dict[str, torch.Tensor]:
    out = tmp / "models" / "adapter"
    run(params, data, out, tmp / "train_log.csv", **kwargs)
    return load_file(str(out / "adapter.safetensors")) if out.exists() else {}


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bright_squares(tmp_path_factory.mktemp("data") / "synthetic.h5")


@pytest.fixture(scope="module")
def reference(squares: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted 8-step run with no workers: adapter tensors and log."""
    tmp = tmp_path_factory.mktemp("reference")
    weights = train_once(tmp, squares, tiny_params())
    return {"weights": weights, "log": read_log(tmp / "train_log.csv"), "tmp": tmp}


def record_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indices of the steps this process executes from now on, in order."""
    executed: list[int] = []
    step = train.loop._step

    def recording(run_: Any, batch: Any, index: int, params: Params, ctx: Any) -> Any:
        executed.append(index)
        return step(run_, batch, index, params, ctx)

    monkeypatch.setattr(train.loop, "_step", recording)
    return executed


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_outputs(reference: dict[str, Any]) -> None:
    tmp = reference["tmp"]
    out = tmp / "models" / "adapter"
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["square"] and config["channels"] == ["CT"]
    assert config["dataset"]["format"] == "synapse"
    assert len(config["params_hash"]) == 16
    assert config["train"]["max_steps"] == 8 and config["model"]["input_size"] == 64
    assert [int(r["step"]) for r in reference["log"]] == list(range(8))
    assert list(reference["log"][0]) == ["step", "loss", "ce", "dice", "lr", "seconds"]
    assert float(reference["log"][0]["lr"]) == pytest.approx(1.5e-3)  # warmup 1/2 of 3e-3
    assert not resume_dir_for(out).parent.exists()  # removed once the run completed


def test_overfits_trivial_set(squares: Path, tmp_path: Path) -> None:
    train_once(tmp_path, squares, tiny_params(max_steps=20))
    losses = [float(r["loss"]) for r in read_log(tmp_path / "train_log.csv")]
    assert sum(losses[-3:]) / 3 <= 0.5 * losses[0], losses


def test_workers_do_not_change_the_adapter(
    squares: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    weights = train_once(tmp_path, squares, tiny_params(num_workers=2))
    assert_same_weights(weights, reference["weights"])


def test_resume_gives_the_same_weights(
    squares: Path,
    reference: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Resumed: it says so, keeps the logged rows as they were, runs only the remaining steps.

    Every step is seeded by its index, so equal weights alone would also come from a run that
    silently started over (test_without_its_checkpoint_a_run_starts_over).
    """
    params = tiny_params(save_every=3)
    assert train_once(tmp_path, squares, params, stop_after=5) == {}  # interrupted after step 5
    folder = resume_dir_for(tmp_path / "models" / "adapter")
    step = torch.load(folder / STATE_FILE, weights_only=True)["step"]
    assert step == 3  # the last checkpoint
    before = (folder / LOG_FILE).read_text().splitlines()
    assert len(before) == 1 + step  # the header and the rows of steps 0..2, written with the state
    capsys.readouterr()
    executed = record_steps(monkeypatch)
    weights = train_once(tmp_path, squares, params)
    assert f"resumed from step {step} ({folder / STATE_FILE})" in capsys.readouterr().err
    assert executed == list(range(step, params.train.max_steps))
    assert_same_weights(weights, reference["weights"])
    after = (tmp_path / "train_log.csv").read_text().splitlines()
    assert after[: len(before)] == before  # byte for byte, the `seconds` of the first session too
    log = read_log(tmp_path / "train_log.csv")
    assert [r["loss"] for r in log] == [r["loss"] for r in reference["log"]]


def test_without_its_checkpoint_a_run_starts_over(
    squares: Path,
    reference: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same interruption with the state deleted: no resumed line, every step from 0 again,
    and yet the same weights as the resumed run's (which is why those are not evidence)."""
    params = tiny_params(save_every=3)
    train_once(tmp_path, squares, params, stop_after=3)
    folder = resume_dir_for(tmp_path / "models" / "adapter")
    (folder / STATE_FILE).unlink()
    capsys.readouterr()
    executed = record_steps(monkeypatch)
    weights = train_once(tmp_path, squares, params)
    assert "resumed" not in capsys.readouterr().err
    assert executed == list(range(params.train.max_steps))
    assert_same_weights(weights, reference["weights"])
    log = read_log(tmp_path / "train_log.csv")
    assert [int(r["step"]) for r in log] == list(range(params.train.max_steps))


def test_changed_params_start_over(
    squares: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_once(tmp_path, squares, tiny_params(save_every=2), stop_after=2)
    train_once(tmp_path, squares, tiny_params(save_every=2, max_steps=4, lr=1e-3))
    assert "starting over" in capsys.readouterr().err
    assert [int(r["step"]) for r in read_log(tmp_path / "train_log.csv")] == [0, 1, 2, 3]
