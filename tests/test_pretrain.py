"""Pretraining of the tiny base model: generated shapes, prompts, losses, loop, resume, export."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import pretrain.loop as pretrain_loop
from core.errors import InputError
from core.params import Params, PretrainParams
from pretrain.loop import LOG_FILE, STATE_FILE, cosine_lr, new_model, pretrain, run
from pretrain.loss import dice_loss, focal_loss, mask_iou, sam_loss
from pretrain.prompts import (
    Prompts,
    center_point,
    corrective_prompts,
    initial_prompts,
    pick_instances,
)
from pretrain.scoring import decode, embed
from pretrain.shapes import MIN_AREA, sample
from train.base_weights import load_sam


def _small(params: Params, **changes: object) -> PretrainParams:
    """Settings for a loop of a few seconds."""
    base = dict(steps=4, batch_size=2, instances=2, corrective_rounds=1, warmup_steps=1)
    base.update(save_every=2, eval_images=2, eval_every=0, threads=1, minutes=0.0, device="cpu")
    return dataclasses.replace(params.pretrain, **{**base, **changes})


def record_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indices of the optimizer steps this process executes from now on, in order."""
    executed: list[int] = []
    step_fn = pretrain_loop.pretrain_step

    def recording(sam: object, optimizer: object, seed: int, step: int, *rest: object) -> object:
        executed.append(step)
        return step_fn(sam, optimizer, seed, step, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(pretrain_loop, "pretrain_step", recording)
    return executed


def killed_at(step: int) -> object:
    """`pretrain_step` that dies at optimizer step `step`, as a kill would: no final checkpoint."""
    step_fn = pretrain_loop.pretrain_step

    def dying(sam: object, optimizer: object, seed: int, index: int, *rest: object) -> object:
        if index == step:
            raise RuntimeError("killed")
        return step_fn(sam, optimizer, seed, index, *rest)  # type: ignore[arg-type]

    return dying


def seconds_column(lines: list[str]) -> list[float]:
    return [float(line.split(",")[-1]) for line in lines[1:]]


def test_shapes_are_deterministic_per_seed_and_index() -> None:
    image, labels = sample(3, 5)
    again_image, again_labels = sample(3, 5)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(labels, again_labels)
    assert not np.array_equal(sample(3, 6)[0], image)
    assert not np.array_equal(sample(4, 5)[0], image)
    assert not np.array_equal(sample(3, 5, held_out=True)[0], image)
    easy, easy_labels = sample(3, 5, difficulty=0.0)
    np.testing.assert_array_equal(easy, sample(3, 5, difficulty=0.0)[0])
    assert not np.array_equal(easy, image)
    np.testing.assert_array_equal(easy_labels, labels)  # the curriculum changes looks, not shapes


def test_shapes_labels_match_the_image() -> None:
    grey = 0
    contrasts = []
    for index in range(12):
        image, labels = sample(0, index)
        assert image.shape == (3, 256, 256) and image.dtype == np.float32
        assert labels.shape == (256, 256) and labels.dtype == np.int32
        assert 0.0 <= image.min() and image.max() <= 1.0
        grey += bool(np.array_equal(image[0], image[1]) and np.array_equal(image[0], image[2]))
        ids = np.unique(labels)
        assert ids[0] == 0 and list(ids[1:]) == list(range(1, labels.max() + 1))
        for i in ids[1:]:
            mask = labels == i
            assert mask.sum() >= MIN_AREA
            assert ndimage.label(mask)[1] == 1  # one connected piece per instance
            if mask.sum() >= 200:
                ring = ndimage.binary_dilation(mask, iterations=3) & ~mask
                contrasts.append(abs(image[:, mask].mean() - image[:, ring].mean()))
    assert 0 < grey < 12  # mostly grayscale, some colour
    # Every shape is painted with a contrast of at least 0.03 against what it covers.
    assert np.median(contrasts) > 0.03 and np.mean(np.array(contrasts) > 0.005) > 0.9


def test_prompts_follow_the_masks() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int32)
    labels[10:30, 10:30] = 1
    labels[40:44, 40:44] = 2  # under min_area 20: never picked
    masks = pick_instances(rng, labels, 3, min_area=20)
    assert masks.shape == (3, 64, 64) and all(m.sum() == 400 for m in masks)
    assert center_point(masks[0]) in [(19, 19), (19, 20), (20, 19), (20, 20)]
    box = initial_prompts(rng, masks, 1.0, 0.0, 3, 0.1).boxes
    assert box is not None and np.abs(box - [10, 10, 29, 29]).max() <= 20 * 0.1 * 4 + 1e-6
    first = initial_prompts(rng, masks, 0.0, 0.0, 3, 0.1)
    assert first.multimask and first.points.shape == (3, 1, 2)
    x, y = first.points[0, 0].astype(int)
    assert masks[0, y, x]
    predicted = np.zeros_like(masks)  # everything missed: the new point must be positive
    second = corrective_prompts(rng, first, predicted, masks)
    assert second.points.shape == (3, 2, 2) and (second.labels[:, 1] == 1).all()
    assert not second.multimask
    third = corrective_prompts(rng, second, masks | (labels == 2)[None], masks)
    x, y = third.points[0, 2].astype(int)
    assert third.labels[0, 2] == 0 and labels[y, x] == 2  # negative in the false positive


