"""Images and labels brought to SAM's square input: the one place training and evaluation resize.

SAM takes three channels. A one-channel image (CT) is repeated; a three-channel image (the MRI
modalities `dataset.brats_channels` names, already chosen and ordered when the slices were
extracted) is passed as is. Anything else is refused rather than guessed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_sam_input(images: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """N x C x H x W intensities in [0, 1] -> N x 3 x size x size float32 in [0, 1].

    C == 1 is repeated to three channels, C == 3 is kept. Resizing is bilinear with antialiasing
    (which only matters when shrinking), so a 512 px slice fed to a 256 px model is low-passed
    first instead of aliased. A slice already at `size` is returned unchanged (as float32).
    """
    t = torch.as_tensor(images)
    if t.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(t.shape)}")
    channels = t.shape[1]
    if channels == 1:
        t = t.expand(-1, 3, -1, -1)
    elif channels != 3:
        raise ValueError(
            f"images have {channels} channels; SAM takes 1 (repeated to 3) or 3 "
            "(choose three MRI modalities with dataset.brats_channels)"
        )
    t = t.float()
    if tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(
            t, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        # The antialiasing filter has non-negative weights, so this only removes rounding error.
        t = t.clamp_(0.0, 1.0)
    return t.contiguous()


def resize_label(label: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """N x H x W class ids -> N x size x size, nearest neighbour, same dtype as the input.

    Uses pixel-centre ("nearest-exact") sampling, so halving or doubling keeps the mask centred;
    ids are never blended.
    """
    t = torch.as_tensor(label)
    if t.ndim != 3:
        raise ValueError(f"labels must be N x H x W, got shape {tuple(t.shape)}")
    if tuple(t.shape[-2:]) == (size, size):
        return t
    # float32 holds every uint8/int id exactly, and interpolate needs a floating type.
    resized = F.interpolate(t[:, None].float(), size=(size, size), mode="nearest-exact")
    return resized[:, 0].to(t.dtype)
