"""Named SAM sizes feeding one builder, as segment_anything's build_sam does.

`tiny` uses the very same classes (ImageEncoderViT, PromptEncoder, MaskDecoder,
TwoWayTransformer) with small dimensions, so every code path that works for it works for the
official models too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

PATCH_SIZE = 16
# SAM normalizes 0-255 RGB with ImageNet statistics; fewsam feeds [0, 1] images scaled by 255.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ArchSpec:
    """Dimensions of one SAM size. `native_size` is the input side its weights were made for."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    prompt_embed_dim: int = 256
    window_size: int = 14
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_hidden_dim: int = 256
    native_size: int = 1024


ARCHS: dict[str, ArchSpec] = {
    "vit_h": ArchSpec(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": ArchSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": ArchSpec(768, 12, 12, (2, 5, 8, 11)),
    # Small enough to train on two CPU cores; same structure (windowed + global attention blocks).
    "tiny": ArchSpec(
        embed_dim=128,
        depth=6,
        num_heads=4,
        global_attn_indexes=(2, 5),
        prompt_embed_dim=128,
        window_size=8,
        decoder_mlp_dim=512,
        decoder_heads=8,
        iou_hidden_dim=128,
        native_size=256,
    ),
}


def build_sam(arch: str, input_size: int | None = None) -> Sam:
    """A randomly initialized SAM of size `arch` for square inputs of side `input_size`.

    `input_size` defaults to the arch's native size; it must be a multiple of the patch size.
    Weights are loaded separately (train.base_weights), which interpolates position tables when the
    input size differs from the checkpoint's.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (known: {', '.join(ARCHS)})")
    spec = ARCHS[arch]
    size = input_size or spec.native_size
    if size % PATCH_SIZE:
        raise ValueError(f"input size {size} is not a multiple of the patch size {PATCH_SIZE}")
    grid = size // PATCH_SIZE
    encoder = ImageEncoderViT(
        depth=spec.depth,
        embed_dim=spec.embed_dim,
        img_size=size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=spec.num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
        out_chans=spec.prompt_embed_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=spec.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2,
            embedding_dim=spec.prompt_embed_dim,
            mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_heads,
        ),
        transformer_dim=spec.prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=spec.iou_hidden_dim,
    )
    return Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
