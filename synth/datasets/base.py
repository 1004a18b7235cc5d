"""What every reader shares: problems, the case-reading skeleton, splits, normalization, resizing.

A reader reads a case in `read_case`, which returns the `Volume` on the source grid and every
problem it found (a problem names one file). `load` raises the first problem as `InputError` and
resizes the slices to `dataset.slice_size` (unless told to keep the source grid, as scoring does);
`synth.check` lists all of them. Problems of the folder layout (an image without its label, say)
are found when the reader indexes the folder and are listed by `layout_problems`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from core import streams
from core.errors import InputError
from core.volume import Volume

T = TypeVar("T")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: the file and what is wrong with it."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def error(self) -> InputError:
        return InputError(self.path, self.problem)


def collect(problems: list[Problem], fn: Callable[..., T], *args: object) -> T | None:
    """Call `fn(*args)`; on InputError record it in `problems` and return None."""
    try:
        return fn(*args)
    except InputError as e:
        problems.append(Problem(e.path, e.problem))
        return None


class BaseReader:
    """Shared part of the readers; subclasses fill `_splits` and implement `read_case`."""

    root: Path
    classes: tuple[str, ...]
    channels: tuple[str, ...]

    def __init__(self, root: Path, slice_size: int) -> None:
        self.root = root
        self.slice_size = slice_size
        self._splits: dict[str, list[str]] = {s: [] for s in SPLITS}
        self._layout: list[Problem] = []
        # Why the test split is empty when that looks like a mistake rather than a dataset
        # without test scans; evaluation refuses to run on it, the other stages do not need it.
        self.test_problem: Problem | None = None

    def cases(self, split: str) -> list[str]:
        """Case ids of `split` ("train" or "test"), sorted."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return sorted(self._splits[split])

    def labeled(self, case: str) -> bool:
        """Whether `case` comes with a label volume (unlabeled scans exist in the `nifti` layout)."""
        return True

    def layout_problems(self) -> list[Problem]:
        """Problems of the folder layout found when indexing (missing partner files...)."""
        return list(self._layout)

    def load(self, case: str, resize: bool = True) -> Volume:
        """Read, validate and normalize one case; raises InputError naming the bad file.

        `resize=True` gives the slices every stage works on (`dataset.slice_size`); `False` keeps
        the source grid, with the source spacing (the ground truth that predictions are scored
        against, the image they are predicted from before the model's own resizing).
        """
        volume, problems = self.read_case(case)
        if problems:
            raise problems[0].error()
        assert volume is not None
        return resize_volume(volume, self.slice_size) if resize else volume

    def read_case(self, case: str) -> tuple[Volume | None, list[Problem]]:
        """The case on its source grid (None when unusable) and every problem in its files."""
        raise NotImplementedError

    def _finish(
        self,
        volume: Volume,
        problems: list[Problem],
        label_path: Path,
        empty_message: str | None = None,
    ) -> tuple[Volume | None, list[Problem]]:
        """Apply the common checks; the reader's last step of `read_case`."""
        if volume.label is not None and not volume.label.any():
            message = empty_message or "no labeled voxel (the label volume is empty)"
            problems.append(Problem(label_path, message))
        if problems:
            return None, problems
        return volume, problems


def require_root(root: Path) -> Path:
    """`root` as a Path; InputError when it does not exist, is not a folder or is empty."""
    if not root.exists():
        raise InputError(root, "dataset folder not found (set dataset.root)")
    if not root.is_dir():
        raise InputError(root, "dataset root is not a folder")
    if not any(root.iterdir()):
        raise InputError(root, "dataset folder is empty")
    return root


def seeded_split(cases: list[str], test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Split case ids into train/test with a seeded shuffle; each side gets at least one case.

    The result depends only on the sorted case ids, `test_fraction` and `seed`.
    """
    ordered = sorted(cases)
    n = len(ordered)
    assert n >= 2, "caller checks there are two cases"
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    order = np.random.default_rng([seed, streams.SPLIT]).permutation(n)
    test = sorted(ordered[i] for i in order[:n_test])
    train = sorted(ordered[i] for i in order[n_test:])
    return {"train": train, "test": test}


def ct_window(hu: np.ndarray, window: tuple[float, float], in_place: bool = False) -> np.ndarray:
    """HU values (any shape) -> float32 in [0, 1]: `window` = (low, high) maps to (0, 1), clipped.

    `in_place=True` reuses a float32 `hu` as the output, so a large volume is not held twice.
    """
    low, high = window
    if in_place and hu.dtype == np.float32:
        out = hu
    else:
        out = np.array(hu, dtype=np.float32)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return np.clip(out, 0.0, 1.0, out=out)


def percentile_normalize(
    data: np.ndarray, percentiles: tuple[float, float], path: Path
) -> np.ndarray:
    """MR intensities (any shape) -> float32 in [0, 1] from percentiles of the nonzero voxels.

    The nonzero voxels stand for the brain (skull-stripped BraTS) or the body; voxels that are 0
    stay 0. InputError naming `path` when the volume is all zero.
    """
    inside = data != 0
    if not inside.any():
        raise InputError(path, "image is all zero (no voxel to normalize)")
    low, high = np.percentile(data[inside], percentiles)
    out = np.array(data, dtype=np.float32)
    out -= np.float32(low)
    out *= np.float32(1.0 / max(float(high - low), 1e-6))
    np.clip(out, 0.0, 1.0, out=out)
    out[~inside] = 0.0
    return out


def resize_volume(volume: Volume, size: int) -> Volume:
    """Resize every axial slice to `size` x `size` (image linear, label nearest); 0 = as is.

    Shrinking uses area averaging (linear, without the aliasing of bilinear sampling at large
    factors); enlarging uses bilinear. Labels use pixel-centre nearest neighbour.

    `spacing` is updated to the new in-plane grid. `affine` and `header` stay those of the source
    file. Predictions go back to the source grid by upsampling the model's logits
    (`evaluate.inference.predict_volume`'s `out_hw`), never by resizing a label map.
    """
    c, z, h, w = volume.image.shape
    if size == 0 or (h, w) == (size, size):
        return volume
    mode = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    image = np.empty((c, z, size, size), np.float32)
    for ci in range(c):
        for zi in range(z):
            image[ci, zi] = cv2.resize(volume.image[ci, zi], (size, size), interpolation=mode)
    np.clip(image, 0.0, 1.0, out=image)
    label = None
    if volume.label is not None:
        label = np.empty((z, size, size), np.uint8)
        for zi in range(z):
            label[zi] = cv2.resize(
                volume.label[zi], (size, size), interpolation=cv2.INTER_NEAREST_EXACT
            )
    sz, sh, sw = volume.spacing
    spacing = (sz, sh * h / size, sw * w / size)
    return Volume(volume.case, image, label, volume.affine, spacing, volume.source, volume.header)
