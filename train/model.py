"""FewSam: SAM with LoRA adapters, a (K+1)-class mask decoder and class-aware point prompts.

SAM's `Sam.forward` runs under no_grad and its mask decoder repeats each image embedding once
per prompt, so this module calls SAM's parts itself with one prompt set per image: the image
encoder, the prompt encoder's embeddings, the decoder transformer (with a padding mask, see
train.decoder_transformer), its upscaling and its hypernetwork MLPs.

Output k of the decoder is class k (0 = background); logits are B x (K+1) x S x S for S x S
inputs. A point prompt carries a class id: its embedding is SAM's positive-point embedding plus
a learned per-class vector that starts at zero, so before training a prompt acts exactly like a
positive point to SAM. Without prompts (`points=None`) the decoder sees no sparse tokens and the
no-mask dense embedding, as in SAMed.

With `lora.fine_head` a small convolutional head (`FineHead`) corrects the upsampled logits at
full input resolution from the logits and the image itself: SAM's decoder predicts on a grid 4x
coarser than its input, which blurs thin structures (the aorta, the pancreas) that a 4-pixel
cell straddles.

The image embedding is E x g x g: g = S/16 for SAM's ViT, 64 for LiteMedSAM's TinyViT at 256 px.
The base stays frozen in training mode too: batch-norm layers (TinyViT has them) keep the
checkpoint's running statistics, which the adapter does not store.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.modeling.mask_decoder import MLP
from torch import Tensor, nn

from core.params import LoraParams, ModelParams
from train.base_weights import load_sam
from train.decoder_transformer import run_transformer
from train.lora import apply_lora
from train.prompts import PAD_LABEL

# The decoder parts trained next to the adapters (everything else stays frozen).
TRAINED_HEADS = (
    "mask_tokens",
    "output_hypernetworks_mlps",
    "iou_prediction_head",
    "output_upscaling",
)


def widen_decoder(decoder: MaskDecoder, num_outputs: int) -> None:
    """Give `decoder` `num_outputs` mask tokens, hypernetwork MLPs and IoU outputs, in place.

    SAM's decoder has 4 mask tokens: token 0 makes the single mask SAM returns when asked for one
    (multimask_output=False), tokens 1-3 its three multimask outputs. Output 0 (background) is
    initialized from token 0 and output k >= 1 from token 1 + (k - 1) mod 3, cycling through the
    multimask tokens. Each output's hypernetwork MLP and its row of the IoU head's last layer are
    copied from the same token. With 3 classes the widened decoder is SAM's own; with more, the
    copies start identical to their source and separate during training.
    """
    source = [0] + [1 + (k - 1) % (decoder.num_mask_tokens - 1) for k in range(1, num_outputs)]
    dim = decoder.transformer_dim
    tokens = nn.Embedding(num_outputs, dim)
    last = decoder.iou_prediction_head.layers[-1]
    iou_out = nn.Linear(last.in_features, num_outputs)
    mlps = nn.ModuleList()
    with torch.no_grad():
        tokens.weight.copy_(decoder.mask_tokens.weight[source])
        iou_out.weight.copy_(last.weight[source])
        iou_out.bias.copy_(last.bias[source])
        for s in source:
            mlp = MLP(dim, dim, dim // 8, 3)
            mlp.load_state_dict(decoder.output_hypernetworks_mlps[s].state_dict())
            mlps.append(mlp)
    decoder.mask_tokens = tokens
    decoder.output_hypernetworks_mlps = mlps
    decoder.iou_prediction_head.layers[-1] = iou_out
    decoder.num_mask_tokens = num_outputs
    decoder.num_multimask_outputs = num_outputs - 1


class FineHead(nn.Module):
    """A residual on the S x S upsampled logits from the logits and the image, at full resolution.

    Three 3x3 convolutions see 7 x 7 pixels, more than a 4 x 4 cell of the decoder's grid. The
    last one starts at zero, so an untrained head leaves SAM's logits exactly as they are.
    """

    def __init__(self, num_outputs: int, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(num_outputs + 3, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, num_outputs, 3, padding=1),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, logits: Tensor, images: Tensor) -> Tensor:
        """logits B x (K+1) x S x S, images B x 3 x S x S in [0, 1] -> corrected logits."""
        x = torch.cat([logits, images.to(logits.dtype) * 2.0 - 1.0], dim=1)
        return logits + self.net(x)


class FewSam(nn.Module):
    """SAM with LoRA adapters and a (K+1)-class mask decoder with class-aware point prompts."""

    def __init__(
        self, sam: Sam, arch: str, num_classes: int, lora: LoraParams, checkpoint: str | None
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch = arch
        self.num_classes = num_classes
        self.lora = lora
        self.checkpoint = checkpoint
        self.base_sha256: str | None = None  # filled in once the base file is hashed
        self.input_size: int = sam.image_encoder.img_size
        widen_decoder(sam.mask_decoder, num_classes + 1)
        # Full fine-tuning trains every weight, so adapters would only add a redundant copy.
        self.sam = apply_lora(sam, lora) if lora.finetune == "lora" else sam
        dim = sam.prompt_encoder.embed_dim
        self.class_embed = nn.Embedding(num_classes + 1, dim)
        nn.init.zeros_(self.class_embed.weight)
        self.fine_head = FineHead(num_classes + 1) if lora.fine_head else None
        for p in self.parameters():
            p.requires_grad_(lora.finetune == "full")
        trained = [getattr(sam.mask_decoder, n) for n in TRAINED_HEADS] + [self.class_embed]
        if self.fine_head is not None:
            trained.append(self.fine_head)
        for p in (p for m in trained for p in m.parameters()):
            p.requires_grad_(True)
        for name, p in self.sam.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)

    def train(self, mode: bool = True) -> FewSam:
        """Training mode for the trained parts; the frozen base's batch norms stay in eval mode."""
        super().train(mode)
        for module in self.sam.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def embed(self, images: Tensor) -> Tensor:
        """B x 3 x S x S float images in [0, 1] -> B x E x g x g image embeddings.

        The arch's normalization (Sam.pixel_mean/std on the 0-255 scale: ImageNet statistics for
        SAM, identity for LiteMedSAM) is applied here, the one place the model sees pixels.
        """
        size = self.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images must be B x 3 x {size} x {size}, got {tuple(images.shape)}")
        x = (images * 255.0 - self.sam.pixel_mean) / self.sam.pixel_std
        return self.sam.image_encoder(x)

    def _prompt_tokens(self, points: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """B x P x 2 points, B x P labels -> tokens B x (P+1) x E and validity B x (P+1) bool.

        SAM appends one not-a-point token when no box is given and was trained that way; it is
        kept for every image that has at least one real point, and masked out otherwise, so an
        image whose points are all padding is decoded exactly as prompt-free.
        """
        if points.ndim != 3 or points.shape[-1] != 2 or labels.shape != points.shape[:2]:
            raise ValueError(
                f"points must be B x P x 2 and labels B x P, got {tuple(points.shape)} "
                f"and {tuple(labels.shape)}"
            )
        real = labels != PAD_LABEL
        bad = real & ((labels < 1) | (labels > self.num_classes))
        if bool(bad.any()):
            raise ValueError(f"point labels must be 1..{self.num_classes} or {PAD_LABEL} (padding)")
        enc = self.sam.prompt_encoder
        b = points.shape[0]
        points = torch.cat([points, points.new_zeros(b, 1, 2)], dim=1)
        labels = torch.cat([labels, labels.new_full((b, 1), PAD_LABEL)], dim=1)
        valid = torch.cat([real, real.any(dim=1, keepdim=True)], dim=1)
        size = (self.input_size, self.input_size)
        # Points are already continuous (pixel centres at +0.5), so no shift as in SAM's encoder.
        positive = enc.pe_layer.forward_with_coords(points, size) + enc.point_embeddings[1].weight
        positive = positive + self.class_embed(labels.clamp(min=0))
        pad = labels[..., None] == PAD_LABEL
        tokens = torch.where(pad, enc.not_a_point_embed.weight.to(positive.dtype), positive)
        return tokens, valid

    def decode_low_res(
        self, embeddings: Tensor, points: Tensor | None, point_labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Low-resolution logits B x (K+1) x S/4 x S/4 and predicted IoU B x (K+1).

        The IoU head is trained only if the caller puts its output in a loss.
        """
        dec, enc = self.sam.mask_decoder, self.sam.prompt_encoder
        b = embeddings.shape[0]
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(b, -1, -1)
        if points is None:
            tokens, valid = output_tokens, None
        else:
            if point_labels is None or points.shape[0] != b:
                raise ValueError("points need point_labels, and one prompt set per image")
            prompts, prompt_valid = self._prompt_tokens(points, point_labels)
            tokens = torch.cat([output_tokens, prompts.to(output_tokens.dtype)], dim=1)
            always = prompt_valid.new_ones(b, output_tokens.shape[1])
            valid = torch.cat([always, prompt_valid], dim=1)
        src = embeddings + enc.no_mask_embed.weight.reshape(1, -1, 1, 1)
        pos = enc.get_dense_pe().expand(b, -1, -1, -1)
        hs, src = run_transformer(dec.transformer, src, pos, tokens, valid)
        _, c, h, w = embeddings.shape
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        n = dec.num_mask_tokens
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(n)], 1)
        _, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, n, h, w)
        return masks, dec.iou_prediction_head(hs[:, 0])

    def decode(
        self,
        embeddings: Tensor,
        points: Tensor | None = None,
        point_labels: Tensor | None = None,
        images: Tensor | None = None,
    ) -> Tensor:
        """Class logits B x (K+1) x S x S from embeddings B x E x g x g (see `embed`).

        points: B x P x 2 (x, y) in input pixels, pixel centres at +0.5; point_labels: B x P
        int64 class ids 1..K, or -1 for padding (ignored). None = prompt-free. images: the
        B x 3 x S x S input the embeddings came from, which the fine head needs (ignored
        without one).
        """
        masks, _ = self.decode_low_res(embeddings, points, point_labels)
        size = (self.input_size, self.input_size)
        logits = F.interpolate(masks, size, mode="bilinear", align_corners=False)
        if self.fine_head is None:
            return logits
        if images is None or images.shape[0] != logits.shape[0]:
            raise ValueError("a model with a fine head decodes with the images it embedded")
        return self.fine_head(logits, images)

    def forward(
        self, images: Tensor, points: Tensor | None = None, point_labels: Tensor | None = None
    ) -> Tensor:
        """embed + decode: B x 3 x S x S images in [0, 1] -> B x (K+1) x S x S logits."""
        return self.decode(self.embed(images), points, point_labels, images)


def build_fewsam(model: ModelParams, lora: LoraParams, num_classes: int) -> FewSam:
    """The base SAM of `model` (weights from model.checkpoint, or seeded random) made a FewSam."""
    sam = load_sam(model.arch, model.checkpoint, model.input_size)
    return FewSam(sam, model.arch, num_classes, lora, model.checkpoint).eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The FewSam inside DistributedDataParallel (`.module`) or torch.compile (`._orig_mod`)."""
    while not isinstance(model, FewSam):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a FewSam: {type(model).__name__}")
        model = inner
    return model


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only what is trained (LoRA, decoder heads, class embedding, fine head; every weight under
    `lora.finetune: full`), detached, by parameter name."""
    return {n: p.detach() for n, p in unwrap(model).named_parameters() if p.requires_grad}
