"""BraTS 2018: `HGG|LGG/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`, labels 0/1/2/4.

Case ids are the case folder names (e.g. `Brats18_CBICA_AAB_1`). The three modalities of
`dataset.brats_channels` become the image channels, each scaled to [0, 1] between percentiles of
its brain (nonzero) voxels. `dataset.brats_target` picks the classes: `whole_tumor` (every tumour
label -> 1) or `regions` (necrotic/non-enhancing core 1 -> 1, edema 2 -> 2, enhancing 4 -> 3).
Train and test cases come from a seeded split with `dataset.test_fraction`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InputError
from core.params import DatasetParams
from core.volume import Volume
from synth.datasets.base import (
    BaseReader,
    Problem,
    collect,
    percentile_normalize,
    require_root,
    seeded_split,
)
from synth.datasets.nifti_io import (
    NiftiVolume,
    check_label_ids,
    check_same_grid,
    read_image,
    read_label,
)

GRADES = ("HGG", "LGG")
MODALITIES = ("flair", "t1", "t1ce", "t2")
BRATS_IDS = {0, 1, 2, 4}
TARGETS = {
    "whole_tumor": (("tumor",), {1: 1, 2: 1, 4: 1}),
    "regions": (("necrotic core", "edema", "enhancing tumor"), {1: 1, 2: 2, 4: 3}),
}


def _file(folder: Path, case: str, suffix: str) -> Path:
    """`<case>_<suffix>.nii.gz`, or the uncompressed `.nii` when only that exists."""
    gz = folder / f"{case}_{suffix}.nii.gz"
    plain = folder / f"{case}_{suffix}.nii"
    return plain if plain.is_file() and not gz.is_file() else gz


def map_brats(labels: np.ndarray, target: str) -> np.ndarray:
    """BraTS ids 0/1/2/4 (uint8, any shape) -> class ids of `target` (uint8, same shape)."""
    lut = np.zeros(256, np.uint8)
    for src, dst in TARGETS[target][1].items():
        lut[src] = dst
    return lut[labels]


class BratsReader(BaseReader):
    """BraTS 2018 folders; see the module docstring."""

    def __init__(self, params: DatasetParams, root: Path, seed: int) -> None:
        super().__init__(require_root(root), params.slice_size)
        self.target = params.brats_target
        self.percentiles = params.percentiles
        self.classes = TARGETS[self.target][0]
        self.channels = tuple(params.brats_channels)
        grades = [root / g for g in GRADES if (root / g).is_dir()]
        if not grades:
            raise InputError(root, "no HGG/ or LGG/ folder (BraTS 2018 layout)")
        self._files: dict[str, tuple[list[Path], Path]] = {}
        for grade in grades:
            for folder in sorted(p for p in grade.iterdir() if p.is_dir()):
                self._index_case(folder)
        if len(self._files) < 2:
            raise InputError(root, f"{len(self._files)} complete BraTS cases; at least 2 needed")
        self._splits = seeded_split(list(self._files), params.test_fraction, seed)

    def _index_case(self, folder: Path) -> None:
        case = folder.name
        images = [_file(folder, case, m) for m in self.channels]
        seg = _file(folder, case, "seg")
        missing = [p for p in [*images, seg] if not p.is_file()]
        for path in missing:
            what = "segmentation" if path == seg else "modality"
            self._layout.append(Problem(path, f"missing {what} file of case {case}"))
        if not missing:
            self._files[case] = (images, seg)

    def read_case(self, case: str) -> tuple[Volume | None, list[Problem]]:
        """`case` as image 3 x Z x H x W in [0, 1] (brats_channels order) and label Z x H x W."""
        if case not in self._files:
            raise InputError(self.root, f"unknown or incomplete case {case}")
        image_paths, seg_path = self._files[case]
        problems: list[Problem] = []
        images = [collect(problems, read_image, p) for p in image_paths]
        seg = collect(problems, read_label, seg_path)
        if problems:
            return None, problems
        first = images[0]
        assert first is not None and seg is not None
        for other in [*images[1:], seg]:
            collect(problems, check_same_grid, first, other)
        ids = collect(problems, check_label_ids, seg, BRATS_IDS)
        channels = [collect(problems, self._normalize, im) for im in images]
        if problems or ids is None:
            return None, problems
        volume = Volume(
            case=case,
            image=np.stack(channels),  # type: ignore[arg-type]
            label=map_brats(first.zyx(ids), self.target),
            affine=first.affine,
            spacing=first.spacing_zyx,
            source=first.path,
            header=first.header,
        )
        return self._finish(volume, problems, seg_path)

    def _normalize(self, image: NiftiVolume | None) -> np.ndarray:
        assert image is not None
        return percentile_normalize(image.zyx(), self.percentiles, image.path)
