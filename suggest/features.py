"""What the strategies look at, computed slice by slice: body extent, image features, uncertainty.

Features are SAM image-encoder embeddings mean-pooled over the token grid (one E-vector per
slice): two slices SAM sees alike get nearby vectors. Uncertainty is the adapted model's mean
per-pixel entropy of its prompt-free class softmax (in nats): high where the model hesitates
between classes, the slices whose labels teach it most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from train.inputs import to_sam_input

# Intensity in [0, 1] above which a pixel counts as body: CT windowed to [-125, 275] HU puts air at
# 0 and fat near 0.06; MRI normalized by percentiles keeps the background at 0.
AIR_LEVEL = 0.02

Encoder = Callable[[torch.Tensor], torch.Tensor]  # B x 3 x S x S in [0, 1] -> B x E x s x s


def body_slices(image: np.ndarray, min_fraction: float) -> np.ndarray:
    """Axial indices whose body (non-air) fraction is at least `min_fraction`.

    image: C x Z x H x W float32 in [0, 1]; a pixel is body when any channel exceeds AIR_LEVEL.
    """
    body = (image > AIR_LEVEL).any(axis=0)  # Z x H x W
    fraction = body.reshape(body.shape[0], -1).mean(axis=1)
    return np.flatnonzero(fraction >= min_fraction).astype(np.int64)


def _batches(zs: Sequence[int], batch_size: int) -> list[list[int]]:
    zs = [int(z) for z in zs]
    return [zs[i : i + batch_size] for i in range(0, len(zs), batch_size)]


@torch.no_grad()
def pooled_features(
    encoder: Encoder,
    image: np.ndarray,
    zs: Sequence[int],
    input_size: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """len(zs) x E float32: the encoder's embedding of each slice, mean over the token grid."""
    out = []
    for batch in _batches(zs, batch_size):
        x = to_sam_input(np.ascontiguousarray(np.moveaxis(image[:, batch], 1, 0)), input_size)
        out.append(encoder(x.to(device)).float().mean(dim=(2, 3)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """B x (K+1) x H x W logits -> B mean per-pixel entropy (nats) of their softmax."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean(dim=(1, 2))


@torch.no_grad()
def adapted_uncertainty(
    model: torch.nn.Module,
    image: np.ndarray,
    zs: Sequence[int],
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """(len(zs) mean entropies, len(zs) x E pooled embeddings) of the adapted model, prompt-free.

    model: a `train.model.FewSam` (embed, decode, input_size).
    """
    entropies, features = [], []
    for batch in _batches(zs, batch_size):
        slices = np.ascontiguousarray(np.moveaxis(image[:, batch], 1, 0))
        x = to_sam_input(slices, model.input_size).to(device)
        embeddings = model.embed(x)
        logits = model.decode(embeddings, None, None, x)
        entropies.append(mean_entropy(logits).cpu().numpy())
        features.append(embeddings.float().mean(dim=(2, 3)).cpu().numpy())
    if not entropies:
        return np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(entropies), np.concatenate(features)
