"""The embedded phantom: real layouts, plausible anatomy and intensities, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import replace_section

from core import streams
from core.errors import InputError
from core.params import Params
from core.volume import to_zyx
from phantom import generate as phantom
from phantom.abdomen import abdomen_case
from phantom.brain import brain_case
from synth.check import find_problems
from synth.datasets import open_dataset


@pytest.fixture
def small(params: Params) -> Params:
    return dataclasses.replace(
        params,
        phantom=dataclasses.replace(
            params.phantom,
            synapse_cases=3,
            synapse_size=48,
            synapse_slices=16,
            brats_cases=3,
            brats_size=32,
            brats_slices=8,
        ),
    )


def test_layouts_read_back_without_problems(small: Params, tmp_path: Path) -> None:
    phantom.run(small, tmp_path)
    assert sorted(p.name for p in (tmp_path / "synapse" / "img").iterdir()) == [
        "img0001.nii.gz",
        "img0005.nii.gz",
        "img0006.nii.gz",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    for fmt, folder in (("synapse", "synapse"), ("brats", "brats")):
        p = replace_section(small, "dataset", format=fmt, root=str(tmp_path / folder))
        reader = open_dataset(p.dataset, p.seed)
        assert reader.cases("train") and reader.cases("test")
        assert find_problems(reader) == []
    img = nib.load(tmp_path / "synapse" / "img" / "img0005.nii.gz")
    lab = nib.load(tmp_path / "synapse" / "label" / "label0005.nii.gz")
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert img.header.get_zooms() == pytest.approx((380 / 48, 380 / 48, 200 / 16))
    ids = set(np.unique(np.asarray(lab.dataobj)))
    assert {0, 1, 2, 3, 4, 6, 7, 8, 11} <= ids and ids & {5, 9, 12, 13}  # original BTCV ids
    grades = sorted(p.name for p in (tmp_path / "brats").iterdir())
    assert grades == ["HGG", "LGG"]


def test_same_seed_same_bytes_and_rerun_replaces(small: Params, tmp_path: Path) -> None:
    phantom.run(small, tmp_path / "a")
    phantom.run(small, tmp_path / "b")
    phantom.run(small, tmp_path / "b")  # over an existing dataset
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.nii.gz"))
    assert len(files) == 3 * 2 + 3 * 5
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    other = dataclasses.replace(small, seed=1)
    phantom.run(other, tmp_path / "c")
    rel = Path("synapse/img/img0005.nii.gz")
    assert (tmp_path / "c" / rel).read_bytes() != (tmp_path / "a" / rel).read_bytes()


def test_a_folder_with_other_files_is_refused_and_kept(small: Params, tmp_path: Path) -> None:
    # A wrong --out must not delete a user's folder: only a dataset phantom wrote is replaced.
    (tmp_path / "synapse").mkdir()
    (tmp_path / "synapse" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds other files"):
        phantom.run(small, tmp_path)
    assert (tmp_path / "synapse" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synapse"]  # no temp folder left


def test_abdomen_anatomy_and_hu() -> None:
    hu, lab = abdomen_case(np.random.default_rng(4), 96, 32)
    z, h, w = lab.shape

    def mean(k: int) -> float:
        return float(hu[lab == k].mean())

    assert 45 < mean(6) < 75 and 35 < mean(1) < 65  # liver, spleen: close, overlapping
    assert 90 < mean(2) < 160 and mean(8) > 160 and mean(4) < 30  # kidney, aorta, gallbladder
    assert 25 < mean(11) < 55  # pancreas
    assert hu[0, 0, 0] < -900 and hu.max() > 500  # air outside, bone of the spine

    def column(k: int) -> float:
        return float(np.nonzero(lab == k)[2].mean())

    # Radiological view: patient's right (liver, right kidney) on the image left.
    assert column(6) < w / 2 < column(1) and column(2) < column(3)
    assert float(np.nonzero(hu > 500)[1].mean()) > h / 2  # spine posterior (lower rows)
    present = (lab.reshape(z, -1)[:, None, :] == np.array([2, 11, 6])[None, :, None]).any(2)
    assert not present.all(0).any()  # kidneys, pancreas and liver each miss some slices
    # Not separable by intensity alone: many unlabelled voxels fall in the pancreas HU range.
    lo, hi = np.percentile(hu[lab == 11], [25, 75])
    assert ((hu >= lo) & (hu <= hi) & (lab == 0)).sum() > 5 * (lab == 11).sum()


def test_cases_vary() -> None:
    a = abdomen_case(np.random.default_rng(1), 48, 16)[1]
    b = abdomen_case(np.random.default_rng(2), 48, 16)[1]
    assert (a != b).mean() > 0.01


@pytest.mark.parametrize("high_grade", [True, False])
def test_brain_tumour_labels_and_skull_stripping(high_grade: bool) -> None:
    images, seg = brain_case(np.random.default_rng(3), 48, 16, high_grade)
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and {1, 2} <= set(np.unique(seg))
    if high_grade:
        assert 4 in seg
    brain = images["t1"] > 0
    for name in ("flair", "t1ce", "t2"):
        np.testing.assert_array_equal(images[name] > 0, brain)  # 0 exactly outside the brain
    assert brain[seg > 0].all()
    # Edema is bright on FLAIR relative to normal brain.
    assert images["flair"][seg == 2].mean() > 1.3 * images["flair"][brain & (seg == 0)].mean()


def test_voxel_arrays_follow_the_volume_convention(small: Params, tmp_path: Path) -> None:
    phantom.run(small, tmp_path)
    raw = np.asarray(nib.load(tmp_path / "synapse" / "label" / "label0005.nii.gz").dataobj)
    label = to_zyx(raw)
    rng = np.random.default_rng([small.seed, streams.PHANTOM, 0, 5])
    np.testing.assert_array_equal(label, abdomen_case(rng, 48, 16)[1])
