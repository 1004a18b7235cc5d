"""FewSam against segment_anything's own modules, batching, trainability and gradients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sam_helpers import LORA, write_checkpoint

from core.params import ModelParams
from train.base_weights import load_sam
from train.model import FewSam, build_fewsam, trainable_state_dict
from train.prompts import pad_points

SIZE = 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("base") / "tiny.safetensors", input_size=SIZE)


def fewsam(ckpt: Path, classes: int, lora=LORA) -> FewSam:
    torch.manual_seed(1)  # LoRA A matrices
    return build_fewsam(ModelParams("tiny", str(ckpt), SIZE), lora, classes)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def sam_reference(sam, image: torch.Tensor, point: tuple[float, float] | None) -> torch.Tensor:
    """segment_anything's own modules: 4 masks (single-mask output, then the 3 multimask ones)."""
    embedding = sam.image_encoder(sam.preprocess(image[None] * 255.0))
    # SAM takes integer pixel indices and adds 0.5 itself; FewSam takes pixel-centre coordinates.
    points = None
    if point is not None:
        points = (torch.tensor([[[point[0] - 0.5, point[1] - 0.5]]]), torch.tensor([[1]]))
    sparse, dense = sam.prompt_encoder(points=points, boxes=None, masks=None)
    outs = []
    for multimask in (False, True):
        masks, _ = sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        outs.append(masks)
    return sam.postprocess_masks(torch.cat(outs, dim=1), (SIZE, SIZE), (SIZE, SIZE))[0]


@pytest.mark.parametrize("point", [None, (20.5, 33.5)])
def test_before_training_equals_segment_anything(ckpt: Path, point) -> None:
    # With 3 classes the widened decoder holds SAM's 4 tokens in SAM's order, LoRA B is zero and
    # the class embedding is zero: every output channel must be SAM's corresponding mask.
    model = fewsam(ckpt, 3)
    sam = load_sam("tiny", ckpt, SIZE)
    x = images(2)
    with torch.no_grad():
        if point is None:
            ours = model(x)
        else:
            pts = torch.tensor([[point], [point]], dtype=torch.float32)
            ours = model(x, pts, torch.tensor([[2], [2]]))
        for i in range(2):
            ref = sam_reference(sam, x[i], point)
            torch.testing.assert_close(ours[i], ref, atol=1e-4, rtol=1e-4)
    assert ours.shape == (2, 4, SIZE, SIZE)


def test_prompt_changes_output_and_class_embedding_starts_neutral(ckpt: Path) -> None:
    model = fewsam(ckpt, 3)
    x = images(1)
    pts = torch.tensor([[[20.5, 33.5]]])
    with torch.no_grad():
        free = model(x)
        one = model(x, pts, torch.tensor([[1]]))
        three = model(x, pts, torch.tensor([[3]]))
        torch.testing.assert_close(one, three)  # zero class embedding: same as SAM's positive point
        assert (free - one).abs().max() > 1e-3
        model.class_embed.weight[3] = 1.0
        assert (model(x, pts, torch.tensor([[3]])) - one).abs().max() > 1e-3


def test_widened_decoder_copies_sam_tokens(ckpt: Path) -> None:
    model = fewsam(ckpt, 8)
    sam = load_sam("tiny", ckpt, SIZE)
    dec, ref = model.sam.mask_decoder, sam.mask_decoder
    source = [0, 1, 2, 3, 1, 2, 3, 1, 2]  # background from token 0, classes cycle tokens 1-3
    torch.testing.assert_close(
        dec.mask_tokens.weight, ref.mask_tokens.weight[source], rtol=0, atol=0
    )
    for k, s in enumerate(source):
        for a, b in zip(
            dec.output_hypernetworks_mlps[k].parameters(),
            ref.output_hypernetworks_mlps[s].parameters(),
            strict=True,
        ):
            assert torch.equal(a, b)
    assert torch.equal(
        dec.iou_prediction_head.layers[-1].weight, ref.iou_prediction_head.layers[-1].weight[source]
    )
    assert model.decode(model.embed(images(1))).shape == (1, 9, SIZE, SIZE)


def test_batched_equals_one_by_one(ckpt: Path) -> None:
    model = fewsam(ckpt, 4)
    with torch.no_grad():  # make the class embedding matter
        model.class_embed.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    x = images(3, seed=5)
    sets = [
        (torch.tensor([[10.5, 12.5], [40.5, 50.5], [33.0, 7.0]]), torch.tensor([1, 4, 2])),
        (torch.tensor([[60.5, 3.5]]), torch.tensor([3])),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64)),  # no class present
    ]
    pts, labels = pad_points([(p.numpy(), c.numpy()) for p, c in sets])
    assert labels.tolist()[1] == [3, -1, -1]
    with torch.no_grad():
        batched = model(x, pts, labels)
        for i, (p, c) in enumerate(sets):
            if len(c):
                alone = model(x[i : i + 1], p[None], c[None])
            else:
                alone = model(x[i : i + 1])  # all padding decodes as prompt-free
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-5)
        free = model(x)
        torch.testing.assert_close(free[2], batched[2], atol=1e-5, rtol=1e-5)
        assert (free[1] - batched[1]).abs().max() > 1e-3


