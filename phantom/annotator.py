"""The label-a-few-slices path, simulated on the phantom: unlabeled scans and a scripted annotator.

`unlabeled_copy` turns a Synapse-layout dataset into the nnU-Net-style folder a hospital team
starts from: training scans without labels (imagesTr only), labeled test scans (imagesTs,
labelsTs, 8-organ ids) and a dataset.json. `annotate_from_truth` plays the person: for each row
of an annotation manifest it copies the ground truth of exactly that slice into the label file
and saves it, as painting in a viewer would. Benchmarks and tests use both; the suggester never
sees the training labels.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

from core.atomic import atomic_path, write_text
from core.errors import InputError
from synth.annotations import label_path, listed_cases, read_manifest, write_manifest
from synth.datasets.nifti_io import read_label
from synth.datasets.synapse import CLASSES, TEST_IDS, TRAIN_IDS, map_labels


def _case(number: int) -> str:
    return f"case{number:04d}"


def _save_label(path: Path, data_ijk: np.ndarray, like: nib.Nifti1Image) -> None:
    img = nib.Nifti1Image(data_ijk.astype(np.uint8), like.affine, like.header)
    # A viewer's save leaves its own mark in the header; so does this one, so a slice saved
    # all background (a negative exemplar) is told from one nobody saved.
    img.header["descrip"] = b"fewsam phantom annotator"
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    raw = img.to_bytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(
            gzip.compress(raw, compresslevel=6, mtime=0) if path.suffix == ".gz" else raw
        )


def unlabeled_copy(synapse_root: Path, out: Path) -> Path:
    """Write the nnU-Net-style unlabeled-training copy of `synapse_root` into `out`; return it."""
    synapse_root, out = Path(synapse_root), Path(out)
    for sub in ("imagesTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    found = 0
    for number in (*TRAIN_IDS, *TEST_IDS):
        image = synapse_root / "img" / f"img{number:04d}.nii.gz"
        if not image.is_file():
            continue
        found += 1
        split = "Tr" if number in TRAIN_IDS else "Ts"
        shutil.copyfile(image, out / f"images{split}" / f"{_case(number)}_0000.nii.gz")
        if split == "Ts":
            source = synapse_root / "label" / f"label{number:04d}.nii.gz"
            img = nib.load(source)
            organs = map_labels(np.asarray(img.dataobj).astype(np.uint8))
            _save_label(out / "labelsTs" / f"{_case(number)}.nii.gz", organs, img)
    if not found:
        raise InputError(synapse_root, "no Synapse scans (img/imgXXXX.nii.gz) to copy")
    labels = {"background": 0, **{name: i for i, name in enumerate(CLASSES, start=1)}}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"}
    write_text(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    return out


def annotate_from_truth(folder: Path, synapse_root: Path) -> int:
    """Copy the ground truth of every listed slice into its label file; return slices written.

    Only the listed slices change; everything else in each label file is left as it was. A
    listed slice whose truth shows no organ is marked `negative` in the manifest, as a person
    marks a slice they looked at and found empty.
    """
    rows = read_manifest(folder)
    empty: set[tuple[str, int]] = set()
    written = 0
    for case, case_rows in listed_cases(rows).items():
        number = int(case.removeprefix("case"))
        truth = read_label(Path(synapse_root) / "label" / f"label{number:04d}.nii.gz")
        organs = map_labels(truth.data.astype(np.uint8))
        path = label_path(folder, case)
        current = nib.load(path)
        data = np.asarray(current.dataobj).astype(np.uint8)
        for row in case_rows:
            index = [slice(None)] * 3
            index[row.axis] = row.slice
            data[tuple(index)] = organs[tuple(index)]
            if not organs[tuple(index)].any():
                empty.add((case, row.slice))
            written += 1
        _save_label(path, data, current)
    if empty:
        marked = [replace(r, negative=True) if (r.case, r.slice) in empty else r for r in rows]
        write_manifest(folder, marked)
    return written
