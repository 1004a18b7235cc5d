"""params.yaml -> frozen dataclasses: unknown, missing, duplicated, mistyped and out-of-range keys fail by name."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from reliability_files import assert_installed_one_line_error, run_installed
from typer.testing import CliRunner

from core.errors import ParamsError
from core.params import (
    Params,
    fingerprint,
    load_params,
    parse_params,
    read_params_file,
    to_dict,
)
from fewsam.experiments import check_params


def _with(params_dict: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(params_dict)
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def test_repository_params_load_and_are_frozen(params: Params) -> None:
    assert params.model.arch in ("tiny", "vit_b", "vit_l", "vit_h")
    assert isinstance(params.synth.scale, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 3  # type: ignore[misc]


def test_round_trip_through_dict(params: Params) -> None:
    assert parse_params(to_dict(params)) == params


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("synth.paste_prob", 1.5, "synth.paste_prob: must be in [0, 1]"),
        ("synth.paste_unit", "blob", "synth.paste_unit: must be one of"),
        ("train.max_steps", "ten", "train.max_steps: must be an integer"),
        ("train.max_steps", True, "train.max_steps: must be an integer"),
        ("lora.rank", 0, "lora.rank: must be >= 1"),
        ("exemplars", 0, "exemplars: must be >= 1 or `all`"),
        (
            "exemplars",
            "some",
            "exemplars: must be an integer, got 'some'; or must be one of ['all']",
        ),
        ("synth.scale", [1.2, 0.8], "synth.scale: must be [low, high]"),
        ("synth.scale", [1.0], "synth.scale: must have 2 items"),
        ("model.input_size", 100, "model.input_size: must be a multiple of 16"),
        ("dataset.brats_channels", ["flair", "dwi", "t2"], "dataset.brats_channels"),
        ("train.warmup_steps", 10_000, "train.warmup_steps: must be in [0, max_steps)"),
    ],
)
def test_bad_values_name_the_key(
    params_dict: dict[str, Any], key: str, value: Any, message: str
) -> None:
    with pytest.raises(ParamsError, match="^params: " + re.escape(message)):
        parse_params(_with(params_dict, key, value))


def test_unknown_and_missing_keys(params_dict: dict[str, Any]) -> None:
    data = _with(params_dict, "synth.paste_probability", 0.5)
    with pytest.raises(ParamsError, match=r"synth\.paste_probability: unknown key"):
        parse_params(data)
    data = copy.deepcopy(params_dict)
    del data["lora"]["alpha"]
    with pytest.raises(ParamsError, match=r"lora\.alpha: missing key"):
        parse_params(data)
    data = copy.deepcopy(params_dict)
    del data["evaluate"]
    with pytest.raises(ParamsError, match=r"evaluate: missing key"):
        parse_params(data)


def test_all_exemplars_and_integers_accepted(params_dict: dict[str, Any]) -> None:
    assert parse_params(_with(params_dict, "exemplars", "all")).exemplars == "all"
    assert parse_params(_with(params_dict, "exemplars", 36)).exemplars == 36
    assert parse_params(_with(params_dict, "model.checkpoint", None)).model.checkpoint is None


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "params.yaml"
    evil.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(evil)
    assert not marker.exists()


def test_cli_reports_bad_params_in_one_line(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    from fewsam.cli import app

    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(_with(params_dict, "seed", -1)))
    result = CliRunner().invoke(app, ["synth", "extract", "--params", str(bad)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {bad}: seed: must be >= 0"]


def test_missing_params_file(tmp_path: Path) -> None:
    from fewsam.cli import app

    result = CliRunner().invoke(app, ["synth", "extract", "--params", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml: not found" in result.output


def _duplicated(folder: Path, key: str) -> tuple[Path, int, int]:
    """The repository's params.yaml with `key` (`seed` or `section.name`) given again, another
    value, on the line below its first; the file and the two line numbers."""
    lines = (REPO / "params.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
    *section, name = key.split(".")
    start = lines.index(f"{section[0]}:\n") if section else 0
    indent = "  " * len(section)
    first = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{indent}{name}:"))
    lines.insert(first + 1, f"{indent}{name}: 7\n")
    path = folder / "params.yaml"
    path.write_text("".join(lines), encoding="utf-8")
    return path, first + 1, first + 2


@pytest.mark.parametrize("key", ["seed", "train.lr"])
def test_duplicate_key_refused_with_both_lines(tmp_path: Path, key: str) -> None:
    # safe_load would keep the second value without a word; `lr` of baseline and pretrain is
    # another key, not a duplicate.
    path, first, second = _duplicated(tmp_path, key)
    message = f"{path}: {key}: duplicate key (lines {first} and {second})"
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert str(e.value) == message
    with pytest.raises(ParamsError) as e:
        check_params(path, [])  # `fewsam grid` reads the workspace's params the same way
    assert str(e.value) == message


@pytest.mark.parametrize("key", ["seed", "train.lr"])
def test_duplicate_key_through_the_installed_command(tmp_path: Path, key: str) -> None:
    path, first, second = _duplicated(tmp_path, key)
    proc = run_installed("data", "check", "-p", path, cwd=tmp_path, timeout=120)
    assert_installed_one_line_error(proc, path, f"{key}: duplicate key", f"{first} and {second}")


def test_merge_keys_are_no_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("base: &b {lr: 1, wd: 2}\ntrain:\n  <<: *b\n  lr: 3\n")
    assert read_params_file(path) == {"base": {"lr": 1, "wd": 2}, "train": {"lr": 3, "wd": 2}}


def test_fingerprint_is_stable_and_sensitive(params: Params) -> None:
    other = dataclasses.replace(params, seed=params.seed + 1)
    assert fingerprint(params.synth) == fingerprint(other.synth)
    assert fingerprint({"seed": params.seed, "synth": params.synth}) != fingerprint(
        {"seed": other.seed, "synth": other.synth}
    )
    # Key order does not matter; the hash is of the canonical JSON.
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": (1, 2), "a": 1})
