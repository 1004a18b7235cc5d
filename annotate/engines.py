"""What turns a prompt into a mask on one slice: SAM (the base model of params.yaml, or LiteMedSAM)
or an adapter of a previous round.

Coordinates are those of the slice as the page shows it: H x W pixels, x to the right (column),
y down (row), integer values at pixel centres. A box is (x0, y0, x1, y1), the first and last
column and row it covers (SAM's own convention); a point is (x, y, 1) positive or (x, y, 0)
negative. Each engine embeds a slice once (`embed`, the slow part: the image encoder) and answers
every prompt on that embedding (`predict`, the prompt encoder and mask decoder: milliseconds).

- SAM engines take the box, every click and, after the first answer, the previous low-resolution
  logits of the class as mask input (SamPredictor's way of refining by clicks). One click alone
  is ambiguous: SAM's three outputs are made and the one with the best predicted IoU is kept.
- LiteMedSAM was trained on boxes alone, and clicks fed to it made its masks worse (BENCHMARKS.md,
  *Labeling with SAM*): it gets the box only, grown to take in the positive clicks (a click alone
  gets a box around it), and negative clicks are applied to its mask as below.
- The adapter engine is prompted the way it was trained: positive points of class k (the box
  centre when there is only a box) against its class-k output; its mask is kept inside the box.
- Where the model takes no negative clicks (LiteMedSAM, the adapter), a negative click removes
  the pixels of the mask's connected part it falls on that lie nearer to it than to any positive
  click or the box centre (`carve`), so an error touching the organ goes without the organ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything.modeling import Sam

from core.errors import FewsamError
from train.adapter_io import load_adapter
from train.base_weights import load_sam
from train.fetch import bundled_source
from train.inputs import to_sam_input
from train.model import FewSam
from train.sam_registry import LITEMEDSAM, LITEMEDSAM_SIZE

ENGINES = ("base", "litemedsam", "adapter")


@dataclass(frozen=True)
class Prompt:
    """One class's prompts on one slice (slice pixel coordinates, see the module docstring)."""

    cls: int
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float, int], ...] = ()


@dataclass(frozen=True)
class Embedding:
    """A slice's image embedding (1 x E x g x g) and the slice's H x W; `image` is the model input
    it came from, kept where the model decodes with it (an adapter with a fine head)."""

    tensor: torch.Tensor
    hw: tuple[int, int]
    image: torch.Tensor | None = None


@dataclass(frozen=True)
class Answer:
    """mask: H x W bool on the slice; score: the engine's confidence (SAM: predicted IoU);
    logits: low-resolution logits to feed back as mask input (None when unsupported)."""

    mask: np.ndarray
    score: float
    logits: torch.Tensor | None


class Engine(Protocol):
    name: str

    def embed(self, image: np.ndarray) -> Embedding:
        """C x H x W float32 intensities in [0, 1] (as the pipeline reads them)."""
        ...

    def predict(
        self, emb: Embedding, prompt: Prompt, mask_input: torch.Tensor | None
    ) -> Answer: ...


def to_input(value: float, length: int, size: int) -> float:
    """A pixel-index coordinate of a `length`-pixel axis on a `size`-pixel model input."""
    return (value + 0.5) * size / length - 0.5


def _upsample(low_res: torch.Tensor, size: int, hw: tuple[int, int]) -> np.ndarray:
    """N x 1 x h' x w' logits -> N x H x W bool (bilinear to the input, then to the slice; > 0)."""
    x = F.interpolate(low_res.float(), (size, size), mode="bilinear", align_corners=False)
    if (size, size) != hw:
        x = F.interpolate(x, hw, mode="bilinear", align_corners=False)
    return (x[:, 0] > 0).cpu().numpy()


