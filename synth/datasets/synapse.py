"""Synapse multi-organ CT (BTCV) in its raw layout: `img/img0001.nii.gz`, `label/label0001.nii.gz`.

Case ids are `case0001` ... (the TransUNet names, shared with `synapse-npz`). The 13 BTCV label ids
are mapped to the 8-organ protocol of TransUNet/SAMed; the split is TransUNet's 18/12 split; CT is
windowed to [-125, 275] HU (`dataset.window`) and scaled to [0, 1].
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.params import DatasetParams
from core.volume import Volume
from synth.datasets.base import BaseReader, Problem, collect, ct_window, require_root
from synth.datasets.nifti_io import check_label_ids, check_same_grid, read_image, read_label

CLASSES = (
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "liver",
    "stomach",
    "aorta",
    "pancreas",
)
# BTCV id -> 8-organ id: spleen 1, right kidney 2, left kidney 3, gallbladder 4, liver 6->5,
# stomach 7->6, aorta 8->7, pancreas 11->8; esophagus 5, IVC 9, portal/splenic veins 10 and the
# adrenal glands 12, 13 become background.
BTCV_TO_8 = {1: 1, 2: 2, 3: 3, 4: 4, 6: 5, 7: 6, 8: 7, 11: 8}
BTCV_IDS = set(range(14))
TRAIN_IDS = (5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40)
TEST_IDS = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)

_IMG = re.compile(r"^img(\d{4})\.nii(\.gz)?$")
_LABEL = re.compile(r"^label(\d{4})\.nii(\.gz)?$")


def case_id(number: int) -> str:
    """The case id of BTCV scan `number`: 5 -> "case0005"."""
    return f"case{number:04d}"


def map_labels(btcv: np.ndarray) -> np.ndarray:
    """BTCV ids (uint8, any shape, values 0..13) -> 8-organ ids (uint8, same shape)."""
    lut = np.zeros(256, np.uint8)
    for src, dst in BTCV_TO_8.items():
        lut[src] = dst
    return lut[btcv]


def _index(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    found: dict[int, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            m = pattern.match(path.name)
            if m:
                found[int(m.group(1))] = path
    return found


class SynapseReader(BaseReader):
    """BTCV raw NIfTI; see the module docstring for layout, ids, split and window."""

    def __init__(self, params: DatasetParams, root: Path) -> None:
        super().__init__(require_root(root), params.slice_size)
        self.window = params.window
        self.classes = CLASSES
        self.channels = ("CT",)
        images = _index(root / "img", _IMG)
        labels = _index(root / "label", _LABEL)
        if not images and not labels:
            raise InputError(root, "no img/imgNNNN.nii.gz or label/labelNNNN.nii.gz (BTCV layout)")
        for n in sorted(set(images) - set(labels)):
            want = root / "label" / f"label{n:04d}.nii.gz"
            self._layout.append(Problem(images[n], f"image without label (expected {want})"))
        for n in sorted(set(labels) - set(images)):
            want = root / "img" / f"img{n:04d}.nii.gz"
            self._layout.append(Problem(labels[n], f"label without image (expected {want})"))
        self._files = {case_id(n): (images[n], labels[n]) for n in set(images) & set(labels)}
        # Split cases missing altogether are skipped; a half-present case is a layout problem.
        present = set(images) | set(labels)
        for split, ids in (("train", TRAIN_IDS), ("test", TEST_IDS)):
            self._splits[split] = [case_id(n) for n in ids if case_id(n) in self._files]
            if not present.intersection(ids):
                raise InputError(
                    root, f"no {split} case of the TransUNet split ({_names(ids)}) in img/"
                )

    def read_case(self, case: str) -> tuple[Volume | None, list[Problem]]:
        """`case` as image 1 x Z x H x W in [0, 1] and 8-organ label Z x H x W."""
        if case not in self._files:
            raise InputError(self.root, f"unknown or incomplete case {case}")
        image_path, label_path = self._files[case]
        problems: list[Problem] = []
        image = collect(problems, read_image, image_path)
        label = collect(problems, read_label, label_path)
        if image is None or label is None:
            return None, problems
        collect(problems, check_same_grid, image, label)
        if problems:
            return None, problems
        btcv = collect(problems, check_label_ids, label, BTCV_IDS)
        if btcv is None:
            return None, problems
        volume = Volume(
            case=case,
            image=ct_window(image.zyx(), self.window, in_place=True)[None],
            label=map_labels(image.zyx(btcv)),
            affine=image.affine,
            spacing=image.spacing_zyx,
            source=image_path,
            header=image.header,
        )
        empty = "no voxel of the 8 evaluated organs" if btcv.any() else None
        return self._finish(volume, problems, label_path, empty)


def _names(ids: tuple[int, ...]) -> str:
    return ", ".join(f"img{n:04d}" for n in ids[:3]) + ", ..."
