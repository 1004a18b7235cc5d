"""`fewsam synth preview` and `fewsam synth stats`: the PNG grid, its remade backgrounds, the
per-class table and the component check against the exemplars."""

from __future__ import annotations

import dataclasses

import h5py
import matplotlib.image
import numpy as np
import pytest
from conftest import REPO, replace_section
from exemplar_sets import exemplar_set, write_exemplar_set
from synthetic_sets import write_synthetic
from typer.testing import CliRunner

from core.errors import InputError
from fewsam import preview
from fewsam import synth_stats as stats
from fewsam.cli import app
from fewsam.preview import select_indices
from fewsam.synth_stats import MIN_PIXELS, check_components, components, count_classes
from synth import synthesize


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_indices():
    assert select_indices(100, 4, None) == [0, 1, 2, 3]
    assert select_indices(3, 16, None) == [0, 1, 2]
    drawn = select_indices(100, 10, seed=5)
    assert drawn == sorted(set(drawn)) and len(drawn) == 10 and max(drawn) < 100
    assert drawn == select_indices(100, 10, seed=5) != select_indices(100, 10, seed=6)


def test_preview_of_a_built_set_writes_a_png(tmp_path, params):
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", exemplar_set())
    synthetic = tmp_path / "synthetic.h5"
    synthesize.run(replace_section(params, "synth", samples=12, workers=1), exemplars, synthetic)
    out = preview.run(params, exemplars, synthetic, tmp_path / "reports" / "p.png", n=6)
    assert is_png(out)
    height, width, _ = matplotlib.image.imread(out).shape
    # By hand: 3 triples a row, 2 rows: 6.6 x 3 by 2.4 x 2 + 1 inches at 100 dpi.
    assert (height, width) == (580, 1980)


def test_preview_without_a_built_set_synthesizes_on_the_fly(tmp_path, params):
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", exemplar_set())
    out = preview.run(params, exemplars, tmp_path / "missing.h5", tmp_path / "p.png", n=3, seed=1)
    assert is_png(out)
    assert not (tmp_path / "missing.h5").exists()


def test_preview_refuses_a_set_built_from_other_exemplars(tmp_path, params):
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", exemplar_set())
    synthetic = tmp_path / "synthetic.h5"
    synthesize.run(replace_section(params, "synth", samples=4, workers=1), exemplars, synthetic)
    write_exemplar_set(exemplars, exemplar_set(seed=9))
    with pytest.raises(InputError, match="other exemplars"):
        preview.run(params, exemplars, synthetic, tmp_path / "p.png", n=2)
    assert not (tmp_path / "p.png").exists()


def test_preview_command(tmp_path):
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", exemplar_set())
    out = tmp_path / "grid.png"
    args = ["synth", "preview", "--params", str(REPO / "params.yaml"), "--n", "2"]
    args += ["--exemplars", str(exemplars), "--synthetic", str(tmp_path / "none.h5")]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert is_png(out)


def test_count_classes_worked_out_by_hand():
    label = np.zeros((3, 4, 4), np.uint8)
    label[0, :2, :2] = 1  # 4 pixels of class 1
    label[1, 0, 0] = 1
    label[1, 3, :] = 2  # 4 pixels of class 2
    counts = count_classes(label, num_classes=3)
    assert counts.slices == 3
    assert counts.holding.tolist() == [3, 2, 1, 0]
    assert counts.pixels.tolist() == [48 - 9, 5, 4, 0]


def test_stats_table_lists_every_class_for_both_sets(tmp_path, params):
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", exemplar_set(n=6))
    synthetic = tmp_path / "synthetic.h5"
    result = stats.run(exemplars, synthetic)
    assert "synthetic (not built)" in result.text and "3 bar" in result.text
    assert result.failing == 0
    synthesize.run(replace_section(params, "synth", samples=10, workers=1), exemplars, synthetic)
    result = stats.run(exemplars, synthetic)
    assert result.failing == 0  # moved structures: never more components than the exemplar
    table, check = result.text.split("\n\n")
    lines = table.splitlines()
    assert "exemplars (of 6)" in lines[0] and "synthetic (of 10)" in lines[0]
    assert lines[2].split()[:4] == ["1", "disc", "6", "(100%)"]  # a disc in every exemplar
    assert [line.split()[1] for line in lines[1:]] == ["background", "disc", "square", "bar"]
    assert "0 of 10 samples have more than their exemplar" in check.splitlines()[0]
    assert [line.split()[1] for line in check.splitlines()[2:]] == ["disc", "square", "bar"]


