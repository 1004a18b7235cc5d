"""`params.yaml` read into typed, frozen dataclasses, one per section.

Defaults live only in params.yaml: every field here is required, an unknown key fails, a value of
the wrong type or out of range fails, and each message names the key (`synth.paste_prob`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from core import streams
from core.errors import ParamsError

DatasetFormat = Literal["synapse", "synapse-npz", "brats", "nifti"]
# The prompt of a zero-shot SAM baseline (`evaluate.zero_shot_prompts`).
ZeroShotPrompt = Literal["point", "box"]


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {message}")


def _prob(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(0.0 <= value <= 1.0, f"{section}.{name}", f"must be in [0, 1], got {value}")


def _range(section: str, name: str, pair: tuple[float, float], lo: float = 0.0) -> None:
    a, b = pair
    _check(lo <= a <= b, f"{section}.{name}", f"must be [low, high] with {lo} <= low <= high")


@dataclass(frozen=True)
class DatasetParams:
    format: DatasetFormat
    root: str
    classes: tuple[str, ...]
    window: tuple[float, float]
    modality: Literal["CT", "MR"]
    percentiles: tuple[float, float]
    brats_target: Literal["whole_tumor", "regions"]
    brats_channels: tuple[str, ...]
    test_fraction: float
    slice_size: int
    annotations: str

    def __post_init__(self) -> None:
        s = "dataset"
        _check(self.window[0] < self.window[1], f"{s}.window", "low must be below high")
        _check(
            0.0 <= self.percentiles[0] < self.percentiles[1] <= 100.0,
            f"{s}.percentiles",
            "must be 0 <= low < high <= 100",
        )
        allowed = {"flair", "t1", "t1ce", "t2"}
        _check(
            len(self.brats_channels) == 3 and set(self.brats_channels) <= allowed,
            f"{s}.brats_channels",
            f"must name three of {sorted(allowed)}",
        )
        _check(0.0 < self.test_fraction < 1.0, f"{s}.test_fraction", "must be in (0, 1)")
        _check(self.slice_size >= 0, f"{s}.slice_size", "must be >= 0")
        _check(bool(self.annotations.strip()), f"{s}.annotations", "must name a folder")


@dataclass(frozen=True)
class SuggestParams:
    strategy: Literal["spread", "random", "diverse", "uncertain"]
    body_fraction: float
    stride: int
    uncertain_pool: int

    def __post_init__(self) -> None:
        s = "suggest"
        _prob(s, self, "body_fraction")
        _check(self.stride >= 1, f"{s}.stride", "must be >= 1")
        _check(self.uncertain_pool >= 1, f"{s}.uncertain_pool", "must be >= 1")


@dataclass(frozen=True)
class SelftrainParams:
    """Which training slices a teacher pseudo-labels (`fewsam synth pseudo`)."""

    body_fraction: float
    stride: int

    def __post_init__(self) -> None:
        s = "selftrain"
        _prob(s, self, "body_fraction")
        _check(self.stride >= 1, f"{s}.stride", "must be >= 1")


@dataclass(frozen=True)
class PhantomParams:
    synapse_cases: int
    synapse_size: int
    synapse_slices: int
    brats_cases: int
    brats_size: int
    brats_slices: int

    def __post_init__(self) -> None:
        _check(2 <= self.synapse_cases <= 30, "phantom.synapse_cases", "must be in [2, 30]")
        _check(2 <= self.brats_cases, "phantom.brats_cases", "must be >= 2")
        for name in ("synapse_size", "brats_size"):
            _check(getattr(self, name) >= 32, f"phantom.{name}", "must be >= 32")
        for name in ("synapse_slices", "brats_slices"):
            _check(getattr(self, name) >= 8, f"phantom.{name}", "must be >= 8")


@dataclass(frozen=True)
class SynthParams:
    exemplar_strategy: Literal["spread", "random"]
    pool_per_case: int
    enabled: bool
    samples: int
    workers: int
    affine_prob: float
    rotate_deg: float
    scale: tuple[float, float]
    translate: float
    shear_deg: float
    hflip_prob: float
    vflip_prob: float
    elastic_prob: float
    elastic_alpha: float
    elastic_sigma: float
    gamma_prob: float
    gamma: tuple[float, float]
    brightness_contrast_prob: float
    brightness: float
    contrast: float
    noise_prob: float
    noise_std: tuple[float, float]
    blur_prob: float
    blur_sigma: tuple[float, float]
    paste_prob: float
    paste_unit: Literal["class", "component"]
    paste_background: Literal["pool", "self"]
    paste_shift: float
    paste_feather: float

    def __post_init__(self) -> None:
        s = "synth"
        _check(self.pool_per_case >= 0, f"{s}.pool_per_case", "must be >= 0")
        _check(self.samples >= 1, f"{s}.samples", "must be >= 1")
        _check(self.workers >= 1, f"{s}.workers", "must be >= 1")
        _prob(s, self, "affine_prob", "hflip_prob", "vflip_prob", "elastic_prob", "gamma_prob")
        _prob(s, self, "brightness_contrast_prob", "noise_prob", "blur_prob", "paste_prob")
        _check(0 <= self.paste_shift <= 1, f"{s}.paste_shift", "must be in [0, 1]")
        _check(0 <= self.rotate_deg <= 180, f"{s}.rotate_deg", "must be in [0, 180]")
        _check(0 <= self.shear_deg <= 45, f"{s}.shear_deg", "must be in [0, 45]")
        _check(0 <= self.translate <= 0.5, f"{s}.translate", "must be in [0, 0.5]")
        _range(s, "scale", self.scale, lo=0.05)
        _range(s, "gamma", self.gamma, lo=0.05)
        _range(s, "noise_std", self.noise_std)
        _range(s, "blur_sigma", self.blur_sigma)
        for name in ("elastic_alpha", "elastic_sigma", "brightness", "contrast", "paste_feather"):
            _check(getattr(self, name) >= 0, f"{s}.{name}", "must be >= 0")


@dataclass(frozen=True)
class ModelParams:
    arch: Literal["tiny", "vit_b", "vit_l", "vit_h", "medsam_vit_b", "litemedsam"]
    checkpoint: str | None
    input_size: int

    def __post_init__(self) -> None:
        _check(
            self.input_size >= 64 and self.input_size % 16 == 0,
            "model.input_size",
            f"must be a multiple of 16 and >= 64, got {self.input_size}",
        )
        # LiteMedSAM's TinyViT reshapes its output to a fixed 64 x 64 grid (train.sam_registry).
        _check(
            self.arch != "litemedsam" or self.input_size == 256,
            "model.input_size",
            f"litemedsam takes 256 px inputs only, got {self.input_size}",
        )


@dataclass(frozen=True)
class LoraParams:
    rank: int
    alpha: float
    dropout: float
    encoder: bool
    decoder: bool
    # lora: adapters on the frozen base | full: no adapters, every weight of the base trains.
    finetune: Literal["lora", "full"]
    # A trained full-resolution head on the decoder's upsampled logits (train.model.FineHead).
    fine_head: bool

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "lora.rank", "must be >= 1")
        _check(self.alpha > 0, "lora.alpha", "must be > 0")
        _check(0 <= self.dropout < 1, "lora.dropout", "must be in [0, 1)")


def _check_schedule(s: str, p: TrainParams | BaselineParams) -> None:
    """The optimisation knobs the adapter and the baseline share (`train.schedule` reads them)."""
    _check(p.max_steps >= 1, f"{s}.max_steps", "must be >= 1")
    _check(p.batch_size >= 1, f"{s}.batch_size", "must be >= 1")
    _check(p.lr > 0, f"{s}.lr", "must be > 0")
    _check(p.weight_decay >= 0, f"{s}.weight_decay", "must be >= 0")
    _check(0 <= p.warmup_steps < p.max_steps, f"{s}.warmup_steps", "must be in [0, max_steps)")
    _check(p.poly_power > 0, f"{s}.poly_power", "must be > 0")
    _check(p.grad_clip >= 0, f"{s}.grad_clip", "must be >= 0")


@dataclass(frozen=True)
class TrainParams:
    max_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    poly_power: float
    grad_clip: float
    points_per_class: int
    prompt_dropout: float
    num_workers: int
    save_every: int
    resume: Literal["auto", "never"]
    device: Literal["auto", "cpu", "cuda", "mps"]
    compile: bool

    def __post_init__(self) -> None:
        s = "train"
        _check_schedule(s, self)
        _check(self.points_per_class >= 1, f"{s}.points_per_class", "must be >= 1")
        _prob(s, self, "prompt_dropout")
        _check(self.num_workers >= 0, f"{s}.num_workers", "must be >= 0")
        _check(self.save_every >= 1, f"{s}.save_every", "must be >= 1")


@dataclass(frozen=True)
class LossParams:
    ce_weight: float
    dice_weight: float
    dice_background: bool

    def __post_init__(self) -> None:
        _check(self.ce_weight >= 0, "loss.ce_weight", "must be >= 0")
        _check(self.dice_weight >= 0, "loss.dice_weight", "must be >= 0")
        _check(self.ce_weight + self.dice_weight > 0, "loss", "ce_weight + dice_weight must be > 0")


@dataclass(frozen=True)
class BaselineParams:
    """The supervised baseline (`baseline` package): MONAI's BasicUNet, trained from scratch."""

    enabled: bool
    features: tuple[int, ...]
    norm: Literal["instance", "batch"]
    max_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    poly_power: float
    grad_clip: float

    def __post_init__(self) -> None:
        s = "baseline"
        _check(
            len(self.features) == 6 and all(f >= 1 for f in self.features),
            f"{s}.features",
            f"must be 6 channel counts >= 1 (BasicUNet's), got {list(self.features)}",
        )
        _check_schedule(s, self)


