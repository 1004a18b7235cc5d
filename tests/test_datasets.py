"""Readers on tiny files written here: layout, label mapping, split, intensities, resizing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import replace_section
from dataset_files import (
    AFFINE,
    SHAPE,
    SPACING,
    btcv_label,
    make_brats,
    make_nifti,
    make_synapse,
    make_synapse_npz,
)
from test_checkpoint import _CreatesFile

from core.errors import InputError
from core.params import Params
from synth.datasets import open_dataset
from synth.datasets.base import seeded_split
from synth.datasets.synapse import BTCV_TO_8, TEST_IDS, TRAIN_IDS


def _reader(params: Params, fmt: str, root: Path, **changes: object):
    p = replace_section(params, "dataset", format=fmt, root=str(root), **changes)
    return open_dataset(p.dataset, p.seed)


def test_synapse_split_mapping_window_and_geometry(params: Params, tmp_path: Path) -> None:
    reader = _reader(params, "synapse", make_synapse(tmp_path))
    # TransUNet split; absent cases (9, 10, ... and 3, 4, ...) are skipped.
    assert reader.cases("train") == ["case0005", "case0006", "case0007"]
    assert reader.cases("test") == ["case0001", "case0002"]
    assert reader.classes[4] == "liver" and len(reader.classes) == 8
    assert reader.channels == ("CT",)
    vol = reader.load("case0005")
    assert vol.image.shape == (1, *SHAPE) and vol.image.dtype == np.float32
    raw = btcv_label(5)
    # 8-organ protocol worked out by hand: liver 6->5, pancreas 11->8, esophagus 5 and adrenal 12 -> 0
    expected = np.zeros_like(raw)
    expected[raw == 6], expected[raw == 1], expected[raw == 11], expected[raw == 2] = 5, 1, 8, 2
    np.testing.assert_array_equal(vol.label, expected)
    # Window [-125, 275]: 75 HU -> 0.5, -125 -> 0, 275 -> 1, 400 and -1000 clip.
    img = vol.image[0]
    assert np.allclose(img[raw == 6], 0.5) and np.allclose(img[raw == 11], 0.0)
    assert np.allclose(img[raw == 5], 1.0) and np.allclose(img[raw == 1], 1.0)
    assert np.allclose(img[raw == 0], 0.0)
    assert vol.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(vol.affine, AFFINE)


def test_transunet_split_is_the_published_one() -> None:
    assert len(TRAIN_IDS) == 18 and len(TEST_IDS) == 12 and not set(TRAIN_IDS) & set(TEST_IDS)
    assert BTCV_TO_8 == {1: 1, 2: 2, 3: 3, 4: 4, 6: 5, 7: 6, 8: 7, 11: 8}


@pytest.mark.parametrize("numbers", [(5, 6), (1, 2), (11, 12)])
def test_synapse_without_train_or_test_case_fails(
    params: Params, tmp_path: Path, numbers: tuple[int, ...]
) -> None:
    with pytest.raises(InputError, match="no (train|test) case"):
        _reader(params, "synapse", make_synapse(tmp_path, numbers))


def test_slice_size_resizes_image_by_area_and_label_by_nearest(
    params: Params, tmp_path: Path
) -> None:
    root = make_synapse(tmp_path)
    full = _reader(params, "synapse", root).load("case0005")
    half = _reader(params, "synapse", root, slice_size=8).load("case0005")
    assert half.image.shape == (1, 6, 8, 8) and half.label.shape == (6, 8, 8)
    blocks = full.image[0].reshape(6, 8, 2, 8, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(half.image[0], blocks, atol=1e-6)
    np.testing.assert_array_equal(half.label, full.label[:, 1::2, 1::2])
    assert half.spacing == pytest.approx((2.5, 1.6, 1.6))
    up = _reader(params, "synapse", root, slice_size=32).load("case0005")
    assert up.image.shape == (1, 6, 32, 32) and set(np.unique(up.label)) == set(
        np.unique(full.label)
    )


def test_synapse_npz_stacks_slices_and_clips(params: Params, tmp_path: Path) -> None:
    reader = _reader(params, "synapse-npz", make_synapse_npz(tmp_path))
    assert reader.cases("train") == ["case0005", "case0006"]
    assert reader.cases("test") == ["case0001"]
    vol = reader.load("case0005")
    assert vol.image.shape == (1, *SHAPE)
    assert vol.image.min() == 0.0 and vol.image.max() == 1.0  # -0.2 and 1.3 clipped
    assert set(np.unique(vol.label)) == {0, 5} and vol.label[1:4, 3:9, 3:9].all()
    test = reader.load("case0001")
    assert np.allclose(test.image, 0.25) and test.label.sum() == 16 * 8


def test_synapse_npz_missing_slice_and_pickled_file(params: Params, tmp_path: Path) -> None:
    root = make_synapse_npz(tmp_path)
    (root / "train_npz" / "case0006_slice002.npz").unlink()
    marker = tmp_path / "ran"
    # An object array holding the payload: unpickling it creates `marker`
    # (test_reliability_untrusted.test_the_payload_runs_when_loaded_unsafely shows it does).
    payload = np.empty(1, dtype=object)
    payload[0] = _CreatesFile(marker)
    evil = root / "train_npz" / "case0005_slice001.npz"
    np.savez(evil, image=payload, label=np.zeros((16, 16)))
    reader = _reader(params, "synapse-npz", root)
    problems = [str(p) for p in reader.layout_problems()]
    assert any("case0006_slice002.npz" in p and "missing slice 2" in p for p in problems)
    with pytest.raises(InputError) as err:
        reader.load("case0005")
    assert err.value.path == evil
    assert not marker.exists()


@pytest.mark.parametrize(
    ("target", "classes", "ids"),
    [
        ("whole_tumor", ("tumor",), {0, 1}),
        ("regions", ("necrotic core", "edema", "enhancing tumor"), {0, 1, 2, 3}),
    ],
)
def test_brats_targets_channels_and_normalization(
    params: Params, tmp_path: Path, target: str, classes: tuple[str, ...], ids: set[int]
) -> None:
    reader = _reader(
        params,
        "brats",
        make_brats(tmp_path),
        brats_target=target,
        brats_channels=("t2", "flair", "t1ce"),
    )
    assert reader.classes == classes and reader.channels == ("t2", "flair", "t1ce")
    case = reader.cases("train")[0]
    vol = reader.load(case)
    assert vol.image.shape == (3, *SHAPE) and set(np.unique(vol.label)) == ids
    if target == "regions":  # BraTS 4 (enhancing) -> 3, 2 (edema) -> 2, 1 (necrosis) -> 1
        assert vol.label[2, 5, 5] == 3 and vol.label[2, 4, 4] == 2 and vol.label[2, 6, 6] == 1
    # Independent check of channel 0 (t2): percentiles of the nonzero voxels map to 0 and 1.
    raw = np.asarray(nib.load(vol.source.parent / f"{case}_t2.nii.gz").dataobj).astype(float)
    raw = np.transpose(raw, (2, 1, 0))
    lo, hi = np.percentile(raw[raw != 0], params.dataset.percentiles)
    expected = np.where(raw != 0, np.clip((raw - lo) / (hi - lo), 0, 1), 0)
    np.testing.assert_allclose(vol.image[0], expected, atol=1e-5)


def test_brats_split_is_seeded_and_disjoint(params: Params, tmp_path: Path) -> None:
    root = make_brats(tmp_path, hgg=4, lgg=2)
    a = _reader(params, "brats", root)
    b = _reader(params, "brats", root)
    assert a.cases("train") == b.cases("train") and a.cases("test") == b.cases("test")
    assert len(a.cases("test")) == 2  # round(6 * 0.3)
    assert not set(a.cases("train")) & set(a.cases("test"))
    assert len(a.cases("train")) + len(a.cases("test")) == 6


def test_seeded_split_depends_on_seed_and_keeps_both_sides() -> None:
    cases = [f"c{i}" for i in range(10)]
    splits = {tuple(seeded_split(cases, 0.3, s)["test"]) for s in range(8)}
    assert len(splits) > 1
    two = seeded_split(["a", "b"], 0.9, 0)
    assert len(two["train"]) == 1 and len(two["test"]) == 1


def test_nifti_with_dataset_json_and_seeded_split(params: Params, tmp_path: Path) -> None:
    info = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumour": 1, "cyst": 2}}
    reader = _reader(params, "nifti", make_nifti(tmp_path, cases=5, dataset_json=info))
    assert reader.classes == ("tumour", "cyst") and reader.channels == ("CT",)
    assert len(reader.cases("test")) == 2 and len(reader.cases("train")) == 3
    vol = reader.load(reader.cases("train")[0])
    # CT window [-125, 275]: 50 HU -> 0.4375, 150 -> 0.6875
    assert np.isclose(vol.image[0, 0, 0, 0], 175 / 400)
    assert np.isclose(vol.image[0, 1, 5, 5], 275 / 400)
    assert set(np.unique(vol.label)) == {0, 1, 2}


def test_nifti_msd_layout_labels_ts_and_params_classes(params: Params, tmp_path: Path) -> None:
    info = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "a", "2": "b"}}
    root = make_nifti(tmp_path, cases=2, suffix=False, dataset_json=info, test_cases=2)
    reader = _reader(params, "nifti", root)
    assert reader.cases("train") == ["tr_000", "tr_001"] and reader.cases("test") == [
        "ts_000",
        "ts_001",
    ]
    vol = reader.load("ts_001")
    assert vol.image.max() == 1.0 and vol.image.min() >= 0.0  # MR: percentile scaling
    (root / "dataset.json").unlink()
    reader = _reader(params, "nifti", root, classes=("x", "y"), modality="MR")
    assert reader.classes == ("x", "y") and reader.channels == ("MR",)
    with pytest.raises(InputError, match="no class names"):
        _reader(params, "nifti", root, classes=())


@pytest.mark.parametrize("channels", [2, 4])
def test_nifti_channel_counts_sam_cannot_take_fail(
    params: Params, tmp_path: Path, channels: int
) -> None:
    root = make_nifti(tmp_path, channels=channels)
    with pytest.raises(InputError, match=f"{channels} input channels.*1 .*or 3"):
        _reader(params, "nifti", root, classes=("a", "b"), modality="MR")


def test_nifti_three_mr_channels(params: Params, tmp_path: Path) -> None:
    root = make_nifti(tmp_path, channels=3)
    reader = _reader(params, "nifti", root, classes=("a", "b"), modality="MR")
    assert reader.channels == ("MR0", "MR1", "MR2")
    assert reader.load(reader.cases("train")[0]).image.shape == (3, *SHAPE)


@pytest.mark.parametrize("fmt", ["synapse", "synapse-npz", "brats", "nifti"])
def test_missing_empty_or_file_root_fails_naming_it(
    params: Params, tmp_path: Path, fmt: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a file").write_text("not a folder\n")
    for name, problem in [
        ("nowhere", "dataset folder not found (set dataset.root)"),
        ("empty", "dataset folder is empty"),
        ("a file", "dataset root is not a folder"),
    ]:
        with pytest.raises(InputError) as err:
            _reader(params, fmt, tmp_path / name)
        assert err.value.path == tmp_path / name and err.value.problem == problem


def test_nifti_incomplete_channel_sets_are_layout_problems(params: Params, tmp_path: Path) -> None:
    root = make_nifti(tmp_path, cases=5, channels=3)
    (root / "imagesTr" / "tr_001_0002.nii.gz").unlink()
    (root / "imagesTr" / "tr_002_0001.nii.gz").unlink()
    (root / "labelsTr" / "tr_003.nii.gz").unlink()
    reader = _reader(params, "nifti", root, classes=("a", "b"), modality="MR")
    problems = sorted(str(p) for p in reader.layout_problems())
    assert len(problems) == 3
    assert "tr_001_0000.nii.gz: 2 channel files, expected 3" in problems[0]
    assert "tr_002_0001.nii.gz: missing channel file" in problems[1]
    assert "tr_003_0000.nii.gz: image without label" in problems[2]
    assert sorted(reader.cases("train") + reader.cases("test")) == ["tr_000", "tr_004"]


# ---- anisotropic in-plane voxels ---------------------------------------------------------------

# A volume whose rows (H, anterior -> posterior) are 1.4 mm apart and whose columns (W, right ->
# left) 0.6 mm, on a 5 x 20 x 12 grid (Z x H x W): neither the spacing nor the shape is symmetric
# in H and W, so a reader that swaps the two spacings or transposes the slices fails below.
ANISO_SHAPE = (5, 20, 12)
ANISO_SPACING = (2.5, 1.4, 0.6)  # Z, H, W in mm


def _aniso_file(zyx: np.ndarray, storage: str) -> nib.Nifti1Image:
    """`zyx` stored as NIfTI (L, P, S): I = W, J = H; or (P, L, S): I = H, J = W, written by hand
    (not with `core.volume.from_zyx`, the inverse of what is tested)."""
    z_mm, h_mm, w_mm = ANISO_SPACING
    if storage == "LPS":
        data = np.transpose(zyx, (2, 1, 0))
        affine = np.diag([-w_mm, -h_mm, z_mm, 1.0])
    else:  # i runs posterior (world -y), j to the patient's left (world -x), k superior
        data = np.transpose(zyx, (1, 2, 0))
        affine = np.array(
            [[0, -w_mm, 0, 0], [-h_mm, 0, 0, 0], [0, 0, z_mm, 0], [0, 0, 0, 1]], dtype=float
        )
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_data_dtype(zyx.dtype)
    return img


def _aniso_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(raw intensities, foreground mask), Z x H x W. Intensities rise with the flat index, so
    the normalized image must keep their order voxel for voxel; the mask is an off-centre box."""
    raw = np.linspace(-100.0, 250.0, int(np.prod(ANISO_SHAPE)), dtype=np.float32)
    mask = np.zeros(ANISO_SHAPE, bool)
    mask[1:4, 3:9, 2:5] = True
    return raw.reshape(ANISO_SHAPE), mask


