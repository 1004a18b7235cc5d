"""Stage 2: exemplar-guided synthesis, from `exemplars.h5` to `synthetic.h5`.

One synthetic sample, `make_sample(ex, params, seed, index)`, is a pure function of its index:
1. choose an exemplar (see `exemplar_weights` for the balancing);
2. geometric transforms on image and label together (`synth.augment`);
3. with probability `paste_prob`, background pasting (`synth.paste.move_structures`): the
   structures of the transformed exemplar are cut out and each is put down once, shifted at
   random by at most `paste_shift` of the slice side, on body, on its own side of the midline
   and apart from the others, either on the exemplar itself with the places they left in-filled
   (`self`) or on a pool slice (`pool`, whose own structures stay unlabeled);
4. intensity transforms on the image, last, so that pasted structures and their new background
   share one gamma, one contrast change and one noise field (no seam in the noise statistics).

All randomness of sample i comes from `np.random.default_rng([seed, streams.SYNTH, i])`, so the set
is identical whatever the number of worker processes. The file format is `synth.synthetic_store`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from core import streams
from core.atomic import atomic_path
from core.errors import InputError
from core.params import Params, SynthParams, to_dict
from core.progress import make_progress
from core.schema import ExemplarSet, read_exemplars
from synth.augment import augmenter
from synth.paste import move_structures
from synth.synthetic_store import EncodedSample, SyntheticWriter, encode


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic sample.

    image: C x H x W float32 in [0, 1]; label: H x W uint8 class ids; exemplar: index into the
    exemplar set; background: pool index of the background, or -1 when the exemplar's own was kept.
    For previews only (never stored): canvas, the C x H x W background the structures were put
    down on (None without pasting), and filled, the H x W bool pixels in-filled on it.
    """

    image: np.ndarray
    label: np.ndarray
    exemplar: int
    background: int
    canvas: np.ndarray | None = None
    filled: np.ndarray | None = None


def exemplar_weights(label: np.ndarray) -> np.ndarray:
    """Probability of choosing each exemplar, from `label` N x H x W uint8.

    Half of the samples choose an exemplar uniformly; the other half choose a class uniformly among
    the classes present in the set, then an exemplar holding it uniformly. Every exemplar thus
    gets at least 1/(2N) of the samples and every present class at least 1/(2K) of them, so an
    organ seen in one exemplar out of nine is not drowned out by the ones seen in all. Exemplars
    without any foreground share only in the uniform half. Returns N float64 summing to 1.
    """
    n = label.shape[0]
    assert n >= 1, "no exemplars"
    holds = np.stack([np.bincount(lab.ravel(), minlength=256)[1:] > 0 for lab in label])
    per_class = holds.sum(axis=0)  # exemplars holding each class id 1..255
    present = per_class > 0
    weights = np.full(n, 0.5 / n)
    if present.any():
        share = holds[:, present] / per_class[present]  # N x K', each column sums to 1
        weights += 0.5 * share.sum(axis=1) / present.sum()
    else:
        weights += 0.5 / n
    return weights / weights.sum()


def _child_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32))


def make_sample(
    ex: ExemplarSet,
    params: SynthParams,
    seed: int,
    index: int,
    weights: np.ndarray | None = None,
) -> SyntheticSample:
    """Synthetic sample number `index` of the set made with `seed` (pure; see module docstring).

    With `params.enabled` false, sample `index` is exemplar `index` unchanged. `weights` are
    `exemplar_weights(ex.label)`, passed in by callers that make many samples.
    """
    if not params.enabled:
        image = ex.image[index].astype(np.float32)
        return SyntheticSample(image, ex.label[index].astype(np.uint8), index, -1)
    rng = np.random.default_rng([seed, streams.SYNTH, index])
    if weights is None:
        weights = exemplar_weights(ex.label)
    chosen = int(rng.choice(len(weights), p=weights))
    aug = augmenter(params)
    image, label = aug.geometric(ex.image[chosen], ex.label[chosen], _child_seed(rng))
    background, canvas, filled = -1, None, None
    if rng.random() < params.paste_prob and label.any():
        pool_image = None
        if params.paste_background == "pool":
            if len(ex.pool_image) == 0:
                raise ValueError("pasting onto pool backgrounds needs a non-empty pool")
            background = int(rng.integers(len(ex.pool_image)))
            pool_image = ex.pool_image[background]
        moved = move_structures(
            image,
            label,
            pool_image,
            params.paste_unit,
            params.paste_feather,
            rng,
            params.paste_shift,
        )
        image, label, canvas, filled = moved.image, moved.label, moved.canvas, moved.filled
    channels = ex.channels if len(ex.channels) == image.shape[0] else ("image",) * image.shape[0]
    seeds = [_child_seed(rng) for _ in dict.fromkeys(channels)]
    image = aug.intensity(image, channels, seeds)
    return SyntheticSample(image, label, chosen, background, canvas, filled)


# ---- the stage: worker processes make and encode samples, this process writes them ----------

_CHUNK = 8  # samples per worker task: amortizes inter-process traffic
_IN_FLIGHT = 3  # tasks queued per worker: keeps workers busy while bounding memory
_WORKER: dict[str, Any] = {}  # a worker process's inputs, set once by `_init_worker`