@dataclass(frozen=True)
class EvaluateParams:
    protocol: Literal["transunet", "strict"]
    batch_size: int
    zero_shot_prompts: tuple[ZeroShotPrompt, ...]
    overlays_per_case: int
    max_cases: int
    refine: Literal["none", "litemedsam", "base"]
    refine_margin: int
    refine_min_score: float
    refine_min_agreement: float
    postprocess: Literal["none", "largest_component"]

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1")
        _check(self.refine_margin >= 0, "evaluate.refine_margin", "must be >= 0")
        _prob("evaluate", self, "refine_min_agreement")
        prompts = list(self.zero_shot_prompts)
        _check(
            len(set(prompts)) == len(prompts),
            "evaluate.zero_shot_prompts",
            f"must not list a prompt twice, got {prompts}",
        )
        _check(self.overlays_per_case >= 0, "evaluate.overlays_per_case", "must be >= 0")
        _check(self.max_cases >= 0, "evaluate.max_cases", "must be >= 0")


@dataclass(frozen=True)
class PretrainParams:
    steps: int
    minutes: float
    batch_size: int
    instances: int
    corrective_rounds: int
    box_prob: float
    multi_point_prob: float
    max_points: int
    box_jitter: float
    min_area: int
    curriculum_steps: int
    loss_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    focal_weight: float
    dice_weight: float
    iou_weight: float
    eval_images: int
    eval_every: int
    save_every: int
    threads: int
    device: str
    workers: int

    def __post_init__(self) -> None:
        s = "pretrain"
        _check(self.device in ("auto", "cpu", "cuda"), f"{s}.device", "must be auto, cpu or cuda")
        _check(0 <= self.workers <= 64, f"{s}.workers", "must be in [0, 64]")
        for name in ("steps", "batch_size", "instances", "max_points", "eval_images"):
            _check(getattr(self, name) >= 1, f"{s}.{name}", "must be >= 1")
        _check(self.save_every >= 1, f"{s}.save_every", "must be >= 1")
        _check(1 <= self.threads <= 256, f"{s}.threads", "must be in [1, 256]")
        _check(self.minutes >= 0, f"{s}.minutes", "must be >= 0")
        _check(0 <= self.corrective_rounds <= 16, f"{s}.corrective_rounds", "must be in [0, 16]")
        _prob(s, self, "box_prob", "multi_point_prob", "box_jitter")
        _check(self.box_prob + self.multi_point_prob <= 1, s, "box_prob + multi_point_prob > 1")
        _check(self.min_area >= 1, f"{s}.min_area", "must be >= 1")
        _check(self.curriculum_steps >= 0, f"{s}.curriculum_steps", "must be >= 0")
        _check(self.loss_size in (64, 128, 256), f"{s}.loss_size", "must be 64, 128 or 256")
        _check(self.lr > 0, f"{s}.lr", "must be > 0")
        _check(self.weight_decay >= 0, f"{s}.weight_decay", "must be >= 0")
        _check(0 <= self.warmup_steps < self.steps, f"{s}.warmup_steps", "must be in [0, steps)")
        _check(self.grad_clip >= 0, f"{s}.grad_clip", "must be >= 0")
        for name in ("focal_weight", "dice_weight", "iou_weight"):
            _check(getattr(self, name) >= 0, f"{s}.{name}", "must be >= 0")
        _check(self.eval_every >= 0, f"{s}.eval_every", "must be >= 0")


