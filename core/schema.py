"""The two HDF5 files that pass between stages, written and read in one place.

`exemplars.h5` (stage 1):
    image       N x C x H x W float32 in [0, 1]   the labeled exemplar slices
    label       N x H x W uint8 class ids 0..K
    case        N strings                          source case id
    slice       N int32                            axial index in that case (Z of `Volume`)
    pool_image  M x C x H x W float32 in [0, 1]   unlabeled training slices (backgrounds)
    pool_case   M strings, pool_slice M int32
    attrs: kind="fewsam-exemplars", classes, channels (JSON lists), dataset_format, params (JSON)

`synthetic.h5` (stage 2):
    image       N x C x H x W float16 in [0, 1]   (float16 halves the size; SAM sees 8-bit RGB)
    label       N x H x W uint8
    exemplar    N int32  index into exemplars.h5
    background  N int32  pool index, or -1 when the exemplar's own background was kept
    attrs: kind="fewsam-synthetic", classes, channels, params, seed, versions (JSON), complete=1
    A set extended with pseudo-labeled training slices (`evaluate.pseudo`) has exemplar and
    background -1 for those, `pseudo_case` (strings) and `pseudo_slice` (int32) naming where each
    came from, and a `selftrain` entry in its params.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from core.atomic import atomic_path
from core.errors import InputError

EXEMPLARS_KIND = "fewsam-exemplars"
SYNTHETIC_KIND = "fewsam-synthetic"
_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class ExemplarSet:
    """Stage 1's output in memory (shapes as in the module docstring)."""

    image: np.ndarray
    label: np.ndarray
    case: tuple[str, ...]
    slice: np.ndarray
    pool_image: np.ndarray
    pool_case: tuple[str, ...]
    pool_slice: np.ndarray
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    dataset_format: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def write_exemplars(path: str | Path, ex: ExemplarSet, params: dict[str, Any]) -> None:
    """Write `ex` atomically; `params` (JSON-able) records what made it."""
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w", track_order=True) as f:
        for name in ("image", "label", "pool_image"):
            arr = getattr(ex, name)
            chunks = (1, *arr.shape[1:]) if arr.shape[0] else None
            f.create_dataset(name, data=arr, chunks=chunks, compression="lzf", track_times=False)
        f.create_dataset("slice", data=ex.slice.astype(np.int32), track_times=False)
        f.create_dataset("pool_slice", data=ex.pool_slice.astype(np.int32), track_times=False)
        f.create_dataset("case", data=list(ex.case), dtype=_STR, track_times=False)
        f.create_dataset("pool_case", data=list(ex.pool_case), dtype=_STR, track_times=False)
        f.attrs["kind"] = EXEMPLARS_KIND
        f.attrs["classes"] = json.dumps(list(ex.classes))
        f.attrs["channels"] = json.dumps(list(ex.channels))
        f.attrs["dataset_format"] = ex.dataset_format
        f.attrs["params"] = json.dumps(params, sort_keys=True)


def _open(path: Path, kind: str) -> h5py.File:
    if not path.is_file():
        raise InputError(path, "not found (run the previous pipeline stage first)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(path, f"not a readable HDF5 file ({e})") from None
    if f.attrs.get("kind") != kind:
        f.close()
        raise InputError(path, f"not a {kind} file")
    return f


def read_exemplars(path: str | Path) -> ExemplarSet:
    """Read and validate an exemplars file; InputError names the file on any problem."""
    path = Path(path)
    with _open(path, EXEMPLARS_KIND) as f:
        try:
            ex = ExemplarSet(
                image=f["image"][()].astype(np.float32),
                label=f["label"][()].astype(np.uint8),
                case=tuple(s.decode() if isinstance(s, bytes) else s for s in f["case"][()]),
                slice=f["slice"][()].astype(np.int64),
                pool_image=f["pool_image"][()].astype(np.float32),
                pool_case=tuple(
                    s.decode() if isinstance(s, bytes) else s for s in f["pool_case"][()]
                ),
                pool_slice=f["pool_slice"][()].astype(np.int64),
                classes=tuple(json.loads(f.attrs["classes"])),
                channels=tuple(json.loads(f.attrs["channels"])),
                dataset_format=str(f.attrs["dataset_format"]),
            )
        except (KeyError, OSError, ValueError) as e:
            raise InputError(path, f"damaged or incomplete exemplars file ({e})") from None
    n = ex.image.shape[0]
    if ex.image.ndim != 4 or ex.label.shape != (n, *ex.image.shape[2:]) or len(ex.case) != n:
        raise InputError(path, "inconsistent exemplar array shapes")
    if ex.label.size and int(ex.label.max()) > ex.num_classes:
        raise InputError(path, f"label ids above the {ex.num_classes} declared classes")
    return ex


@dataclass(frozen=True)
class SyntheticInfo:
    """What a reader of synthetic.h5 needs to know before touching the arrays."""

    path: Path
    length: int
    channels: tuple[str, ...]
    classes: tuple[str, ...]
    height: int
    width: int
    params: dict[str, Any]


def read_synthetic_info(path: str | Path) -> SyntheticInfo:
    """Validate a synthetic set (kind, completeness, shapes) without loading its arrays."""
    path = Path(path)
    with _open(path, SYNTHETIC_KIND) as f:
        try:
            if int(f.attrs.get("complete", 0)) != 1:
                raise InputError(path, "incomplete synthetic set (interrupted write)")
            image, label = f["image"], f["label"]
            n, c, h, w = image.shape
            if label.shape != (n, h, w) or f["exemplar"].shape != (n,):
                raise InputError(path, "inconsistent synthetic array shapes")
            return SyntheticInfo(
                path=path,
                length=n,
                channels=tuple(json.loads(f.attrs["channels"])),
                classes=tuple(json.loads(f.attrs["classes"])),
                height=h,
                width=w,
                params=json.loads(f.attrs["params"]),
            )
        except (KeyError, ValueError, OSError) as e:
            raise InputError(path, f"damaged synthetic set ({e})") from None
