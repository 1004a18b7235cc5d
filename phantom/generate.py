"""The embedded default dataset: deterministic phantom scans written in the real layouts.

`run(params, out)` writes

    out/synapse/img/img0005.nii.gz, out/synapse/label/label0005.nii.gz, ...
        abdominal CT (int16 HU) with the original BTCV label ids 0..13, TransUNet case numbers
    out/brats/HGG|LGG/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz
        brain MRI with BraTS labels 0/1/2/4

so the default pipeline reads them with the same readers as real data. Everything derives from
`params.seed` and `params.phantom`. Each dataset is written into a hidden temporary folder that is
renamed into place when complete, so an interrupted run never leaves a half-written dataset.
"""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np

from core import streams
from core.atomic import atomic_folder
from core.params import Params, PhantomParams
from core.progress import track
from core.volume import from_zyx
from phantom.abdomen import abdomen_case
from phantom.abdomen import voxel_size_mm as abdomen_voxel
from phantom.brain import MODALITIES, brain_case
from phantom.brain import voxel_size_mm as brain_voxel
from synth.datasets.synapse import TEST_IDS, TRAIN_IDS

HGG_FRACTION = 0.74  # share of high-grade cases in BraTS 2018 (210 of 285)


def synapse_numbers(cases: int) -> list[int]:
    """BTCV case numbers for `cases` phantom scans: TransUNet's, in its 18:12 train:test ratio."""
    n_train = min(max(1, round(cases * len(TRAIN_IDS) / 30)), cases - 1)
    return sorted([*TRAIN_IDS[:n_train], *TEST_IDS[: cases - n_train]])


def brats_cases(cases: int) -> list[tuple[str, str]]:
    """(grade folder, case id) for `cases` phantom scans, about 3/4 of them high grade."""
    n_hgg = min(max(1, round(cases * HGG_FRACTION)), cases - 1)
    return [("HGG" if i < n_hgg else "LGG", f"Brats18_PHNT_{i + 1:03d}_1") for i in range(cases)]


def lps_affine(
    spacing_zyx: tuple[float, float, float], shape_zyx: tuple[int, int, int]
) -> np.ndarray:
    """NIfTI (RAS) affine of a `Z x H x W` volume stored like DICOM-derived scans.

    Column index (i) runs to the patient's left (x decreases), row index (j) to posterior (y
    decreases), slice index (k) to superior, and the volume centre sits at the world origin.
    """
    sz, sy, sx = spacing_zyx
    z, h, w = shape_zyx
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * (w - 1) / 2, sy * (h - 1) / 2, -sz * (z - 1) / 2]
    return affine


def save_nifti(path: Path, data_zyx: np.ndarray, affine: np.ndarray) -> None:
    """Write a `Z x H x W` array as NIfTI in scanner coordinates (qform and sform code 1)."""
    img = nib.Nifti1Image(from_zyx(data_zyx), affine)
    img.header.set_data_dtype(data_zyx.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def _write_synapse(p: PhantomParams, seed: int, folder: Path) -> None:
    (folder / "img").mkdir()
    (folder / "label").mkdir()
    shape = (p.synapse_slices, p.synapse_size, p.synapse_size)
    affine = lps_affine(abdomen_voxel(p.synapse_size, p.synapse_slices), shape)
    for n in track(synapse_numbers(p.synapse_cases), "phantom synapse"):
        rng = np.random.default_rng([seed, streams.PHANTOM, 0, n])
        hu, label = abdomen_case(rng, p.synapse_size, p.synapse_slices)
        save_nifti(folder / "img" / f"img{n:04d}.nii.gz", hu, affine)
        save_nifti(folder / "label" / f"label{n:04d}.nii.gz", label, affine)


def _write_brats(p: PhantomParams, seed: int, folder: Path) -> None:
    shape = (p.brats_slices, p.brats_size, p.brats_size)
    affine = lps_affine(brain_voxel(p.brats_size, p.brats_slices), shape)
    for i, (grade, case) in enumerate(track(brats_cases(p.brats_cases), "phantom brats")):
        rng = np.random.default_rng([seed, streams.PHANTOM, 1, i])
        images, seg = brain_case(rng, p.brats_size, p.brats_slices, grade == "HGG")
        case_dir = folder / grade / case
        case_dir.mkdir(parents=True)
        for name in MODALITIES:
            save_nifti(case_dir / f"{case}_{name}.nii.gz", images[name], affine)
        save_nifti(case_dir / f"{case}_seg.nii.gz", seg, affine)


def run(params: Params, out: Path) -> None:
    """Write the phantom Synapse and BraTS datasets under `out` (see the module docstring)."""
    p, seed = params.phantom, params.seed
    start = time.perf_counter()
    # A rerun replaces a dataset it wrote itself; a folder holding anything else is refused.
    with atomic_folder(out / "synapse", owned=("img", "label")) as tmp:
        _write_synapse(p, seed, tmp)
    with atomic_folder(out / "brats", owned=("HGG", "LGG")) as tmp:
        _write_brats(p, seed, tmp)
    print(
        f"phantom: {p.synapse_cases} Synapse CT cases ({p.synapse_size}x{p.synapse_size}x"
        f"{p.synapse_slices}) in {out / 'synapse'}, {p.brats_cases} BraTS cases "
        f"({p.brats_size}x{p.brats_size}x{p.brats_slices}) in {out / 'brats'} "
        f"[{time.perf_counter() - start:.1f} s]"
    )
