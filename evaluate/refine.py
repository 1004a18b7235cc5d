"""SAM as the refiner: boxes from a trained model's label map prompt a box-trained SAM
(LiteMedSAM, or the base model), and its masks form the final label map.

Per slice and class the model marks, the box is that of the class's largest connected component
on the slice (a stray speck elsewhere does not stretch it), grown by `margin` pixels on each side
and clipped to the slice. One image embedding per slice serves every class and every label map
refined on that slice (`refine_volumes` takes several, e.g. the adapted model's and the U-Net's).

A refined mask replaces the model's pixels of its class only when it is trusted (`Trust`): its
predicted IoU (the refiner's own score) is at least `min_score`, and its Dice with the model's
mask of that class on the slice is at least `min_agreement` (a refiner that disagrees wholesale
has more likely followed a wrong box than fixed an outline). Otherwise the model's pixels stay.
Trusted masks are painted in ascending score, so where two overlap the more confident wins; a
trusted mask may take pixels the model gave another class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from annotate.engines import Embedding, Engine, Prompt, open_engine
from core.params import EvaluateParams, ModelParams

# `evaluate.refine` values other than none: the engines of `annotate.engines` that answer boxes.
REFINERS = ("litemedsam", "base")


@dataclass(frozen=True)
class Trust:
    """When a refined mask replaces the model's (see the module docstring)."""

    min_score: float = 0.0
    min_agreement: float = 0.0

    @staticmethod
    def of(params: EvaluateParams) -> Trust:
        return Trust(params.refine_min_score, params.refine_min_agreement)


def open_refiner(kind: str, model: ModelParams, num_classes: int) -> Engine:
    """The refiner `kind` (litemedsam | base: model.arch's base weights), in eval mode."""
    if kind not in REFINERS:
        raise ValueError(f"unknown refiner {kind!r} (one of {', '.join(REFINERS)})")
    return open_engine(kind, model.arch, model.checkpoint, model.input_size, num_classes)


@dataclass(frozen=True)
class Proposal:
    """The refiner's answer for one class on one slice: its mask, predicted IoU, and Dice with
    the model's mask of the class there."""

    cls: int
    mask: np.ndarray
    score: float
    agreement: float


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of H x W bool `mask` (the first on equal sizes)."""
    parts, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(parts.ravel())[1:]
    return parts == 1 + int(np.argmax(sizes))


def component_box(mask: np.ndarray, margin: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the largest component of non-empty `mask`, grown by `margin` pixels
    and clipped to the slice: first and last column and row, SAM's box convention."""
    rows, cols = np.nonzero(largest_component(mask))
    h, w = mask.shape
    return (
        float(max(int(cols.min()) - margin, 0)),
        float(max(int(rows.min()) - margin, 0)),
        float(min(int(cols.max()) + margin, w - 1)),
        float(min(int(rows.max()) + margin, h - 1)),
    )


def dice2d(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


# Boxes decoded together: SAM's decoder copies the image embedding once per prompt, so a chunk
# bounds memory (LiteMedSAM: 1 MiB per prompt) while sparing per-call overhead.
CHUNK = 32


def answer_boxes(
    engine: Engine, emb: Embedding, boxes: list[tuple[float, float, float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Masks N x H x W and scores N of box prompts: batched where the engine can
    (`predict_boxes`), else one `predict` each."""
    batched = getattr(engine, "predict_boxes", None)
    masks, scores = [], []
    for i in range(0, len(boxes), CHUNK):
        chunk = boxes[i : i + CHUNK]
        if batched is not None:
            m, sc = batched(emb, chunk)
        else:
            answers = [engine.predict(emb, Prompt(1, box=b), None) for b in chunk]
            m, sc = np.array([a.mask for a in answers]), np.array([a.score for a in answers])
        masks.append(m)
        scores.append(sc)
    if not masks:
        return np.zeros((0, *emb.hw), bool), np.zeros(0, np.float32)
    return np.concatenate(masks), np.concatenate(scores)


def propose_many(
    engine: Engine, emb: Embedding, requests: list[tuple[np.ndarray, int]], num_classes: int
) -> list[list[Proposal]]:
    """The refiner's mask for every class present in each H x W label map of `requests`, its
    box grown by the request's margin; every box of the slice decoded in one batch."""
    wanted = [
        (j, c, component_box(label == c, margin))
        for j, (label, margin) in enumerate(requests)
        for c in range(1, num_classes + 1)
        if (label == c).any()
    ]
    masks, scores = answer_boxes(engine, emb, [box for _, _, box in wanted])
    out: list[list[Proposal]] = [[] for _ in requests]
    for i, (j, c, _) in enumerate(wanted):
        model_mask = requests[j][0] == c
        out[j].append(Proposal(c, masks[i], float(scores[i]), dice2d(masks[i], model_mask)))
    return out


def assemble(label: np.ndarray, proposals: list[Proposal], trust: Trust) -> np.ndarray:
    """`label` with each trusted proposal's class replaced by its mask (module docstring)."""
    trusted = [
        p for p in proposals if p.score >= trust.min_score and p.agreement >= trust.min_agreement
    ]
    out = label.copy()
    for p in trusted:
        out[out == p.cls] = 0
    for p in sorted(trusted, key=lambda p: p.score):
        out[p.mask] = p.cls
    return out


def propose_volumes(
    engine: Engine,
    image: np.ndarray,
    labels: Mapping[str, np.ndarray],
    num_classes: int,
    margins: tuple[int, ...],
    on_slice: Callable[[], None] | None = None,
) -> dict[tuple[str, int], list[list[Proposal]]]:
    """(name, margin) -> per slice, the proposals for label map `name` with boxes grown by
    `margin`. image: C x Z x H x W in [0, 1]; labels: name -> Z x H x W uint8 on its grid.

    Each slice some label map marks is embedded once; slices none marks get no proposals.
    `on_slice` is called after each slice (progress)."""
    z = image.shape[1]
    out: dict[tuple[str, int], list[list[Proposal]]] = {
        (name, m): [[] for _ in range(z)] for name in labels for m in margins
    }
    for zi in range(z):
        if on_slice is not None:
            on_slice()
        if not any(lab[zi].any() for lab in labels.values()):
            continue
        emb = engine.embed(np.ascontiguousarray(image[:, zi]))
        keys = [(name, m) for name in labels for m in margins]
        requests = [(labels[name][zi], m) for name, m in keys]
        answered = propose_many(engine, emb, requests, num_classes)
        for key, proposals in zip(keys, answered, strict=True):
            out[key][zi] = proposals
    return out


def refine_volumes(
    engine: Engine,
    image: np.ndarray,
    labels: Mapping[str, np.ndarray],
    num_classes: int,
    margin: int,
    trust: Trust,
    on_slice: Callable[[], None] | None = None,
) -> dict[str, np.ndarray]:
    """name -> refined Z x H x W uint8 label map of each of `labels` (see `propose_volumes`)."""
    proposals = propose_volumes(engine, image, labels, num_classes, (margin,), on_slice)
    return {
        name: np.stack(
            [assemble(lab[zi], proposals[(name, margin)][zi], trust) for zi in range(len(lab))]
        )
        for name, lab in labels.items()
    }
