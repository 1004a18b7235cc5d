"""Dataset readers: one per `dataset.format`, each returning `core.volume.Volume`s.

    open_dataset(params.dataset, params.seed) -> reader
    reader.cases("train" | "test") -> sorted case ids
    reader.load(case) -> Volume (image C x Z x H x W float32 in [0, 1], label Z x H x W uint8)
    reader.load(case, resize=False) -> the same on the source grid (what scoring compares with)

Every reader validates what it reads (`synth.check` lists the problems of a whole dataset) and
`load` applies `dataset.slice_size`, so every stage sees the same slices.
"""

from __future__ import annotations

from pathlib import Path

from core.params import DatasetParams
from synth.datasets.base import BaseReader, Problem

__all__ = ["BaseReader", "Problem", "open_dataset"]


def open_dataset(p: DatasetParams, seed: int, root: Path | None = None) -> BaseReader:
    """Index the dataset of `p` (at `root`, default `p.root`); InputError if it cannot be used.

    `seed` drives the seeded train/test split of the formats without a fixed one (brats, nifti).
    """
    folder = Path(p.root) if root is None else Path(root)
    if p.format == "synapse":
        from synth.datasets.synapse import SynapseReader

        return SynapseReader(p, folder)
    if p.format == "synapse-npz":
        from synth.datasets.synapse_npz import SynapseNpzReader

        return SynapseNpzReader(p, folder)
    if p.format == "brats":
        from synth.datasets.brats import BratsReader

        return BratsReader(p, folder, seed)
    if p.format == "nifti":
        from synth.datasets.nifti import NiftiReader

        return NiftiReader(p, folder, seed)
    raise AssertionError(f"unhandled dataset.format {p.format!r}")  # params validate the choice
