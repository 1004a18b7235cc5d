"""Self-training: a trained model's prompt-free label maps of the unlabeled training slices as
extra training samples (`fewsam synth pseudo`).

The teacher (an adapter, or the U-Net baseline) segments every body slice of the training scans
(every `selftrain.stride`-th; a slice counts as body when `selftrain.body_fraction` of it is not
air) except the exemplar slices, whose true labels the synthetic set already holds in augmented
form. Training labels play no part (the reader may load them; nothing uses them): the paper
protocol's fully labeled training volumes are treated as unlabeled, as the main path's scans
are. The output is a synthetic set (`core.schema`) that holds the input set's samples first,
unchanged, then the pseudo-labeled slices (exemplar and background index -1), so `fewsam train
run` and `fewsam train baseline` take it as they take `synthetic.h5`; its params record the
teacher and how many slices it labeled.

Same teacher, set and params give the same file: the slices are visited in case order and
ascending z, and inference has no randomness.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from baseline.io import load_unet
from baseline.network import predict_unet
from core.atomic import atomic_path, ensure_parent
from core.device import pick_device
from core.errors import FewsamError, InputError
from core.params import Params, to_dict
from core.progress import make_progress
from core.schema import read_exemplars, read_synthetic_info
from evaluate.adapter_check import load_dataset_adapter
from evaluate.inference import predict_volume
from synth.body import body_mask
from synth.datasets import open_dataset
from synth.datasets.base import BaseReader
from synth.synthetic_store import EncodedSample, SyntheticWriter, encode
from train.base_weights import sha256_file

# C x Z x H x W float32 in [0, 1] -> Z x H x W uint8 class ids.
Segmenter = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Teacher:
    """A trained model that labels slices, and what identifies it in the output's record."""

    kind: str  # adapter | unet
    folder: Path
    segment: Segmenter


