"""LoRA placement and counting, and the `train summary` parameter table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from click.testing import Result
from conftest import REPO
from peft.tuners.lora import LoraLayer
from sam_helpers import LORA
from typer.testing import CliRunner

from core.params import ModelParams, Params, load_params
from fewsam.cli import app
from train.lora import apply_lora, count_lora_modules
from train.model import build_fewsam, trainable_state_dict
from train.sam_registry import build_sam


@pytest.mark.parametrize(
    ("encoder", "decoder", "expected"),
    [(True, True, (6, 28)), (True, False, (6, 0)), (False, True, (0, 28)), (False, False, (0, 0))],
)
def test_targets_follow_the_arch(encoder: bool, decoder: bool, expected: tuple[int, int]) -> None:
    sam = apply_lora(
        build_sam("tiny", 64), dataclasses.replace(LORA, encoder=encoder, decoder=decoder)
    )
    assert count_lora_modules(sam) == {"image_encoder": expected[0], "mask_decoder": expected[1]}
    wrapped = [n for n, m in sam.named_modules() if isinstance(m, LoraLayer)]
    assert all(
        re.fullmatch(r"image_encoder\.blocks\.\d\.attn\.qkv", n) or ".transformer." in n
        for n in wrapped
    )
    assert not any("patch_embed" in n or n.endswith("attn.proj") for n in wrapped)


def test_rank_and_alpha_are_applied() -> None:
    lora = dataclasses.replace(LORA, rank=3, alpha=12.0)
    sam = apply_lora(build_sam("tiny", 64), lora)
    qkv = sam.image_encoder.blocks[0].attn.qkv
    assert qkv.lora_A["default"].weight.shape == (3, 128)
    assert qkv.lora_B["default"].weight.shape == (384, 3)
    assert qkv.scaling["default"] == 4.0
    assert torch.count_nonzero(qkv.lora_B["default"].weight) == 0


def test_a_renamed_attention_layer_fails_loudly() -> None:
    sam = build_sam("tiny", 64)
    attn = sam.image_encoder.blocks[3].attn
    attn.add_module("qkv_renamed", attn.qkv)
    del attn.qkv
    with pytest.raises(
        RuntimeError, match=r"wrapped \{'image_encoder': 5, 'mask_decoder': 28\}.*implies"
    ):
        apply_lora(sam, LORA)


def test_tiny_trainable_count_by_hand() -> None:
    # tiny: embed 128, depth 6, decoder dim 128 (cross-attention internal 64), 2 classes.
    model = build_fewsam(ModelParams("tiny", None, 64), LORA, 2)
    r = 4
    encoder = 6 * r * (128 + 384)
    self_attn = 4 * r * (128 + 128)
    cross = 3 * r * (128 + 64) + r * (64 + 128)
    decoder = 2 * self_attn + 5 * cross
    mlp = 3 * ((128 * 128 + 128) * 2 + 128 * 16 + 16)
    iou = (128 * 128 + 128) * 2 + 128 * 3 + 3
    upscaling = (128 * 32 * 4 + 32) + 2 * 32 + (32 * 16 * 4 + 16)
    tokens = class_embed = 3 * 128
    expected = encoder + decoder + mlp + iou + upscaling + tokens + class_embed
    assert sum(v.numel() for v in trainable_state_dict(model).values()) == expected


def test_summary_command_prints_the_table(params: Params) -> None:
    result = CliRunner().invoke(
        app, ["train", "summary", "-p", str(REPO / "params.yaml"), "--classes", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "image_encoder LoRA" in result.output and "class_embed" in result.output
    base = dataclasses.replace(params.model, checkpoint=None)
    model = build_fewsam(base, params.lora, 2)
    total = sum(v.numel() for v in trainable_state_dict(model).values())
    assert f"trainable {total:,} of" in result.output


def summary_with(tmp_path: Path, line: str, replacement: str) -> tuple[Result, Path]:
    """`fewsam train summary` on the repository's params with one line replaced."""
    text = (REPO / "params.yaml").read_text()
    assert line in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(line, replacement))
    result = CliRunner().invoke(app, ["train", "summary", "-p", str(path), "--classes", "2"])
    assert result.exit_code == 0, result.output
    return result, path


def test_summary_counts_the_fine_head(tmp_path: Path) -> None:
    result, path = summary_with(tmp_path, "  fine_head: false\n", "  fine_head: true\n")
    assert "full-resolution fine head" in result.output and "fine_head" in result.output
    model = build_fewsam(ModelParams("tiny", None, 256), load_params(path).lora, 2)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable {trained:,} of" in result.output
    plain = build_fewsam(ModelParams("tiny", None, 256), load_params(REPO / "params.yaml").lora, 2)
    head = sum(p.numel() for p in model.fine_head.parameters())
    assert trained == head + sum(p.numel() for p in plain.parameters() if p.requires_grad)


def test_summary_says_full_finetuning(tmp_path: Path) -> None:
    result, path = summary_with(tmp_path, "  finetune: lora\n", "  finetune: full\n")
    assert "full fine-tuning" in result.output and " LoRA" not in result.output.split("\n", 1)[1]
    model = build_fewsam(ModelParams("tiny", None, 256), load_params(path).lora, 2)
    total = sum(p.numel() for p in model.parameters())
    assert f"trainable {total:,} of {total:,}" in result.output
