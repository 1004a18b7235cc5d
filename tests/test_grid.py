"""`fewsam grid`: the experiment grid, its overrides and their validation (no DVC run here)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from core.errors import ParamsError
from core.params import parse_params
from fewsam import ablation, experiments
from fewsam.cli import app
from fewsam.exp_records import DvcError, ExpRecord
from fewsam.experiments import (
    GridOptions,
    GridPoint,
    _to_queue,
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
    with pytest.raises(
        ParamsError, match="the grid sets exemplars, synth.enabled, replicate itself"
    ):
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


# --- replicates, the component ablation, completing a queue -------------------------------------

SYNAPSE_POINTS = [
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


def test_grid_points_with_seeds_repeat_every_point_as_replicates() -> None:
    single = grid_points((1, 9, 18, 36), "synapse", seeds=1)
    assert [p.name for p in single] == SYNAPSE_POINTS  # one seed: the names stay as they were
    assert all(not any(o.startswith("replicate=") for o in p.overrides) for p in single)
    points = grid_points((1, 9, 18, 36), "synapse", seeds=3)
    assert len(points) == 27
    assert [p.name for p in points] == [f"{n}-s{r}" for n in SYNAPSE_POINTS for r in range(3)]
    by_name = {p.name: p for p in points}
    assert len(by_name) == 27
    assert by_name["synapse-9-nosynth-s2"].overrides == (
        "exemplars=9",
        "synth.enabled=false",
        "replicate=2",
    )
    assert by_name["synapse-all-s0"].overrides == (
        "exemplars=all",
        "synth.enabled=false",
        "replicate=0",
    )
    for p in points:
        assert p.overrides[-1] == f"replicate={p.name.rsplit('-s', 1)[1]}"


# Probabilities each ablation variant keeps from params.yaml; every other one is set to 0.0.
GEOMETRIC = {"hflip_prob", "vflip_prob", "affine_prob", "elastic_prob"}
INTENSITY = {"gamma_prob", "brightness_contrast_prob", "noise_prob", "blur_prob"}
PASTING = {"paste_prob"}
KEPT = {
    "exonly": set(),
    "geo": GEOMETRIC,
    "geo-int": GEOMETRIC | INTENSITY,
    "synth": GEOMETRIC | INTENSITY | PASTING,
}


def test_ablation_points_switch_off_exactly_the_components_not_yet_added(
    params_dict: dict[str, Any],
) -> None:
    points = grid_points((1, 9), "synapse", ablation=True)
    assert [p.name for p in points] == [
        f"synapse-{n}-{slug}" for n in (1, 9) for slug in ("exonly", "geo", "geo-int", "synth")
    ]  # no full-set point, no point without synthesis
    expected_on = {
        "exonly": (),
        "geo": ("geometric",),
        "geo-int": ("geometric", "intensity"),
        "synth": ("geometric", "intensity", "pasting"),
    }
    every = GEOMETRIC | INTENSITY | PASTING
    for p in points:
        n, slug = p.name.split("-", 2)[1:]
        assert p.overrides[:2] == (f"exemplars={n}", "synth.enabled=true")
        data = apply_overrides(params_dict, p.overrides)
        synth = data["synth"]
        for key in every:
            want = params_dict["synth"][key] if key in KEPT[slug] else 0.0
            assert synth[key] == want, (p.name, key)
        assert ablation.components_on(synth) == expected_on[slug]
        assert (
            ablation.variant(synth)
            == {
                "exonly": "exemplars only",
                "geo": "+ geometric",
                "geo-int": "+ intensity",
                "synth": "+ pasting",
            }[slug]
        )
        parsed = parse_params(data)  # every point is a valid configuration
        assert parsed.synth.enabled and parsed.exemplars == int(n)


def test_ablation_points_with_seeds_are_replicated_too() -> None:
    points = grid_points((1,), "x", seeds=2, ablation=True)
    assert [p.name for p in points] == [
        "x-1-exonly-s0",
        "x-1-exonly-s1",
        "x-1-geo-s0",
        "x-1-geo-s1",
        "x-1-geo-int-s0",
        "x-1-geo-int-s1",
        "x-1-synth-s0",
        "x-1-synth-s1",
    ]
    assert points[3].overrides[-1] == "replicate=1"


def test_check_params_refuses_the_replicate_and_with_ablation_the_probabilities(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    path = _params_file(tmp_path, params_dict)
    with pytest.raises(ParamsError, match="--set replicate=1: the grid sets"):
        check_params(path, ["replicate=1"])
    # Without the ablation a probability is an ordinary override, the same for every point.
    assert check_params(path, ["synth.paste_prob=0.2"]).synth.paste_prob == 0.2
    for item in ("synth.paste_prob=0.2", "synth.hflip_prob=0.5", "synth.blur_prob=0"):
        with pytest.raises(ParamsError, match="the grid sets .*synth.paste_prob"):
            check_params(path, [item], ablation=True)
    with pytest.raises(ParamsError, match="the grid sets"):
        check_params(path, ["replicate=0"], ablation=True)
    # Other synth keys stay free with the ablation.
    assert check_params(path, ["synth.samples=10"], ablation=True).synth.samples == 10


def _record(name: str, state: str, baseline: str = "base") -> ExpRecord:
    return ExpRecord(name, f"{name}-rev", baseline, state, "2025-01-01T00:00:00")


def _points(*names: str) -> list[GridPoint]:
    return [GridPoint(n, (f"exemplars={i + 1}",)) for i, n in enumerate(names)]


def _fake_experiments(monkeypatch: pytest.MonkeyPatch, records: list[ExpRecord]) -> list[bool]:
    calls: list[bool] = []

    def read(root: Path, all_commits: bool = False) -> list[ExpRecord]:
        calls.append(all_commits)
        return records

    monkeypatch.setattr(experiments, "read_experiments", read)
    return calls


def test_to_queue_missing_skips_finished_and_queued_and_replaces_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [
        _record("done", "success"),
        _record("waiting", "queued"),
        _record("busy", "running"),
        _record("broken", "failed", baseline="older"),
        _record("other-grid", "success"),
    ]
    calls = _fake_experiments(monkeypatch, records)
    points = _points("done", "waiting", "busy", "broken", "absent")
    said: list[str] = []
    out = _to_queue(Path("."), points, GridOptions(missing=True), said.append)
    assert [(p.name, replace) for p, replace in out] == [("broken", True), ("absent", False)]
    assert out[0][0] is points[3]  # the grid point itself, overrides and all
    assert calls == [True]  # finished on any commit counts
    assert len(said) == 1 and said[0].startswith("skipping 3 ")
    assert all(name in said[0] for name in ("done", "waiting", "busy"))
    assert "broken" not in said[0]


def test_to_queue_missing_with_nothing_left_and_with_nothing_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_experiments(monkeypatch, [_record("a", "success"), _record("b", "queued")])
    said: list[str] = []
    assert _to_queue(Path("."), _points("a", "b"), GridOptions(missing=True), said.append) == []
    _fake_experiments(monkeypatch, [])
    said.clear()
    out = _to_queue(Path("."), _points("a", "b"), GridOptions(missing=True), said.append)
    assert [(p.name, r) for p, r in out] == [("a", False), ("b", False)]
    assert said == []  # nothing skipped, nothing said


def test_to_queue_missing_skips_a_name_that_finished_on_any_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `dvc exp show` lists, per commit, successful experiments before failed ones (a failed run
    # stays in the queue's failed list after the name was run again with --force).
    for baselines in (("base", "base"), ("new", "old")):
        records = [_record("a", "success", baselines[0]), _record("a", "failed", baselines[1])]
        _fake_experiments(monkeypatch, records)
        assert _to_queue(Path("."), _points("a"), GridOptions(missing=True), print) == []


def test_to_queue_without_missing_refuses_taken_names_unless_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _fake_experiments(monkeypatch, [_record("b", "failed"), _record("z", "success")])
    points = _points("a", "b", "c")
    with pytest.raises(DvcError, match="experiments b exist on this commit"):
        _to_queue(Path("."), points, GridOptions(), print)
    assert calls == [False]  # taken names are those of this commit
    forced = _to_queue(Path("."), points, GridOptions(force=True), print)
    assert [(p.name, r) for p, r in forced] == [("a", True), ("b", True), ("c", True)]
    _fake_experiments(monkeypatch, [_record("z", "success")])
    free = _to_queue(Path("."), points, GridOptions(), print)
    assert [(p.name, r) for p, r in free] == [("a", False), ("b", False), ("c", False)]


def _git_repo(root: Path) -> None:
    for args in (
        ["init", "-q"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_run_missing_queues_only_what_is_not_finished(
    tmp_path: Path, params_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _params_file(tmp_path, params_dict)
    _git_repo(tmp_path)
    _fake_experiments(
        monkeypatch,
        [
            _record("synapse-1-synth-s0", "success"),
            _record("synapse-1-synth-s1", "failed"),
            _record("synapse-1-nosynth-s0", "queued"),
        ],
    )
    ran: list[list[str]] = []
    monkeypatch.setattr(experiments, "run_dvc", lambda args, root, capture=False: ran.append(args))
    said: list[str] = []
    options = GridOptions(seeds=2, missing=True)
    points = experiments.run(tmp_path, None, (1,), [], options=options, echo=said.append)
    assert [p.name for p in points] == [
        "synapse-1-synth-s1",
        "synapse-1-nosynth-s1",
        "synapse-all-s0",
        "synapse-all-s1",
    ]
    assert [a[4] for a in ran] == [p.name for p in points]
    assert ["--force" in a for a in ran] == [True, False, False, False]
    assert ran[0][-2:] == ["-S", "replicate=1"]
    assert said[-1].startswith("queued 4 experiments")


def test_run_missing_with_every_point_finished_queues_nothing(
    tmp_path: Path, params_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _params_file(tmp_path, params_dict)
    names = [p.name for p in grid_points((9,), "synapse")]
    _fake_experiments(monkeypatch, [_record(n, "success") for n in names])

    def no_dvc(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("nothing should be queued")

    monkeypatch.setattr(experiments, "run_dvc", no_dvc)
    said: list[str] = []
    options = GridOptions(missing=True)
    assert experiments.run(tmp_path, None, (9,), [], options=options, echo=said.append) == []
    assert said[-1].startswith("nothing to queue")


def test_run_refuses_fewer_than_one_seed(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    _params_file(tmp_path, params_dict)
    with pytest.raises(ParamsError, match="--seeds 0: must be >= 1"):
        experiments.run(tmp_path, None, (), [], options=GridOptions(seeds=0, dry_run=True))


def _dry_run(args: list[str]) -> list[str]:
    result = CliRunner().invoke(app, ["grid", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_grid_dry_run_with_seeds_and_ablation(
    tmp_path: Path, params_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _params_file(tmp_path, params_dict)
    monkeypatch.chdir(tmp_path)
    lines = _dry_run(["--seeds", "3"])
    assert len(lines) == 27 and all(line.startswith("dvc exp run --queue -n ") for line in lines)
    assert lines[0] == (
        "dvc exp run --queue -n synapse-1-synth-s0 -S exemplars=1 -S synth.enabled=true "
        "-S replicate=0"
    )
    assert lines[-1].startswith("dvc exp run --queue -n synapse-all-s2 ")
    # The ablation runs at the protocol's two smallest counts: 1 and 9 for Synapse.
    lines = _dry_run(["--ablation"])
    assert len(lines) == 8 and all(line.startswith("dvc exp run --queue -n ") for line in lines)
    names = [line.split()[5] for line in lines]
    assert names == [
        f"synapse-{n}-{slug}" for n in (1, 9) for slug in ("exonly", "geo", "geo-int", "synth")
    ]
    assert lines[0].count("=0.0") == 9  # exemplars only: every probability off
    assert "=0.0" not in lines[3]  # the full method keeps params.yaml's
    # Counts given are used as they are; with seeds, every variant is replicated.
    lines = _dry_run(["--ablation", "--exemplars", "18", "--seeds", "2"])
    assert len(lines) == 8 and lines[1].split()[5] == "synapse-18-exonly-s1"


def test_grid_refuses_zero_seeds_and_ablation_probability_overrides(
    tmp_path: Path, params_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _params_file(tmp_path, params_dict)
    monkeypatch.chdir(tmp_path)
    zero = CliRunner().invoke(app, ["grid", "--dry-run", "--seeds", "0"])
    assert zero.exit_code == 2 and "--seeds" in zero.output
    assert "dvc exp run" not in zero.output
    bad = CliRunner().invoke(
        app, ["grid", "--dry-run", "--ablation", "--set", "synth.paste_prob=0.2"]
    )
    assert bad.exit_code == 2 and "the grid sets" in bad.output
    assert "dvc exp run" not in bad.output
