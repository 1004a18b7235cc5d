"""`fewsam synth preview` and `fewsam synth stats`: the PNG grid and the per-class table."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from conftest import REPO, replace_section
from exemplar_sets import exemplar_set, write_exemplar_set
from typer.testing import CliRunner

from core.errors import InputError
from fewsam import preview
from fewsam import synth_stats as stats
from fewsam.cli import app
from fewsam.preview import select_indices
from fewsam.synth_stats import count_classes
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
    assert width > height > 200  # 2 rows of 4 pairs


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
    text = stats.run(exemplars, synthetic)
    assert "synthetic (not built)" in text and "3 bar" in text
    synthesize.run(replace_section(params, "synth", samples=10, workers=1), exemplars, synthetic)
    lines = stats.run(exemplars, synthetic).splitlines()
    assert "exemplars (of 6)" in lines[0] and "synthetic (of 10)" in lines[0]
    assert lines[2].split()[:4] == ["1", "disc", "6", "(100%)"]  # a disc in every exemplar
    assert [line.split()[1] for line in lines[1:]] == ["background", "disc", "square", "bar"]
