"""`fewsam synth stats`: per class, how many slices and pixels carry it, exemplars vs synthetic,
and whether any synthetic sample holds a structure more often than its exemplar did.

The component check counts, per sample and class, the structures (8-connected components) and
compares them with the count on the exemplar the sample came from. A duplicated organ (a copy
pasted beside the original) shows up as one more structure. In the exemplar a structure is a
component of at least MIN_PIXELS pixels; in a sample it must also have at least
STRUCTURE_FRACTION of the exemplar's smallest structure of that class. Smaller pieces are
counted apart, as specks: rotation, scaling and elastic deformation resample the label by
nearest neighbour and can pinch a few pixels off a thin part of an organ (a liver's tip), which
is no duplicate; a copy of a structure is as large as the structure. The synthetic labels are
read a block at a time, so the counts run in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from core.schema import read_exemplars, read_synthetic_info

_BLOCK = 64  # synthetic label slices read at once
MIN_PIXELS = 5  # smaller components are specks, not structures
STRUCTURE_FRACTION = 0.25  # ... and so are sample components under this share of the smallest
_EIGHT = np.ones((3, 3), dtype=bool)


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


def component_sizes(label: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Per class id 1..K of `label` (H x W uint8), the pixel counts of its 8-connected
    components (an empty array for an absent class)."""
    out = [np.zeros(0, np.int64)] * num_classes
    for k, box in enumerate(ndimage.find_objects(label, max_label=num_classes)):
        if box is None:
            continue
        comps, n = ndimage.label(label[box] == k + 1, structure=_EIGHT)
        out[k] = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    return out


def components(
    label: np.ndarray, num_classes: int, min_size: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per class id 1..K of `label` (H x W uint8): structures, the components of at least
    MIN_PIXELS pixels (and of at least `min_size[k]`, (K,), when given), and specks, the
    smaller ones. Two (K,) int64 arrays."""
    big = np.zeros(num_classes, np.int64)
    small = np.zeros(num_classes, np.int64)
    for k, sizes in enumerate(component_sizes(label, num_classes)):
        floor = MIN_PIXELS if min_size is None else max(MIN_PIXELS, float(min_size[k]))
        big[k] = int((sizes >= floor).sum())
        small[k] = sizes.size - big[k]
    return big, small


def _reference(label: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """An exemplar's structures per class and the least size a sample's structure must have."""
    counts = np.zeros(num_classes, np.int64)
    floor = np.zeros(num_classes)
    for k, sizes in enumerate(component_sizes(label, num_classes)):
        kept = sizes[sizes >= MIN_PIXELS]
        counts[k] = kept.size
        floor[k] = STRUCTURE_FRACTION * kept.min() if kept.size else 0.0
    return counts, floor


@dataclass(frozen=True)
class ComponentCheck:
    """Over `samples` synthetic samples, per class id 1..K: samples with more components than
    their exemplar (`excess`), the largest such surplus (`worst`), and specks (`specks`)."""

    samples: int
    excess: np.ndarray  # (K,) int64
    worst: np.ndarray  # (K,) int64
    specks: np.ndarray  # (K,) int64


def check_components(
    exemplar_label: np.ndarray, label: np.ndarray, exemplar: np.ndarray, num_classes: int
) -> tuple[ComponentCheck, int]:
    """Component check of synthetic `label` B x H x W uint8 made from exemplars `exemplar` (B,)
    of `exemplar_label` N x H x W. Returns the check and the number of failing samples."""
    reference = [_reference(lab, num_classes) for lab in exemplar_label]
    excess = np.zeros(num_classes, np.int64)
    worst = np.zeros(num_classes, np.int64)
    specks = np.zeros(num_classes, np.int64)
    failing = checked = 0
    for lab, e in zip(label, exemplar, strict=True):
        if e < 0:
            continue  # a pseudo-labeled slice (`fewsam synth pseudo`) has no exemplar
        checked += 1
        counts, floor = reference[int(e)]
        big, small = components(lab, num_classes, floor)
        surplus = big - counts
        excess += surplus > 0
        worst = np.maximum(worst, surplus)
        specks += small
        failing += bool((surplus > 0).any())
    return ComponentCheck(checked, excess, worst, specks), failing


def format_components(classes: tuple[str, ...], check: ComponentCheck, failing: int) -> str:
    """The component check as text: a summary line, then one line per class."""
    lines = [
        f"structures (8-connected components of >= {MIN_PIXELS} px and, in a sample, >= "
        f"{STRUCTURE_FRACTION:.0%} of the exemplar's smallest of that class) per class vs the "
        "sample's exemplar: "
        f"{failing} of {check.samples} samples have more than their exemplar",
    ]
    width = max(len(c) for c in classes) + 4
    lines.append(f"{'class':<{width}}  samples with more  largest surplus  smaller pieces")
    for k, name in enumerate(classes):
        lines.append(
            f"{f'{k + 1} {name}':<{width}}  {check.excess[k]:>17}  {check.worst[k]:>15}  "
            f"{check.specks[k]:>15}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Stats:
    """What `run` found: the text to print and the number of samples failing the check."""

    text: str
    failing: int


def run(exemplars_h5: Path, synthetic_h5: Path) -> Stats:
    """The table for the two files (the synthetic column is `-` while the set is not built) and,
    for a built set, the component check."""
    ex = read_exemplars(exemplars_h5)
    ex_counts = count_classes(ex.label, ex.num_classes)
    if not synthetic_h5.exists():
        return Stats(format_table(ex.classes, ex_counts, None), 0)
    info = read_synthetic_info(synthetic_h5)
    k = ex.num_classes
    syn_counts = count_classes(np.zeros((0, 1, 1), np.uint8), k)
    check = ComponentCheck(0, *(np.zeros(k, np.int64) for _ in range(3)))
    failing = 0
    with h5py.File(synthetic_h5, "r") as f:
        for start in range(0, info.length, _BLOCK):
            block = f["label"][start : start + _BLOCK]
            syn_counts = syn_counts + count_classes(block, k)
            part, fails = check_components(
                ex.label, block, f["exemplar"][start : start + _BLOCK], k
            )
            check = ComponentCheck(
                check.samples + part.samples,
                check.excess + part.excess,
                np.maximum(check.worst, part.worst),
                check.specks + part.specks,
            )
            failing += fails
    table = format_table(ex.classes, ex_counts, syn_counts)
    return Stats(table + "\n\n" + format_components(ex.classes, check, failing), failing)
