"""A trained baseline on disk: `unet.safetensors` + `config.json`, or, when `baseline.enabled` is
false, a `config.json` alone that says so (DVC needs the stage's output either way, and
evaluation then knows there is nothing to score).

config.json carries what rebuilds the network (features, channels, classes), the input
preprocessing it was trained with (the synthetic set's `dataset` params) and the params that
made it. Written into a temporary sibling folder that then replaces the target, so a folder is
either the old model or the new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from baseline.network import NORMS, build_unet
from core.atomic import atomic_folder
from core.errors import InputError

WEIGHTS_FILE = "unet.safetensors"
CONFIG_FILE = "config.json"
KIND = "fewsam-unet"


def save_unet(out_dir: Path, net: torch.nn.Module | None, config: dict[str, Any]) -> None:
    """Write `out_dir` as one atomic step: the weights of `net` (None: a disabled stub) and
    config.json. A folder holding other files is refused rather than deleted."""
    with atomic_folder(out_dir, (WEIGHTS_FILE, CONFIG_FILE)) as tmp:
        if net is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"kind": KIND})
        text = json.dumps(
            {**config, "kind": KIND, "enabled": net is not None}, indent=2, sort_keys=True
        )
        (tmp / CONFIG_FILE).write_text(text + "\n")


def read_config(folder: Path) -> dict[str, Any]:
    """The config.json of a baseline folder, checked to be one."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise InputError(path, "not found (train the baseline with `fewsam train baseline`)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise InputError(path, f"not a fewsam baseline config (kind is not {KIND!r})")
    return config


def load_unet(
    folder: Path,
    classes: tuple[str, ...],
    channels: tuple[str, ...],
    slice_size: int | None = None,
) -> torch.nn.Module | None:
    """The trained network in eval mode, or None for a disabled stub. It must have been trained
    on `classes` and `channels` (the dataset it is evaluated on) and, when given, slices of
    `slice_size` (`dataset.slice_size`: a convolutional network runs at any size, but organs at
    another scale are not what it learned), else InputError."""
    folder = Path(folder)
    config = read_config(folder)
    if not config.get("enabled"):
        return None
    where = folder / CONFIG_FILE
    for key, want in (("classes", classes), ("channels", channels)):
        if list(config.get(key) or []) != list(want):
            raise InputError(
                where, f"trained with {key} {config.get(key)}, the dataset has {list(want)}"
            )
    trained = (config.get("dataset") or {}).get("slice_size")
    if slice_size is not None and trained is not None and int(trained) != slice_size:
        raise InputError(where, f"trained on dataset.slice_size {trained}, params say {slice_size}")
    # Networks saved before `baseline.norm` existed used instance norm.
    norm = (config.get("baseline") or {}).get("norm", "instance")
    if norm not in NORMS:
        raise InputError(where, f"unknown baseline.norm {norm!r} (known: {', '.join(NORMS)})")
    try:
        net = build_unet(config["features"], len(config["channels"]), len(config["classes"]), norm)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(where, f"cannot rebuild the network ({e})") from None
    weights = folder / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as e:
        raise InputError(weights, f"unreadable weights ({e})") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:2]
        raise InputError(
            weights, f"does not match the network of config.json ({' '.join(first)})"
        ) from None
    return net.eval()
