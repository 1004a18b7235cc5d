"""Prompted decoding and the held-out evaluation of the pretrained promptable segmenter.

The evaluation clicks once on every instance of held-out generated images, at the pixel farthest
from its boundary (the single-point protocol of the SAM paper), and scores the best of the three
multimask outputs (the ambiguity-aware score SAM reports), the output the IoU head ranks first,
and a single mask from the tight box.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from pretrain.loss import mask_iou
from pretrain.prompts import Prompts, center_point, mask_box
from pretrain.shapes import sample

# Instances under this many pixels are also reported apart: organs of a few pixels on 128 px CT.
SMALL_AREA = 400
EVAL_BATCH = 8
MAX_EVAL_INSTANCES = 16


def embed(sam: Sam, images: torch.Tensor) -> torch.Tensor:
    """Image embeddings, B x C x h x w, of B x 3 x S x S images in [0, 1] (S = input size)."""
    return sam.image_encoder(sam.preprocess(images * 255.0))


def decode(
    sam: Sam, embeddings: torch.Tensor, prompts: Prompts, mask_input: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode P prompts against their images' embeddings in one pass of SAM's mask decoder.

    `embeddings` is 1 x C x h x w (one image, shared by all prompts) or P x C x h x w (the image
    of each prompt), so the prompts of a whole batch of images are decoded together; the maths is
    that of SAM's MaskDecoder, which takes a single image. `mask_input` is P x 1 x 4h x 4w
    low-resolution logits of a previous round, or None. Returns low-resolution mask logits,
    P x M x 4h x 4w, and predicted IoUs, P x M (M = 3 when `prompts.multimask`, else 1).
    """
    device = embeddings.device
    points = None
    if prompts.points is not None:
        points = (
            torch.from_numpy(prompts.points).to(device),
            torch.from_numpy(prompts.labels).to(device),
        )
    boxes = None if prompts.boxes is None else torch.from_numpy(prompts.boxes).to(device)
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    dec = sam.mask_decoder
    n = sparse.shape[0]
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
    src = embeddings.expand(n, -1, -1, -1) + dense
    pos = sam.prompt_encoder.get_dense_pe().expand(n, -1, -1, -1)
    _, c, h, w = src.shape
    hs, src = dec.transformer(src, pos, tokens)
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(n, c, h, w))
    k = dec.num_mask_tokens
    hyper = torch.stack([dec.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(k)], 1)
    _, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.reshape(n, c, h * w)).reshape(n, k, h, w)
    iou_pred = dec.iou_prediction_head(hs[:, 0])
    keep = slice(1, None) if prompts.multimask else slice(0, 1)
    return masks[:, keep], iou_pred[:, keep]


def upsample(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Low-resolution logits N x M x h x w to N x M x size x size, bilinear as SAM's postprocess."""
    return F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)


def _instances(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Masks of the first MAX_EVAL_INSTANCES instances of at least `min_area` px, P x H x W bool."""
    areas = np.bincount(labels.ravel())
    ids = [i for i in np.flatnonzero(areas >= min_area) if i > 0][:MAX_EVAL_INSTANCES]
    return labels[None] == np.array(ids, dtype=labels.dtype)[:, None, None]


@torch.no_grad()
def evaluate(sam: Sam, seed: int, n_images: int, min_area: int) -> dict[str, float]:
    """Held-out mIoUs over all evaluated instances of `n_images` generated images.

    Keys: miou_point_best (best of 3 outputs), miou_point_ranked (output with the highest
    predicted IoU), miou_point_best_small (best of 3, instances under SMALL_AREA px), miou_box,
    instances (count).
    """
    was_training = sam.training
    sam.eval()
    best, ranked, boxed, areas = [], [], [], []
    for start in range(0, n_images, EVAL_BATCH):
        batch = [
            sample(seed, i, held_out=True) for i in range(start, min(start + EVAL_BATCH, n_images))
        ]
        images = torch.from_numpy(np.stack([image for image, _ in batch]))
        embeddings = embed(sam, images.to(next(sam.parameters()).device))
        for (_, labels), embedding in zip(batch, embeddings, strict=True):
            masks = _instances(labels, min_area)
            if masks.shape[0] == 0:
                continue
            target = torch.from_numpy(masks[:, None].astype(np.float32)).to(embedding.device)
            size = labels.shape[0]
            points = np.array([[center_point(m)] for m in masks], np.float32)
            clicks = Prompts(points, np.ones((len(masks), 1), np.float32), None, multimask=True)
            logits, iou_pred = decode(sam, embedding[None], clicks, None)
            iou = mask_iou(upsample(logits, size), target)
            best.append(iou.max(dim=1).values)
            ranked.append(iou.gather(1, iou_pred.argmax(dim=1, keepdim=True))[:, 0])
            box = Prompts(None, None, np.stack([mask_box(m) for m in masks]), multimask=False)
            logits, _ = decode(sam, embedding[None], box, None)
            boxed.append(mask_iou(upsample(logits, size), target)[:, 0])
            areas.append(torch.from_numpy(masks.sum(axis=(1, 2))))
    sam.train(was_training)
    best_all, area_all = torch.cat(best).cpu(), torch.cat(areas)
    small = area_all < SMALL_AREA
    return {
        "miou_point_best": float(best_all.mean()),
        "miou_point_ranked": float(torch.cat(ranked).mean()),
        "miou_point_best_small": float(best_all[small].mean()) if small.any() else float("nan"),
        "miou_box": float(torch.cat(boxed).mean()),
        "instances": int(best_all.numel()),
    }
