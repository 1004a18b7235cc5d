"""`fewsam synth suggest`: the slice-choosing strategies (pure functions) and the folder it writes.

End to end runs use a small phantom (training scans case0005 and case0006, 32 x 32 x 8, every
slice body) copied into the unlabeled nnU-Net layout, and the tiny SAM at 64 px with random
weights.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from dvc_project import MICRO_PHANTOM
from reliability_files import torch_threads
from sam_helpers import LORA, write_checkpoint
from typer.testing import CliRunner

from core.errors import ParamsError
from core.params import ModelParams, Params, parse_params
from fewsam.cli import app
from phantom import annotator
from phantom import generate as phantom
from suggest import run as suggest
from suggest.strategies import k_center, most_uncertain_then_diverse, random_picks, spread
from synth.annotations import FIELDS, MANIFEST, label_path, read_manifest, slice_sha256
from synth.check import annotation_problems
from synth.datasets import open_dataset
from train.adapter_io import save_adapter
from train.model import build_fewsam, trainable_state_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- spread ----


def test_spread_hand_example() -> None:
    # 3 picks over 2 scans: quotas 2 and 1 (pick i goes to scan i * 2 // 3).
    # Scan 0 has free [0, 1, 2, 4, 5, 6, 7, 8, 9] (3 is listed): positions 9 // 3 = 3 and
    # 18 // 3 = 6 -> slices 4 and 7; scan 1 has [0, 1, 2, 3]: position 4 // 2 = 2 -> slice 2.
    candidates = [np.arange(10), np.arange(4)]
    assert spread(candidates, 3, [{3}, set()]) == [(0, 4), (0, 7), (1, 2)]
    # Without the listed slice, 3 itself would have been chosen.
    assert spread(candidates, 3, [set(), set()]) == [(0, 3), (0, 6), (1, 2)]


def test_spread_one_per_scan_in_the_middle_and_never_listed() -> None:
    candidates = [np.arange(2, 9), np.array([5, 6, 7]), np.arange(0, 20, 2)]
    # Middle of each scan's free candidates: index len // 2.
    assert spread(candidates, 3, [set(), set(), set()]) == [(0, 5), (1, 6), (2, 10)]
    listed = [{5}, {6}, {10}]
    picks = spread(candidates, 3, listed)
    assert picks == [(0, 6), (1, 7), (2, 8)]  # scan 2: [0, 2, 4, 6, 8, 12, ...][4]
    for v, z in picks:
        assert z not in listed[v] and z in candidates[v]


def test_spread_overflow_goes_to_other_scans() -> None:
    # Scan 0 has one free slice: its second quota moves to scan 1.
    picks = spread([np.array([4, 5]), np.arange(9)], 4, [{4}, set()])
    assert picks == [(0, 5), (1, 2), (1, 4), (1, 6)]


@pytest.mark.parametrize("n", [0, 5])
def test_spread_refuses_impossible_counts(n: int) -> None:
    with pytest.raises(ValueError):
        spread([np.arange(3), np.arange(2)], n, [{0}, set()])


# ---- random ----


def test_random_picks_seeded_sorted_never_listed() -> None:
    candidates = [np.arange(12), np.arange(5, 15)]
    listed = [{0, 3, 7}, {5, 14}]
    a = random_picks(candidates, 6, listed, np.random.default_rng(7))
    b = random_picks(candidates, 6, listed, np.random.default_rng(7))
    assert a == b
    assert a == sorted(a) and len(set(a)) == 6
    for v, z in a:
        assert z not in listed[v] and z in candidates[v]
    # All free slices when n is their number; too many is refused.
    everything = random_picks(candidates, 17, listed, np.random.default_rng(1))
    assert everything == [(0, z) for z in range(12) if z not in {0, 3, 7}] + [
        (1, z) for z in range(6, 14)
    ]
    with pytest.raises(ValueError):
        random_picks(candidates, 18, listed, np.random.default_rng(1))


def test_random_picks_depend_on_the_seed() -> None:
    candidates = [np.arange(100)]
    draws = {
        tuple(random_picks(candidates, 5, [set()], np.random.default_rng(s))) for s in range(5)
    }
    assert len(draws) == 5


# ---- k-center ----

POINTS = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 8.0]])


def test_k_center_from_listed_centers() -> None:
    # Farthest from the listed (0, 0): (10, 0) at 10; then (0, 8) at 8 (12.8 from (10, 0));
    # then (0.1, 0) at 0.1 ((0, 0) is at distance 0 of the listed centre).
    picks, scores = k_center(POINTS, 3, np.array([[0.0, 0.0]]))
    assert picks == [2, 3, 1]
    np.testing.assert_allclose(scores, [10.0, 8.0, 0.1])


def test_k_center_first_pick_is_farthest_from_centers() -> None:
    # From the listed (0, 8): (0, 0) is 8 away, (0.1, 0) 8.0006, (10, 0) 12.8, (0, 8) 0.
    picks, scores = k_center(POINTS, 1, np.array([[0.0, 8.0]]))
    assert picks == [2]
    np.testing.assert_allclose(scores, [math.sqrt(164.0)])


def test_k_center_without_centers_starts_at_the_most_typical() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    # Mean 3.25: the nearest candidate is 2.0 (index 2); then the farthest from it is 10.0.
    picks, scores = k_center(x, 2, None)
    assert picks == [2, 3] and math.isnan(scores[0]) and scores[1] == pytest.approx(8.0)
    # Every row once when n is the number of rows, in a reproducible order.
    all_picks, _ = k_center(x, 4, None)
    assert sorted(all_picks) == [0, 1, 2, 3] and all_picks == k_center(x, 4, None)[0]
    with pytest.raises(ValueError):
        k_center(x, 5, None)


# ---- most uncertain, then diverse ----

# Two near-identical confusing slices (0, 1), a diverse uncertain one (2), a middling one (3),
# and a far outlier (4) that is too certain to be in the pool.
UNCERTAINTY = np.array([0.90, 0.89, 0.80, 0.50, 0.05, 0.10])
FEATURES = np.array([[0.0, 0.0], [0.0, 0.01], [10.0, 0.0], [3.0, 3.0], [100.0, 100.0], [5, 5]])


def test_uncertain_picks_stay_in_the_pool_and_are_diverse() -> None:
    picks = most_uncertain_then_diverse(UNCERTAINTY, FEATURES, 2, 2, None)
    assert len(picks) == 2 and len(set(picks)) == 2
    assert set(picks) <= {0, 1, 2, 3}  # the pool * n = 4 most uncertain
    assert not {0, 1} <= set(picks)  # never both near-identical slices


def test_uncertain_with_centers_is_deterministic() -> None:
    # Listed slice at (10, 1); pool {0, 1, 2, 3}. Nearest-listed distances: (0, 0) 10.05,
    # (0, 0.01) 10.049, (10, 0) 1, (3, 3) 7.28 -> (0, 0) first; then (0, 0.01) is 0.01 from it,
    # (10, 0) still 1, (3, 3) 4.24 -> (3, 3).
    picks = most_uncertain_then_diverse(UNCERTAINTY, FEATURES, 2, 2, np.array([[10.0, 1.0]]))
    assert picks == [0, 3]
    # A pool of 1 x n keeps only the n most uncertain, alike or not.
    assert sorted(most_uncertain_then_diverse(UNCERTAINTY, FEATURES, 2, 1, None)) == [0, 1]


# ---- suggest.run end to end ----


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One thread: two OpenMP threads on a busy 2-core machine stall each other."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, params_dict: dict[str, Any]) -> Path:
    """`ph/synapse` (phantom), `unl` (its unlabeled copy), a tiny random checkpoint, an adapter."""
    base = tmp_path_factory.mktemp("suggest_sources")
    phantom.run(parse_params(_data(params_dict, base)), base / "ph")
    annotator.unlabeled_copy(base / "ph" / "synapse", base / "unl")
    checkpoint = write_checkpoint(base / "tiny.safetensors", input_size=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_fewsam(ModelParams("tiny", str(checkpoint), 64), LORA, 8)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # large moves, so the random adapter draws organs somewhere
        for p in trainable_state_dict(model).values():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    save_adapter(model, base / "adapter", {})
    return base


def _data(params_dict: dict[str, Any], base: Path) -> dict[str, Any]:
    data = copy.deepcopy(params_dict)
    data["phantom"].update(MICRO_PHANTOM)
    data["dataset"].update(
        format="nifti", root=str(base / "unl"), annotations=str(base / "annotations")
    )
    data["model"].update(arch="tiny", checkpoint=str(base / "tiny.safetensors"), input_size=64)
    data["train"]["device"] = "cpu"
    data["evaluate"]["batch_size"] = 4
    return data


@pytest.fixture
def params(sources: Path, params_dict: dict[str, Any]) -> Params:
    return parse_params(_data(params_dict, sources))


def _csv_rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((folder / MANIFEST).read_text())))


def test_spread_writes_manifest_labels_and_sheet(
    params: Params, sources: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ann"
    rows = suggest.run(params, folder, 3, "spread")
    text = (folder / MANIFEST).read_text()
    assert text.splitlines()[0] == (
        "case,slice,axis,position_mm,rank,strategy,score,round,draft_sha256,file_sha256,negative"
    )
    assert tuple(text.splitlines()[0].split(",")) == FIELDS
    table = _csv_rows(folder)
    assert [(r["case"], r["slice"], r["axis"], r["rank"], r["strategy"]) for r in table] == [
        ("case0005", "2", "2", "1", "spread"),
        ("case0005", "5", "2", "2", "spread"),
        ("case0006", "4", "2", "3", "spread"),
    ]
    assert [r["position_mm"] for r in table] == ["-37.500", "37.500", "12.500"]
    assert {r["round"] for r in table} == {"1"} and {r["score"] for r in table} == {""}
    assert read_manifest(folder) == rows
    zeros = slice_sha256(np.zeros((32, 32), np.uint8))
    assert {r.draft_sha256 for r in rows} == {zeros}
    assert sorted(p.name for p in (folder / "labels").iterdir()) == [
        "case0005.nii.gz",
        "case0006.nii.gz",
    ]
    for case in ("case0005", "case0006"):
        path = label_path(folder, case)
        image = nib.load(sources / "unl" / "imagesTr" / f"{case}_0000.nii.gz")
        label = nib.load(path)
        data = np.asarray(label.dataobj)
        assert data.shape == image.shape and data.dtype == np.uint8 and not data.any()
        np.testing.assert_array_equal(label.affine, image.affine)
        for getter in ("get_qform", "get_sform"):
            q_label, code_label = getattr(label.header, getter)(coded=True)
            q_image, code_image = getattr(image.header, getter)(coded=True)
            np.testing.assert_array_equal(q_label, q_image)
            assert code_label == code_image == 1
        assert label.header.get_zooms() == image.header.get_zooms()
        assert label.header.get_xyzt_units() == image.header.get_xyzt_units()
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        assert {r.file_sha256 for r in rows if r.case == case} == {file_hash}
    assert (folder / "suggested.png").read_bytes()[:8] == PNG_MAGIC


def test_one_label_file_per_suggested_case(params: Params, tmp_path: Path) -> None:
    rows = suggest.run(params, tmp_path / "ann", 1, "spread")
    assert [(r.case, r.slice) for r in rows] == [("case0005", 4)]  # middle of 8 slices
    assert [p.name for p in (tmp_path / "ann" / "labels").iterdir()] == ["case0005.nii.gz"]


def test_second_round_appends_and_never_repeats(params: Params, tmp_path: Path) -> None:
    folder = tmp_path / "ann"
    first = suggest.run(params, folder, 3, "spread")
    before = (folder / MANIFEST).read_text()
    second = suggest.run(params, folder, 2, "spread")
    # Free slices: case0005 [0, 1, 3, 4, 6, 7] -> index 3 = 4; case0006 [0..3, 5..7] -> 3.
    assert [(r.case, r.slice, r.rank, r.round) for r in second] == [
        ("case0005", 4, 1, 2),
        ("case0006", 3, 2, 2),
    ]
    assert read_manifest(folder) == first + second
    assert (folder / MANIFEST).read_text().startswith(before)
    # Many more rounds: never a listed slice again, until none is left.
    for _ in range(5):
        suggest.run(params, folder, 2, "random")
    rows = read_manifest(folder)
    keys = [(r.case, r.slice) for r in rows]
    assert len(keys) == len(set(keys)) == 15
    assert [r.round for r in rows][-2:] == [7, 7]
    with pytest.raises(ParamsError, match="2 slices asked for but only 1"):
        suggest.run(params, folder, 2, "spread")


@pytest.mark.parametrize("strategy", ["spread", "random"])
def test_same_params_and_seed_same_bytes(params: Params, tmp_path: Path, strategy: str) -> None:
    for name in ("a", "b"):
        suggest.run(params, tmp_path / name, 3, strategy)
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    labels = sorted(p.name for p in (a / "labels").iterdir())
    assert labels == sorted(p.name for p in (b / "labels").iterdir())
    for name in labels:
        assert (a / "labels" / name).read_bytes() == (b / "labels" / name).read_bytes()


def test_random_strategy_follows_the_seed(params: Params, tmp_path: Path) -> None:
    picks = {
        tuple(
            (r.case, r.slice) for r in suggest.run(params, tmp_path / str(s), 4, "random", seed=s)
        )
        for s in range(4)
    }
    assert len(picks) > 1


def test_diverse_returns_distinct_slices(params: Params, tmp_path: Path) -> None:
    rows = suggest.run(params, tmp_path / "ann", 3, "diverse")
    keys = {(r.case, r.slice) for r in rows}
    assert len(keys) == 3
    assert {r.strategy for r in rows} == {"diverse"}
    # Candidates are every 2nd body slice (suggest.stride): 0, 2, 4, 6 of each scan.
    assert all(r.slice in (0, 2, 4, 6) for r in rows)
    assert rows[0].score is None  # drawn, not chosen by distance
    assert all(r.score is not None and r.score > 0 for r in rows[1:])
    assert rows[1].score >= rows[2].score  # greedy farthest-point: distances do not grow
    # A second round starts from the listed slices: all 8 candidates are used after 5 more.
    more = suggest.run(params, tmp_path / "ann", 5, "diverse")
    assert {(r.case, r.slice) for r in more} | keys == {
        (c, z) for c in ("case0005", "case0006") for z in (0, 2, 4, 6)
    }
    assert all(r.score is not None for r in more)


def test_uncertain_without_adapter_is_a_params_error(params: Params, tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="adapter"):
        suggest.run(params, tmp_path / "ann", 2, "uncertain")
    assert not (tmp_path / "ann" / MANIFEST).exists()


@pytest.mark.parametrize("strategy", ["sideways", None])
def test_unknown_strategy_and_bad_n(params: Params, tmp_path: Path, strategy: str | None) -> None:
    if strategy is None:
        with pytest.raises(ParamsError, match="--n"):
            suggest.run(params, tmp_path / "ann", 0, "spread")
    else:
        with pytest.raises(ParamsError, match="sideways"):
            suggest.run(params, tmp_path / "ann", 2, strategy)


def test_uncertain_with_adapter_writes_its_drafts(
    params: Params, sources: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ann"
    rows = suggest.run(params, folder, 2, "uncertain", adapter=sources / "adapter")
    assert len({(r.case, r.slice) for r in rows}) == 2
    assert all(r.strategy == "uncertain" and r.score is not None and r.score >= 0 for r in rows)
    for row in rows:
        data = np.asarray(nib.load(label_path(folder, row.case)).dataobj)
        assert slice_sha256(data[:, :, row.slice]) == row.draft_sha256
    listed = {(r.case, r.slice) for r in rows}
    for case in {r.case for r in rows}:
        data = np.asarray(nib.load(label_path(folder, case)).dataobj)
        for k in range(8):
            if (case, k) not in listed:
                assert not data[:, :, k].any()  # drafts only on the suggested slices


def test_unreviewed_drafts_stay_reported_after_another_round(
    params: Params, sources: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ann"
    adapter = sources / "adapter"
    rows = suggest.run(params, folder, 2, "uncertain", adapter=adapter)
    rows += suggest.run(params, folder, 2, "uncertain", adapter=adapter)
    # Precondition: the second round rewrote a file that holds round-1 drafts, with new drafts.
    first_cases = {r.case for r in rows[:2]}
    assert first_cases & {r.case for r in rows[2:]}
    assert any(r.draft_sha256 != slice_sha256(np.zeros((32, 32))) for r in rows)
    reader = open_dataset(params.dataset, params.seed)
    reported = [p.problem for p in annotation_problems(reader, folder)]
    # Nothing was ever saved by a person: every listed slice is reported.
    for row in rows:
        assert any(
            f"case {row.case} slice {row.slice} is listed but was never saved" in p
            for p in reported
        ), (
            row,
            reported,
        )


def test_cli_suggest(params_dict: dict[str, Any], sources: Path, tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(_data(params_dict, sources)))
    out = tmp_path / "ann"
    result = CliRunner().invoke(
        app, ["synth", "suggest", "--n", "2", "--out", str(out), "-p", str(params_file)]
    )
    assert result.exit_code == 0, result.output
    assert (out / MANIFEST).is_file() and (out / "suggested.png").is_file()
    assert len(_csv_rows(out)) == 2
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        "case0005.nii.gz",
        "case0006.nii.gz",
    ]
    default = params_dict["suggest"]["strategy"]  # no --strategy: the params' choice
    assert f"suggest: 2 slices ({default}, round 1) -> {out / MANIFEST}" in result.stdout
    bad = CliRunner().invoke(
        app,
        ["synth", "suggest", "--n", "2", "--out", str(out), "--strategy", "uncertain"]
        + ["-p", str(params_file)],
    )
    assert bad.exit_code == 2 and "adapter" in bad.stderr