# ---- the middle panel: the canvas, remade for a built set -------------------------------------


def built_set(tmp_path, params, samples: int = 12):
    ex = exemplar_set()
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", ex)
    synthetic = tmp_path / "synthetic.h5"
    p = replace_section(params, "synth", samples=samples, workers=1, paste_prob=0.5)
    synthesize.run(p, exemplars, synthetic)
    return p, ex, exemplars, synthetic


def test_traced_remakes_the_stored_sample_with_its_canvas(tmp_path, params):
    p, ex, _, synthetic = built_set(tmp_path, params)
    stored, synthesized = preview._from_file(synthetic, ex, 12, None)
    assert synthesized and [i for i, _ in stored] == list(range(12))
    pasted = 0
    with h5py.File(synthetic) as f:
        for i, s in stored:
            traced = preview._traced(p, ex, i, s)
            assert traced is not None
            np.testing.assert_array_equal(traced.label, f["label"][i])
            np.testing.assert_array_equal(traced.image.astype(np.float16), f["image"][i])
            assert traced.exemplar == s.exemplar and traced.background == s.background
            if traced.canvas is not None:
                pasted += 1
                assert traced.canvas.shape == s.image.shape
                # `self` pasting: the in-filled pixels are the exemplar's structures as moved
                # by the geometric transforms; never empty for these exemplars.
                assert traced.filled is not None and traced.filled.any()
    assert 0 < pasted < 12  # paste_prob 0.5: some of each


def test_traced_is_none_when_the_params_changed(tmp_path, params):
    p, ex, _, synthetic = built_set(tmp_path, params)
    stored, _ = preview._from_file(synthetic, ex, 12, None)
    other_seed = dataclasses.replace(p, seed=p.seed + 1)
    assert all(preview._traced(other_seed, ex, i, s) is None for i, s in stored)
    # Another largest shift changes the pasted samples only: the others are remade as stored.
    other_shift = replace_section(p, "synth", paste_shift=0.5)
    for i, s in stored:
        was_pasted = preview._traced(p, ex, i, s).canvas is not None
        assert (preview._traced(other_shift, ex, i, s) is None) == was_pasted


def test_preview_of_a_built_set_shows_the_remade_canvases(tmp_path, params, monkeypatch):
    p, _, exemplars, synthetic = built_set(tmp_path, params)
    shown = []
    real = preview._background_panel

    def record(ax, traced):
        shown.append(traced)
        real(ax, traced)

    monkeypatch.setattr(preview, "_background_panel", record)
    preview.run(p, exemplars, synthetic, tmp_path / "p.png", n=6)
    assert len(shown) == 6 and all(t is not None for t in shown)
    with h5py.File(synthetic) as f:
        for i, t in enumerate(shown):
            np.testing.assert_array_equal(t.label, f["label"][i])
    shown.clear()
    preview.run(dataclasses.replace(p, seed=p.seed + 1), exemplars, synthetic, tmp_path / "q.png")
    assert len(shown) == 12 and all(t is None for t in shown)  # "params changed" notes
    assert is_png(tmp_path / "q.png")


# ---- the component check: duplicated structures -----------------------------------------------


def hand_exemplars():
    """Three 32 x 32 exemplars: 0 holds classes 1 and 2; 1 holds class 1 and class 3 in two
    pieces; 2 holds class 2."""
    label = np.zeros((3, 32, 32), np.uint8)
    label[0, 2:6, 2:6] = 1
    label[0, 20:24, 20:24] = 2
    label[1, 2:6, 2:6] = 1
    label[1, 10:12, 10:14] = 3
    label[1, 26:28, 2:6] = 3
    label[2, 10:15, 10:15] = 2
    return dataclasses.replace(exemplar_set(n=3, size=32), label=label)


