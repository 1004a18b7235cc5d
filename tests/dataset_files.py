"""Tiny datasets written in code, in each reader's layout (volumes 6 x 16 x 16, Z x H x W)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import yaml

from core.volume import from_zyx

SHAPE = (6, 16, 16)  # Z x H x W
SPACING = (2.5, 0.8, 0.8)  # Z, H, W in mm
AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])  # i -> patient left, j -> posterior, k -> superior


def write_nifti(path: Path, data_zyx: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save a `Z x H x W` (or `Z x H x W x T`, stored as I x J x K x T) array as NIfTI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data_zyx.ndim == 4:
        data = np.ascontiguousarray(np.transpose(data_zyx, (2, 1, 0, 3)))
    else:
        data = from_zyx(data_zyx)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data_zyx.dtype)
    nib.save(img, path)
    return path


def btcv_label(seed: int) -> np.ndarray:
    """BTCV ids on slices 1..4 only (slices 0 and 5 unlabeled); Z x H x W uint8.

    liver (6) rows 2-7 cols 2-7 on slices 1-4, spleen (1) rows 10-13 cols 10-13 on slices 2-3,
    pancreas (11) one 2x2 block on slice 3, esophagus (5) and adrenal (12) on slice 4.
    """
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:5, 2:8, 2:8] = 6
    lab[2:4, 10:14, 10:14] = 1
    lab[3, 12:14, 2:4] = 11
    lab[4, 0:2, 14:16] = 5
    lab[4, 14:16, 0:2] = 12
    lab[1, 8 + seed % 4, 8] = 2  # a little case-to-case variation
    return lab


def btcv_image(label: np.ndarray) -> np.ndarray:
    """int16 HU: air -1000, liver 75 (0.5 after windowing), spleen 400 (above the window)."""
    hu = np.full(label.shape, -1000, np.int16)
    hu[label == 6] = 75
    hu[label == 1] = 400
    hu[label == 11] = -125
    hu[label == 5] = 275
    return hu


def make_synapse(root: Path, numbers: tuple[int, ...] = (5, 6, 7, 1, 2)) -> Path:
    """BTCV raw layout with the given case numbers (5, 6, 7 train and 1, 2 test by default)."""
    for n in numbers:
        label = btcv_label(n)
        write_nifti(root / "img" / f"img{n:04d}.nii.gz", btcv_image(label))
        write_nifti(root / "label" / f"label{n:04d}.nii.gz", label)
    return root


def make_synapse_npz(
    root: Path, train: tuple[int, ...] = (5, 6), test: tuple[int, ...] = (1,)
) -> Path:
    """TransUNet layout: one .npz per training slice, one .npy.h5 volume per test case."""
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir(parents=True)
    for n in train:
        label = np.zeros(SHAPE, np.float32)  # TransUNet stores labels as float32
        label[1:4, 3:9, 3:9] = 5
        image = np.linspace(-0.2, 1.3, 256, dtype=np.float32).reshape(16, 16)
        for z in range(SHAPE[0]):
            np.savez(
                root / "train_npz" / f"case{n:04d}_slice{z:03d}.npz", image=image, label=label[z]
            )
    for n in test:
        with h5py.File(root / "test_vol_h5" / f"case{n:04d}.npy.h5", "w") as f:
            f["image"] = np.full(SHAPE, 0.25, np.float32)
            lab = np.zeros(SHAPE, np.float32)
            lab[2, 4:8, 4:8] = 8
            f["label"] = lab
    return root


def brats_volumes(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four modalities (int16, zero outside a brain box) and a seg with 0/1/2/4."""
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, bool)
    brain[1:5, 2:14, 2:14] = True
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:4, 4:10, 4:10] = 2
    seg[2:4, 5:9, 5:9] = 4
    seg[2:4, 6:8, 6:8] = 1
    images = {}
    for k, name in enumerate(("flair", "t1", "t1ce", "t2")):
        base = rng.integers(100, 1000, SHAPE).astype(np.int16) + 1000 * k
        images[name] = (base * brain).astype(np.int16)
    return images, seg


def make_brats(root: Path, hgg: int = 3, lgg: int = 1) -> Path:
    """BraTS 2018 layout with `hgg` + `lgg` cases."""
    for i in range(hgg + lgg):
        grade = "HGG" if i < hgg else "LGG"
        case = f"Brats18_TEST_{i:03d}_1"
        images, seg = brats_volumes(i)
        for name, data in images.items():
            write_nifti(root / grade / case / f"{case}_{name}.nii.gz", data)
        write_nifti(root / grade / case / f"{case}_seg.nii.gz", seg)
    return root


def make_nifti(
    root: Path,
    cases: int = 4,
    channels: int = 1,
    dataset_json: dict[str, Any] | None = None,
    suffix: bool = True,
    test_cases: int = 0,
) -> Path:
    """nnU-Net layout (`<case>_0000.nii.gz`), or MSD (`<case>.nii.gz`) with suffix=False."""
    for folder, n, prefix in (("Tr", cases, "tr"), ("Ts", test_cases, "ts")):
        for i in range(n):
            case = f"{prefix}_{i:03d}"
            label = np.zeros(SHAPE, np.uint8)
            label[1:4, 4:10, 4:10] = 1
            label[2, 11:14, 11:14] = 2
            for c in range(channels):
                name = f"{case}_{c:04d}.nii.gz" if suffix else f"{case}.nii.gz"
                image = (label * 100 + 10 * c + 50).astype(np.float32)
                write_nifti(root / f"images{folder}" / name, image)
            write_nifti(root / f"labels{folder}" / f"{case}.nii.gz", label)
    if dataset_json is not None:
        (root / "dataset.json").write_text(json.dumps(dataset_json))
    return root


def params_file(tmp: Path, params_dict: dict[str, Any], **dataset: Any) -> Path:
    """A params.yaml under `tmp` with some `dataset` keys changed."""
    data = copy.deepcopy(params_dict)
    data["dataset"].update(dataset)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
