"""What evaluation writes: metrics JSON, per-case and per-class CSVs, overlays, NIfTI predictions.

Every file is written atomically (complete under its final name, or absent). The JSON and CSV
writers are deterministic: the same scores give the same bytes.

Methods are named `prompt_free` and `prompted` (the adapted model), `zero_shot` and
`zero_shot_box` (base SAM, point and box prompts); folders of other tools' predictions scored by
`fewsam evaluate score` bring their own names.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from core.atomic import atomic_path, write_text  # noqa: E402
from evaluate.protocols import ClassScore, Summary  # noqa: E402
from synth.datasets.nifti_io import label_nifti_bytes  # noqa: E402

ADAPTED = ("prompt_free", "prompted")
ZERO_SHOT = ("zero_shot", "zero_shot_box")
# The supervised baseline (package `baseline`): a U-Net trained on the same synthetic set.
UNET = "unet"
# A prompt-free method -> its label map refined by SAM from boxes (`evaluate.refine`).
REFINED = {"prompt_free": "prompt_free_refined", UNET: "unet_refined"}
# The adapted mode behind the flat headline keys (`dsc`, `hd95`): prompted with the same one point
# per present class as zero-shot SAM (point), so the two headline numbers compare like with like.
HEADLINE = "prompted"
# method -> its flat (Dice, HD95) keys in metrics.json.
HEADLINE_KEYS = {
    HEADLINE: ("dsc", "hd95"),
    "prompt_free": ("dsc_prompt_free", "hd95_prompt_free"),
    UNET: ("unet_dsc", "unet_hd95"),
    "zero_shot": ("zero_shot_dsc", "zero_shot_hd95"),
    "zero_shot_box": ("zero_shot_box_dsc", "zero_shot_box_hd95"),
    "prompt_free_refined": ("prompt_free_refined_dsc", "prompt_free_refined_hd95"),
    "unet_refined": ("unet_refined_dsc", "unet_refined_hd95"),
}
METHOD_TITLES = {
    "prompt_free": "adapted, prompt-free",
    "prompted": "adapted, prompted",
    UNET: "U-Net (same data)",
    "zero_shot": "zero-shot SAM (point)",
    "zero_shot_box": "zero-shot SAM (box)",
    "prompt_free_refined": "adapted, prompt-free, refined by SAM",
    "unet_refined": "U-Net, refined by SAM",
}


def _number(value: float | None) -> float | None:
    """Rounded for stable, readable files; None stays None (JSON null, empty CSV cell)."""
    return None if value is None or math.isnan(value) else round(float(value), 6)


def summary_dict(summary: Summary, classes: Sequence[str]) -> dict[str, Any]:
    """One method's block of metrics.json."""
    return {
        "dice": _number(summary.dice),
        "hd95": _number(summary.hd95),
        "per_class": {
            name: {"dice": _number(d), "hd95": _number(h)}
            for name, d, h in zip(classes, summary.class_dice, summary.class_hd95, strict=True)
        },
        "pairs": dict(summary.counts),
    }