@dataclass(frozen=True)
class Params:
    exemplars: int | Literal["all"]
    seed: int
    replicate: int
    dataset: DatasetParams
    suggest: SuggestParams
    phantom: PhantomParams
    synth: SynthParams
    model: ModelParams
    lora: LoraParams
    train: TrainParams
    loss: LossParams
    baseline: BaselineParams
    selftrain: SelftrainParams
    evaluate: EvaluateParams
    pretrain: PretrainParams

    def __post_init__(self) -> None:
        if self.exemplars != "all":
            _check(self.exemplars >= 1, "exemplars", f"must be >= 1 or `all`, got {self.exemplars}")
        _check(self.seed >= 0, "seed", "must be >= 0")
        _check(self.replicate >= 0, "replicate", "must be >= 0")

    @property
    def stream_seed(self) -> int:
        """Seed of what the method draws (exemplars, pool, synthesis, training); see
        `core.streams.stream_seed`. The data, split and evaluation prompts use `seed`."""
        return streams.stream_seed(self.seed, self.replicate)


def to_dict(obj: Any) -> Any:
    """Plain JSON-able form of a params object (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def fingerprint(obj: Any) -> str:
    """Short stable hash of `obj` (params objects, dicts of them, plain JSON values).

    The one fingerprint of the project: a resumed training run, a resumed pretraining run and
    the adapter's `params_hash` all identify their settings with it.
    """
    blob = json.dumps(to_dict(obj), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, option, key)
            except ParamsError as e:
                errors.append(str(e).split(": ", 1)[1])
        raise ParamsError(f"{key}: {'; or '.join(errors) or 'must not be null'}")
    if origin is tuple:
        args = get_args(tp)
        _check(isinstance(value, list | tuple), key, f"must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        _check(len(value) == len(args), key, f"must have {len(args)} items, got {len(value)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, "must be a mapping")
        return _build(tp, value, key)
    if tp is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _check(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported params type {_type_name(tp)} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    dot = f"{prefix}." if prefix else ""
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ParamsError(f"{dot}{unknown[0]}: unknown key (known: {', '.join(names)})")
    missing = [n for n in names if n not in data]
    if missing:
        raise ParamsError(f"{dot}{missing[0]}: missing key")
    values = {n: _convert(data[n], hints[n], f"{dot}{n}") for n in names}
    return cls(**values)


def parse_params(data: Any, source: str = "params") -> Params:
    """Validate a parsed params mapping; errors name `source` and the key."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: must be a mapping of sections")
    try:
        return _build(Params, data, "")
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping: `yaml.safe_load` keeps the
    last value without a word, so an edit below an older line of the same key would be ignored."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._paths: dict[yaml.Node, str] = {}  # value node -> its dotted key

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        prefix = self._paths.get(node)
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; keys given beside it override, as YAML means
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            dotted = f"{prefix}.{key}" if prefix else str(key)
            try:
                first = lines.get(key)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if first is not None:
                raise ParamsError(f"{dotted}: duplicate key (lines {first} and {line})")
            lines[key] = line
            self._paths[value_node] = dotted
        return super().construct_mapping(node, deep)


def read_params_file(path: str | Path) -> Any:
    """The parsed YAML of a params file, not yet validated; ParamsError names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(
            f"{path}: not found (run from the project folder or pass --params)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{path}: cannot be read ({e})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file with a safe YAML loader."""
    return parse_params(read_params_file(path), str(path))
