"""Synapse as preprocessed by TransUNet (and used by SAMed).

    train_npz/case0005_slice000.npz     keys image (H x W, CT already windowed to [0, 1]) and
                                        label (H x W, 8-organ ids 0..8); one file per axial slice
    test_vol_h5/case0001.npy.h5         keys image and label, each Z x H x W

Training slices are stacked into volumes (slices 000..n-1, none missing) so every reader offers the
same `Volume` API. Images are clipped to [0, 1]. The files carry no geometry: affine is the
identity and spacing 1 mm. `.npz` files are read without pickle support, so a file cannot run code.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import h5py
import numpy as np

from core.errors import InputError
from core.params import DatasetParams
from core.volume import Volume
from synth.datasets.base import BaseReader, Problem, collect, require_root
from synth.datasets.synapse import CLASSES

_SLICE = re.compile(r"^(case\d{4})_slice(\d+)\.npz$")
_VOLUME = re.compile(r"^(case\d{4})\.npy\.h5$")
_IDS = set(range(len(CLASSES) + 1))
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)


def _arrays(path: Path, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 clipped to [0, 1], label uint8) of one .npz slice or .npy.h5 volume."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                image, label = f["image"], f["label"]
        else:
            with h5py.File(path, "r") as f:
                image, label = f["image"][()], f["label"][()]
    except _NPZ_ERRORS as e:
        raise InputError(path, f"unreadable, truncated or missing image/label ({e})") from None
    if image.ndim != ndim or image.shape != label.shape:
        raise InputError(
            path, f"image {image.shape} and label {label.shape} must be equal {ndim}D shapes"
        )
    if image.dtype.kind not in "biuf" or label.dtype.kind not in "biuf":
        raise InputError(path, f"unsupported array types {image.dtype}, {label.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise InputError(path, "image contains NaN or inf")
    if label.dtype.kind == "f":
        if not np.isfinite(label).all() or (label != np.round(label)).any():
            raise InputError(path, "float labels with non-integer values")
    bad = sorted({int(v) for v in np.unique(label)} - _IDS)
    if bad:
        raise InputError(path, f"label ids {bad[:8]} outside the declared set {{0..8}}")
    return np.clip(image, 0.0, 1.0), label.astype(np.uint8)


class SynapseNpzReader(BaseReader):
    """TransUNet's preprocessed Synapse; see the module docstring."""

    def __init__(self, params: DatasetParams, root: Path) -> None:
        super().__init__(require_root(root), params.slice_size)
        self.classes = CLASSES
        self.channels = ("CT",)
        self._slices: dict[str, dict[int, Path]] = {}
        train_dir, test_dir = root / "train_npz", root / "test_vol_h5"
        if train_dir.is_dir():
            for path in sorted(train_dir.iterdir()):
                m = _SLICE.match(path.name)
                if m:
                    self._slices.setdefault(m.group(1), {})[int(m.group(2))] = path
        self._volumes: dict[str, Path] = {}
        if test_dir.is_dir():
            for path in sorted(test_dir.iterdir()):
                m = _VOLUME.match(path.name)
                if m:
                    self._volumes[m.group(1)] = path
        for split, found, where in (
            ("train", self._slices, "train_npz/caseNNNN_sliceNNN.npz"),
            ("test", self._volumes, "test_vol_h5/caseNNNN.npy.h5"),
        ):
            if not found:
                raise InputError(root, f"no {split} cases ({where}, TransUNet layout)")
        for case, slices in sorted(self._slices.items()):
            gaps = [i for i in range(max(slices) + 1) if i not in slices]
            if gaps:
                width = len(slices[min(slices)].name.split("_slice")[1]) - len(".npz")
                want = train_dir / f"{case}_slice{gaps[0]:0{width}d}.npz"
                self._layout.append(Problem(want, f"missing slice {gaps[0]} of case {case}"))
        complete = [c for c, s in self._slices.items() if len(s) == max(s) + 1]
        self._splits = {"train": sorted(complete), "test": sorted(self._volumes)}

    def read_case(self, case: str) -> tuple[Volume | None, list[Problem]]:
        """`case` as image 1 x Z x H x W in [0, 1] and label Z x H x W with ids 0..8."""
        problems: list[Problem] = []
        if case in self._volumes and case not in self._splits["train"]:
            path = self._volumes[case]
            arrays = collect(problems, _arrays, path, 3)
            if arrays is None:
                return None, problems
            image, label = arrays
        elif case in self._splits["train"]:
            slices = self._slices[case]
            path = slices[0]
            image, label = self._stack(case, [slices[i] for i in sorted(slices)], problems)
            if problems:
                return None, problems
        else:
            raise InputError(self.root, f"unknown or incomplete case {case}")
        volume = Volume(case, image[None], label, np.eye(4), (1.0, 1.0, 1.0), path, None)
        return self._finish(volume, problems, path)

    def _stack(
        self, case: str, paths: list[Path], problems: list[Problem]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Z x H x W image and label from one .npz per slice (problems collected, not raised)."""
        image = label = np.zeros((0, 0, 0))
        for z, path in enumerate(paths):
            arrays = collect(problems, _arrays, path, 2)
            if arrays is None:
                continue
            if image.shape[0] == 0:
                image = np.zeros((len(paths), *arrays[0].shape), np.float32)
                label = np.zeros((len(paths), *arrays[0].shape), np.uint8)
            if arrays[0].shape != image.shape[1:]:
                shape = arrays[0].shape
                problems.append(Problem(path, f"slice shape {shape} differs from {paths[0].name}"))
                continue
            image[z], label[z] = arrays
        return image, label
