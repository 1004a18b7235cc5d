"""One anatomical orientation for every scan: `core.volume`'s to_zyx / from_zyx / spacing_zyx /
file_slice / obliquity_deg, and the nifti reader cutting differently stored scans alike.

The reference is an (L, P, S)-coded volume (i -> patient left, j -> posterior, k -> superior),
for which `to_zyx` is a plain transpose. Every other storage is built by hand from it: stored
axis a holds reference axis perm[a], reversed when flip[a]; the affine's column a is reference
column perm[a] (negated when reversed) and the translation moves to the voxel that is now first.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import replace_section
from nibabel.orientations import inv_ornt_aff

from core.params import Params
from core.volume import file_slice, from_zyx, obliquity_deg, spacing_zyx, to_zyx
from synth.datasets import open_dataset

REF_SHAPE = (3, 4, 5)  # I x J x K of the reference: W=3, H=4, Z=5
REF_ZOOMS = (0.7, 0.9, 2.5)  # mm along I, J, K
REF_AFFINE = np.array(
    [
        [-0.7, 0.0, 0.0, 12.0],
        [0.0, -0.9, 0.0, -7.0],
        [0.0, 0.0, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
REF_DATA = np.random.default_rng(0).permutation(np.prod(REF_SHAPE)).reshape(REF_SHAPE)
REF_ZYX = REF_DATA.transpose(2, 1, 0)  # the convention: Z x H x W
REF_SPACING = (2.5, 0.9, 0.7)  # Z, H, W

STORAGES = [
    (perm, flip)
    for perm in itertools.permutations(range(3))
    for flip in itertools.product((False, True), repeat=3)
]


def stored(
    ref: np.ndarray, affine: np.ndarray, perm: tuple[int, ...], flip: tuple[bool, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(data, affine) of the same anatomy with stored axis a = reference axis perm[a]."""
    data = np.transpose(ref, (*perm, *range(3, ref.ndim)))
    data = np.flip(data, axis=[a for a in range(3) if flip[a]])
    out = np.eye(4)
    out[:3, 3] = affine[:3, 3]
    for a in range(3):
        column = affine[:3, perm[a]]
        if flip[a]:
            out[:3, a] = -column
            out[:3, 3] += column * (ref.shape[perm[a]] - 1)
        else:
            out[:3, a] = column
    return np.ascontiguousarray(data), out


def ornt_of(perm: tuple[int, ...], flip: tuple[bool, ...]) -> np.ndarray:
    """nibabel orientation taking the stored array back to the reference."""
    return np.array([[perm[a], -1 if flip[a] else 1] for a in range(3)], float)


def test_reference_is_a_plain_transpose() -> None:
    assert nib.aff2axcodes(REF_AFFINE) == ("L", "P", "S")
    np.testing.assert_array_equal(to_zyx(REF_DATA, REF_AFFINE), REF_ZYX)
    np.testing.assert_array_equal(to_zyx(REF_DATA), REF_ZYX)  # no affine: taken as canonical
    np.testing.assert_array_equal(from_zyx(REF_ZYX, REF_AFFINE), REF_DATA)
    assert spacing_zyx(REF_ZOOMS, REF_AFFINE) == pytest.approx(REF_SPACING)
    assert spacing_zyx(REF_ZOOMS) == pytest.approx(REF_SPACING)
    assert file_slice(3, REF_SHAPE, REF_AFFINE) == (2, 3)
    assert file_slice(3, REF_SHAPE, None) == (2, 3)


def test_storage_builder_matches_nibabel() -> None:
    """The hand-built storages are those nibabel's reorientation describes (same world points)."""
    for perm, flip in STORAGES:
        data, affine = stored(REF_DATA, REF_AFFINE, perm, flip)
        # Voxel v of the stored array is voxel inv_ornt_aff(...) @ v of the reference.
        back = ornt_of(perm, flip)
        np.testing.assert_array_equal(nib.orientations.apply_orientation(data, back), REF_DATA)
        np.testing.assert_allclose(
            affine, REF_AFFINE @ inv_ornt_aff(_to_stored(perm, flip), REF_SHAPE)
        )


