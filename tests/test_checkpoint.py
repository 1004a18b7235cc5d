"""Loading base SAM weights: formats, wrong arch, refused pickles, position-table interpolation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sam_helpers import perturbed_state, write_checkpoint
from segment_anything.modeling.image_encoder import get_rel_pos

from core.errors import InputError
from train import sam_registry
from train.base_weights import describe_arch, load_sam, sha256_file


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    path = write_checkpoint(tmp_path / f"tiny{suffix}", input_size=64)
    sam = load_sam("tiny", path, 64)
    for key, value in perturbed_state(input_size=64).items():
        assert torch.equal(sam.state_dict()[key], value), key
    assert not sam.training


def test_random_base_is_reproducible() -> None:
    a, b = load_sam("tiny", None, 64), load_sam("tiny", None, 64)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_interpolation_when_input_size_differs(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "tiny.safetensors", input_size=64)  # grid 4
    state = perturbed_state(input_size=64)
    sam = load_sam("tiny", path, 256)  # grid 16
    assert sam.image_encoder.pos_embed.shape == (1, 16, 16, 128)
    for i, block in enumerate(sam.image_encoder.blocks):
        old = state[f"image_encoder.blocks.{i}.attn.rel_pos_h"]
        new = block.attn.rel_pos_h
        if i in sam_registry.ARCHS["tiny"].global_attn_indexes:
            assert old.shape[0] == 7 and new.shape[0] == 31
            # The same resize SAM's get_rel_pos would do at run time from the original table.
            torch.testing.assert_close(get_rel_pos(16, 16, new), get_rel_pos(16, 16, old))
        else:  # windowed blocks: table size set by the 8 x 8 window, kept as is
            assert torch.equal(new, old)
    # A constant position field stays constant under bicubic resizing.
    flat = dict(state, **{"image_encoder.pos_embed": torch.full((1, 4, 4, 128), 0.3)})
    save_file(flat, str(tmp_path / "flat.safetensors"))
    pos = load_sam("tiny", tmp_path / "flat.safetensors", 128).image_encoder.pos_embed
    torch.testing.assert_close(pos, torch.full((1, 8, 8, 128), 0.3))
    with torch.no_grad():
        assert sam.image_encoder(torch.zeros(1, 3, 256, 256)).shape == (1, 128, 16, 16)


def test_equal_sizes_copy_tables_untouched(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "tiny.safetensors", input_size=128)
    sam = load_sam("tiny", path, 128)
    state = perturbed_state(input_size=128)
    assert torch.equal(sam.image_encoder.pos_embed, state["image_encoder.pos_embed"])
    assert torch.equal(
        sam.image_encoder.blocks[2].attn.rel_pos_w, state["image_encoder.blocks.2.attn.rel_pos_w"]
    )


def _fake_vit_b() -> dict[str, torch.Tensor]:
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(768) for i in range(12)})
    return state


def test_checkpoint_of_another_arch_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sam_vit_b.pth"
    torch.save(_fake_vit_b(), path)
    with pytest.raises(
        InputError,
        match=r"sam_vit_b.pth: .*model.arch tiny.*look like vit_b \(embed dim 768, 12 blocks\)",
    ):
        load_sam("tiny", path, 64)
    # A real small model of another registered size is recognized from its own tensors.
    mini = sam_registry.ArchSpec(
        64,
        4,
        2,
        (1, 3),
        prompt_embed_dim=128,
        window_size=8,
        decoder_mlp_dim=512,
        iou_hidden_dim=128,
        native_size=64,
    )
    monkeypatch.setitem(sam_registry.ARCHS, "mini", mini)
    other = write_checkpoint(tmp_path / "mini.safetensors", arch="mini", input_size=64)
    with pytest.raises(InputError, match="look like mini"):
        load_sam("tiny", other, 64)
    monkeypatch.delitem(sam_registry.ARCHS, "mini")
    with pytest.raises(InputError, match=r"unknown SAM size \(embed dim 64, 4 blocks\)"):
        load_sam("tiny", other, 64)


def test_same_arch_with_missing_weights(tmp_path: Path) -> None:
    state = perturbed_state(input_size=64)
    del state["mask_decoder.iou_token.weight"]
    save_file(state, str(tmp_path / "cut.safetensors"))
    with pytest.raises(InputError, match="1 missing .*iou_token"):
        load_sam("tiny", tmp_path / "cut.safetensors", 64)


def test_not_sam_or_missing_or_corrupt(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pth")
    with pytest.raises(InputError, match="no SAM image encoder"):
        load_sam("tiny", tmp_path / "resnet.pth", 64)
    with pytest.raises(InputError, match="not found"):
        load_sam("tiny", tmp_path / "absent.pth", 64)
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="junk.pth: not a readable PyTorch checkpoint"):
        load_sam("tiny", tmp_path / "junk.pth", 64)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="junk.safetensors: not a readable safetensors"):
        load_sam("tiny", tmp_path / "junk.safetensors", 64)


class _CreatesFile:
    """Unpickling this calls open(path, 'w'), creating the file: a stand-in for any payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_payload_does_not_execute(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    ckpt = tmp_path / "evil.pth"
    state = perturbed_state(input_size=64)
    state["image_encoder.neck.0.weight"] = _CreatesFile(marker)  # type: ignore[assignment]
    torch.save(state, ckpt)
    with pytest.raises(InputError, match="evil.pth: refused"):
        load_sam("tiny", ckpt, 64)
    assert not marker.exists()


def test_sha256_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_describe_arch() -> None:
    assert describe_arch(_fake_vit_b()).startswith("vit_b ")
    assert describe_arch(perturbed_state(input_size=64)) == "tiny (embed dim 128, 6 blocks)"
