"""The shipped tiny base model: loads like an official checkpoint and segments from one click."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from pretrain.loss import mask_iou
from pretrain.prompts import Prompts
from pretrain.scoring import decode, embed, upsample
from train.base_weights import load_sam
from train.sam_registry import build_sam

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "base" / "tiny_sam.safetensors"


def _disc_image(size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """A grey disc of radius 30 px centred at (x, y) = (140, 110) on a darker noisy background.

    Returns the image 1 x 3 x S x S in [0, 1] and the disc mask 1 x 1 x S x S (0/1 float).
    """
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (xx - 140) ** 2 + (yy - 110) ** 2 <= 30**2
    rng = np.random.default_rng(0)
    image = np.where(disc, 0.7, 0.3) + rng.normal(0, 0.02, (size, size))
    image = np.clip(image, 0, 1).astype(np.float32)
    tensor = torch.from_numpy(np.repeat(image[None, None], 3, axis=1))
    return tensor, torch.from_numpy(disc[None, None].astype(np.float32))


def test_shipped_weights_are_small_fp16_and_named_as_sam() -> None:
    assert WEIGHTS.stat().st_size <= 20 * 2**20
    tensors = load_file(str(WEIGHTS))
    assert set(tensors) == set(build_sam("tiny").state_dict())
    assert all(t.dtype == torch.float16 for t in tensors.values())
    card = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert card["complete"] and card["steps"] == card["planned_steps"]


@torch.no_grad()
def test_shipped_weights_segment_a_disc_from_one_point() -> None:
    sam = load_sam("tiny", WEIGHTS, 256).eval()
    image, disc = _disc_image()
    click = Prompts(
        np.array([[[140.0, 110.0]]], np.float32), np.ones((1, 1), np.float32), None, True
    )
    logits, iou_pred = decode(sam, embed(sam, image), click, None)
    iou = mask_iou(upsample(logits, 256), disc)[0]
    assert float(iou.max()) > 0.6  # best of the three outputs, as the held-out mIoU counts
    # A random model of the same shape does not: the test measures the pretraining.
    torch.manual_seed(0)
    random = build_sam("tiny").eval()
    logits, _ = decode(random, embed(random, image), click, None)
    assert float(mask_iou(upsample(logits, 256), disc)[0].max()) < 0.5
