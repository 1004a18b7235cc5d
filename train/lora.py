"""Low-rank adapters (peft LoRA) on SAM's attention, placed by exact module paths and counted.

Where they go:
- image encoder: `blocks.N.attn.qkv`, one per ViT block. The output projection `proj` is left
  alone: SAMed and micro-sam adapt the query/key/value projection only, which keeps the adapter
  count comparable to theirs, and `proj` would also name-match the patch embedding convolution.
- mask decoder transformer: `q_proj`, `k_proj`, `v_proj`, `out_proj` of its seven attention
  layers (self, token-to-image and image-to-token attention in each of its 2 blocks, plus the
  final token-to-image attention).
Targets are full-path regular expressions, and the number of wrapped modules is checked against
what the architecture implies, so a renamed module in segment_anything fails loudly instead of
silently training nothing.
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from segment_anything.modeling import Sam

from core.params import LoraParams

ENCODER_TARGETS = r"image_encoder\.blocks\.\d+\.attn\.qkv"
DECODER_TARGETS = r"mask_decoder\.transformer\.(.+\.)?(q_proj|k_proj|v_proj|out_proj)"
DECODER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def expected_targets(sam: Sam, lora: LoraParams) -> dict[str, int]:
    """How many modules each part should get: encoder depth, 4 x decoder attention layers."""
    decoder_layers = len(sam.mask_decoder.transformer.layers)
    return {
        "image_encoder": len(sam.image_encoder.blocks) if lora.encoder else 0,
        "mask_decoder": len(DECODER_PROJECTIONS) * (3 * decoder_layers + 1) if lora.decoder else 0,
    }


def count_lora_modules(sam: Sam) -> dict[str, int]:
    """Number of LoRA-wrapped modules under the image encoder and under the mask decoder."""
    counts = {"image_encoder": 0, "mask_decoder": 0}
    for name, module in sam.named_modules():
        if isinstance(module, LoraLayer):
            counts[name.split(".", 1)[0]] = counts.get(name.split(".", 1)[0], 0) + 1
    return counts


def apply_lora(sam: Sam, lora: LoraParams) -> Sam:
    """Wrap the targeted linear layers of `sam` in place with rank-`lora.rank` adapters.

    LoRA B starts at zero, so the wrapped model computes exactly what `sam` did. Adapter weights
    are named `...qkv.lora_A.default.weight` / `lora_B`; base weights move to `...base_layer`.
    Trainability is set by the caller.
    """
    patterns = [
        p for p, on in ((ENCODER_TARGETS, lora.encoder), (DECODER_TARGETS, lora.decoder)) if on
    ]
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
    if found != expected:
        raise RuntimeError(
            f"LoRA wrapped {found} modules but this SAM implies {expected} "
            "(has segment_anything renamed its attention layers?)"
        )
    return sam
