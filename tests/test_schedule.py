"""Warmup + polynomial decay, values worked out by hand; AdamW parameter groups."""

from __future__ import annotations

import pytest
import torch
from conftest import replace_section

from core.params import Params, TrainParams
from train.schedule import lr_at, make_optimizer


@pytest.fixture
def tp(params: Params) -> TrainParams:
    # M = 110, W = 10, power 2: decay steps are 100, so hand values are round.
    return replace_section(
        params, "train", max_steps=110, warmup_steps=10, lr=1e-3, poly_power=2.0
    ).train


def test_warmup(tp: TrainParams) -> None:
    assert lr_at(0, tp) == pytest.approx(1e-4)  # (0 + 1) / 10
    assert lr_at(4, tp) == pytest.approx(5e-4)
    assert lr_at(9, tp) == pytest.approx(1e-3)  # last warmup step reaches lr


def test_polynomial_decay(tp: TrainParams) -> None:
    assert lr_at(10, tp) == pytest.approx(1e-3)  # decay starts at lr
    assert lr_at(60, tp) == pytest.approx(1e-3 * 0.5**2)  # halfway: 2.5e-4
    assert lr_at(109, tp) == pytest.approx(1e-3 * 0.01**2)  # last step: 1e-7
    assert lr_at(110, tp) == 0.0


def test_default_power_and_no_warmup(params: Params) -> None:
    tp = replace_section(
        params, "train", max_steps=100, warmup_steps=0, lr=2e-3, poly_power=0.9
    ).train
    assert lr_at(0, tp) == pytest.approx(2e-3)
    assert lr_at(75, tp) == pytest.approx(2e-3 * 0.25**0.9)
    with pytest.raises(ValueError):
        lr_at(-1, tp)


def test_weight_decay_only_on_matrices(tp: TrainParams) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)
    opt = make_optimizer(model.named_parameters(), tp)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert decay["weight_decay"] == tp.weight_decay and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 2  # linear bias, norm bias (the frozen gain is left out)
