"""`fewsam synth stats`: per class, how many slices and pixels carry it, exemplars vs synthetic.

The synthetic labels are read a block at a time, so the count runs in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from core.schema import read_exemplars, read_synthetic_info

_BLOCK = 64  # synthetic label slices read at once


@dataclass(frozen=True)
class ClassCounts:
    """For class ids 0..K (0 = background): slices holding each id, and pixels of each id."""

    slices: int
    holding: np.ndarray  # (K + 1,) int64
    pixels: np.ndarray  # (K + 1,) int64

    def __add__(self, other: ClassCounts) -> ClassCounts:
        return ClassCounts(
            self.slices + other.slices, self.holding + other.holding, self.pixels + other.pixels
        )


def count_classes(label: np.ndarray, num_classes: int) -> ClassCounts:
    """Counts over `label` B x H x W uint8 with ids 0..num_classes."""
    k = num_classes + 1
    holding = np.zeros(k, np.int64)
    pixels = np.zeros(k, np.int64)
    for lab in label:
        counts = np.bincount(lab.ravel(), minlength=k)[:k]
        holding += counts > 0
        pixels += counts
    return ClassCounts(label.shape[0], holding, pixels)


def _column(c: ClassCounts | None, k: int) -> tuple[str, str]:
    if c is None:
        return "-", "-"
    share = 100.0 * c.holding[k] / max(c.slices, 1)
    return f"{c.holding[k]} ({share:.0f}%)", f"{100.0 * c.pixels[k] / max(c.pixels.sum(), 1):.2f}%"


def format_table(
    classes: tuple[str, ...], exemplars: ClassCounts, synthetic: ClassCounts | None
) -> str:
    """A plain-text table: per class, the slices holding it (and their share), and the class's
    share of all pixels."""
    syn = "synthetic (not built)" if synthetic is None else f"synthetic (of {synthetic.slices})"
    head = ("class", f"exemplars (of {exemplars.slices})", "pixel share", syn, "pixel share")
    rows = [head]
    for k, name in enumerate(("background", *classes)):
        rows.append((f"{k} {name}", *_column(exemplars, k), *_column(synthetic, k)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(exemplars_h5: Path, synthetic_h5: Path) -> str:
    """The table for the two files (the synthetic column is `-` while the set is not built)."""
    ex = read_exemplars(exemplars_h5)
    ex_counts = count_classes(ex.label, ex.num_classes)
    syn_counts = None
    if synthetic_h5.exists():
        info = read_synthetic_info(synthetic_h5)
        syn_counts = count_classes(np.zeros((0, 1, 1), np.uint8), ex.num_classes)
        with h5py.File(synthetic_h5, "r") as f:
            for start in range(0, info.length, _BLOCK):
                block = f["label"][start : start + _BLOCK]
                syn_counts = syn_counts + count_classes(block, ex.num_classes)
    return format_table(ex.classes, ex_counts, syn_counts)