def _encoded(ex: ExemplarSet, p: SynthParams, seed: int, i: int, w: np.ndarray) -> EncodedSample:
    s = make_sample(ex, p, seed, i, w)
    return encode(i, s.image, s.label, s.exemplar, s.background)


def _init_worker(ex: ExemplarSet, params: SynthParams, seed: int, weights: np.ndarray) -> None:
    # One core per worker; OpenCV's own threads would oversubscribe. A forked worker already
    # inherits 1 (see `_Producer`), and must not call into OpenCV's thread pool state at all.
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    _WORKER.update(ex=ex, params=params, seed=seed, weights=weights)


def _make_chunk(start: int, stop: int) -> list[EncodedSample]:
    w = _WORKER
    return [_encoded(w["ex"], w["params"], w["seed"], i, w["weights"]) for i in range(start, stop)]


class _Producer:
    """Encoded samples 0..length-1 in index order, in chunks, from `params.workers` processes.

    At most `_IN_FLIGHT` chunks per worker are queued or waiting to be written, so memory does
    not grow with `length` (multiprocessing's `Pool.imap` would queue every chunk at once, and
    results would pile up whenever the writer is slower). A worker that dies raises
    `BrokenProcessPool` instead of hanging as `Pool` would.

    Workers are forked on Linux (instant start, the exemplars shared copy-on-write; spawn
    elsewhere). OpenCV's thread pool does not survive a fork: a child forked while the parent's
    pool threads exist can deadlock in OpenCV. `cv2.setNumThreads(1)` stops those threads, so it
    is set around the forks (all happen at the first submit) and restored afterwards.
    """

    def __init__(self, ex: ExemplarSet, params: SynthParams, seed: int, length: int) -> None:
        self._args = (ex, params, seed, exemplar_weights(ex.label))
        self._starts = iter(range(0, length, _CHUNK))
        self._length = length
        self._pending: deque[Future[list[EncodedSample]]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        if params.workers > 1:
            fork = "fork" in mp.get_all_start_methods() and sys.platform == "linux"
            self._pool = ProcessPoolExecutor(
                params.workers,
                mp_context=mp.get_context("fork" if fork else "spawn"),
                initializer=_init_worker,
                initargs=self._args,
            )
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # stops OpenCV's pool threads before the first submit forks
            try:
                for _ in range(params.workers * _IN_FLIGHT):
                    self._submit()
            finally:
                cv2.setNumThreads(threads)

    def _submit(self) -> None:
        start = next(self._starts, None)
        if start is not None and self._pool is not None:
            stop = min(start + _CHUNK, self._length)
            self._pending.append(self._pool.submit(_make_chunk, start, stop))

    def __iter__(self) -> Iterator[list[EncodedSample]]:
        if self._pool is None:
            for start in self._starts:
                stop = min(start + _CHUNK, self._length)
                yield [_encoded(*self._args[:3], i, self._args[3]) for i in range(start, stop)]
            return
        while self._pending:
            chunk = self._pending.popleft().result()
            self._submit()
            yield chunk

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def exemplars_digest(ex: ExemplarSet) -> str:
    """SHA-256 of the exemplar and pool arrays: which exemplar set a synthetic set came from."""
    h = hashlib.sha256()
    for arr in (ex.image, ex.label, ex.pool_image):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def provenance(params: Params, ex: ExemplarSet, exemplars_params: dict[str, Any]) -> dict:
    """The `params` attribute of synthetic.h5 (`workers` left out: it does not change the set)."""
    synth = {k: v for k, v in to_dict(params.synth).items() if k != "workers"}
    rest = {k: v for k, v in exemplars_params.items() if k != "dataset"}
    return {
        "seed": params.seed,
        "replicate": params.replicate,
        "synth": synth,
        "dataset": exemplars_params.get("dataset"),
        "exemplars": {
            "count": int(ex.image.shape[0]),
            "pool": int(ex.pool_image.shape[0]),
            "sha256": exemplars_digest(ex),
            "params": rest,
        },
    }


def _exemplars_params(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        recorded = json.loads(f.attrs.get("params", "{}"))
    return recorded if isinstance(recorded, dict) else {}


def run(params: Params, exemplars_h5: Path, out_h5: Path) -> None:
    """Build `out_h5` from `exemplars_h5` (atomic: an interrupted run leaves no `out_h5`)."""
    ex = read_exemplars(exemplars_h5)
    p = params.synth
    if ex.image.shape[0] == 0:
        raise InputError(exemplars_h5, "holds no exemplars")
    if p.enabled and p.paste_prob > 0 and p.paste_background == "pool" and not len(ex.pool_image):
        raise InputError(
            exemplars_h5,
            "has no background pool for synth.paste_background: pool "
            "(raise synth.pool_per_case, or use paste_background: self)",
        )
    length = p.samples if p.enabled else ex.image.shape[0]
    record = provenance(params, ex, _exemplars_params(exemplars_h5))
    with (
        atomic_path(out_h5, suffix=".h5") as tmp,
        SyntheticWriter(tmp, length, ex.image.shape[1:]) as writer,
    ):
        producer = _Producer(ex, p, params.stream_seed, length)
        try:
            with make_progress() as progress:
                task = progress.add_task("synthesize", total=length)
                for chunk in producer:
                    for sample in chunk:
                        writer.write(sample)
                    progress.advance(task, len(chunk))
        finally:
            producer.close()
        writer.finish(ex.classes, ex.channels, record)