def test_only_lora_and_heads_are_trainable(ckpt: Path) -> None:
    model = fewsam(ckpt, 2)
    heads = ("mask_tokens", "output_hypernetworks_mlps", "iou_prediction_head", "output_upscaling")
    for name, p in model.named_parameters():
        is_head = name.startswith("sam.mask_decoder.") and name.split(".")[2] in heads
        wanted = "lora_" in name or is_head or name.startswith("class_embed.")
        assert p.requires_grad == wanted, name
    assert set(trainable_state_dict(model)) == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    lora_b = [n for n in trainable_state_dict(model) if "lora_B" in n]
    assert len(lora_b) == 6 + 28  # tiny depth 6 (qkv) + 7 decoder attentions x 4 projections
    encoder_only = fewsam(ckpt, 2, dataclasses.replace(LORA, decoder=False))
    names = [n for n in trainable_state_dict(encoder_only) if "lora_" in n]
    assert names and all(n.startswith("sam.image_encoder.") for n in names)


def test_gradients_reach_every_adapter(ckpt: Path) -> None:
    model = fewsam(ckpt, 3).train()
    x = images(2, seed=7)
    pts, labels = pad_points(
        [
            (torch.tensor([[20.5, 20.5]]).numpy(), torch.tensor([1]).numpy()),
            (torch.tensor([[40.5, 9.5], [8.5, 50.5]]).numpy(), torch.tensor([2, 3]).numpy()),
        ]
    )
    target = torch.randint(0, 4, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    params = dict(trainable_state_dict(model))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD(params.values(), lr=0.1)

    def step() -> None:
        opt.zero_grad()
        logits = model(x, pts, labels)
        _, iou = model.decode_low_res(model.embed(x), pts, labels)
        (F.cross_entropy(logits, target) + iou.square().mean()).backward()

    step()
    for name, p in params.items():
        g = p.grad
        if "lora_A" in name:
            # B starts at zero, so A gets no gradient on the first step (LoRA by design).
            assert g is None or g.abs().max() == 0, name
        elif name == "class_embed.weight":
            assert g[1:].abs().min(dim=1).values.min() > 0 and g[0].abs().max() == 0
        else:
            assert g is not None and g.abs().max() > 0, name
    opt.step()
    step()
    for name, p in params.items():
        if "lora_A" in name:
            assert p.grad.abs().max() > 0, name


def test_fine_head_starts_neutral_trains_and_needs_the_images(ckpt: Path) -> None:
    plain = fewsam(ckpt, 2)
    model = fewsam(ckpt, 2, dataclasses.replace(LORA, fine_head=True))
    x = images(2, seed=3)
    pts, labels = torch.tensor([[[20.5, 30.5]], [[40.5, 9.5]]]), torch.tensor([[1], [2]])
    with torch.no_grad():
        # Zero-initialized last layer: before training the head changes nothing.
        torch.testing.assert_close(model(x, pts, labels), plain(x, pts, labels))
        torch.testing.assert_close(model(x), plain(x))
    head = {n for n, p in model.named_parameters() if n.startswith("fine_head.")}
    assert head and head <= set(trainable_state_dict(model))
    assert not any(n.startswith("fine_head.") for n, _ in plain.named_parameters())
    model.train()
    target = torch.randint(0, 3, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    F.cross_entropy(model(x, pts, labels), target).backward()
    last = model.fine_head.net[4]
    assert last.weight.grad is not None and last.weight.grad.abs().max() > 0
    with torch.no_grad():
        last.weight.normal_(std=0.1)
        emb = model.embed(x)
        # The correction depends on the image itself, not only on the coarse logits.
        assert not torch.equal(
            model.decode(emb, None, None, x), model.decode(emb, None, None, 1 - x)
        )
        with pytest.raises(ValueError, match="fine head"):
            model.decode(emb)


def test_bad_inputs_are_refused(ckpt: Path) -> None:
    model = fewsam(ckpt, 2)
    with pytest.raises(ValueError, match="B x 3 x 64 x 64"):
        model(torch.rand(1, 3, 32, 32))
    emb = model.embed(images(1))
    with pytest.raises(ValueError, match="1..2"):
        model.decode(emb, torch.zeros(1, 1, 2), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="1..2"):
        model.decode(emb, torch.zeros(1, 1, 2), torch.tensor([[3]]))