class SamEngine:
    """SAM's own prompt encoder and mask decoder on a base model (tiny, vit_b, LiteMedSAM)."""

    def __init__(self, sam: Sam, name: str) -> None:
        self.sam = sam.eval()
        self.name = name
        self.size = int(sam.image_encoder.img_size)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> Embedding:
        x = to_sam_input(image[None], self.size)
        x = (x * 255.0 - self.sam.pixel_mean) / self.sam.pixel_std
        return Embedding(self.sam.image_encoder(x), (int(image.shape[1]), int(image.shape[2])))

    @torch.no_grad()
    def predict(self, emb: Embedding, prompt: Prompt, mask_input: torch.Tensor | None) -> Answer:
        h, w = emb.hw
        s = self.size
        points = None
        if prompt.points:
            xy = [(to_input(x, w, s), to_input(y, h, s)) for x, y, _ in prompt.points]
            coords = torch.tensor([xy], dtype=torch.float32)
            labels = torch.tensor([[int(p[2]) for p in prompt.points]], dtype=torch.int64)
            points = (coords, labels)
        box = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            box = torch.tensor(
                [[to_input(x0, w, s), to_input(y0, h, s), to_input(x1, w, s), to_input(y1, h, s)]]
            )
        enc = self.sam.prompt_encoder
        sparse, dense = enc(points=points, boxes=box, masks=mask_input)
        multi = box is None and len(prompt.points) == 1 and mask_input is None
        low_res, iou = self.sam.mask_decoder(
            image_embeddings=emb.tensor,
            image_pe=enc.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multi,
        )
        best = int(iou[0].argmax())
        logits = low_res[:, best : best + 1]
        return Answer(_upsample(logits, s, emb.hw)[0], float(iou[0, best]), logits)

    @torch.no_grad()
    def predict_boxes(
        self, emb: Embedding, boxes: list[tuple[float, float, float, float]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks N x H x W bool and predicted IoUs N of N box prompts in one decoder pass: what
        `predict` gives each box alone (SAM decodes every prompt of a batch on its own)."""
        h, w = emb.hw
        s = self.size
        if not boxes:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        box = torch.tensor(
            [
                [to_input(x0, w, s), to_input(y0, h, s), to_input(x1, w, s), to_input(y1, h, s)]
                for x0, y0, x1, y1 in boxes
            ],
            dtype=torch.float32,
        )
        enc = self.sam.prompt_encoder
        sparse, dense = enc(points=None, boxes=box, masks=None)
        low_res, iou = self.sam.mask_decoder(
            image_embeddings=emb.tensor,
            image_pe=enc.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return _upsample(low_res, s, emb.hw), iou[:, 0].float().cpu().numpy()


def carve(mask: np.ndarray, prompt: Prompt) -> np.ndarray:
    """`mask` (H x W bool) with each negative click's share of its connected part removed.

    The share: the pixels of the part the click falls on that are nearer to a negative click
    than to every positive click and the box centre (a Voronoi split of that part).
    """
    negatives = [(x, y) for x, y, label in prompt.points if not label]
    positives = [(x, y) for x, y, label in prompt.points if label]
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        positives.append(((x0 + x1) / 2.0, (y0 + y1) / 2.0))
    if not negatives or not mask.any():
        return mask
    parts, _ = ndimage.label(mask)
    rows, cols = np.indices(mask.shape)

    def nearest(points: list[tuple[float, float]]) -> np.ndarray:
        if not points:
            return np.full(mask.shape, np.inf)
        return np.min([(cols - x) ** 2 + (rows - y) ** 2 for x, y in points], axis=0)

    closer = nearest(negatives) < nearest(positives)
    out = mask.copy()
    for x, y in negatives:
        part = parts[int(round(y)), int(round(x))]
        if part:
            out &= ~((parts == part) & closer)
    return out


class BoxSamEngine(SamEngine):
    """A SAM trained on boxes alone (LiteMedSAM): the box, grown to take in the positive clicks;
    negative clicks carve the mask (see the module docstring)."""

    def __init__(self, sam: Sam, name: str, click_box: float = 0.1) -> None:
        super().__init__(sam, name)
        self.click_box = click_box  # half side of the box around a lone click, slice fraction

    def predict(self, emb: Embedding, prompt: Prompt, mask_input: torch.Tensor | None) -> Answer:
        h, w = emb.hw
        xs = [x for x, _, label in prompt.points if label]
        ys = [y for _, y, label in prompt.points if label]
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            xs, ys = [*xs, x0, x1], [*ys, y0, y1]
        elif xs:
            r = self.click_box * max(h, w)
            xs, ys = [min(xs) - r, max(xs) + r], [min(ys) - r, max(ys) + r]
        else:
            return Answer(np.zeros((h, w), bool), 0.0, None)
        box = (max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), w - 1.0), min(max(ys), h - 1.0))
        answer = super().predict(emb, Prompt(prompt.cls, box), None)
        return Answer(carve(answer.mask, prompt), answer.score, None)


class AdapterEngine:
    """The adapted model of a previous round; class k's output answers class k's prompts."""

    def __init__(self, model: FewSam) -> None:
        self.model = model.eval()
        self.name = "adapter"
        self.size = int(model.input_size)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> Embedding:
        x = to_sam_input(image[None], self.size)
        hw = (int(image.shape[1]), int(image.shape[2]))
        return Embedding(self.model.embed(x), hw, x if self.model.fine_head is not None else None)

    @torch.no_grad()
    def predict(self, emb: Embedding, prompt: Prompt, mask_input: torch.Tensor | None) -> Answer:
        h, w = emb.hw
        s = self.size
        positive = [(x, y) for x, y, label in prompt.points if label]
        if not positive and prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            positive = [((x0 + x1) / 2.0, (y0 + y1) / 2.0)]
        points = labels = None
        if positive:
            # The model's points are continuous: pixel centres at +0.5 of the input grid.
            xy = [(to_input(x, w, s) + 0.5, to_input(y, h, s) + 0.5) for x, y in positive]
            points = torch.tensor([xy], dtype=torch.float32)
            labels = torch.full((1, len(xy)), prompt.cls, dtype=torch.int64)
        logits = self.model.decode(emb.tensor, points, labels, emb.image)
        logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
        prob = logits.softmax(dim=1)[0]
        mask = (prob.argmax(dim=0) == prompt.cls).cpu().numpy()
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
            inside = np.zeros_like(mask)
            inside[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
            mask &= inside
        mask = carve(mask, prompt)
        score = float(prob[prompt.cls][torch.from_numpy(mask)].mean()) if mask.any() else 0.0
        return Answer(mask, score, None)


def litemedsam_available() -> bool:
    """Whether LiteMedSAM's weights are installed (the `fewsam[litemedsam]` extra)."""
    try:
        bundled_source("litemedsam")
    except FewsamError:
        return False
    return True


def open_engine(
    kind: str,
    arch: str,
    checkpoint: str | None,
    input_size: int,
    num_classes: int,
    adapter: Path | None = None,
) -> Engine:
    """The engine `kind` (base | litemedsam | adapter | auto: litemedsam when installed, else base)."""
    if kind == "auto":
        kind = "litemedsam" if litemedsam_available() else "base"
    if kind == "base":
        return SamEngine(load_sam(arch, checkpoint, input_size), f"base ({arch})")
    if kind == "litemedsam":
        sam = load_sam(LITEMEDSAM, bundled_source(LITEMEDSAM), LITEMEDSAM_SIZE)
        return BoxSamEngine(sam, "litemedsam")
    if kind == "adapter":
        if adapter is None:
            raise FewsamError(
                "annotate: --engine adapter needs --adapter (a trained adapter folder)"
            )
        model, _ = load_adapter(adapter, num_classes=num_classes)
        return AdapterEngine(model)
    raise FewsamError(f"annotate: unknown engine {kind!r} (one of {', '.join(ENGINES)}, auto)")
