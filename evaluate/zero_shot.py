"""Zero-shot SAM baselines: the base model, no adapters, prompted per present class and slice.

For each axial slice and each class present in the ground truth, SAM gets one prompt, of one of
two kinds (`evaluate.zero_shot_prompts`):

- `point` (method `zero_shot`): one positive point at the most interior pixel of the class (the
  maximum of its distance transform, the image edge counting as outside); SAM predicts three
  masks (multimask output) and the one with the best predicted IoU is kept.
- `box` (method `zero_shot_box`): the class's tight bounding box, as MedSAM prompts SAM; one
  mask (`multimask_output=False`, as MedSAM and SAM's own box evaluation: a box is not the
  ambiguous prompt the three outputs are for). The box is XYXY in SAM's convention, that of
  SamPredictor, `amg.batched_mask_to_box` and MedSAM: the pixel indices of the first and last
  column and row, which the prompt encoder shifts by half a pixel to their centres. On the
  model's input grid it is the box of the input pixels the class overlaps (`tight_boxes`).

The class masks of a slice are assembled into one label map; where masks overlap, the class
whose mask has the higher predicted IoU wins. A slice with no class in the ground truth is not
prompted and predicted as background, so its encoder pass is skipped. The image embedding is
computed once per slice (slices batched through the encoder) and reused for every class and every
prompt kind of that slice.

SAM's parts are called directly under `torch.no_grad()`; the input preparation (channels, resize
to the model's square input, [0, 1] -> SAM's normalization) is the one the adapted model uses, and
so is the way back: the mask logits are upsampled to the output size (the source in-plane size
when the slices were resized on reading) before they are thresholded.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from segment_anything.modeling import Sam

from core.params import ZeroShotPrompt
from evaluate.inference import slice_batches
from train.inputs import to_sam_input
from train.prompts import scale_points


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(row, col) of the pixel of H x W boolean `mask` farthest from its outside.

    Pixels beyond the image edge count as outside, so a class cut by the edge is not prompted on
    the edge. Ties go to the first pixel in row-major order. The mask must be non-empty.
    """
    assert mask.any(), "interior_point of an empty mask"
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(row), int(col)


def interior_points(label: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One point per class present in H x W `label` (ids 0..num_classes).

    Returns points P x 2 float32 (x, y) at pixel centres (column + 0.5, row + 0.5), the
    convention of `train.prompts`, and classes P int64 in ascending order.
    """
    points, classes = [], []
    for cls in range(1, num_classes + 1):
        mask = label == cls
        if mask.any():
            row, col = interior_point(mask)
            points.append((col + 0.5, row + 0.5))
            classes.append(cls)
    return np.asarray(points, np.float32).reshape(-1, 2), np.asarray(classes, np.int64)


def assemble(masks: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One H x W uint8 label map from K binary class masks.

    masks: K x H x W bool; scores: K predicted IoUs; classes: K class ids. Each pixel takes the
    class of the highest-scoring mask covering it (the first such class on equal scores), 0 where
    no mask does.
    """
    if len(classes) == 0:
        return np.zeros(masks.shape[1:], np.uint8)
    ranked = np.where(masks, scores[:, None, None], -np.inf)
    best = np.argmax(ranked, axis=0)
    out = np.asarray(classes, np.uint8)[best]
    out[~masks.any(axis=0)] = 0
    return out


def tight_boxes(label: np.ndarray, num_classes: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One box per class present in H x W `label` (ids 0..num_classes), on the size x size input.

    Returns boxes P x 4 float32 (x0, y0, x1, y1) and classes P int64 in ascending order. A class
    covering columns c0..c1 covers [c0, c1 + 1) * size / W of the input, so the input pixels it
    overlaps are floor(c0 * size / W) .. ceil((c1 + 1) * size / W) - 1 (rows alike): the first
    and last of them are the box, in SAM's convention (pixel indices; the prompt encoder adds
    0.5). At size == W that is the class's own first and last column.
    """
    h, w = label.shape
    boxes, classes = [], []
    for cls in range(1, num_classes + 1):
        rows, cols = np.nonzero(label == cls)
        if rows.size:
            x0, x1 = _covered(int(cols.min()), int(cols.max()), w, size)
            y0, y1 = _covered(int(rows.min()), int(rows.max()), h, size)
            boxes.append((x0, y0, x1, y1))
            classes.append(cls)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def _covered(first: int, last: int, length: int, size: int) -> tuple[int, int]:
    """The input pixels (of `size`) that source pixels first..last (of `length`) overlap."""
    return first * size // length, -(-(last + 1) * size // length) - 1


@torch.no_grad()
def _decode(
    sam: Sam, embedding: torch.Tensor, label: np.ndarray, num_classes: int, prompt: ZeroShotPrompt
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """One mask per class present in `label`: low-resolution logits K x 1 x h' x w', predicted
    IoUs K and the classes K, from the slice's 1 x D x g x g image embedding."""
    h, w = label.shape
    size = sam.image_encoder.img_size
    device = embedding.device
    if prompt == "point":
        points, classes = interior_points(label, num_classes)
        # train.prompts puts pixel centres at half-integers; SAM's prompt encoder adds 0.5 itself.
        coords = torch.as_tensor(scale_points(points, (h, w), size) - 0.5, device=device)[:, None]
        ones = torch.ones((len(classes), 1), dtype=torch.int64, device=device)
        sparse, dense = sam.prompt_encoder(points=(coords, ones), boxes=None, masks=None)
    else:
        boxes, classes = tight_boxes(label, num_classes, size)
        box_tensor = torch.as_tensor(boxes, device=device)
        sparse, dense = sam.prompt_encoder(points=None, boxes=box_tensor, masks=None)
    low_res, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=prompt == "point",
    )
    best = iou.argmax(dim=1)  # the only mask of a box prompt
    rows = torch.arange(len(classes), device=device)
    return low_res[rows, best][:, None], iou[rows, best], classes


