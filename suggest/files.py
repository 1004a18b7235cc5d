"""What `suggest` writes into the annotation folder: label files, manifest rows, a contact sheet.

Label files are written by the folder's one writer (`synth.annotations.write_case`), which keeps
whatever a person already painted: a new suggestion only writes its own slice (zeros, or the
model's draft). Every file is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.atomic import atomic_path  # noqa: E402
from core.volume import Volume, file_slice  # noqa: E402
from evaluate.reports import label_colormap  # noqa: E402
from synth.annotations import (  # noqa: E402
    SliceRow,
    label_path,
    sha256_bytes,
    source_shape,
    write_case,
)


@dataclass(frozen=True)
class Suggestion:
    """One chosen slice: its scan (on the source grid), axial index, score and draft."""

    volume: Volume  # source grid; its label is never read
    z: int
    score: float | None
    draft: np.ndarray  # H x W uint8 on the source grid (zeros without a model)


def slice_position_mm(volume: Volume, z: int) -> tuple[int, int, float]:
    """(file axis, file index, world coordinate in mm of the slice centre along that axis)."""
    shape = source_shape(volume)
    axis, index = file_slice(z, shape, volume.affine)
    centre = np.array([(n - 1) / 2.0 for n in shape] + [1.0])
    centre[axis] = index
    world = np.asarray(volume.affine, np.float64) @ centre
    # The world direction the slice axis runs along most (x, y or z of RAS+ mm).
    direction = int(np.argmax(np.abs(np.asarray(volume.affine)[:3, axis])))
    return axis, index, float(world[direction])


def manifest_rows(
    folder: Path,
    suggestions: Sequence[Suggestion],
    strategy: str,
    round_: int,
    num_classes: int,
    earlier: Sequence[SliceRow] = (),
) -> list[SliceRow]:
    """Write each suggested case's label file; return the whole manifest (`earlier` rows, then
    the new ones, ranked).

    An earlier row whose file was never saved since `suggest` wrote it gets the new file's hash,
    so its unreviewed draft is still reported as never saved after this rewrite; a row whose
    file a person saved keeps its hash.
    """
    by_case: dict[str, list[Suggestion]] = {}
    for s in suggestions:
        by_case.setdefault(s.volume.case, []).append(s)
    file_hashes: dict[str, tuple[str, dict[int, str]]] = {}
    before: dict[str, str | None] = {}
    for case, items in sorted(by_case.items()):
        path = label_path(folder, case)
        before[case] = sha256_bytes(path.read_bytes()) if path.is_file() else None
        drafts = {s.z: s.draft for s in items}
        file_hashes[case] = write_case(folder, items[0].volume, drafts, num_classes)
    kept = [
        replace(row, file_sha256=file_hashes[row.case][0])
        if row.case in file_hashes and row.file_sha256 == before[row.case]
        else row
        for row in earlier
    ]
    rows = []
    for rank, s in enumerate(suggestions, start=1):
        axis, index, position = slice_position_mm(s.volume, s.z)
        file_hash, slice_hashes = file_hashes[s.volume.case]
        rows.append(
            SliceRow(
                case=s.volume.case,
                slice=index,
                axis=axis,
                position_mm=position,
                rank=rank,
                strategy=strategy,
                score=None if s.score is None or math.isnan(s.score) else s.score,
                round=round_,
                draft_sha256=slice_hashes[index],
                file_sha256=file_hash,
            )
        )
    return kept + rows


def contact_sheet(
    path: Path, suggestions: Sequence[Suggestion], rows: Sequence[SliceRow], classes: Sequence[str]
) -> None:
    """A PNG grid of the suggested slices (first channel), drafts overlaid, titled by rank."""
    n = len(suggestions)
    cols = min(n, 4)
    lines = math.ceil(n / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(2.8 * cols, 3.0 * lines), dpi=100, squeeze=False)
    cmap = label_colormap(len(classes))
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, s, row in zip(axes.ravel(), suggestions, rows, strict=False):
        ax.imshow(s.volume.image[0, s.z], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if s.draft.any():
            ax.imshow(s.draft, cmap=cmap, vmin=0, vmax=len(classes), interpolation="nearest")
        score = "" if row.score is None else f", score {row.score:.3g}"
        ax.set_title(
            f"#{row.rank} {row.case}\nslice {row.slice} (axis {row.axis}){score}", fontsize=8
        )
    fig.suptitle(f"Slices to label ({rows[0].strategy if rows else ''})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
