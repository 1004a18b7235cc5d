"""Stage 1: pick the labeled exemplar slices and the unlabeled background pool.

Only training cases are read; test cases never contribute. A slice is "labeled" when its label has
any foreground voxel. Selection is a pure function of the per-case labeled slice indices, the
number asked for, the strategy and a seeded generator:

- `spread`: exemplars go evenly over the training volumes (18 on 18 volumes: one each; 9: every
  other volume; 36: two each) and, within a volume, evenly over its labeled slices (one: the
  middle; two: at 1/3 and 2/3).
- `random`: a seeded draw without replacement from all labeled training slices.
- `exemplars: all`: every labeled training slice (the full-set baseline).

The background pool holds `synth.pool_per_case` evenly spaced slices (with seeded jitter) per
training volume, never an exemplar slice, stored without labels.

Annotated scans (the label-a-few-slices path): when the annotation folder `dataset.annotations`
holds a manifest (`synth.annotations`), training labels are never read. The exemplars are the
listed slices with the labels a person painted (`exemplars: all`), or `exemplars: N` of them
spread as above; a listed slice marked `negative` is a negative exemplar (all background). The
folder is checked first as `fewsam data check` checks it, and any problem stops extraction with
nothing written. The pool never takes a listed slice.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from core import streams
from core.atomic import ensure_parent, write_text
from core.errors import InputError, ParamsError
from core.params import Params, to_dict
from core.schema import ExemplarSet, write_exemplars
from synth.annotations import MANIFEST, check_folder
from synth.check import find_problems, iter_volumes, refuse
from synth.datasets import BaseReader, open_dataset

# case -> axial index -> H x W uint8 label painted on that listed slice
Annotations = dict[str, dict[int, np.ndarray]]


def _quotas(n: int, capacity: list[int]) -> list[int]:
    """Spread `n` items evenly over len(capacity) volumes, none above its capacity.

    Item i goes to volume floor(i * V / n); excess over a volume's capacity moves to the volumes
    with the fewest items relative to their capacity (ties: lowest index).
    """
    v = len(capacity)
    quota = [0] * v
    for i in range(n):
        quota[i * v // n] += 1
    excess = sum(max(0, q - c) for q, c in zip(quota, capacity, strict=True))
    quota = [min(q, c) for q, c in zip(quota, capacity, strict=True)]
    while excess:
        free = [k for k in range(v) if quota[k] < capacity[k]]
        k = min(free, key=lambda k: (quota[k] / capacity[k], k))
        quota[k] += 1
        excess -= 1
    return quota


def select_exemplars(
    labeled: Sequence[Sequence[int]],
    exemplars: int | Literal["all"],
    strategy: Literal["spread", "random"],
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """Choose exemplar slices: a sorted list of (volume index, slice index).

    labeled: per training volume, the sorted axial indices (Z of `Volume`) of its labeled slices.
    """
    total = sum(len(s) for s in labeled)
    if exemplars == "all":
        return [(v, int(z)) for v, s in enumerate(labeled) for z in s]
    if isinstance(exemplars, bool) or not isinstance(exemplars, int) or exemplars < 1:
        raise ParamsError(f"exemplars: must be >= 1 or `all`, got {exemplars!r}")
    if exemplars > total:
        raise ParamsError(
            f"exemplars: {exemplars} requested but the {len(labeled)} training cases have only "
            f"{total} labeled slices (use `all` for every one)"
        )
    if strategy == "random":
        flat = [(v, int(z)) for v, s in enumerate(labeled) for z in s]
        picks = rng.choice(len(flat), size=exemplars, replace=False)
        return sorted(flat[i] for i in picks)
    chosen = []
    for v, k in enumerate(_quotas(exemplars, [len(s) for s in labeled])):
        n = len(labeled[v])
        # floor((j + 1) * n / (k + 1)) gives k distinct, evenly spaced positions for k <= n.
        chosen.extend((v, int(labeled[v][(j + 1) * n // (k + 1)])) for j in range(k))
    return sorted(chosen)


def select_pool(
    depth: int, per_case: int, exclude: set[int], rng: np.random.Generator
) -> list[int]:
    """`per_case` distinct slice indices in [0, depth), evenly spaced with jitter, none in `exclude`.

    Each pick starts at the centre of its 1/per_case share of the volume, moves by up to a quarter
    share at random, then to the nearest slice not excluded or already taken.
    """
    free = [z for z in range(depth) if z not in exclude]
    if per_case <= 0:
        return []
    if per_case >= len(free):
        return free
    step = depth / per_case
    taken: list[int] = []
    for j in range(per_case):
        want = (j + 0.5) * step + rng.uniform(-0.25, 0.25) * step
        options = [z for z in free if z not in taken]
        taken.append(min(options, key=lambda z: (abs(z - want), z)))
    return sorted(taken)


def run(params: Params, out_h5: Path, out_csv: Path) -> ExemplarSet:
    """Read the training cases, select, and write `out_h5` (schema.py) and `out_csv` atomically."""
    for out in (out_h5, out_csv):  # an unwritable output fails before any case is read
        ensure_parent(out)
    reader = open_dataset(params.dataset, params.seed)
    train = reader.cases("train")
    if not train:
        raise InputError(reader.root, "no training cases")
    folder = Path(params.dataset.annotations)
    annotations: Annotations | None = None
    if not (folder / MANIFEST).is_file():
        labeled, depth = _scan(reader, train)
        strategy = params.synth.exemplar_strategy
    else:
        annotations, depth = _scan_annotated(reader, train, folder)
        labeled = [np.asarray(sorted(annotations.get(case, {})), np.int64) for case in train]
        strategy = "spread"  # the person chose the slices; N of them are spread, never drawn
    rng = np.random.default_rng([params.stream_seed, streams.EXEMPLARS])
    try:
        picks = select_exemplars(labeled, params.exemplars, strategy, rng)
    except ParamsError as e:  # name what the labeled slices were counted in
        raise ParamsError(f"{folder if annotations else reader.root}: {e}") from None
    by_case: list[list[int]] = [[] for _ in train]
    for v, z in picks:
        by_case[v].append(z)
    pools = [
        select_pool(
            d,
            params.synth.pool_per_case,
            set(mine) if annotations is None else set(int(z) for z in labeled[v]),
            np.random.default_rng([params.stream_seed, streams.POOL, v]),
        )
        for v, (d, mine) in enumerate(zip(depth, by_case, strict=True))
    ]
    ex = _extract(reader, train, by_case, pools, params.dataset.format, annotations)
    record = {
        "exemplars": params.exemplars,
        "seed": params.seed,
        "replicate": params.replicate,
        "dataset": to_dict(params.dataset),
        "exemplar_strategy": params.synth.exemplar_strategy,
        "pool_per_case": params.synth.pool_per_case,
    }
    write_exemplars(out_h5, ex, record)
    write_text(out_csv, exemplar_table(ex))
    how = "all labeled slices" if params.exemplars == "all" else strategy
    if annotations is not None:
        which = "all" if params.exemplars == "all" else f"{params.exemplars}, spread,"
        how = f"{which} of the slices listed in {folder / MANIFEST}"
    _report(ex, len(train), how, out_h5, out_csv)
    return ex


def _scan_annotated(
    reader: BaseReader, train: list[str], folder: Path
) -> tuple[Annotations, list[int]]:
    """The painted label of every listed slice (by case and axial index, at the stages' slice
    size) and every case's number of slices; training labels are not read.

    First the checks of `fewsam data check` on the training cases and the annotation folder:
    every problem is printed, one line each, and FewsamError stops extraction before anything
    is written, so no mirrored, shifted, empty or unsaved label reaches training this way.
    """
    dataset = find_problems(reader, train)
    checked = check_folder(reader, folder, keep_slices=True)
    where = reader.root if dataset else folder
    refuse(
        [*dataset, *checked.problems], where, "nothing written (`fewsam data check` lists the same)"
    )
    annotations: Annotations = {}
    depth = []
    for volume in iter_volumes(reader, train, "scanning"):
        _, z, h, w = volume.image.shape
        depth.append(int(z))
        planes = checked.slices.get(volume.case, {})
        if planes:
            annotations[volume.case] = {
                k: plane
                if plane.shape == (h, w)
                else cv2.resize(plane, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
                for k, plane in planes.items()
            }
        del volume  # free it before the next case is read
    return annotations, depth


def _scan(reader: BaseReader, train: list[str]) -> tuple[list[np.ndarray], list[int]]:
    """Per training case, the indices of its labeled slices and its number of slices."""
    labeled, depth = [], []
    for volume in iter_volumes(reader, train, "scanning"):
        assert volume.label is not None
        labeled.append(np.flatnonzero(volume.label.reshape(volume.label.shape[0], -1).any(1)))
        depth.append(volume.label.shape[0])
        del volume  # free it before the next case is read
    return labeled, depth


def _extract(
    reader: BaseReader,
    train: list[str],
    by_case: list[list[int]],
    pools: list[list[int]],
    dataset_format: str,
    annotations: Annotations | None = None,
) -> ExemplarSet:
    """Copy the chosen exemplar and pool slices out of the training cases, one case at a time.

    Exemplar labels come from `annotations` when given, else from the cases' own labels.
    """
    images, labels, cases, slices, pool_images, pool_cases, pool_slices = [], [], [], [], [], [], []
    wanted = [v for v in range(len(train)) if by_case[v] or pools[v]]
    index = {case: v for v, case in enumerate(train)}
    # A plain loop over the generator: zip/enumerate would keep the previous volume alive.
    for volume in iter_volumes(reader, [train[v] for v in wanted], "extracting"):
        v = index[volume.case]
        for z in by_case[v]:
            images.append(volume.image[:, z].copy())  # a copy, not a view pinning the volume
            if annotations is not None:
                labels.append(annotations[volume.case][z])
            else:
                assert volume.label is not None
                labels.append(volume.label[z].copy())
            cases.append(train[v])
            slices.append(z)
        for z in pools[v]:
            pool_images.append(volume.image[:, z].copy())
            pool_cases.append(train[v])
            pool_slices.append(z)
        del volume
    c, h, w = images[0].shape
    return ExemplarSet(
        image=np.stack(images).astype(np.float32),
        label=np.stack(labels).astype(np.uint8),
        case=tuple(cases),
        slice=np.asarray(slices, np.int64),
        pool_image=np.stack(pool_images) if pool_images else np.zeros((0, c, h, w), np.float32),
        pool_case=tuple(pool_cases),
        pool_slice=np.asarray(pool_slices, np.int64),
        classes=tuple(reader.classes),
        channels=tuple(reader.channels),
        dataset_format=dataset_format,
    )


def exemplar_table(ex: ExemplarSet) -> str:
    """CSV text, one row per exemplar: case, slice, classes present (by name), pixels per class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "slice", "classes", *ex.classes])
    for i in range(len(ex.case)):
        counts = np.bincount(ex.label[i].ravel(), minlength=ex.num_classes + 1)[1:]
        present = ";".join(name for name, n in zip(ex.classes, counts, strict=True) if n)
        writer.writerow([ex.case[i], int(ex.slice[i]), present, *(int(n) for n in counts)])
    return buf.getvalue()


def _report(ex: ExemplarSet, n_train: int, how: str, out_h5: Path, out_csv: Path) -> None:
    n, c, h, w = ex.image.shape
    used = len(set(ex.case))
    print(
        f"extract: {n} exemplars ({how}) from {used} of {n_train} training cases, "
        f"{len(ex.pool_case)} background slices, {c} x {h} x {w} -> {out_h5}, {out_csv}"
    )
    for k, name in enumerate(ex.classes, start=1):
        slices = int((ex.label == k).reshape(n, -1).any(1).sum())
        print(f"  {name:<16} in {slices:>3} of {n} exemplars")
