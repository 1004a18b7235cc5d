"""Where tensors go: one choice of device for training, evaluation, prediction and pretraining."""

from __future__ import annotations

import torch

from core.errors import ParamsError


def pick_device(choice: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """`auto`: cuda, then mps, then cpu. An explicit choice that is unavailable is an error.

    `key` names the parameter the choice came from, for the error message.
    """
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if choice == "auto":
        choice = "cuda" if cuda else "mps" if mps else "cpu"
    if (choice == "cuda" and not cuda) or (choice == "mps" and not mps):
        raise ParamsError(f"{key}: {choice} is not available on this machine")
    if choice == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(choice)
