"""Scans as they come: a case stored transposed and flipped (coronal, RAS) gives the same
exemplars and the same predictions, on its own grid, as the original stored axially (LPS).

The copy's voxels are the original's moved by a nibabel orientation transform, with the affine
moved to match, so both files describe the same anatomy in the same world coordinates.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from sam_helpers import LORA, write_checkpoint

from core.params import ModelParams, Params, parse_params
from evaluate import reports
from evaluate.infer import Models, predict_case
from synth import exemplars
from synth.datasets import open_dataset
from train.model import build_fewsam, trainable_state_dict

SHAPE = (24, 20, 10)  # I x J x K of the original, stored (L, P, S)
SPACING = (0.8, 0.9, 2.5)
STORED_AS = ("R", "S", "A")  # the copy: coronal slices, every axis pointing the other way


def lps_affine() -> np.ndarray:
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


def restored(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`data` (stored with `affine`) re-stored along STORED_AS, with the matching affine."""
    t = ornt_transform(axcodes2ornt(nib.aff2axcodes(affine)), axcodes2ornt(STORED_AS))
    return apply_orientation(data, t), affine @ inv_ornt_aff(t, data.shape)


def anatomy(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """HU image and a 2-organ label, I x J x K, distinct enough that a flip would show."""
    hu = rng.normal(0.0, 20.0, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[3:9, 4:12, 2:8] = 1  # off-centre along every axis
    label[14:21, 9:17, 4:9] = 2
    hu[label == 1] += 150.0
    hu[label == 2] -= 80.0
    return hu, label


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """nnU-Net layout: training a (original), b (its copy); test c (original), d (its copy)."""
    root = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for original, copy, split in (("a", "b", "Tr"), ("c", "d", "Ts")):
        hu, label = anatomy(rng)
        save(root / f"images{split}" / f"{original}_0000.nii.gz", hu, lps_affine())
        save(root / f"labels{split}" / f"{original}.nii.gz", label, lps_affine())
        hu2, affine2 = restored(hu, lps_affine())
        label2, _ = restored(label, lps_affine())
        assert nib.aff2axcodes(affine2) == STORED_AS
        save(root / f"images{split}" / f"{copy}_0000.nii.gz", hu2, affine2)
        save(root / f"labels{split}" / f"{copy}.nii.gz", label2, affine2)
    labels = {"background": 0, "one": 1, "two": 2}
    meta = {"labels": labels, "channel_names": {"0": "CT"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def params_for(params_dict: dict, root: Path, tmp_path: Path) -> Params:
    data = json.loads(json.dumps(params_dict))
    data["exemplars"] = "all"
    data["dataset"].update(format="nifti", root=str(root), annotations=str(tmp_path / "none"))
    data["synth"]["pool_per_case"] = 2
    checkpoint = write_checkpoint(tmp_path / "tiny.safetensors", input_size=64)
    data["model"].update(arch="tiny", checkpoint=str(checkpoint), input_size=64)
    data["evaluate"]["batch_size"] = 4
    return parse_params(data)


def test_same_exemplars_from_either_storage(
    dataset: Path, tmp_path: Path, params_dict: dict
) -> None:
    params = params_for(params_dict, dataset, tmp_path)
    ex = exemplars.run(params, tmp_path / "ex.h5", tmp_path / "ex.csv")
    by_case = {c: [i for i, x in enumerate(ex.case) if x == c] for c in ("a", "b")}
    assert len(by_case["a"]) == len(by_case["b"]) == 7  # the labeled axial slices 2..8
    assert [int(ex.slice[i]) for i in by_case["a"]] == [int(ex.slice[i]) for i in by_case["b"]]
    for i, j in zip(by_case["a"], by_case["b"], strict=True):
        np.testing.assert_array_equal(ex.image[i], ex.image[j])
        np.testing.assert_array_equal(ex.label[i], ex.label[j])
    # The pool draws from its own stream per volume, so only its size is shared.
    assert ex.pool_case.count("a") == ex.pool_case.count("b") == 2


def test_same_predictions_on_each_scan_own_grid(
    dataset: Path, tmp_path: Path, params_dict: dict
) -> None:
    params = params_for(params_dict, dataset, tmp_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_fewsam(ModelParams("tiny", params.model.checkpoint, 64), LORA, 2).eval()
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # large moves, so the random adapter draws organs somewhere
            for p in trainable_state_dict(model).values():
                p.add_(0.5 * torch.randn(p.shape, generator=generator))
    reader = open_dataset(params.dataset, params.seed)
    models = Models(model, None)
    c, d = reader.load("c", resize=False), reader.load("d", resize=False)
    np.testing.assert_array_equal(c.image, d.image)
    preds_c, preds_d = predict_case(models, c, params), predict_case(models, d, params)
    assert preds_c["prompt_free"].any() and set(preds_c) == {"prompt_free", "prompted"}
    # Prompted points are drawn per case name, so only the prompt-free maps must agree exactly.
    np.testing.assert_array_equal(preds_c["prompt_free"], preds_d["prompt_free"])
    # Written back, each lies on its own file's grid: d's file is c's file re-stored.
    reports.write_nifti(tmp_path / "c.nii.gz", preds_c["prompt_free"], c.affine, c.header)
    reports.write_nifti(tmp_path / "d.nii.gz", preds_d["prompt_free"], d.affine, d.header)
    file_c, file_d = nib.load(tmp_path / "c.nii.gz"), nib.load(tmp_path / "d.nii.gz")
    image_d = nib.load(dataset / "imagesTs" / "d_0000.nii.gz")
    assert file_d.shape == image_d.shape and np.allclose(file_d.affine, image_d.affine)
    expected, _ = restored(np.asarray(file_c.dataobj), file_c.affine)
    np.testing.assert_array_equal(np.asarray(file_d.dataobj), expected)
