"""The baseline network: MONAI's 2D BasicUNet, and its slice-wise inference on whole volumes.

BasicUNet (instance norm, LeakyReLU, transposed-convolution upsampling: nnU-Net's choices) halves
the resolution four times, so a slice side must be a multiple of 16. Slices of another size are
zero-padded on the bottom and right (0 is air or background after windowing/normalization) and
the logits cropped back, in training and inference alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet

# 2 ** (number of BasicUNet's downsamplings).
MULTIPLE = 16
# `baseline.norm` -> BasicUNet's norm argument. Instance norm (with affine) is BasicUNet's own
# default and nnU-Net's; batch norm keeps running statistics that inference uses in eval mode.
NORMS: dict[str, tuple[str, dict]] = {
    "instance": ("instance", {"affine": True}),
    "batch": ("batch", {}),
}


def build_unet(
    features: Sequence[int], in_channels: int, num_classes: int, norm: str = "instance"
) -> BasicUNet:
    """A randomly initialized BasicUNet with `num_classes` + 1 outputs (background first)."""
    return BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes + 1,
        features=tuple(int(f) for f in features),
        norm=NORMS[norm],
    )


def unet_logits(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """B x (K+1) x H x W logits of B x C x H x W images of any size (padded to MULTIPLE)."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % MULTIPLE, -w % MULTIPLE
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    return net(images)[..., :h, :w]


@torch.no_grad()
def predict_unet(
    net: torch.nn.Module,
    image: np.ndarray,
    batch_size: int,
    out_hw: tuple[int, int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Label map of one volume, as `evaluate.inference.predict_volume` makes the adapter's.

    image: C x Z x H x W float32 in [0, 1], the channels the network was trained on.
    out_hw: size the logits are upsampled to (bilinear) before the argmax; default H x W.
    Returns Z x out_h x out_w uint8 class ids 0..K.
    """
    _, z, h, w = image.shape
    out_h, out_w = out_hw or (h, w)
    device = next(net.parameters()).device
    out = np.zeros((z, out_h, out_w), np.uint8)
    for start in range(0, z, batch_size):
        stop = min(start + batch_size, z)
        slices = np.ascontiguousarray(np.moveaxis(image[:, start:stop], 1, 0))  # N x C x H x W
        logits = unet_logits(net, torch.from_numpy(slices).float().to(device))
        if (out_h, out_w) != (h, w):
            logits = F.interpolate(
                logits, size=(out_h, out_w), mode="bilinear", align_corners=False
            )
        out[start:stop] = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
        if on_batch is not None:
            on_batch(stop - start)
    return out
