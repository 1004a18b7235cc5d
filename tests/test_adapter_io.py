"""Saving and reloading an adapter: identical outputs, and refusals of what does not fit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sam_helpers import LORA, write_checkpoint

from core.errors import InputError
from core.params import LoraParams, ModelParams
from train.adapter_io import load_adapter, save_adapter
from train.base_weights import sha256_file
from train.model import FewSam, build_fewsam, trainable_state_dict

SIZE = 64


def trained(checkpoint: Path | None, classes: int = 3, lora: LoraParams = LORA) -> FewSam:
    """A model whose every trained tensor moved away from its initial value."""
    torch.manual_seed(0)
    model = build_fewsam(ModelParams("tiny", checkpoint and str(checkpoint), SIZE), lora, classes)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainable_state_dict(model).values():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def outputs(model: FewSam) -> torch.Tensor:
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    pts = torch.tensor([[[10.5, 20.5]], [[40.5, 30.5]]])
    with torch.no_grad():
        return torch.cat([model(x, pts, torch.tensor([[1], [3]])), model(x)])


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_reload_gives_identical_outputs(tmp_path: Path, with_checkpoint: bool) -> None:
    ckpt = write_checkpoint(tmp_path / "base.safetensors") if with_checkpoint else None
    model = trained(ckpt).eval()
    out = tmp_path / "adapter"
    save_adapter(model, out, {"params_hash": "abc", "arch": "overridden"})
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["params_hash"] == "abc" and config["arch"] == "tiny"
    assert config["num_classes"] == 3 and config["input_size"] == SIZE
    assert config["lora"] == {
        "rank": 4,
        "alpha": 8.0,
        "dropout": 0.0,
        "encoder": True,
        "decoder": True,
        "finetune": "lora",
        "fine_head": False,
    }
    assert config["base_sha256"] == (sha256_file(ckpt) if ckpt else None)
    stored = load_file(str(out / "adapter.safetensors"))
    assert set(stored) == set(trainable_state_dict(model))  # only what was trained
    reloaded, _ = load_adapter(out)
    assert torch.equal(outputs(reloaded), outputs(model))
    assert not torch.equal(
        outputs(reloaded),
        outputs(build_fewsam(ModelParams("tiny", ckpt and str(ckpt), SIZE), LORA, 3)),
    )


def test_full_finetuning_trains_and_stores_every_weight(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "base.safetensors")
    full = dataclasses.replace(LORA, finetune="full")
    model = trained(ckpt, lora=full).eval()
    names = {n for n, _ in model.named_parameters()}
    assert set(trainable_state_dict(model)) == names  # every weight, base included
    assert not any("lora_" in n for n in names)  # and no adapters
    out = tmp_path / "adapter"
    save_adapter(model, out, {})
    assert json.loads((out / "config.json").read_text())["lora"]["finetune"] == "full"
    assert set(load_file(str(out / "adapter.safetensors"))) == names
    reloaded, _ = load_adapter(out)
    assert torch.equal(outputs(reloaded), outputs(model))


def test_fine_head_is_stored_and_reloaded(tmp_path: Path) -> None:
    head = dataclasses.replace(LORA, fine_head=True)
    model = trained(None, lora=head).eval()
    out = tmp_path / "adapter"
    save_adapter(model, out, {})
    stored = load_file(str(out / "adapter.safetensors"))
    assert {n for n in stored if n.startswith("fine_head.")} == {
        f"fine_head.net.{i}.{kind}" for i in (0, 2, 4) for kind in ("weight", "bias")
    }
    reloaded, _ = load_adapter(out)
    assert reloaded.fine_head is not None
    assert torch.equal(outputs(reloaded), outputs(model))
    # The head's trained weights are what the reloaded model's outputs depend on.
    with torch.no_grad():
        reloaded.fine_head.net[4].weight.zero_()
    assert not torch.equal(outputs(reloaded), outputs(model))


def test_config_without_finetune_loads_as_lora(tmp_path: Path) -> None:
    """Adapters written before `lora.finetune` and `lora.fine_head` existed: LoRA, no head."""
    model = trained(None).eval()
    out = tmp_path / "adapter"
    save_adapter(model, out, {})
    config = json.loads((out / "config.json").read_text())
    del config["lora"]["finetune"], config["lora"]["fine_head"]
    (out / "config.json").write_text(json.dumps(config))
    reloaded, _ = load_adapter(out)
    assert reloaded.lora.finetune == "lora" and reloaded.fine_head is None
    assert torch.equal(outputs(reloaded), outputs(model))


def test_saving_again_replaces_and_never_deletes_other_files(tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    save_adapter(trained(None), out, {})
    save_adapter(trained(None, classes=2), out, {})
    assert load_adapter(out)[1]["num_classes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp folders left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds other files"):
        save_adapter(trained(None), out, {})
    assert (out / "notes.txt").exists()


def test_refusals(tmp_path: Path) -> None:
    base = write_checkpoint(tmp_path / "base.safetensors", seed=0)
    other = write_checkpoint(tmp_path / "other.safetensors", seed=1)
    out = tmp_path / "adapter"
    save_adapter(trained(base), out, {})
    with pytest.raises(InputError, match="other.safetensors: SHA-256 differs"):
        load_adapter(out, checkpoint=str(other))
    with pytest.raises(InputError, match="num_classes 3, expected 8"):
        load_adapter(out, num_classes=8)
    with pytest.raises(InputError, match="input_size 64, expected 256"):
        load_adapter(out, input_size=256)
    with pytest.raises(InputError, match="config.json: not found"):
        load_adapter(tmp_path)
    # Tensors from a 3-class model under a config that says 5 classes.
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "num_classes": 5}))
    with pytest.raises(InputError, match="adapter.safetensors: holds 3 classes, its config says 5"):
        load_adapter(out)
    (out / "config.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(InputError, match="not a fewsam adapter"):
        load_adapter(out)
    (out / "config.json").write_text(json.dumps(config))
    save_file({"x": torch.zeros(1)}, str(out / "adapter.safetensors"))
    with pytest.raises(InputError, match="tensors do not match"):
        load_adapter(out)
