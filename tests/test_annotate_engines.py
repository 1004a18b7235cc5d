"""The click rules of the engines whose model takes no negative clicks (annotate.engines.carve,
BoxSamEngine), on masks whose answer is known by hand; the adapter engine against its model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from sam_helpers import LORA
from scipy import ndimage

from annotate.engines import AdapterEngine, BoxSamEngine, Prompt, carve
from core.params import ModelParams
from train.base_weights import load_sam
from train.inputs import to_sam_input
from train.model import build_fewsam


def disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return (cols - cx) ** 2 + (rows - cy) ** 2 <= r * r


def test_a_negative_click_takes_the_error_not_the_organ() -> None:
    """An organ (disc at x 20, radius 8) with a false positive touching it (disc at x 34, radius
    6): a negative click in the error removes the pixels nearer to it than to the positive
    click, and keeps the organ."""
    organ = disc((40, 50), 20, 20, 8)
    error = disc((40, 50), 34, 20, 6)
    mask = organ | error
    assert ndimage.label(mask)[1] == 1  # one connected part: removing it whole loses the organ
    cols = np.indices(mask.shape)[1]
    out = carve(mask, Prompt(1, None, ((20.0, 20.0, 1), (34.0, 20.0, 0))))
    # The split is the bisector x = 27: the organ up to it stays, everything beyond goes (the
    # organ's single pixel at x 28 is nearer to the negative click).
    np.testing.assert_array_equal(out, mask & (cols <= 27))
    assert out[organ].mean() > 0.99
    # Without a positive click the whole part goes; a click outside the mask changes nothing.
    assert not carve(mask, Prompt(1, None, ((34.0, 20.0, 0),))).any()
    np.testing.assert_array_equal(carve(mask, Prompt(1, None, ((2.0, 2.0, 0),))), mask)


def test_the_box_centre_counts_as_positive() -> None:
    organ = disc((40, 50), 20, 20, 8)
    error = disc((40, 50), 34, 20, 6)
    cols = np.indices(organ.shape)[1]
    out = carve(organ | error, Prompt(1, (12.0, 12.0, 28.0, 28.0), ((34.0, 20.0, 0),)))
    np.testing.assert_array_equal(out, (organ | error) & (cols <= 27))


def test_box_engine_grows_the_box_to_a_positive_click() -> None:
    """The box SAM answers the box alone; a positive click outside it grows the box."""
    sam = load_sam("tiny", REPO / "models" / "base" / "tiny_sam.safetensors", 256)
    engine = BoxSamEngine(sam, "box-only")
    image = np.zeros((1, 64, 64), np.float32)
    image[0, 10:30, 10:30] = 0.8
    image[0, 10:30, 40:60] = 0.8
    emb = engine.embed(image)
    small = engine.predict(emb, Prompt(1, (10.0, 10.0, 29.0, 29.0)), None)
    grown = engine.predict(emb, Prompt(1, (10.0, 10.0, 29.0, 29.0), ((50.0, 20.0, 1),)), None)
    direct = engine.predict(emb, Prompt(1, (10.0, 10.0, 50.0, 29.0)), None)
    np.testing.assert_array_equal(grown.mask, direct.mask)
    assert not np.array_equal(small.mask, grown.mask)
    # The previous logits are never fed back to it, and it returns none.
    again = engine.predict(emb, Prompt(1, (10.0, 10.0, 29.0, 29.0)), torch.zeros(1, 1, 64, 64))
    np.testing.assert_array_equal(again.mask, small.mask)
    assert small.logits is None


@pytest.mark.parametrize("fine_head", [False, True])
def test_adapter_engine_answers_a_click_as_its_model(fine_head: bool) -> None:
    """A click of class 2 on a 48 x 40 slice: the engine's mask is where the model's class-2
    output wins, with the model fed the same input (and, with a fine head, that input's image)."""
    torch.manual_seed(0)
    lora = dataclasses.replace(LORA, fine_head=fine_head)
    model = build_fewsam(ModelParams("tiny", None, 64), lora, 3).eval()
    if model.fine_head is not None:
        with torch.no_grad():
            model.fine_head.net[4].weight.normal_(std=0.5)  # a head that changes the answer
    image = np.random.default_rng(0).random((3, 48, 40), dtype=np.float32)
    engine = AdapterEngine(model)
    answer = engine.predict(engine.embed(image), Prompt(2, None, ((10.0, 30.0, 1),)), None)
    x = to_sam_input(image[None], 64)
    # Pixel (10, 30) of the slice is the square [10, 11) x [30, 31); its centre on the 64 px input:
    point = torch.tensor([[[10.5 * 64 / 40, 30.5 * 64 / 48]]])
    with torch.no_grad():
        logits = F.interpolate(model(x, point, torch.tensor([[2]])), (48, 40), mode="bilinear")
    expected = carve((logits[0].argmax(dim=0) == 2).numpy(), Prompt(2, None, ((10.0, 30.0, 1),)))
    assert answer.mask.shape == (48, 40)
    np.testing.assert_array_equal(answer.mask, expected)