def hand_synthetic(duplicate: bool) -> np.ndarray:
    """Sample i made from exemplar i. Sample 1 holds class 1 twice when `duplicate`."""
    label = np.zeros((3, 32, 32), np.uint8)
    label[0, 12:16, 12:16] = 1  # moved; class 2 dropped: fewer is no failure
    label[1, 2:6, 2:6] = 1
    if duplicate:
        label[1, 20:24, 20:24] = 1  # a second copy, apart from the first
    label[1, 12:14, 20:24] = 3  # both pieces of class 3 moved
    label[1, 26:28, 10:14] = 3
    label[2, 10:15, 10:15] = 2
    label[2, 15:18, 15:18] = 2  # touches the first at a corner: one 8-connected component
    label[2, 0, 0:2] = 2  # specks, smaller than MIN_PIXELS: counted apart, no failure
    label[2, 31, 31] = 1
    label[2, 30, 10 : 10 + MIN_PIXELS - 1] = 3
    return label


def test_components_worked_out_by_hand():
    label = np.zeros((20, 20), np.uint8)
    label[0:2, 0:2] = 1  # 4 pixels
    label[2, 2] = 1  # diagonal neighbour: the same component, now 5 pixels
    label[10, 0:MIN_PIXELS] = 1  # exactly MIN_PIXELS: a structure
    label[15, 0 : MIN_PIXELS - 1] = 1  # one pixel short: a speck
    label[5:8, 5:8] = 3
    label[5, 9] = 3  # one column apart: a separate speck
    big, small = components(label, 4)
    assert big.tolist() == [2, 0, 1, 0] and small.tolist() == [1, 0, 1, 0]


def test_component_check_finds_the_duplicated_structure():
    ex = hand_exemplars()
    label = hand_synthetic(duplicate=True)
    check, failing = check_components(ex.label, label, np.arange(3), 3)
    assert failing == 1 and check.samples == 3
    assert check.excess.tolist() == [1, 0, 0] and check.worst.tolist() == [1, 0, 0]
    assert check.specks.tolist() == [1, 1, 1]
    # Sample by sample: only sample 1 fails.
    per_sample = [check_components(ex.label, label[i : i + 1], [i], 3)[1] for i in range(3)]
    assert per_sample == [0, 1, 0]
    clean, failing = check_components(ex.label, hand_synthetic(duplicate=False), np.arange(3), 3)
    assert failing == 0 and not clean.excess.any() and not clean.worst.any()
    # Against the wrong exemplars, the same labels do fail: sample 0 has class 1, exemplar 2 not.
    assert check_components(ex.label, label[:1], [2], 3)[1] == 1


@pytest.mark.parametrize("block", [2, 64])
def test_stats_run_counts_failing_samples_across_blocks(tmp_path, monkeypatch, block):
    monkeypatch.setattr(stats, "_BLOCK", block)
    ex = hand_exemplars()
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", ex)
    image = np.zeros((3, 1, 32, 32), np.float32)
    bad = write_synthetic(tmp_path / "bad.h5", image, hand_synthetic(True), ex.classes)
    result = stats.run(exemplars, bad)
    assert result.failing == 1
    assert "1 of 3 samples have more than their exemplar" in result.text
    check = result.text.split("\n\n")[1]
    (line,) = [x for x in check.splitlines() if x.startswith("1 disc")]
    assert line.split()[2:] == ["1", "1", "1"]  # samples with more, largest surplus, specks
    clean = write_synthetic(tmp_path / "clean.h5", image, hand_synthetic(False), ex.classes)
    assert stats.run(exemplars, clean).failing == 0


def test_stats_check_command_exits_1_on_a_duplicated_structure(tmp_path):
    ex = hand_exemplars()
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", ex)
    image = np.zeros((3, 1, 32, 32), np.float32)
    bad = write_synthetic(tmp_path / "bad.h5", image, hand_synthetic(True), ex.classes)
    clean = write_synthetic(tmp_path / "clean.h5", image, hand_synthetic(False), ex.classes)

    def stats_command(synthetic, *extra):
        args = ["synth", "stats", "--exemplars", str(exemplars), "--synthetic", str(synthetic)]
        return CliRunner().invoke(app, [*args, *extra])

    result = stats_command(bad, "--check")
    assert result.exit_code == 1, result.output
    assert "1 of 3 samples have more than their exemplar" in result.output
    result = stats_command(bad)  # without --check the report is all
    assert result.exit_code == 0, result.output
    result = stats_command(clean, "--check")
    assert result.exit_code == 0, result.output
    assert "0 of 3 samples" in result.output
