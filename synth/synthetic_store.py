"""Writing `synthetic.h5` (layout in `core.schema`): samples compressed by the workers, one writer.

Each sample is one HDF5 chunk. Compression is gzip level 1 after a byte shuffle, the standard
HDF5 filters every HDF5 tool reads (lzf is h5py-only). On 512 x 512 CT-like float16 slices it stores
about a third of the raw bytes, 5-10 % less than shuffle+lzf. It costs 3-5 ms per slice, so the
workers do it (`encode`) and the single writer only copies finished chunks into the file
(`write_direct_chunk`); the writer process would otherwise be the bottleneck.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import h5py
import numpy as np

from core.schema import SYNTHETIC_KIND
from synth.augment import VERSION as ALBUMENTATIONS_VERSION

IMAGE_DTYPE = np.dtype("<f2")
GZIP_LEVEL = 1


@dataclass(frozen=True)
class EncodedSample:
    """A sample as the file stores it: the image and label chunks, already filtered."""

    index: int
    image: bytes
    label: bytes
    exemplar: int
    background: int


def encode(
    index: int, image: np.ndarray, label: np.ndarray, exemplar: int, background: int
) -> EncodedSample:
    """Filter sample `index` (image C x H x W in [0, 1], label H x W) as the datasets would.

    The result is what HDF5's shuffle + gzip pipeline produces for the float16 image chunk and
    the gzip pipeline for the uint8 label chunk.
    """
    image = np.ascontiguousarray(image, dtype=IMAGE_DTYPE)
    # HDF5's shuffle filter: all first bytes of the elements, then all second bytes.
    shuffled = image.view(np.uint8).reshape(-1, IMAGE_DTYPE.itemsize).T.tobytes()
    raw_label = np.ascontiguousarray(label, dtype=np.uint8).tobytes()
    return EncodedSample(
        index,
        zlib.compress(shuffled, GZIP_LEVEL),
        zlib.compress(raw_label, GZIP_LEVEL),
        exemplar,
        background,
    )


def versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes the samples."""
    return {
        "albumentations": ALBUMENTATIONS_VERSION,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


class SyntheticWriter:
    """An open synthetic set of `length` samples of C x H x W; `finish` marks it complete.

    Write to a temporary path (`core.atomic.atomic_path`): a file is valid only once `finish`
    has set `complete = 1` and the path has been renamed.
    """

    def __init__(self, path: Path, length: int, shape: tuple[int, int, int]) -> None:
        c, h, w = shape
        self._file = h5py.File(path, "w")
        opts: dict[str, Any] = {"compression": "gzip", "compression_opts": GZIP_LEVEL}
        self._image = self._file.create_dataset(
            "image",
            (length, c, h, w),
            dtype=IMAGE_DTYPE,
            chunks=(1, c, h, w),
            shuffle=True,
            track_times=False,
            **opts,
        )
        self._label = self._file.create_dataset(
            "label", (length, h, w), dtype=np.uint8, chunks=(1, h, w), track_times=False, **opts
        )
        self._exemplar = np.full(length, -1, dtype=np.int32)
        self._background = np.full(length, -1, dtype=np.int32)
        self._written = np.zeros(length, dtype=bool)

    def write(self, sample: EncodedSample) -> None:
        """Store one encoded sample at its index."""
        i = sample.index
        self._image.id.write_direct_chunk((i, 0, 0, 0), sample.image)
        self._label.id.write_direct_chunk((i, 0, 0), sample.label)
        self._exemplar[i] = sample.exemplar
        self._background[i] = sample.background
        self._written[i] = True

    def finish(
        self,
        classes: tuple[str, ...],
        channels: tuple[str, ...],
        params: dict,
        extra: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write the index arrays, the `extra` datasets and the attributes, `complete = 1` last."""
        assert self._written.all(), "samples missing from the synthetic set"
        for name, values in (("exemplar", self._exemplar), ("background", self._background)):
            self._file.create_dataset(name, data=values, track_times=False)
        for name, values in (extra or {}).items():
            self._file.create_dataset(name, data=values, track_times=False)
        attrs = self._file.attrs
        attrs["kind"] = SYNTHETIC_KIND
        attrs["classes"] = json.dumps(list(classes))
        attrs["channels"] = json.dumps(list(channels))
        attrs["params"] = json.dumps(params, sort_keys=True)
        attrs["seed"] = int(params["seed"])
        attrs["versions"] = json.dumps(versions(), sort_keys=True)
        self._file.flush()
        attrs["complete"] = 1

    def __enter__(self) -> SyntheticWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._file.close()