def test_losses_by_hand() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    perfect = (target * 2 - 1) * 50
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(focal_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(mask_iou(perfect, target)) == 1.0
    # Logits 0: p = 0.5, BCE = ln 2, focal = alpha_t * ln 2 * 0.25, averaged over both classes.
    expected = (0.25 + 0.75) / 2 * math.log(2) * 0.25
    assert float(focal_loss(torch.zeros(1, 1, 4, 4), target)) == pytest.approx(expected)
    three = torch.cat([-perfect, perfect, torch.zeros_like(perfect)], dim=1)
    parts = sam_loss(three, torch.tensor([[0.0, 1.0, 0.5]]), target, 20.0, 1.0, 1.0)
    assert int(parts.chosen[0]) == 1  # the best of the three is the one trained
    assert float(parts.iou_mse) == pytest.approx((0.0 + 0.0 + 0.5**2) / 3)


def test_batched_decode_matches_sams_decoder_per_image() -> None:
    """decode() of prompts from several images at once = SAM's MaskDecoder, image by image."""
    sam = new_model(0).eval()
    images = torch.from_numpy(np.stack([sample(0, i)[0] for i in range(2)]))
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 255, (4, 2, 2)).astype(np.float32)
    labels = np.array([[1, 0], [1, -1], [1, 1], [0, 1]], np.float32)
    owner = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        embeddings = embed(sam, images)
        for multimask in (True, False):
            got, got_iou = decode(
                sam, embeddings[owner], Prompts(points, labels, None, multimask), None
            )
            for i in range(4):
                sparse, dense = sam.prompt_encoder(
                    points=(
                        torch.from_numpy(points[i : i + 1]),
                        torch.from_numpy(labels[i : i + 1]),
                    ),
                    boxes=None,
                    masks=None,
                )
                want, want_iou = sam.mask_decoder(
                    image_embeddings=embeddings[owner[i]][None],
                    image_pe=sam.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
                torch.testing.assert_close(got[i : i + 1], want, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(got_iou[i : i + 1], want_iou, rtol=1e-4, atol=1e-4)


def test_schedule(params: Params) -> None:
    p = dataclasses.replace(params.pretrain, steps=100, warmup_steps=10, lr=1.0)
    assert cosine_lr(0, p) == pytest.approx(0.1) and cosine_lr(9, p) == pytest.approx(1.0)
    assert cosine_lr(55, p) == pytest.approx(0.5) and cosine_lr(100, p) == pytest.approx(0.0)


def test_loop_learns_finitely_and_resumes_exactly(
    params: Params,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A resumed run ends with the uninterrupted weights, says it resumed, keeps the logged rows
    as they were and runs only the remaining steps (the weights alone would not show that: every
    step is seeded by its index)."""
    p = _small(params)
    straight = new_model(0)
    state = pretrain(straight, p, 0, tmp_path / "a", report=False)
    assert state.step == 4
    log = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert len(log) == 5 and all(math.isfinite(float(r.split(",")[1])) for r in log[1:])
    with monkeypatch.context() as patch:  # killed after the checkpoint of step 2 (save_every)
        patch.setattr(pretrain_loop, "pretrain_step", killed_at(2))
        with pytest.raises(RuntimeError, match="killed"):
            pretrain(
                new_model(0), dataclasses.replace(p, workers=0), 0, tmp_path / "b", report=False
            )
    before = (tmp_path / "b" / LOG_FILE).read_text().splitlines()
    saved = torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)
    assert len(before) == 1 + saved["step"]  # the header and a row per step done
    # The checkpoint's training seconds cover its last logged step (to the log's 6 digits).
    assert saved["seconds"] >= seconds_column(before)[-1] * (1 - 1e-5)
    capsys.readouterr()
    executed = record_steps(monkeypatch)
    resumed = new_model(0)
    # Resumed with the images made by worker processes: the same weights, bit for bit.
    with_workers = dataclasses.replace(p, workers=2)
    assert pretrain(resumed, with_workers, 0, tmp_path / "b", report=False).step == 4
    err = capsys.readouterr().err
    assert f"resumed from step {saved['step']} ({tmp_path / 'b' / STATE_FILE})" in err
    assert executed == list(range(saved["step"], p.steps))
    after = (tmp_path / "b" / LOG_FILE).read_text().splitlines()
    assert after[: len(before)] == before  # byte for byte, the `seconds` column too
    assert [line.split(",")[0] for line in after[1:]] == ["1", "2", "3", "4"]
    seconds = seconds_column(after)
    assert seconds == sorted(seconds)  # training seconds of all sessions: counted on, not reset
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(
        straight.state_dict()["mask_decoder.iou_token.weight"],
        new_model(0).state_dict()["mask_decoder.iou_token.weight"],
    )
    with pytest.raises(InputError, match="other pretraining settings"):
        pretrain(new_model(0), dataclasses.replace(p, lr=0.5), 0, tmp_path / "b", report=False)


def test_without_its_checkpoint_pretraining_starts_over(
    params: Params,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = _small(params, steps=2, workers=0)
    pretrain(new_model(0), p, 0, tmp_path, stop_at=1, report=False)
    (tmp_path / STATE_FILE).unlink()
    capsys.readouterr()
    executed = record_steps(monkeypatch)
    assert pretrain(new_model(0), p, 0, tmp_path, report=False).step == 2
    assert "resumed" not in capsys.readouterr().err
    assert executed == [0, 1]
    # The first session's row is replaced by this session's, not kept beside it.
    log = (tmp_path / LOG_FILE).read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2"]


def test_the_pretraining_checkpoint_never_gets_ahead_of_its_log(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that dies at a checkpoint before its log is written (as a kill between the two
    writes would) must not leave a state whose steps the log lacks: a resumed run never logs them.
    """
    p = _small(params, steps=2, save_every=1, workers=0)
    write_log = pretrain_loop._log
    calls: list[int] = []

    def dies_at_the_second(folder: Path, rows: list[dict[str, float]], after: int) -> None:
        calls.append(after)
        if len(calls) == 2:
            raise RuntimeError("killed")
        write_log(folder, rows, after)

    with monkeypatch.context() as patch:
        patch.setattr(pretrain_loop, "_log", dies_at_the_second)
        with pytest.raises(RuntimeError, match="killed"):
            pretrain(new_model(0), p, 0, tmp_path, report=False)
    done = torch.load(tmp_path / STATE_FILE, weights_only=True)["step"]
    logged = (tmp_path / LOG_FILE).read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in logged] == [str(s) for s in range(1, done + 1)]
    assert pretrain(new_model(0), p, 0, tmp_path, report=False).step == 2
    log = (tmp_path / LOG_FILE).read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2"]


def test_run_ships_loadable_fp16_weights_and_a_card(params: Params, tmp_path: Path) -> None:
    p = _small(params, steps=2)
    out = tmp_path / "base" / "tiny_sam.safetensors"
    card = run(p, 0, out, tmp_path / "state", command="fewsam train pretrain-tiny")
    assert card["steps"] == 2 and card["complete"]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["command"] == "fewsam train pretrain-tiny"
    assert 0.0 <= saved["held_out"]["miou_point_best"] <= 1.0
    sam = load_sam("tiny", out, 256)
    trained = new_model(0)
    pretrain(trained, p, 0, tmp_path / "state", report=False)  # finished: loads the last state
    for name, value in sam.state_dict().items():
        expected = trained.state_dict()[name].to(torch.float16).float()
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