@torch.no_grad()
def _segment_slice(
    sam: Sam,
    embedding: torch.Tensor,
    label: np.ndarray,
    num_classes: int,
    out_hw: tuple[int, int],
    prompt: ZeroShotPrompt = "point",
) -> np.ndarray:
    """out_h x out_w uint8 prediction for one slice from its 1 x D x g x g image embedding.

    label: the H x W ground truth the prompts are taken from (the grid the model was fed).
    """
    if not ((label >= 1) & (label <= num_classes)).any():
        return np.zeros(out_hw, np.uint8)
    size = sam.image_encoder.img_size
    logits, iou, classes = _decode(sam, embedding, label, num_classes, prompt)
    logits = sam.postprocess_masks(logits, (size, size), out_hw)[:, 0]
    masks = (logits > sam.mask_threshold).cpu().numpy()
    return assemble(masks, iou.float().cpu().numpy(), classes)


@torch.no_grad()
def zero_shot_volumes(
    sam: Sam,
    image: np.ndarray,
    label: np.ndarray,
    num_classes: int,
    batch_size: int,
    prompts: tuple[ZeroShotPrompt, ...],
    out_hw: tuple[int, int] | None = None,
) -> dict[ZeroShotPrompt, np.ndarray]:
    """Zero-shot label maps of one volume, one per prompt kind, from one encoder pass per slice.

    image: C x Z x H x W float32 in [0, 1] (C = 1 or 3); label: Z x H x W uint8 ground truth
    (ids 0..num_classes), used only to place the prompts.
    out_hw: size the mask logits are upsampled to (default H x W), as in `predict_volume`.
    Returns prompt -> Z x out_h x out_w uint8, in the order of `prompts`.
    """
    _, z, h, w = image.shape
    out_hw = out_hw or (h, w)
    size = sam.image_encoder.img_size
    device = next(sam.parameters()).device
    out = {prompt: np.zeros((z, *out_hw), np.uint8) for prompt in prompts}
    prompted = [i for i in range(z) if label[i].any()] if prompts else []
    for batch in slice_batches(len(prompted), batch_size):
        index = [prompted[i] for i in batch]
        slices = np.moveaxis(image[:, index], 1, 0)  # N x C x H x W
        x = to_sam_input(torch.from_numpy(slices), size).to(device)
        embeddings = sam.image_encoder(sam.preprocess(x * 255.0))
        for j, zi in enumerate(index):
            for prompt in prompts:
                out[prompt][zi] = _segment_slice(
                    sam, embeddings[j : j + 1], label[zi], num_classes, out_hw, prompt
                )
    return out


def zero_shot_volume(
    sam: Sam,
    image: np.ndarray,
    label: np.ndarray,
    num_classes: int,
    batch_size: int,
    out_hw: tuple[int, int] | None = None,
    prompt: ZeroShotPrompt = "point",
) -> np.ndarray:
    """Zero-shot label map of one volume with one prompt kind (`zero_shot_volumes`).

    Returns Z x out_h x out_w uint8.
    """
    return zero_shot_volumes(sam, image, label, num_classes, batch_size, (prompt,), out_hw)[prompt]
