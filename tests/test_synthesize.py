"""The synthesis stage: balancing, per-sample purity, the HDF5 file, workers, interruptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, replace_section
from exemplar_sets import CLASSES, exemplar_set, write_exemplar_set

from core.errors import InputError
from core.schema import read_synthetic_info
from fewsam.synth_stats import components
from synth import synthesize
from synth.synthesize import exemplar_weights, make_sample
from synth.synthetic_store import SyntheticWriter


def test_exemplar_weights_worked_out_by_hand():
    label = np.zeros((3, 4, 4), np.uint8)
    label[0, 0, 0] = 1  # exemplar 0 holds {1}
    label[1, 0, 0], label[1, 1, 1] = 1, 2  # exemplar 1 holds {1, 2}; exemplar 2 holds nothing
    # Uniform half: 1/6 each. Class half: class 1 (2 holders) and class 2 (1 holder), 1/4 each:
    # exemplar 0 gets 1/8, exemplar 1 gets 1/8 + 1/4.
    np.testing.assert_allclose(exemplar_weights(label), [1 / 6 + 1 / 8, 1 / 6 + 3 / 8, 1 / 6])


def test_rare_classes_are_chosen_more_often_than_their_exemplar_share():
    ex = exemplar_set(n=8)  # disc in all 8, square in 6, bar in exemplars 0 and 4 only
    weights = exemplar_weights(ex.label)
    # By hand: 2 * (1/16 + (1/8 + 1/6 + 1/2) / 6) = 7/18 of the samples, against 2/8 uniformly.
    assert weights[[0, 4]].sum() == pytest.approx(7 / 18)
    assert weights.min() >= 0.5 / 8


def test_make_sample_is_pure_in_range_and_keeps_the_class_set(params):
    ex = exemplar_set()
    p = replace_section(params, "synth", paste_prob=0.5, elastic_prob=0.5).synth
    for index in range(12):
        s = make_sample(ex, p, 0, index)
        again = make_sample(ex, p, 0, index)
        np.testing.assert_array_equal(s.image, again.image)
        np.testing.assert_array_equal(s.label, again.label)
        assert s.image.shape == ex.image.shape[1:] and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.label.dtype == np.uint8 and set(np.unique(s.label)) <= {0, 1, 2, 3}
        assert 0 <= s.exemplar < len(ex.image) and -1 <= s.background < len(ex.pool_image)
    assert not np.array_equal(make_sample(ex, p, 0, 0).image, make_sample(ex, p, 1, 0).image)


def test_paste_background_choices(params):
    ex = exemplar_set()
    pool = replace_section(params, "synth", paste_prob=1.0, paste_background="pool").synth
    own = replace_section(params, "synth", paste_prob=1.0, paste_background="self").synth
    assert all(make_sample(ex, pool, 0, i).background >= 0 for i in range(6))
    assert all(make_sample(ex, own, 0, i).background == -1 for i in range(6))


@pytest.mark.parametrize("background", ["self", "pool"])
@pytest.mark.parametrize("unit", ["component", "class"])
def test_pasted_samples_hold_no_structure_more_often_than_their_exemplar(params, background, unit):
    ex = exemplar_set()
    # A shift window of 0.15 of the side gives every piece room on these slices, also on a pool
    # body that lies elsewhere than the exemplar's (with less, a piece can be left out).
    p = replace_section(
        params,
        "synth",
        paste_prob=1.0,
        paste_background=background,
        paste_unit=unit,
        paste_shift=0.15,
    ).synth
    weights = exemplar_weights(ex.label)
    for index in range(50):
        s = make_sample(ex, p, params.stream_seed, index, weights)
        assert s.canvas is not None and s.filled is not None  # every sample was pasted
        assert s.canvas.shape == s.image.shape and s.filled.shape == s.label.shape
        if background == "self":  # the exemplar's structures were cut out of its own slice
            assert s.filled.any() and s.background == -1
        else:
            assert not s.filled.any() and s.background >= 0
        # Components of at least MIN_PIXELS pixels, per class: never more than the exemplar's
        # (no structure twice), and every class of the exemplar still there (these slices
        # have room for all).
        big = components(s.label, len(CLASSES))[0]
        reference = components(ex.label[s.exemplar], len(CLASSES))[0]
        assert (big <= reference).all(), (index, big, reference)
        assert (big >= (reference > 0)).all(), (index, big, reference)


def test_samples_without_pasting_have_no_canvas(params):
    ex = exemplar_set()
    p = replace_section(params, "synth", paste_prob=0.0).synth
    for index in range(5):
        s = make_sample(ex, p, 0, index)
        assert s.canvas is None and s.filled is None and s.background == -1


def build(tmp_path: Path, params, name: str, ex=None, **synth) -> Path:
    exemplars = tmp_path / "exemplars.h5"
    if not exemplars.exists():
        write_exemplar_set(exemplars, ex if ex is not None else exemplar_set())
    out = tmp_path / name
    synthesize.run(replace_section(params, "synth", **synth), exemplars, out)
    return out


def test_file_follows_the_schema_and_records_its_params(tmp_path, params):
    out = build(tmp_path, params, "s.h5", samples=10, workers=1)
    info = read_synthetic_info(out)
    assert (info.length, info.height, info.width) == (10, 64, 64)
    assert info.classes == CLASSES and info.channels == ("CT",)
    assert "workers" not in info.params["synth"] and info.params["synth"]["samples"] == 10
    assert info.params["dataset"] == {"format": "synapse"} and info.params["seed"] == params.seed
    with h5py.File(out) as f:
        assert f["image"].dtype == np.float16 and f["image"].chunks == (1, 1, 64, 64)
        assert f["label"].dtype == np.uint8 and f["exemplar"].dtype == np.int32
        assert f["image"].compression == "gzip" and f["image"].shuffle
        assert set(json.loads(f.attrs["versions"])) == {"numpy", "albumentations", "opencv", "h5py"}
        # The stored samples are exactly make_sample's, as float16.
        sample = make_sample(exemplar_set(), params.synth, params.seed, 7)
        np.testing.assert_array_equal(f["image"][7], sample.image.astype(np.float16))
        np.testing.assert_array_equal(f["label"][7], sample.label)
        assert f["exemplar"][7] == sample.exemplar and f["background"][7] == sample.background


def test_identical_files_for_one_and_two_workers(tmp_path, params):
    one = build(tmp_path, params, "one.h5", samples=40, workers=1)
    two = build(tmp_path, params, "two.h5", samples=40, workers=2)
    with h5py.File(one) as a, h5py.File(two) as b:
        for name in ("image", "label", "exemplar", "background"):
            np.testing.assert_array_equal(a[name][()], b[name][()])
    assert one.read_bytes() == two.read_bytes()


def test_disabled_synthesis_is_the_exemplars_themselves(tmp_path, params):
    ex = exemplar_set(n=5)
    out = build(tmp_path, params, "s.h5", ex=ex, enabled=False, samples=100)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["image"][()], ex.image.astype(np.float16))
        np.testing.assert_array_equal(f["label"][()], ex.label)
        np.testing.assert_array_equal(f["exemplar"][()], np.arange(5))
        np.testing.assert_array_equal(f["background"][()], np.full(5, -1))


def test_pool_pasting_without_a_pool_is_a_clear_error(tmp_path, params):
    with pytest.raises(InputError, match="no background pool"):
        build(tmp_path, params, "s.h5", ex=exemplar_set(pool=0), paste_background="pool")
    assert not (tmp_path / "s.h5").exists()


def test_an_exception_in_a_sample_leaves_no_file(tmp_path, params, monkeypatch):
    real = synthesize.make_sample

    def failing(ex, p, seed, index, weights=None):
        if index == 21:
            raise RuntimeError("disk on fire")
        return real(ex, p, seed, index, weights)

    monkeypatch.setattr(synthesize, "make_sample", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build(tmp_path, params, "s.h5", samples=40, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exemplars.h5"]


def test_an_exception_in_the_writer_with_workers_running_leaves_no_file(
    tmp_path, params, monkeypatch
):
    real = SyntheticWriter.write

    def failing(self, sample):
        if sample.index == 21:
            raise OSError(28, "No space left on device")
        real(self, sample)

    monkeypatch.setattr(SyntheticWriter, "write", failing)
    with pytest.raises(OSError, match="No space"):
        build(tmp_path, params, "s.h5", samples=200, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exemplars.h5"]


KILLED_RUN = """
import sys
from pathlib import Path
from conftest import replace_section
from synth import synthesize
from core.params import load_params
params = replace_section(load_params(sys.argv[1]), "synth", samples=100000, workers=2)
synthesize.run(params, Path(sys.argv[2]), Path(sys.argv[3]))
"""


@pytest.mark.slow
def test_a_killed_run_leaves_no_file(tmp_path):
    exemplars = write_exemplar_set(tmp_path / "exemplars.h5", exemplar_set())
    out = tmp_path / "synthetic.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    args = [sys.executable, "-c", KILLED_RUN, str(REPO / "params.yaml"), str(exemplars), str(out)]
    proc = subprocess.Popen(args, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "run never started"
            time.sleep(0.05)
        time.sleep(0.5)  # let it write a while
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, as a crash would
        proc.wait()
    assert not out.exists()
