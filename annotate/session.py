"""What the page works on: the annotation folder's rows, each slice as the pipeline sees it, the
engine's embeddings, and saves through the folder's one writer (`synth.annotations`).

A slice's id is its row's position in `slices.csv` (file order, stable while `suggest` appends
rows); nothing a request sends becomes a path. Slices are shown in the `core.volume` orientation,
on the scan's source grid: H x W, the patient's left on the image's right, as `suggested.png`.

Saving is guarded twice: the label file must be one the folder's checks accept (same grid,
orientation and classes as its scan; `synth.annotations.write_case` refuses any other), and it
must still be the file the page last read (its SHA-256, the `etag`), so a file another program
changed meanwhile is never overwritten.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from annotate.engines import Embedding, Engine
from core.errors import FewsamError, InputError
from core.volume import Volume
from synth.annotations import (
    MANIFEST,
    SliceRow,
    canonical_z,
    label_path,
    listed_cases,
    read_case,
    read_manifest,
    sha256_bytes,
    write_case,
    write_manifest,
)
from synth.datasets import BaseReader

NO_FILE = "none"  # the etag of a label file that does not exist yet
EMBEDDINGS_KEPT = 16  # slices whose embedding is kept (a few MB each at most)


class Conflict(FewsamError):
    """The label file changed on disk since the page read it."""


@dataclass(frozen=True)
class SliceInfo:
    """One listed slice as the page lists it."""

    id: int
    row: SliceRow
    z: int  # axial index in the `core.volume` orientation
    done: bool


def etag_of(path: Path) -> str:
    return sha256_bytes(path.read_bytes()) if path.is_file() else NO_FILE


class Session:
    """The annotation folder `folder` over `reader`'s training scans, prompted by `engine`."""

    def __init__(self, reader: BaseReader, folder: Path, engine: Engine) -> None:
        self.reader = reader
        self.folder = Path(folder)
        self.engine = engine
        self.classes = list(reader.classes)
        self._lock = threading.RLock()  # scans, manifest and label files
        self._volumes: OrderedDict[str, Volume] = OrderedDict()
        self._embeddings: OrderedDict[int, Future[Embedding]] = OrderedDict()
        self._embed_lock = threading.Lock()
        # One worker: the encoder uses every core already; a second would only share them.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self.rows()  # an unreadable manifest fails at start, not at the first request

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- rows and scans ----

    def rows(self) -> list[SliceRow]:
        return read_manifest(self.folder)

    def row(self, slice_id: int) -> SliceRow:
        rows = self.rows()
        if not 0 <= slice_id < len(rows):
            raise KeyError(slice_id)
        return rows[slice_id]

    def volume(self, case: str) -> Volume:
        """The training scan `case` on its source grid (the last few kept)."""
        with self._lock:
            if case not in self._volumes:
                if case not in self.reader.cases("train"):
                    raise InputError(self.folder / MANIFEST, f"case {case} is not a training scan")
                self._volumes[case] = self.reader.load(case, resize=False)
                while len(self._volumes) > 3:
                    self._volumes.popitem(last=False)
            self._volumes.move_to_end(case)
            return self._volumes[case]

    def slices(self) -> list[SliceInfo]:
        """Every listed slice in rank order (round, then rank), with its done state."""
        rows = self.rows()
        index = {id(r): i for i, r in enumerate(rows)}
        done: dict[tuple[str, int], bool] = {}
        for case, case_rows in listed_cases(rows).items():
            try:
                found = read_case(self.folder, case_rows, self.volume(case), len(self.classes))
            except InputError:
                continue
            for r in case_rows:
                done[(case, r.slice)] = r.slice in found.done
        out = []
        for r in sorted(rows, key=lambda r: (r.round, r.rank, index[id(r)])):
            try:
                z = canonical_z(r.slice, self.volume(r.case))
            except InputError:
                z = -1
            out.append(SliceInfo(index[id(r)], r, z, done.get((r.case, r.slice), False)))
        return out

    def image(self, slice_id: int) -> np.ndarray:
        """C x H x W float32 in [0, 1]: the slice as the pipeline reads it."""
        row = self.row(slice_id)
        volume = self.volume(row.case)
        z = self._z(row, volume)
        return volume.image[:, z]

    def _z(self, row: SliceRow, volume: Volume) -> int:
        z = canonical_z(row.slice, volume)
        if not 0 <= z < volume.image.shape[1]:
            raise InputError(
                label_path(self.folder, row.case), f"slice {row.slice} is outside the scan"
            )
        return z

    # ---- embeddings ----

    def embedding(self, slice_id: int) -> Embedding:
        """The slice's embedding, computed once; the next slice's is started in the background."""
        future = self._embedding_future(slice_id)
        rows = self.rows()
        following = sorted(range(len(rows)), key=lambda i: (rows[i].round, rows[i].rank, i))
        at = following.index(slice_id) if slice_id in following else -1
        if 0 <= at < len(following) - 1:
            self._embedding_future(following[at + 1])
        return future.result()

    def _embedding_future(self, slice_id: int) -> Future[Embedding]:
        with self._embed_lock:
            future = self._embeddings.get(slice_id)
            if future is None:
                image = self.image(slice_id)
                future = self._pool.submit(self.engine.embed, image)
                self._embeddings[slice_id] = future
                while len(self._embeddings) > EMBEDDINGS_KEPT:
                    self._embeddings.popitem(last=False)
            self._embeddings.move_to_end(slice_id)
            return future

    # ---- labels ----

    def label(self, slice_id: int) -> tuple[np.ndarray, str]:
        """The slice's saved label map (H x W uint8) and the file's etag."""
        row = self.row(slice_id)
        with self._lock:
            volume = self.volume(row.case)
            path = label_path(self.folder, row.case)
            tag = etag_of(path)
            _, _, h, w = volume.image.shape
            if tag == NO_FILE:
                return np.zeros((h, w), np.uint8), tag
            found = read_case(self.folder, [row], volume, len(self.classes))
            if found.label is None:  # the file itself is unusable: say why, never guess
                raise InputError(path, found.problems[0].problem)
            return found.label[self._z(row, volume)].copy(), tag

    def save(self, slice_id: int, plane: np.ndarray, etag: str, negative: bool) -> str:
        """Write `plane` (H x W class ids) as the slice's label; returns the file's new etag.

        Conflict when the file is no longer the one with `etag`; InputError when the file is
        one the folder's checks refuse (it is left as it is). `negative` marks (or unmarks) the
        row as a negative exemplar; a negative slice must be all background.
        """
        row = self.row(slice_id)
        with self._lock:
            volume = self.volume(row.case)
            path = label_path(self.folder, row.case)
            if etag_of(path) != etag:
                raise Conflict(
                    f"{path}: changed on disk since the page read it (open in another program?); "
                    "nothing was overwritten: reload the slice"
                )
            if negative and plane.any():
                raise ValueError("a slice marked background must have no labeled pixel")
            write_case(self.folder, volume, {self._z(row, volume): plane}, len(self.classes))
            if row.negative != negative:
                rows = self.rows()
                rows[slice_id] = replace(rows[slice_id], negative=negative)
                write_manifest(self.folder, rows)
            return etag_of(path)