def metrics_dict(
    protocol: str, classes: Sequence[str], cases: int, summaries: Mapping[str, Summary]
) -> dict[str, Any]:
    """metrics.json: the protocol, then `adapted.{prompt_free,prompted}`, `zero_shot` (point)
    and `zero_shot_box` blocks, and a `methods` block for any other method: the U-Net baseline
    (`unet`), the refined label maps (`prompt_free_refined`, `unet_refined`) and predictions of
    other tools.

    `pairs` counts (case, class) pairs by outcome: `both` non-empty, `gt_only` (missed),
    `pred_only` (hallucinated), `both_empty` (excluded from the means under `strict`).

    Flat headline keys repeat the means as short columns for `dvc exp show` and `fewsam report`:
    `dsc`, `hd95` (adapted, `HEADLINE` mode), `dsc_prompt_free`, `hd95_prompt_free`,
    `unet_dsc`, `unet_hd95` (the U-Net baseline), `zero_shot_dsc`, `zero_shot_hd95` (point),
    `zero_shot_box_dsc`, `zero_shot_box_hd95`, and `prompt_free_refined_dsc`, `unet_refined_dsc`
    (with their `_hd95`);
    each only when its method was scored.
    """
    out: dict[str, Any] = {
        "protocol": protocol,
        "hd95_unit": "voxel" if protocol == "transunet" else "mm",
        "cases": cases,
    }
    if any(m in summaries for m in ADAPTED):
        out["adapted"] = {m: summary_dict(summaries[m], classes) for m in ADAPTED if m in summaries}
    for method in ZERO_SHOT:
        if method in summaries:
            out[method] = summary_dict(summaries[method], classes)
    # The U-Net's and the refined methods' blocks sit with other tools' methods; their flat
    # keys are headline keys.
    blocks = set(ADAPTED) | set(ZERO_SHOT)
    others = {m: summary_dict(s, classes) for m, s in summaries.items() if m not in blocks}
    if others:
        out["methods"] = others
    for method, (dsc_key, hd95_key) in HEADLINE_KEYS.items():
        if method in summaries:
            out[dsc_key] = _number(summaries[method].dice)
            out[hd95_key] = _number(summaries[method].hd95)
    return out


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Indented JSON, keys sorted except that the headline keys come first: `dvc exp show`
    orders its columns as the file does, so the headline numbers are its first metric columns."""
    headline = [key for keys in HEADLINE_KEYS.values() for key in keys if key in metrics]
    rest = json.loads(
        json.dumps({k: v for k, v in metrics.items() if k not in headline}, sort_keys=True)
    )
    write_text(path, json.dumps({**{k: metrics[k] for k in headline}, **rest}, indent=2) + "\n")


def _csv_text(fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in fields})
    return buffer.getvalue()


def write_per_case(
    path: Path, results: Mapping[str, Mapping[str, list[ClassScore]]], classes: Sequence[str]
) -> None:
    """per_case.csv, one row per (case, method, class): outcome, dice, hd95 (empty = excluded).

    results: method -> case -> the case's class scores.
    """
    rows = []
    for method, by_case in results.items():
        for case, scores in by_case.items():
            for s in scores:
                rows.append(
                    {
                        "case": case,
                        "method": method,
                        "class": classes[s.label - 1],
                        "outcome": s.outcome,
                        "dice": _number(s.dice),
                        "hd95": _number(s.hd95),
                    }
                )
    write_text(path, _csv_text(("case", "method", "class", "outcome", "dice", "hd95"), rows))


def write_per_class(path: Path, summaries: Mapping[str, Summary], classes: Sequence[str]) -> None:
    """per_class.csv in long format (class, method, dice, hd95), the data of the DVC bar plot."""
    rows = [
        {"class": name, "method": method, "dice": _number(d), "hd95": _number(h)}
        for method, s in summaries.items()
        for name, d, h in zip(classes, s.class_dice, s.class_hd95, strict=True)
    ]
    write_text(path, _csv_text(("class", "method", "dice", "hd95"), rows))


def overlay_slices(label: np.ndarray, count: int) -> list[int]:
    """`count` slice indices spread evenly over the labeled range of Z x H x W `label`."""
    labeled = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
    if count == 0 or labeled.size == 0:
        return []
    picks = np.linspace(labeled[0], labeled[-1], count + 2)[1:-1]  # inner points: no edge slices
    return sorted({int(round(p)) for p in picks})


def label_colormap(num_classes: int) -> ListedColormap:
    """Transparent background, then one colour per class (tab10 without its grey, cycled)."""
    tab = plt.get_cmap("tab10")
    palette = [tab(i)[:3] for i in range(10) if i != 7]  # grey would vanish on a CT slice
    colors = [(0.0, 0.0, 0.0, 0.0)] + [(*palette[i % 9], 0.55) for i in range(num_classes)]
    return ListedColormap(colors)


def write_overlay(
    path: Path,
    image: np.ndarray,
    panels: Mapping[str, np.ndarray],
    classes: Sequence[str],
    title: str,
) -> None:
    """PNG: the slice, then one panel per label map (ground truth, predictions) over it.

    image: H x W float in [0, 1] (first channel); panels: title -> H x W uint8 label map.
    """
    cmap = label_colormap(len(classes))
    n = 1 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), dpi=100)
    axes[0].imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    for ax, (name, label) in zip(axes[1:], panels.items(), strict=True):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.imshow(label, cmap=cmap, vmin=0, vmax=len(classes), interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i + 1)[:3]) for i in range(len(classes))]
    fig.legend(handles, classes, loc="lower center", ncol=min(len(classes), 8), fontsize=7)
    fig.suptitle(title, fontsize=10)
    # A fixed layout: tight_layout measured every title's extent, a third of an overlay's time
    # (0.27 s per PNG with it, 0.18 s without; BENCHMARKS.md, *Default pipeline*).
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.13, top=0.86, wspace=0.03)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def write_nifti(
    path: Path, label_zyx: np.ndarray, affine: np.ndarray, header: object | None
) -> None:
    """Write a Z x H x W label map to `path` (.nii or .nii.gz) atomically."""
    data = label_nifti_bytes(label_zyx, affine, header, compress=path.name.endswith(".gz"))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