def _folder_digest(folder: Path) -> str:
    """SHA-256 over the folder's files (names and digests, sorted): which teacher it was."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder)} {sha256_file(path)}\n".encode())
    return h.hexdigest()


def open_teacher(
    params: Params, reader: BaseReader, adapter: Path | None, unet: Path | None
) -> Teacher:
    """The adapter or the U-Net (exactly one given), checked against the dataset like `evaluate
    infer` checks them."""
    if (adapter is None) == (unet is None):
        raise FewsamError("give exactly one teacher: --adapter or --unet")
    device = pick_device(params.train.device)
    batch = params.evaluate.batch_size
    if adapter is not None:
        model = load_dataset_adapter(adapter, params, reader.classes, reader.channels)
        model = model.to(device)
        return Teacher("adapter", Path(adapter), lambda image: predict_volume(model, image, batch))
    assert unet is not None
    net = load_unet(unet, reader.classes, reader.channels, params.dataset.slice_size)
    if net is None:
        raise InputError(Path(unet), "is the stub of a disabled baseline (baseline.enabled: false)")
    net = net.to(device)
    return Teacher("unet", Path(unet), lambda image: predict_unet(net, image, batch))


def candidate_slices(image: np.ndarray, body_fraction: float, stride: int) -> list[int]:
    """Axial indices of the body slices of `image` (C x Z x H x W), every `stride`-th of them."""
    body = [z for z in range(image.shape[1]) if body_mask(image[:, z]).mean() >= body_fraction]
    return body[::stride]


def pseudo_slices(
    reader: BaseReader,
    cases: list[str],
    skip: set[tuple[str, int]],
    teacher: Teacher,
    body_fraction: float,
    stride: int,
    on_case: Callable[[], None] | None = None,
) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
    """(case, z, image C x H x W, teacher's label H x W) of the candidate slices of `cases`,
    in case order and ascending z, leaving out the (case, z) pairs in `skip`."""
    for case in cases:
        volume = reader.load(case)
        keep = [
            z
            for z in candidate_slices(volume.image, body_fraction, stride)
            if (case, z) not in skip
        ]
        if keep:
            labels = teacher.segment(np.ascontiguousarray(volume.image[:, keep]))
            for i, z in enumerate(keep):
                yield case, z, volume.image[:, z], labels[i]
        if on_case is not None:
            on_case()


def run(
    params: Params,
    data: Path,
    exemplars: Path,
    out: Path,
    adapter: Path | None = None,
    unet: Path | None = None,
) -> dict[str, Any]:
    """Write `out`: the samples of the synthetic set `data`, then the teacher's pseudo-labeled
    training slices (the exemplar slices of `exemplars` left out). Returns the record stored in
    the output's params under `selftrain`."""
    ensure_parent(out)
    info = read_synthetic_info(data)
    ex = read_exemplars(exemplars)
    reader = open_dataset(params.dataset, params.seed)
    if tuple(reader.classes) != info.classes or tuple(reader.channels) != info.channels:
        raise InputError(
            data,
            f"made for classes {list(info.classes)} and channels {list(info.channels)}, "
            f"but {params.dataset.root} has {list(reader.classes)} and {list(reader.channels)}",
        )
    teacher = open_teacher(params, reader, adapter, unet)
    sp = params.selftrain
    skip = {(c, int(z)) for c, z in zip(ex.case, ex.slice, strict=True)}
    cases = reader.cases("train")
    # Kept compressed (the file's own chunks), so a large dataset's slices fit in memory until
    # the output's length is known.
    samples: list[EncodedSample] = []
    found: list[tuple[str, int, bool]] = []  # case, z, whether the teacher marked a structure
    with make_progress() as progress:
        task = progress.add_task("pseudo-label", total=len(cases))
        for case, z, image, label in pseudo_slices(
            reader,
            cases,
            skip,
            teacher,
            sp.body_fraction,
            sp.stride,
            lambda: progress.advance(task),
        ):
            if image.shape[1:] != (info.height, info.width):
                raise InputError(
                    data,
                    f"holds {info.height} x {info.width} slices but {case} reads as "
                    f"{image.shape[1]} x {image.shape[2]} (dataset.slice_size differs)",
                )
            samples.append(encode(info.length + len(samples), image, label, -1, -1))
            found.append((case, z, bool(label.any())))
    if not samples:
        raise InputError(params.dataset.root, "no training slice left to pseudo-label")
    record = {
        "teacher": teacher.kind,
        "teacher_sha256": _folder_digest(teacher.folder),
        "slices": len(samples),
        "cases": len({case for case, _, _ in found}),
        "labeled_fraction": round(sum(marked for _, _, marked in found) / len(found), 6),
        "params": to_dict(sp),
    }
    n = info.length + len(samples)
    shape = (len(info.channels), info.height, info.width)
    with (
        atomic_path(out, suffix=".h5") as tmp,
        h5py.File(data, "r") as src,
        SyntheticWriter(tmp, n, shape) as writer,
    ):
        for i in range(info.length):
            writer.write(
                encode(
                    i,
                    src["image"][i],
                    src["label"][i],
                    int(src["exemplar"][i]),
                    int(src["background"][i]),
                )
            )
        for sample in samples:
            writer.write(sample)
        sources = {
            "pseudo_case": np.array([case for case, _, _ in found], dtype=h5py.string_dtype()),
            "pseudo_slice": np.array([z for _, z, _ in found], dtype=np.int32),
        }
        writer.finish(info.classes, info.channels, {**info.params, "selftrain": record}, sources)
    return record


def describe(record: dict[str, Any], out: Path) -> str:
    """The one line the command prints."""
    return (
        f"{record['slices']} slices of {record['cases']} training scans pseudo-labeled by the "
        f"{record['teacher']} ({100 * record['labeled_fraction']:.0f}% with a structure) -> {out}"
        f"  {json.dumps(record['params'])}"
    )
