"""`fewsam synth preview`: a PNG grid of synthetic samples, each beside the exemplar it came from.

Each sample is shown as three panels: the source exemplar, the background its structures were
put down on (for `self` pasting the exemplar with its structures cut out and in-filled, the
in-filled region outlined in white; a pool slice otherwise; "no pasting" when the sample was not
pasted), and the synthetic sample. Samples come from `synthetic.h5` when it exists, or are
synthesized on the fly with the same `make_sample` as the stage, so the preview of a set not yet
built shows exactly the samples that `fewsam synth run` will write at those indices. The middle
panel is never stored: for a built set it is made again with the current params, and shown only
when that remakes the stored sample exactly. The first channel is shown in grey (its name is in
the title); classes are coloured fills with solid outlines, named in the legend.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import matplotlib
import numpy as np
from scipy import ndimage

from core import streams
from core.atomic import atomic_path
from core.errors import InputError
from core.params import Params
from core.schema import ExemplarSet, read_exemplars, read_synthetic_info
from synth.synthesize import SyntheticSample, exemplar_weights, exemplars_digest, make_sample

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

_PAIRS_PER_ROW = 3
_FILL_ALPHA = 0.35


def select_indices(length: int, n: int, seed: int | None) -> list[int]:
    """Which samples to show: the first `n`, or `n` drawn with `seed` (sorted, no repeats)."""
    n = min(n, length)
    if seed is None:
        return list(range(n))
    rng = np.random.default_rng([seed, streams.PREVIEW])
    return sorted(int(i) for i in rng.choice(length, size=n, replace=False))


def class_colours(num_classes: int) -> np.ndarray:
    """RGB colours, (K + 1) x 3 floats; row k is class k (row 0, background, is unused)."""
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return np.array([(0, 0, 0)] + [cmap(k % cmap.N)[:3] for k in range(num_classes)])


def overlay(image: np.ndarray, label: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """H x W x 3 float RGB: `image` (H x W in [0, 1]) in grey, classes filled and outlined."""
    rgb = np.repeat(np.clip(image, 0.0, 1.0)[:, :, None], 3, axis=2)
    for cls in np.unique(label):
        if cls == 0:
            continue
        mask = label == cls
        edge = mask & ~ndimage.binary_erosion(mask)
        rgb[mask] = (1 - _FILL_ALPHA) * rgb[mask] + _FILL_ALPHA * colours[cls]
        rgb[edge] = colours[cls]
    return rgb


def _caption(index: int, s: SyntheticSample, synthesized: bool) -> str:
    if not synthesized:
        return f"#{index} (no synthesis)"
    return f"#{index} · " + ("own background" if s.background < 0 else f"pool {s.background}")


def _background_panel(ax: plt.Axes, s: SyntheticSample | None) -> None:
    """The canvas of `s` with its in-filled region outlined; a note when there is none."""
    if s is None or s.canvas is None:
        note = "built with\nother params" if s is None else "no pasting"
        ax.set_facecolor("0.9")
        ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_title("background", fontsize=8)
        return
    rgb = np.repeat(np.clip(s.canvas[0], 0.0, 1.0)[:, :, None], 3, axis=2)
    filled = s.filled if s.filled is not None else np.zeros(rgb.shape[:2], bool)
    rgb[filled & ~ndimage.binary_erosion(filled)] = (1.0, 1.0, 1.0)
    ax.imshow(rgb, interpolation="nearest")
    what = "in-filled (outlined)" if filled.any() else f"pool {s.background}"
    ax.set_title(f"background · {what}", fontsize=8)


def render_grid(
    ex: ExemplarSet,
    samples: list[tuple[int, SyntheticSample, SyntheticSample | None]],
    out: Path,
    title: str,
    synthesized: bool,
) -> None:
    """Write the PNG grid of (exemplar, background, sample) triples to `out` (atomically).

    Each item is (index, stored sample, the same sample remade with its canvas, or None).
    """
    cols = min(_PAIRS_PER_ROW, len(samples))
    rows = math.ceil(len(samples) / cols)
    height = 2.4 * rows + 1.0
    fig = plt.figure(figsize=(6.6 * cols, height))
    # A narrow spacer column between triples, so each triple reads as one unit.
    ratios = [1.0, 1.0, 1.0, 0.12] * cols
    grid = fig.add_gridspec(rows, 4 * cols - 1, width_ratios=ratios[:-1], wspace=0.04)
    colours = class_colours(ex.num_classes)
    for k, (index, s, traced) in enumerate(samples):
        r, c = divmod(k, cols)
        left, middle, right = (fig.add_subplot(grid[r, 4 * c + i]) for i in range(3))
        e = s.exemplar
        left.imshow(overlay(ex.image[e, 0], ex.label[e], colours), interpolation="nearest")
        left.set_title(f"exemplar {e} · {ex.case[e]} z{ex.slice[e]}", fontsize=8)
        _background_panel(middle, traced)
        right.imshow(overlay(s.image[0], s.label, colours), interpolation="nearest")
        right.set_title(_caption(index, s, synthesized), fontsize=8, fontweight="bold")
        for ax in (left, middle, right):
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=colours[k + 1], label=name) for k, name in enumerate(ex.classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.7 / height, bottom=0.4 / height)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _traced(
    params: Params, ex: ExemplarSet, index: int, stored: SyntheticSample
) -> SyntheticSample | None:
    """Sample `index` remade with the current params (for its canvas), or None when that does not
    give the stored sample back (the set was built with other params)."""
    remade = make_sample(ex, params.synth, params.stream_seed, index)
    same = np.array_equal(remade.label, stored.label) and np.allclose(
        remade.image, stored.image, atol=1e-3
    )
    return remade if same else None


def _from_file(
    path: Path, ex: ExemplarSet, n: int, seed: int | None
) -> tuple[list[tuple[int, SyntheticSample]], bool]:
    """Samples chosen by `select_indices` from a built set, and whether synthesis was on."""
    info = read_synthetic_info(path)
    if "selftrain" in info.params:
        raise InputError(path, "holds pseudo-labeled slices; preview the synthetic set it extends")
    digest = info.params.get("exemplars", {}).get("sha256")
    if digest is not None and digest != exemplars_digest(ex):
        raise InputError(path, "was built from other exemplars; run `fewsam synth run` again")
    with h5py.File(path, "r") as f:
        samples = [
            (
                i,
                SyntheticSample(
                    f["image"][i].astype(np.float32),
                    f["label"][i],
                    int(f["exemplar"][i]),
                    int(f["background"][i]),
                ),
            )
            for i in select_indices(info.length, n, seed)
        ]
    return samples, bool(info.params.get("synth", {}).get("enabled", True))


def run(
    params: Params,
    exemplars_h5: Path,
    synthetic_h5: Path,
    out: Path,
    n: int = 16,
    seed: int | None = None,
) -> Path:
    """Render `n` samples (the first ones, or drawn with `seed`) to `out`; returns `out`."""
    if n < 1:
        raise InputError(out, f"--n must be >= 1, got {n}")
    ex = read_exemplars(exemplars_h5)
    if synthetic_h5.exists():
        stored, synthesized = _from_file(synthetic_h5, ex, n, seed)
        samples = [(i, s, _traced(params, ex, i, s)) for i, s in stored]
        source = str(synthetic_h5)
    else:
        p = params.synth
        length = p.samples if p.enabled else ex.image.shape[0]
        weights = exemplar_weights(ex.label)
        samples = []
        for i in select_indices(length, n, seed):
            sample = make_sample(ex, p, params.stream_seed, i, weights)
            samples.append((i, sample, sample))
        synthesized = p.enabled
        source = f"synthesized on the fly, seed {params.seed} ({synthetic_h5} not built yet)"
    channel = ex.channels[0] if ex.channels else "channel 0"
    title = f"Exemplar, background, synthetic sample · {channel} · {source}"
    render_grid(ex, samples, out, title, synthesized)
    return out