def _write_aniso_dataset(root: Path, fmt: str, storage: str) -> Path:
    raw, mask = _aniso_arrays()
    if fmt == "synapse":  # liver (BTCV 6) in a training case 5 and a test case 1
        for n in (5, 1):
            for folder, name, data in (
                ("img", f"img{n:04d}", raw),
                ("label", f"label{n:04d}", (mask * 6).astype(np.uint8)),
            ):
                (root / folder).mkdir(parents=True, exist_ok=True)
                nib.save(_aniso_file(data, storage), root / folder / f"{name}.nii.gz")
    elif fmt == "brats":  # necrotic core (BraTS 1) in 3 cases; brain voxels all nonzero
        for i in range(3):
            case = root / "HGG" / f"Brats18_A_{i:03d}_1"
            case.mkdir(parents=True)
            for m in ("flair", "t1", "t1ce", "t2", "seg"):
                data = (mask * 1).astype(np.uint8) if m == "seg" else raw + 200.0
                nib.save(_aniso_file(data, storage), case / f"{case.name}_{m}.nii.gz")
    else:  # nnU-Net layout, one CT channel, class 1
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        for i in range(3):
            nib.save(_aniso_file(raw, storage), root / "imagesTr" / f"c{i}_0000.nii.gz")
            label = (mask * 1).astype(np.uint8)
            nib.save(_aniso_file(label, storage), root / "labelsTr" / f"c{i}.nii.gz")
    return root


