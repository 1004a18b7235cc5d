"""`fewsam grid`: the experiment grid, its overrides and their validation (no DVC run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from core.errors import ParamsError
from core.params import parse_params
from fewsam.cli import app
from fewsam.experiments import (
    apply_overrides,
    check_params,
    grid_points,
    parse_override,
    protocol_counts,
    queue_command,
)


def test_grid_points_pair_every_count_with_synthesis_on_and_off_then_the_full_set() -> None:
    points = grid_points((1, 9, 18, 36), "synapse")
    assert [p.name for p in points] == [
        "synapse-1-synth",
        "synapse-1-nosynth",
        "synapse-9-synth",
        "synapse-9-nosynth",
        "synapse-18-synth",
        "synapse-18-nosynth",
        "synapse-36-synth",
        "synapse-36-nosynth",
        "synapse-all",
    ]
    assert points[0].overrides == ("exemplars=1", "synth.enabled=true")
    assert points[1].overrides == ("exemplars=1", "synth.enabled=false")
    assert points[-1].overrides == ("exemplars=all", "synth.enabled=false")


def test_queue_command_puts_grid_keys_first_then_the_extra_overrides() -> None:
    point = grid_points((75,), "brats")[0]
    assert queue_command(point, ["train.max_steps=20"], force=False) == [
        "exp", "run", "--queue", "-n", "brats-75-synth",
        "-S", "exemplars=75", "-S", "synth.enabled=true", "-S", "train.max_steps=20",
    ]  # fmt: skip
    assert "--force" in queue_command(point, [], force=True)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("train.max_steps=20", ("train.max_steps", 20)),
        ("synth.enabled=false", ("synth.enabled", False)),
        ("model.checkpoint=/data/sam_vit_b.pth", ("model.checkpoint", "/data/sam_vit_b.pth")),
        ("dataset.window=[-100, 200]", ("dataset.window", [-100, 200])),
        ("model.checkpoint=", ("model.checkpoint", None)),
    ],
)
def test_parse_override_reads_values_as_yaml(item: str, expected: tuple[str, Any]) -> None:
    assert parse_override(item) == expected


@pytest.mark.parametrize("item", ["train.max_steps", "=3", "dataset.window=[1,"])
def test_parse_override_rejects_malformed_items(item: str) -> None:
    with pytest.raises(ParamsError, match="--set"):
        parse_override(item)


def test_apply_overrides_refuses_unknown_keys(params_dict: dict[str, Any]) -> None:
    before = yaml.safe_dump(params_dict)
    changed = apply_overrides(params_dict, ["train.max_steps=20", "seed=3"])
    assert changed["train"]["max_steps"] == 20 and changed["seed"] == 3
    assert yaml.safe_dump(params_dict) == before  # a copy, not changed in place
    with pytest.raises(ParamsError, match="trian.max_steps: no section trian"):
        apply_overrides(params_dict, ["trian.max_steps=2"])
    with pytest.raises(ParamsError, match="train.max_stepz: unknown key"):
        apply_overrides(params_dict, ["train.max_stepz=2"])


def _params_file(tmp_path: Path, params_dict: dict[str, Any], **dataset: Any) -> Path:
    data = yaml.safe_load(yaml.safe_dump(params_dict))
    data["dataset"].update(dataset)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_params_catches_bad_values_and_grid_keys(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    path = _params_file(tmp_path, params_dict)
    assert check_params(path, ["train.max_steps=40"]).train.max_steps == 40
    with pytest.raises(ParamsError, match="train.warmup_steps"):
        check_params(path, ["train.max_steps=2"])  # below the default warmup
    with pytest.raises(ParamsError, match="the grid sets exemplars, synth.enabled, replicate itself"):
        check_params(path, ["exemplars=3"])


def test_protocol_counts_follow_the_dataset_format(params_dict: dict[str, Any]) -> None:
    synapse = parse_params(params_dict)
    assert protocol_counts(synapse, None, ()) == ("synapse", (1, 9, 18, 36))
    assert protocol_counts(synapse, None, (5, 2, 5)) == ("synapse", (2, 5))
    with pytest.raises(ParamsError, match="--dataset brats but dataset.format is synapse"):
        protocol_counts(synapse, "brats", ())
    data = yaml.safe_load(yaml.safe_dump(params_dict))
    data["dataset"]["format"] = "brats"
    assert protocol_counts(parse_params(data), None, ()) == ("brats", (75, 150, 450))
    data["dataset"]["format"] = "nifti"
    nifti = parse_params(data)
    assert protocol_counts(nifti, "brats", ()) == ("brats", (75, 150, 450))
    assert protocol_counts(nifti, None, (4,)) == ("grid", (4,))
    with pytest.raises(ParamsError, match="no published protocol"):
        protocol_counts(nifti, None, ())


def test_grid_dry_run_prints_the_queue_commands(
    tmp_path: Path, params_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _params_file(tmp_path, params_dict)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["grid", "--dry-run", "--set", "train.max_steps=40"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 9
    assert lines[0] == (
        "dvc exp run --queue -n synapse-1-synth -S exemplars=1 -S synth.enabled=true "
        "-S train.max_steps=40"
    )
    assert lines[-1].startswith("dvc exp run --queue -n synapse-all -S exemplars=all ")
    bad = CliRunner().invoke(app, ["grid", "--dry-run", "--set", "train.nope=1"])
    assert bad.exit_code == 2 and "train.nope: unknown key" in bad.output
