"""A trained adapter on disk: `adapter.safetensors` (only the trained tensors) + `config.json`.

config.json carries what rebuilds the model (arch, input size, classes, LoRA settings, the input
normalization `pixel_mean`/`pixel_std` the model applied to 0-255 pixels: ImageNet statistics for
SAM, none for LiteMedSAM) and which base weights the adapter was trained on (path and SHA-256). An adapter is meaningless on other
base weights, so loading it on a base whose SHA-256 differs is an error, not a warning.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.atomic import atomic_folder
from core.errors import InputError, ParamsError
from core.params import LoraParams, ModelParams
from train.base_weights import sha256_file
from train.model import FewSam, build_fewsam, trainable_state_dict, unwrap

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "config.json"
KIND = "fewsam-adapter"


def _base_sha256(model: FewSam) -> str | None:
    """SHA-256 of the model's base checkpoint, hashed once per model (None for a random base)."""
    if model.checkpoint is None:
        return None
    if model.base_sha256 is None:
        model.base_sha256 = sha256_file(model.checkpoint)
    return model.base_sha256


def _model_config(model: FewSam) -> dict[str, Any]:
    checkpoint = model.checkpoint
    return {
        "kind": KIND,
        "arch": model.arch,
        "input_size": model.input_size,
        "num_classes": model.num_classes,
        "lora": dataclasses.asdict(model.lora),
        "pixel_mean": [float(v) for v in model.sam.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in model.sam.pixel_std.flatten()],
        "base_checkpoint": None if checkpoint is None else str(checkpoint),
        "base_sha256": _base_sha256(model),
    }


def save_adapter(model: FewSam, out_dir: Path, config: dict[str, Any]) -> None:
    """Write `out_dir/adapter.safetensors` and `out_dir/config.json` as one atomic step.

    `config` (the caller's settings, e.g. params and their hash) is merged with the model's own
    description, which wins on shared keys. The files are written into a temporary sibling
    folder that then replaces `out_dir`; a folder holding anything else is refused rather than
    deleted.
    """
    model = unwrap(model)  # type: ignore[assignment]
    with atomic_folder(out_dir, (ADAPTER_FILE, CONFIG_FILE)) as tmp:
        state = {k: v.contiguous().cpu() for k, v in trainable_state_dict(model).items()}
        save_file(state, str(tmp / ADAPTER_FILE), metadata={"kind": KIND})
        merged = {**config, **_model_config(model)}
        (tmp / CONFIG_FILE).write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """The config.json of an adapter folder, checked to be one."""
    path = Path(adapter_dir) / CONFIG_FILE
    if not path.is_file():
        raise InputError(path, "not found (train an adapter with `fewsam train run`)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise InputError(path, f"not a fewsam adapter config (kind is not {KIND!r})")
    return config


def load_adapter(
    adapter_dir: Path,
    checkpoint: str | None = None,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
) -> tuple[FewSam, dict[str, Any]]:
    """Rebuild the model an adapter was trained as, with its trained tensors, in eval mode.

    `checkpoint` replaces the recorded base path (the file must have the recorded SHA-256).
    `num_classes` / `input_size`, when given, must match the adapter's (else InputError).
    """
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    where = adapter_dir / CONFIG_FILE
    for key, want in (("num_classes", num_classes), ("input_size", input_size)):
        if want is not None and config.get(key) != want:
            raise InputError(where, f"adapter has {key} {config.get(key)}, expected {want}")
    base = checkpoint if checkpoint is not None else config.get("base_checkpoint")
    recorded = config.get("base_sha256")
    if base is not None:
        _check_base(base, recorded, where)
    normalization = _normalization(config, where)
    try:
        model_params = ModelParams(config["arch"], base, config["input_size"])
        # Adapters written before `finetune` / `fine_head` existed are LoRA adapters, no head.
        lora = LoraParams(**{"finetune": "lora", "fine_head": False, **config["lora"]})
        model = build_fewsam(model_params, lora, config["num_classes"])
    except (KeyError, TypeError, ParamsError, ValueError) as e:
        raise InputError(where, f"unusable adapter config ({type(e).__name__}: {e})") from None
    for key, value in normalization.items():
        buffer = getattr(model.sam, key)
        buffer.copy_(torch.tensor(value, dtype=buffer.dtype).view_as(buffer))
    state = _read_tensors(adapter_dir / ADAPTER_FILE, model)
    model.load_state_dict(state, strict=False)
    model.base_sha256 = recorded
    return model.eval(), config


def _normalization(config: dict[str, Any], where: Path) -> dict[str, list[float]]:
    """The input normalization the adapter was trained with (`pixel_mean`, `pixel_std`), checked.

    Adapters written before the config recorded it have none: the arch's own is kept (it is what
    they were trained with).
    """
    out = {}
    for key in ("pixel_mean", "pixel_std"):
        if key not in config:
            continue
        value = config[key]
        ok = (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and (key == "pixel_mean" or all(v > 0 for v in value))
        )
        if not ok:
            what = "3 positive numbers" if key == "pixel_std" else "3 numbers"
            raise InputError(where, f'"{key}" must be {what}, got {value!r}')
        out[key] = [float(v) for v in value]
    return out


def _check_base(base: str, recorded: str | None, where: Path) -> None:
    """The base checkpoint `base` exists and is the one the adapter recorded (by SHA-256)."""
    if not Path(base).is_file():
        raise InputError(base, "base checkpoint of the adapter not found")
    if recorded is None:
        raise InputError(where, f"adapter was trained on random base weights, not on {base}")
    if sha256_file(base) != recorded:
        raise InputError(base, f"SHA-256 differs from the adapter's base ({recorded[:12]}...)")


def _read_tensors(path: Path, model: FewSam) -> dict[str, torch.Tensor]:
    """The trained tensors in `path`, checked to be exactly those `model` trains, shape for shape."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise InputError(path, f"not a readable adapter ({e})") from None
    tokens = state.get("sam.mask_decoder.mask_tokens.weight")
    if tokens is not None and tokens.shape[0] != model.num_classes + 1:
        raise InputError(
            path, f"holds {tokens.shape[0] - 1} classes, its config says {model.num_classes}"
        )
    expected = trainable_state_dict(model)
    if set(state) != set(expected):
        diff = sorted(set(state) ^ set(expected))
        raise InputError(
            path, f"tensors do not match the config ({len(diff)} differ, e.g. {diff[0]})"
        )
    wrong = [k for k in expected if expected[k].shape != state[k].shape]
    if wrong:
        raise InputError(
            path,
            f"tensor {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
            f"the config implies {tuple(expected[wrong[0]].shape)}",
        )
    return state
