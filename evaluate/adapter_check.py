"""Whether a trained adapter fits what it is about to be used with: one check for every command.

`fewsam evaluate infer` knows the dataset (its classes, channels and preprocessing) and the model
params (arch, input size, base weights); `fewsam predict` knows only the adapter and its inputs.
Both call `check_adapter` with what they know; whatever is given must match the adapter's
`config.json`, and the config itself must hold what inference reads from it. Every refusal is an
`InputError` naming the config file, raised before any model is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.params import DatasetParams, ModelParams, Params
from train.adapter_io import CONFIG_FILE, load_adapter, read_adapter_config
from train.model import FewSam

# What inference reads of the config's "dataset" entry: the preprocessing it was trained with.
PREPROCESSING = ("slice_size", "window", "percentiles")


def _check_config(config: dict[str, Any], where: Path) -> None:
    """The config holds the channels, classes and preprocessing inference needs."""
    for key in ("channels", "classes"):
        value = config.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise InputError(where, f'"{key}" must be a non-empty list of names, got {value!r}')
    dataset = config.get("dataset")
    missing = [k for k in PREPROCESSING if not isinstance(dataset, dict) or k not in dataset]
    if missing:
        raise InputError(where, f'"dataset" lacks the preprocessing key(s) {", ".join(missing)}')


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON would store them (tuples and lists alike, 275 and 275.0 alike)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_adapter(
    config: dict[str, Any],
    where: Path,
    *,
    classes: Sequence[str] | None = None,
    channels: Sequence[str] | None = None,
    model: ModelParams | None = None,
    dataset: DatasetParams | None = None,
) -> None:
    """InputError (naming `where`, the config file) when the adapter does not fit.

    classes, channels: the dataset's, in order. model: the arch and input size must be the
    adapter's, and the base must be random for both or a checkpoint for both (zero-shot SAM must
    be the very base the adapter was trained on). dataset: the slice size, CT window and MR
    percentiles must be those the adapter was trained with.
    """
    _check_config(config, where)
    for key, want in (("classes", classes), ("channels", channels)):
        if want is not None and tuple(config[key]) != tuple(want):
            raise InputError(
                where, f"adapter {key} {config[key]} differ from the dataset's {list(want)}"
            )
    if model is not None:
        for key, value in (("arch", model.arch), ("input_size", model.input_size)):
            if config.get(key) != value:
                raise InputError(
                    where, f"adapter has {key} {config.get(key)}, params say model.{key} {value}"
                )
        if (config.get("base_checkpoint") is None) != (model.checkpoint is None):
            raise InputError(
                where,
                f"adapter base {config.get('base_checkpoint')} but model.checkpoint is "
                f"{model.checkpoint}",
            )
    if dataset is not None:
        for key in PREPROCESSING:
            trained, now = config["dataset"][key], getattr(dataset, key)
            if not _same(trained, now):
                raise InputError(
                    where, f"adapter was trained with dataset.{key} {trained}, params say {now}"
                )


def load_dataset_adapter(
    adapter: Path, params: Params, classes: Sequence[str], channels: Sequence[str]
) -> FewSam:
    """The adapter of the folder `adapter`, in eval mode on the CPU, once its config is checked
    against the dataset's classes and channels and against `params` (model and dataset)."""
    check_adapter(
        read_adapter_config(adapter),
        Path(adapter) / CONFIG_FILE,
        classes=classes,
        channels=channels,
        model=params.model,
        dataset=params.dataset,
    )
    model, _ = load_adapter(adapter, params.model.checkpoint)
    return model
