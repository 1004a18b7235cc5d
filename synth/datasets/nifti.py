"""A generic NIfTI folder in the nnU-Net / Medical Segmentation Decathlon layout.

    imagesTr/<case>_0000.nii.gz [<case>_0001 ...]   one file per channel (nnU-Net), or
    imagesTr/<case>.nii.gz                           one 3D file per case (MSD, one channel)
    labelsTr/<case>.nii.gz                           ids 0..K, 0 = background
    imagesTs/, labelsTs/                             optional labeled test cases
    dataset.json                                     optional: `labels`, `channel_names`/`modality`

Without a labeled test folder the cases of imagesTr are split with a seed and
`dataset.test_fraction`. Unlabeled scans (the label-a-few-slices path, `dataset.annotations`): an
imagesTr without labelsTr holds unlabeled training scans, all of them training cases, and the
test cases are those of imagesTs, labeled when labelsTs holds their labels, else unlabeled (they
are then segmented but not scored). Without imagesTs there is no test set; an imagesTs without
scans is refused by evaluation (`test_problem`). Class names come from dataset.json `labels`
(nnU-Net v2 `{"liver": 1}` or MSD `{"1": "liver"}`) or from `dataset.classes`. Channels come from
dataset.json or, without it, from the files and `dataset.modality`. SAM takes 1 channel (repeated
to RGB) or 3; other counts are refused. A channel named CT is windowed with `dataset.window`, any
other channel is scaled between percentiles of its nonzero voxels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.params import DatasetParams
from core.volume import Volume
from synth.datasets.base import (
    BaseReader,
    Problem,
    collect,
    ct_window,
    percentile_normalize,
    require_root,
    seeded_split,
)
from synth.datasets.nifti_io import check_label_ids, check_same_grid, read_image, read_label

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _stems(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            m = _NII.match(path.name)
            if m and not path.name.startswith("."):
                out[m.group("stem")] = path
    return out


def _group_images(folder: Path) -> dict[str, dict[int, Path]]:
    """case -> {channel index: file}; nnU-Net suffixes when every case has a `_0000` file."""
    stems = _stems(folder)
    groups: dict[str, dict[int, Path]] = {}
    for stem, path in stems.items():
        m = _CHANNEL.match(stem)
        if m:
            groups.setdefault(m.group("case"), {})[int(m.group("channel"))] = path
    if (
        groups
        and all(0 in g for g in groups.values())
        and sum(map(len, groups.values())) == len(stems)
    ):
        return groups
    return {stem: {0: path} for stem, path in stems.items()}  # MSD: one file per case


def read_dataset_json(path: Path) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(channel names, class names for ids 1..K) from an nnU-Net v2 or MSD dataset.json."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        channels = info.get("channel_names", info.get("modality"))
        if channels is not None:
            channels = tuple(str(channels[k]) for k in sorted(channels, key=int))
        labels = info.get("labels")
        classes = None
        if labels is not None:
            if all(str(k).isdigit() for k in labels):  # MSD: {"0": "background", "1": "liver"}
                by_id = {int(k): str(v) for k, v in labels.items()}
            else:  # nnU-Net v2: {"background": 0, "liver": 1}
                by_id = {int(v): str(k) for k, v in labels.items()}
            if sorted(by_id) != list(range(len(by_id))) or len(by_id) < 2:
                raise ValueError(f"label ids must be 0..K with K >= 1, got {sorted(by_id)}")
            classes = tuple(by_id[i] for i in range(1, len(by_id)))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
        raise InputError(path, f"unusable dataset.json ({e})") from None
    return channels, classes


class NiftiReader(BaseReader):
    """imagesTr/labelsTr folders; see the module docstring."""

    def __init__(self, params: DatasetParams, root: Path, seed: int) -> None:
        super().__init__(require_root(root), params.slice_size)
        self.window, self.percentiles = params.window, params.percentiles
        meta = root / "dataset.json"
        json_channels, json_classes = read_dataset_json(meta) if meta.is_file() else (None, None)
        self.classes = json_classes or tuple(params.classes)
        if not self.classes:
            raise InputError(root, "no class names: add dataset.json `labels` or dataset.classes")
        self._files: dict[str, tuple[list[Path], Path | None]] = {}
        self.labeled_train = bool(_stems(root / "labelsTr"))
        train = self._index("imagesTr", "labelsTr", required=True)
        test = self._index("imagesTs", "labelsTs", required=False)
        n_channels = max((len(f[0]) for f in self._files.values()), default=1)
        if json_channels is not None:
            self.channels = json_channels
        elif n_channels == 1:
            self.channels = (params.modality,)
        else:
            self.channels = tuple(f"{params.modality}{i}" for i in range(n_channels))
        if len(self.channels) not in (1, 3):
            raise InputError(
                meta if json_channels is not None else root / "imagesTr",
                f"{len(self.channels)} input channels {list(self.channels)}: SAM takes 1 "
                "(repeated to RGB) or 3",
            )
        self._ct = [c.upper() == "CT" for c in self.channels]
        for case, (images, _) in list(self._files.items()):
            if len(images) != len(self.channels):
                problem = f"{len(images)} channel files, expected {len(self.channels)}"
                self._layout.append(Problem(images[0], problem))
                del self._files[case]
        train = [c for c in train if c in self._files]
        test = [c for c in test if c in self._files]
        tests = root / "imagesTs"
        if not self.labeled_train and tests.is_dir() and not _stems(tests):
            # Without imagesTs the unlabeled path has no test set; an empty one means the scans
            # are missing (not copied, or named otherwise), and evaluation would score nothing.
            self.test_problem = Problem(
                tests,
                "no test scans (<case>_0000.nii.gz) in this folder: add them, or remove the "
                "folder to run without a test set",
            )
        if test or not self.labeled_train:
            self._splits = {"train": train, "test": test}
        elif len(train) >= 2:
            self._splits = seeded_split(train, params.test_fraction, seed)
        else:
            raise InputError(root, f"{len(train)} labeled cases in imagesTr; at least 2 needed")

    def _index(self, images_dir: str, labels_dir: str, required: bool) -> list[str]:
        images = _group_images(self.root / images_dir)
        labels = _stems(self.root / labels_dir)
        if required and not images:
            raise InputError(
                self.root / images_dir, "no NIfTI images (imagesTr/<case>_0000.nii.gz)"
            )
        if not labels and (required or not self.labeled_train):
            # Unlabeled scans: training scans to annotate, or test scans to segment.
            return self._add_unlabeled(images, images_dir)
        if not labels:
            return []  # unlabeled test images beside labeled training data (MSD) are not used
        for case in sorted(set(images) - set(labels)):
            first = images[case][min(images[case])]
            self._layout.append(Problem(first, f"image without label in {labels_dir}/"))
        for case in sorted(set(labels) - set(images)):
            self._layout.append(Problem(labels[case], f"label without image in {images_dir}/"))
        cases = sorted(set(images) & set(labels))
        return [c for c in cases if self._register(c, images[c], labels[c], images_dir)]

    def labeled(self, case: str) -> bool:
        """Whether `case` has a label file (unlabeled training or test scans have none)."""
        return case in self._files and self._files[case][1] is not None

    def _add_unlabeled(self, images: dict[str, dict[int, Path]], images_dir: str) -> list[str]:
        return [c for c in sorted(images) if self._register(c, images[c], None, images_dir)]

    def _register(
        self, case: str, channels: dict[int, Path], label: Path | None, images_dir: str
    ) -> bool:
        """Index one case (its channel files in order, its label or None); False with a layout
        problem when a channel file is missing or the case is already in the other split."""
        gaps = [i for i in range(max(channels) + 1) if i not in channels]
        if gaps:
            want = self.root / images_dir / f"{case}_{gaps[0]:04d}.nii.gz"
            self._layout.append(Problem(want, f"missing channel file of case {case}"))
            return False
        if case in self._files:
            where = label if label is not None else channels[min(channels)]
            self._layout.append(Problem(where, f"case {case} is in both training and test"))
            return False
        self._files[case] = ([channels[i] for i in sorted(channels)], label)
        return True

    def read_case(self, case: str) -> tuple[Volume | None, list[Problem]]:
        """`case` as image C x Z x H x W in [0, 1] and label Z x H x W with ids 0..K (None when
        the case has no label file)."""
        if case not in self._files:
            raise InputError(self.root, f"unknown or incomplete case {case}")
        image_paths, label_path = self._files[case]
        problems: list[Problem] = []
        images = [collect(problems, read_image, p) for p in image_paths]
        label = collect(problems, read_label, label_path) if label_path is not None else None
        if problems:
            return None, problems
        first = images[0]
        assert first is not None
        for other in [*images[1:], *([label] if label is not None else [])]:
            collect(problems, check_same_grid, first, other)
        ids = None
        if label is not None:
            ids = collect(problems, check_label_ids, label, set(range(len(self.classes) + 1)))
        channels = []
        for image, is_ct in zip(images, self._ct, strict=True):
            assert image is not None
            if is_ct:
                channels.append(ct_window(image.zyx(), self.window, in_place=True))
            else:
                data = image.zyx()
                channels.append(
                    collect(problems, percentile_normalize, data, self.percentiles, image.path)
                )
        if problems or (label is not None and ids is None):
            return None, problems
        volume = Volume(
            case=case,
            image=np.stack(channels),  # type: ignore[arg-type]
            label=None if ids is None else first.zyx(ids),
            affine=first.affine,
            spacing=first.spacing_zyx,
            source=first.path,
            header=first.header,
        )
        return self._finish(volume, problems, label_path or first.path)