def _to_stored(perm: tuple[int, ...], flip: tuple[bool, ...]) -> np.ndarray:
    """nibabel orientation taking the reference to the stored array."""
    out = np.zeros((3, 2))
    for a in range(3):
        out[perm[a]] = [a, -1 if flip[a] else 1]
    return out


@pytest.mark.parametrize(("perm", "flip"), STORAGES, ids=[f"{p}{f}" for p, f in STORAGES])
def test_every_storage_gives_the_reference(perm: tuple[int, ...], flip: tuple[bool, ...]) -> None:
    data, affine = stored(REF_DATA, REF_AFFINE, perm, flip)
    zooms = tuple(REF_ZOOMS[p] for p in perm)
    zyx = to_zyx(data, affine)
    np.testing.assert_array_equal(zyx, REF_ZYX)
    assert zyx.flags.c_contiguous
    back = from_zyx(zyx, affine)
    assert back.shape == data.shape
    np.testing.assert_array_equal(back, data)
    assert spacing_zyx(zooms, affine) == pytest.approx(REF_SPACING)
    slice_axis = perm.index(2)  # the stored axis holding the reference's k (superior)
    for z in range(REF_SHAPE[2]):
        axis, index = file_slice(z, data.shape, affine)
        assert axis == slice_axis
        assert index == (REF_SHAPE[2] - 1 - z if flip[slice_axis] else z)
        plane = np.take(data, index, axis=axis)
        # Values are distinct, so the same set of values means the same anatomical slice.
        np.testing.assert_array_equal(np.sort(plane, axis=None), np.sort(zyx[z], axis=None))
    assert obliquity_deg(affine) == pytest.approx(0.0, abs=1e-9)


def test_ras_and_lps_copies_read_alike() -> None:
    ras_data, ras_affine = stored(REF_DATA, REF_AFFINE, (0, 1, 2), (True, True, False))
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    np.testing.assert_array_equal(ras_data, REF_DATA[::-1, ::-1, :])
    np.testing.assert_array_equal(to_zyx(ras_data, ras_affine), to_zyx(REF_DATA, REF_AFFINE))
    assert spacing_zyx(REF_ZOOMS, ras_affine) == spacing_zyx(REF_ZOOMS, REF_AFFINE)
    # W runs from the patient's right to their left: first column is the rightmost voxel.
    assert to_zyx(ras_data, ras_affine)[0, 0, 0] == REF_DATA[0, 0, 0]


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(4)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("degrees", [10.0, 30.0, -30.0])
def test_obliquity_is_the_rotation_angle(axis: int, degrees: float) -> None:
    affine = _rotation(axis, degrees) @ REF_AFFINE
    assert obliquity_deg(affine) == pytest.approx(abs(degrees), abs=1e-6)
    # Beyond 45 degrees the nearest world axis is the other one.
    assert obliquity_deg(_rotation(axis, 60.0) @ REF_AFFINE) == pytest.approx(30.0, abs=1e-6)


def test_obliquity_of_axis_aligned_affines_is_zero() -> None:
    assert obliquity_deg(np.eye(4)) == 0.0
    assert obliquity_deg(REF_AFFINE) == pytest.approx(0.0, abs=1e-9)
    for perm, flip in STORAGES:
        assert obliquity_deg(stored(REF_DATA, REF_AFFINE, perm, flip)[1]) == pytest.approx(
            0.0, abs=1e-9
        )


def test_slightly_oblique_scan_is_cut_along_the_nearest_axis() -> None:
    data, affine = stored(REF_DATA, REF_AFFINE, (2, 0, 1), (True, False, True))
    tilted = _rotation(0, 10.0) @ affine
    assert obliquity_deg(tilted) == pytest.approx(10.0, abs=1e-6)
    np.testing.assert_array_equal(to_zyx(data, tilted), REF_ZYX)
    np.testing.assert_array_equal(from_zyx(REF_ZYX, tilted), data)


