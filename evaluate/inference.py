"""Slice-wise inference of the adapted model on whole volumes.

Each axial slice goes through the model on its own, the way it was trained: slices are batched
through the image encoder (`evaluate.batch_size` per pass), decoded prompt-free or with prompts,
the K + 1 class logits are upsampled bilinearly from the model's square input back to the slice
size, and the argmax gives the slice's label map. Only one batch of logits is held at a time, so
memory does not grow with the number of slices beyond the output itself.

Prompted mode uses the training scheme's prompts taken from the ground truth: per slice and
present class, `train.points_per_class` points drawn uniformly inside the class. The draw for
slice z of a case comes from rng([seed, streams.EVALUATE, crc32(case), z]), so it does not depend on
the batch size, on which other cases are evaluated or on their order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from core import streams
from train.inputs import to_sam_input
from train.prompts import pad_points, sample_class_points, scale_points

# Stage key of evaluation in the seed derivation.

# z -> (points P x 2 float32 (x, y) pixel-centre coordinates on the slice, classes P int64 1..K)
PromptFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


class SliceModel(Protocol):
    """What inference needs of `train.model.FewSam`."""

    num_classes: int
    input_size: int

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(
        self,
        embeddings: torch.Tensor,
        points: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def slice_batches(n: int, batch_size: int) -> Iterator[range]:
    """Consecutive index ranges of at most `batch_size` covering 0..n-1."""
    for start in range(0, n, batch_size):
        yield range(start, min(start + batch_size, n))


def slice_rng(seed: int, case: str, z: int) -> np.random.Generator:
    """The generator of the prompts of slice `z` of `case`."""
    return np.random.default_rng([seed, streams.EVALUATE, zlib.crc32(case.encode()), z])


def gt_prompts(
    label: np.ndarray, num_classes: int, points_per_class: int, seed: int, case: str
) -> PromptFn:
    """Prompts from the Z x H x W uint8 ground truth, drawn as in training (seeded per slice)."""

    def prompts(z: int) -> tuple[np.ndarray, np.ndarray]:
        return sample_class_points(
            label[z], num_classes, points_per_class, slice_rng(seed, case, z)
        )

    return prompts


def _device(model: object) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def predict_volume(
    model: SliceModel,
    image: np.ndarray,
    batch_size: int,
    prompts: PromptFn | None = None,
    out_hw: tuple[int, int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Label map of one volume.

    image: C x Z x H x W float32 in [0, 1] (C = 1 or 3, mapped to SAM's three channels).
    prompts: None for prompt-free inference, else the points of each slice (see `gt_prompts`).
    out_hw: size the logits are upsampled to before the argmax (default: the slice size H x W),
        e.g. the source in-plane size when the slices were resized on reading.
    on_batch: called with the number of slices after each batch (progress bars).
    Returns Z x out_h x out_w uint8 class ids 0..K.
    """
    return predict_volumes(model, image, batch_size, [prompts], out_hw, on_batch)[0]


@torch.no_grad()
def predict_volumes(
    model: SliceModel,
    image: np.ndarray,
    batch_size: int,
    prompt_sets: Sequence[PromptFn | None],
    out_hw: tuple[int, int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """One label map per entry of `prompt_sets` (each as `predict_volume`'s `prompts`), from one
    pass of the image encoder: the encoder is most of a slice's cost, and prompt-free and
    prompted inference of a case share its embeddings. Each map equals `predict_volume`'s."""
    _, z, h, w = image.shape
    size = model.input_size
    out_h, out_w = out_hw or (h, w)
    device = _device(model)
    outs = [np.zeros((z, out_h, out_w), np.uint8) for _ in prompt_sets]
    for batch in slice_batches(z, batch_size):
        slices = np.moveaxis(image[:, batch.start : batch.stop], 1, 0)  # N x C x H x W
        x = to_sam_input(torch.from_numpy(np.ascontiguousarray(slices)), size).to(device)
        embeddings = model.embed(x)
        for out, prompts in zip(outs, prompt_sets, strict=True):
            points = point_labels = None
            if prompts is not None:
                sets = [prompts(i) for i in batch]
                if any(len(classes) for _, classes in sets):
                    sets = [(scale_points(p, (h, w), size), c) for p, c in sets]
                    points, point_labels = (t.to(device) for t in pad_points(sets))
            logits = model.decode(embeddings, points, point_labels, x)  # N x (K+1) x S x S
            for j, zi in enumerate(batch):
                up = F.interpolate(
                    logits[j : j + 1].float(),
                    size=(out_h, out_w),
                    mode="bilinear",
                    align_corners=False,
                )
                out[zi] = up[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
        if on_batch is not None:
            on_batch(len(batch))
    return outs
