"""Low-rank adapters (peft LoRA) on SAM's attention, placed by exact module paths and counted.

Where they go:
- image encoder, SAM's ViT (tiny, vit_b/l/h): `blocks.N.attn.qkv`, one per ViT block. The output
  projection `proj` is left alone: SAMed and micro-sam adapt the query/key/value projection only,
  which keeps the adapter count comparable to theirs, and `proj` would also name-match the patch
  embedding convolution.
- image encoder, TinyViT (litemedsam): `layers.S.blocks.M.attn.qkv`, the query/key/value
  projection of every attention block of stages 1-3 (2 + 6 + 2 = 10 blocks). Stage 0 is
  convolutional (MBConv) and has no attention, so it gets none; neither do `proj`, the MLPs, the
  depthwise `local_conv`s or the neck, by the same rule as for the ViT.
- mask decoder transformer: `q_proj`, `k_proj`, `v_proj`, `out_proj` of its seven attention
  layers (self, token-to-image and image-to-token attention in each of its 2 blocks, plus the
  final token-to-image attention).
Targets are full-path regular expressions, and the wrapped modules are checked against the paths
the architecture implies (found by walking its blocks), so a renamed module in segment_anything or
in the TinyViT definition fails loudly instead of silently training nothing.
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from segment_anything.modeling import Sam

from core.params import LoraParams

VIT_TARGETS = r"image_encoder\.blocks\.\d+\.attn\.qkv"
TINY_VIT_TARGETS = r"image_encoder\.layers\.\d+\.blocks\.\d+\.attn\.qkv"
DECODER_TARGETS = r"mask_decoder\.transformer\.(.+\.)?(q_proj|k_proj|v_proj|out_proj)"
DECODER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def encoder_kind(sam: Sam) -> str:
    """`vit` (SAM's ImageEncoderViT: `blocks`) or `tiny_vit` (TinyViT: `layers` of `blocks`)."""
    encoder = sam.image_encoder
    if hasattr(encoder, "blocks"):
        return "vit"
    if hasattr(encoder, "layers") and all(hasattr(s, "blocks") for s in encoder.layers):
        return "tiny_vit"
    raise RuntimeError(
        f"LoRA: image encoder {type(encoder).__name__} is neither SAM's ViT (blocks) nor TinyViT "
        "(layers of blocks); no adapter placement is defined for it"
    )


def encoder_targets(sam: Sam) -> list[str]:
    """Full paths of the encoder modules LoRA must wrap: each attention block's `attn.qkv`."""
    encoder = sam.image_encoder
    if encoder_kind(sam) == "vit":
        return [f"image_encoder.blocks.{i}.attn.qkv" for i in range(len(encoder.blocks))]
    return [
        f"image_encoder.layers.{s}.blocks.{m}.attn.qkv"
        for s, stage in enumerate(encoder.layers)
        for m, block in enumerate(stage.blocks)
        if hasattr(block, "attn")  # TinyViT blocks; stage 0's MBConv blocks have no attention
    ]


def expected_targets(sam: Sam, lora: LoraParams) -> dict[str, int]:
    """How many modules each part should get: encoder attention blocks, 4 x decoder layers."""
    decoder_layers = len(sam.mask_decoder.transformer.layers)
    return {
        "image_encoder": len(encoder_targets(sam)) if lora.encoder else 0,
        "mask_decoder": len(DECODER_PROJECTIONS) * (3 * decoder_layers + 1) if lora.decoder else 0,
    }


def lora_module_names(sam: Sam) -> list[str]:
    """Full paths of the LoRA-wrapped modules, in model order."""
    return [name for name, module in sam.named_modules() if isinstance(module, LoraLayer)]


def count_lora_modules(sam: Sam) -> dict[str, int]:
    """Number of LoRA-wrapped modules under the image encoder and under the mask decoder."""
    counts = {"image_encoder": 0, "mask_decoder": 0}
    for name in lora_module_names(sam):
        part = name.split(".", 1)[0]
        counts[part] = counts.get(part, 0) + 1
    return counts


def apply_lora(sam: Sam, lora: LoraParams) -> Sam:
    """Wrap the targeted linear layers of `sam` in place with rank-`lora.rank` adapters.

    LoRA B starts at zero, so the wrapped model computes exactly what `sam` did. Adapter weights
    are named `...qkv.lora_A.default.weight` / `lora_B`; base weights move to `...base_layer`.
    Trainability is set by the caller.
    """
    encoder = VIT_TARGETS if encoder_kind(sam) == "vit" else TINY_VIT_TARGETS
    patterns = [p for p, on in ((encoder, lora.encoder), (DECODER_TARGETS, lora.decoder)) if on]
    expected_encoder = encoder_targets(sam) if lora.encoder else []
    if patterns:
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules="|".join(f"(?:{p})" for p in patterns),
            bias="none",
        )
        inject_adapter_in_model(config, sam)
    found, expected = count_lora_modules(sam), expected_targets(sam, lora)
    wrapped = {n for n in lora_module_names(sam) if n.startswith("image_encoder.")}
    missing = [n for n in expected_encoder if n not in wrapped]
    unexpected = sorted(wrapped - set(expected_encoder))
    if found != expected or missing or unexpected:
        detail = "; ".join(
            f"{what}: {', '.join(names[:3])}"
            for what, names in (("not wrapped", missing), ("wrapped besides", unexpected))
            if names
        )
        raise RuntimeError(
            f"LoRA wrapped {found} modules but this SAM implies {expected}"
            + (f" ({detail})" if detail else "")
            + " (has segment_anything or TinyViT renamed its attention layers?)"
        )
    return sam
