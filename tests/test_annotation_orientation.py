"""The label-a-few-slices path on scans stored in other orientations.

Three training scans hold the same anatomy: `a` stored (L, P, S) as BTCV is, `b` stored (R, A, I)
(every axis reversed) and `c` stored coronally, (L, I, A) (slices along A-P, superior-inferior
along J, reversed). `suggest` (spread, one slice per scan) must choose the same anatomical slice
of each; a scripted annotator paints each listed slice from the truth stored like its scan, by
the manifest's file axis and index alone, as a person in a viewer would; extraction must then
give, for `b` and `c`, exactly the exemplar image and label of `a`, voxel for voxel. A path that
used the manifest's file index as the axial index (no orientation mapping) would take another
slice of `b` and `c`: the body spans slices 3..9 of 10 along S, so the file index of the middle
body slice of `b` (3) is not its axial index (6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from typer.testing import CliRunner

from core.params import parse_params
from fewsam.cli import app
from suggest import run as suggest
from synth import exemplars
from synth.annotations import label_path, read_manifest

SHAPE = (24, 20, 10)  # I x J x K of `a`, stored (L, P, S)
STORAGE = {"a": ("L", "P", "S"), "b": ("R", "A", "I"), "c": ("L", "I", "A")}


def lps_affine() -> np.ndarray:
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


def anatomy() -> tuple[np.ndarray, np.ndarray]:
    """HU image and a 2-organ label of `a`: air on slices 0..2, body on 3..9, organs placed off
    centre along every axis and changing from slice to slice."""
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[2:22, 2:18, 3:] = 40.0
    label = np.zeros(SHAPE, np.uint8)
    label[4:10, 5:12, 4:9] = 1
    label[13:20, 9:16, 6:10] = 2
    label[13 : 13 + 2, 9:16, 8] = 0  # slice 8 differs from slice 7
    hu[label == 1] += 150.0
    hu[label == 2] -= 30.0
    hu += np.arange(SHAPE[2], dtype=np.float32) * 3.0  # every slice's intensities differ
    return hu, label


def restored(data: np.ndarray, axcodes: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """`data` of `a` re-stored along `axcodes`, with the affine that keeps it in place."""
    t = ornt_transform(axcodes2ornt(STORAGE["a"]), axcodes2ornt(axcodes))
    return apply_orientation(data, t), lps_affine() @ inv_ornt_aff(t, data.shape)


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, params_dict: dict[str, Any]) -> dict[str, Any]:
    """Unlabeled training scans a, b, c (nnU-Net layout), one labeled test scan, the truth of
    each training scan stored like it, and params pointing at an annotation folder."""
    base = tmp_path_factory.mktemp("orient_annot")
    root = base / "scans"
    for sub in ("imagesTr", "imagesTs", "labelsTs", "truth"):
        (root / sub if sub != "truth" else base / sub).mkdir(parents=True)
    hu, label = anatomy()
    for case, axcodes in STORAGE.items():
        image, affine = restored(hu, axcodes)
        truth, _ = restored(label, axcodes)
        assert nib.aff2axcodes(affine) == axcodes
        save(root / "imagesTr" / f"{case}_0000.nii.gz", image, affine)
        save(base / "truth" / f"{case}.nii.gz", truth, affine)
    save(root / "imagesTs" / "t_0000.nii.gz", hu, lps_affine())
    save(root / "labelsTs" / "t.nii.gz", label, lps_affine())
    meta = {"labels": {"background": 0, "one": 1, "two": 2}, "channel_names": {"0": "CT"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    data = json.loads(json.dumps(params_dict))
    data["exemplars"] = "all"
    data["dataset"].update(format="nifti", root=str(root), annotations=str(base / "ann"))
    data["synth"]["pool_per_case"] = 2
    (base / "params.yaml").write_text(yaml.safe_dump(data))
    return {"base": base, "data": data}


def paint_from_truth(folder: Path, truth: Path) -> None:
    """Copy the truth of each listed slice into its label file by the manifest's axis and index
    (file order), and save the file with its own affine and header."""
    for row in read_manifest(folder):
        path = label_path(folder, row.case)
        img = nib.load(path)
        data = np.asarray(img.dataobj).copy()
        want = np.asarray(nib.load(truth / f"{row.case}.nii.gz").dataobj)
        index: list[Any] = [slice(None)] * 3
        index[row.axis] = row.slice
        data[tuple(index)] = want[tuple(index)]
        nib.save(nib.Nifti1Image(data, img.affine, img.header), path)


def test_exemplars_of_every_storage_are_those_of_lps(world: dict[str, Any], tmp_path: Path) -> None:
    params = parse_params(world["data"])
    folder = world["base"] / "ann"
    rows = suggest.run(params, folder, 3, "spread")
    by_case = {r.case: r for r in rows}
    # The manifest speaks in each file's own axes: the slice axis is the one along S-I.
    assert {c: (r.axis, r.slice) for c, r in by_case.items()} == {
        "a": (2, 6),
        "b": (2, 3),  # K reversed: file index 3 is axial index 6
        "c": (1, 3),  # coronal storage: S-I runs along J, reversed
    }
    assert len({round(r.position_mm, 3) for r in rows}) == 1  # one world position
    paint_from_truth(folder, world["base"] / "truth")
    check = CliRunner().invoke(app, ["data", "check", "-p", str(world["base"] / "params.yaml")])
    assert check.exit_code == 0, check.output
    ex = exemplars.run(params, tmp_path / "ex.h5", tmp_path / "ex.csv")
    index = {case: i for i, case in enumerate(ex.case)}
    assert sorted(index) == ["a", "b", "c"]
    a = index["a"]
    assert int(ex.slice[a]) == 6 and set(np.unique(ex.label[a])) == {0, 1, 2}
    for other in ("b", "c"):
        i = index[other]
        assert int(ex.slice[i]) == 6
        np.testing.assert_array_equal(ex.label[i], ex.label[a])
        np.testing.assert_array_equal(ex.image[i], ex.image[a])
    # A second round never lists a slice again, in any storage: `suggest` maps the listed file
    # indices back to axial ones before it spreads the new picks.
    second = suggest.run(params, folder, 6, "spread")
    listed = [(r.case, r.slice) for r in read_manifest(folder)]
    assert len(listed) == len(set(listed)) == 9
    positions = {c: sorted(round(r.position_mm, 3) for r in second if r.case == c) for c in STORAGE}
    assert positions["a"] == positions["b"] == positions["c"] and len(positions["a"]) == 2