@pytest.mark.parametrize(
    ("perm", "flip"), [((0, 1, 2), (False, False, False)), ((1, 2, 0), (True, False, True))]
)
def test_four_d_gives_channels_first(perm: tuple[int, ...], flip: tuple[bool, ...]) -> None:
    channels = np.stack([REF_DATA, REF_DATA * 10, -REF_DATA], axis=-1)  # I x J x K x C
    data, affine = stored(channels, REF_AFFINE, perm, flip)
    out = to_zyx(data, affine)
    assert out.shape == (3, *REF_ZYX.shape)
    for c in range(3):
        np.testing.assert_array_equal(out[c], to_zyx(data[..., c], affine))
    np.testing.assert_array_equal(out[1], REF_ZYX * 10)


# ---- reader level: a nifti dataset with one case stored axially and one coronally, flipped ----

ZYX = (6, 10, 12)  # Z x H x W of the test anatomy
LPS = np.array(
    [
        [-0.7, 0.0, 0.0, 4.0],
        [0.0, -0.9, 0.0, 5.0],
        [0.0, 0.0, 2.5, -6.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _anatomy() -> tuple[np.ndarray, np.ndarray]:
    """(HU image, label) Z x H x W, asymmetric in every direction."""
    rng = np.random.default_rng(1)
    hu = rng.integers(-100, 250, ZYX).astype(np.int16)
    label = np.zeros(ZYX, np.uint8)
    label[1:3, 2:5, 1:4] = 1
    label[4, 6:9, 7:11] = 2
    return hu, label


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    nib.save(img, path)


def test_nifti_reader_reads_coronal_flipped_storage_alike(params: Params, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    hu, label = _anatomy()
    hu_ijk, label_ijk = from_zyx(hu), from_zyx(label)  # (L, P, S) storage: plain transpose
    # Coronal storage: file axes (left-right, superior-inferior, anterior-posterior), with the
    # slice axis and the left-right axis reversed.
    perm, flip = (0, 2, 1), (True, True, False)
    cor_hu, cor_affine = stored(hu_ijk, LPS, perm, flip)
    cor_label, _ = stored(label_ijk, LPS, perm, flip)
    assert nib.aff2axcodes(cor_affine) == ("R", "I", "P")
    assert cor_hu.shape == (12, 6, 10)
    _save(root / "imagesTr" / "axial_0000.nii.gz", hu_ijk, LPS)
    _save(root / "labelsTr" / "axial.nii.gz", label_ijk, LPS)
    _save(root / "imagesTr" / "coronal_0000.nii.gz", cor_hu, cor_affine)
    _save(root / "labelsTr" / "coronal.nii.gz", cor_label, cor_affine)
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}})
    )
    p = replace_section(params, "dataset", format="nifti", root=str(root), slice_size=0)
    reader = open_dataset(p.dataset, p.seed)
    assert sorted([*reader.cases("train"), *reader.cases("test")]) == ["axial", "coronal"]
    axial, coronal = reader.load("axial"), reader.load("coronal")
    assert axial.image.shape == coronal.image.shape == (1, *ZYX)
    np.testing.assert_array_equal(axial.label, label)
    np.testing.assert_array_equal(coronal.label, label)
    np.testing.assert_array_equal(coronal.image, axial.image)
    expected = np.clip((hu.astype(np.float32) + 125.0) / 400.0, 0.0, 1.0)
    np.testing.assert_allclose(axial.image[0], expected, atol=1e-6)
    assert axial.spacing == pytest.approx((2.5, 0.9, 0.7))
    assert coronal.spacing == pytest.approx(axial.spacing)
    np.testing.assert_allclose(coronal.affine, cor_affine)  # the file's own geometry is kept
