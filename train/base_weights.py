"""Base SAM weights: load an official `.pth` or a `.safetensors` into a model of a named size.

Both formats hold `Sam.state_dict()` key names (`image_encoder.pos_embed`, ...). `.pth` files are
read with `torch.load(weights_only=True)`, so a pickle that carries code is refused, not run.

When the model's input side differs from the one the weights were made for, the absolute
position embedding (1 x g x g x D, one vector per 16 px patch) is resized bicubically, and the
relative-position tables of the global-attention blocks ((2g - 1) x head_dim) are resized
linearly, exactly as SAM's own `get_rel_pos` would resize them at run time. Windowed blocks keep
their tables: their size depends on the window, not on the input. Equal sizes copy the weights
untouched, so `input_size: 1024` gives SAM's own numbers.

MedSAM's `medsam_vit_b.pth` is a SAM vit_b state dict (MedSAM fine-tuned every SAM weight, the
key names are SAM's), plain or under a `model` key as MedSAM's training script saves it; it loads
as `model.arch: medsam_vit_b` (vit_b with MedSAM's [0, 1] input) and as `vit_b` alike. LiteMedSAM (`model.arch: litemedsam`) has a TinyViT encoder with
neither position table: it is loaded as it is, at its only input size (256 px).
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from segment_anything.modeling import Sam

from core.errors import InputError
from train.sam_registry import ARCHS, LITEMEDSAM, PATCH_SIZE, build_sam, vit_arch

POS_EMBED = "image_encoder.pos_embed"
_BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.")
# TinyViT (LiteMedSAM, MobileSAM) keeps its attention blocks under stages: layers.N.blocks.M.
_TINY_VIT = re.compile(r"^image_encoder\.layers\.\d+\.blocks\.\d+\.attn\.qkv\.weight$")
# A random base (model.checkpoint: null) is drawn from this seed, so it can be rebuilt exactly
# when an adapter trained on it is loaded again.
RANDOM_BASE_SEED = 0


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or `.pth` file (plain or under a `model` key), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found (fetch it with `fewsam train fetch-weights`)")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise InputError(path, f"not a readable safetensors file ({e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep torch's reason (e.g. "unsupported GLOBAL posix.system"), not its advice to retry
        # with weights_only=False.
        lines = [
            ln.strip().rstrip(".") for ln in str(e).splitlines() if "unsupported" in ln.lower()
        ]
        reason = lines[0].split(". ")[0] if lines else "weights-only unpickling failed"
        if "GLOBAL" in reason:
            raise InputError(
                path, f"refused: holds pickled objects other than tensors, not loaded ({reason})"
            ) from None
        raise InputError(path, f"not a readable PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise InputError(path, f"not a readable PyTorch checkpoint ({e})") from None
    if isinstance(state, dict) and POS_EMBED not in state and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "not a state dict of tensors")
    return state


def describe_arch(state: dict[str, torch.Tensor]) -> str:
    """Which registered size a SAM state dict looks like, from its embed dim and block count."""
    if any(_TINY_VIT.match(k) for k in state):
        return f"{LITEMEDSAM} (a TinyViT image encoder)"
    if POS_EMBED in state:
        dim = state[POS_EMBED].shape[-1]
    elif "image_encoder.patch_embed.proj.weight" in state:
        dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
    else:
        return "no SAM image encoder (no image_encoder.* weights)"
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    depth = max(blocks) + 1 if blocks else 0
    found = [n for n, s in ARCHS.items() if s.embed_dim == dim and s.depth == depth]
    shape = f"embed dim {dim}, {depth} blocks"
    return f"{found[0]} ({shape})" if found else f"an unknown SAM size ({shape})"


def _resize_pos_embed(table: torch.Tensor, grid: int) -> torch.Tensor:
    """1 x h x w x D -> 1 x grid x grid x D, bicubic."""
    if tuple(table.shape[1:3]) == (grid, grid):
        return table
    x = table.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).to(table.dtype).contiguous()


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """L x C -> length x C, linear, the same resize SAM's `get_rel_pos` applies at run time."""
    if table.shape[0] == length:
        return table
    x = table.float().t().unsqueeze(0)  # 1 x C x L
    x = F.interpolate(x, size=length, mode="linear")
    return x[0].t().to(table.dtype).contiguous()


def adapt_to_input_size(
    state: dict[str, torch.Tensor], arch: str, input_size: int
) -> dict[str, torch.Tensor]:
    """`state` with the size-dependent tables resized for `input_size` (a new dict)."""
    grid = input_size // PATCH_SIZE
    out = dict(state)
    if POS_EMBED in out:
        out[POS_EMBED] = _resize_pos_embed(out[POS_EMBED], grid)
    # Global blocks come from the registry's global_attn_indexes, not from table shapes or names.
    for i in ARCHS[vit_arch(arch)].global_attn_indexes:
        for axis in ("h", "w"):
            key = f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"
            if key in out:
                out[key] = _resize_rel_pos(out[key], 2 * grid - 1)
    return out


def _check_fits(path: Path, state: dict[str, torch.Tensor], sam: Sam, arch: str) -> None:
    expected = sam.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    if not (missing or unexpected or wrong):
        return
    looks = describe_arch(state)
    if not looks.startswith(f"{vit_arch(arch)} "):
        raise InputError(path, f"weights do not fit model.arch {arch}: they look like {looks}")
    detail = [
        f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
        f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
        f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else "",
    ]
    raise InputError(path, f"{arch} weights that do not fit: " + ", ".join(d for d in detail if d))


def load_sam(arch: str, checkpoint: str | Path | None, input_size: int) -> Sam:
    """A SAM of size `arch` for `input_size` px inputs, with the checkpoint's weights.

    `checkpoint=None` gives random weights drawn from a fixed seed (the same on every call). The
    model is returned in eval mode on the CPU.
    """
    if checkpoint is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_BASE_SEED)
            sam = build_sam(arch, input_size)
        return sam.eval()
    sam = build_sam(arch, input_size)
    if arch != LITEMEDSAM:
        blocks = sam.image_encoder.blocks
        global_blocks = tuple(i for i, b in enumerate(blocks) if b.window_size == 0)
        assert global_blocks == ARCHS[vit_arch(arch)].global_attn_indexes, "registry disagrees"
    path = Path(checkpoint)
    state = read_state_dict(path)
    spec = ARCHS.get(vit_arch(arch))
    if spec is not None and POS_EMBED in state and state[POS_EMBED].shape[-1] == spec.embed_dim:
        state = adapt_to_input_size(state, arch, input_size)
    _check_fits(path, state, sam, arch)
    sam.load_state_dict(state, strict=True)
    return sam.eval()