@pytest.mark.parametrize("storage", ["LPS", "PLS"])
@pytest.mark.parametrize("fmt", ["synapse", "brats", "nifti"])
def test_anisotropic_in_plane_spacing_keeps_rows_and_columns(
    params: Params, tmp_path: Path, fmt: str, storage: str
) -> None:
    root = _write_aniso_dataset(tmp_path / "ds", fmt, storage)
    changes: dict[str, object] = {"slice_size": 0}
    if fmt == "nifti":
        changes.update(classes=("organ",), modality="CT")
    reader = _reader(params, fmt, root, **changes)
    raw, mask = _aniso_arrays()
    for split in ("train", "test"):
        vol = reader.load(reader.cases(split)[0])
        assert vol.image.shape[1:] == ANISO_SHAPE and vol.label is not None
        assert vol.spacing == pytest.approx(ANISO_SPACING)  # (Z, H, W): H 1.4 mm, W 0.6 mm
        np.testing.assert_array_equal(vol.label > 0, mask)
        # Each channel is a monotone function of the raw intensity of the same voxel.
        for channel in vol.image:
            in_raw_order = channel.ravel()[np.argsort(raw.ravel(), kind="stable")]
            assert np.all(np.diff(in_raw_order) >= 0) and in_raw_order[-1] > in_raw_order[0]
