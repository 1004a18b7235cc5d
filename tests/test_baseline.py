"""The U-Net baseline: it learns, it is repeatable, it is stored and refused like an adapter, and
`evaluate infer` scores it beside the adapted model."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import replace_section
from safetensors.torch import load_file
from synthetic_sets import bright_squares, write_synthetic
from test_inference import _run, stage_params, write_adapter, write_dataset

from baseline import loop
from baseline.io import CONFIG_FILE, WEIGHTS_FILE, load_unet, read_config
from baseline.network import build_unet, predict_unet, unet_logits
from core.errors import InputError
from core.params import Params, parse_params
from core.schema import read_synthetic_info
from train.resume import LOG_FIELDS


def small(params: Params, **changes: Any) -> Params:
    """The repository's params with a short, CPU-only baseline run."""
    p = replace_section(params, "train", device="cpu")
    settings = {"max_steps": 40, "batch_size": 4, "warmup_steps": 2, "lr": 0.01, **changes}
    return replace_section(p, "baseline", **settings)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS_FILE))


def test_logits_keep_any_slice_size() -> None:
    """Slices whose side is no multiple of 16 are padded and cropped back; a multiple of 16 is
    passed through untouched."""
    torch.manual_seed(0)
    net = build_unet([4, 4, 8, 8, 16, 4], in_channels=2, num_classes=3).eval()
    x = torch.rand(2, 2, 40, 36)
    with torch.no_grad():
        assert unet_logits(net, x).shape == (2, 4, 40, 36)
        y = torch.rand(1, 2, 32, 48)
        assert torch.equal(unet_logits(net, y), net(y))


def test_volume_prediction_upsamples_logits_before_the_argmax() -> None:
    torch.manual_seed(0)
    net = build_unet([4, 4, 8, 8, 16, 4], in_channels=1, num_classes=2).eval()
    image = np.random.default_rng(0).random((1, 5, 32, 32), dtype=np.float32)
    got = predict_unet(net, image, batch_size=2, out_hw=(45, 50))
    with torch.no_grad():
        logits = net(torch.from_numpy(np.moveaxis(image, 1, 0)))
        up = F.interpolate(logits, size=(45, 50), mode="bilinear", align_corners=False)
    assert got.dtype == np.uint8 and got.shape == (5, 45, 50)
    assert np.array_equal(got, up.argmax(1).numpy())


def test_baseline_learns_and_repeats(tmp_path: Path, params: Params) -> None:
    data = bright_squares(tmp_path / "synthetic.h5", n=16, size=32)
    p = small(params, max_steps=80)
    net = loop.run(p, data, tmp_path / "unet", tmp_path / "log.csv")
    assert net is not None
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert tuple(rows[0]) == LOG_FIELDS and len(rows) == 80
    assert [int(r["step"]) for r in rows] == list(range(80))
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    # It segments the squares of slices it never saw.
    test = bright_squares(tmp_path / "test.h5", n=4, size=32, seed=7)
    import h5py

    with h5py.File(test) as f:
        image, label = f["image"][:].astype(np.float32), f["label"][:]
    loaded = load_unet(tmp_path / "unet", ("square",), ("CT",))
    pred = predict_unet(loaded, np.moveaxis(image, 1, 0), batch_size=4)
    dice = 2 * ((pred == 1) & (label == 1)).sum() / ((pred == 1).sum() + (label == 1).sum())
    assert dice > 0.9
    # Same params and seed: the same weights; another replicate: another initialization. A few
    # steps show it as well as many (each step draws its batch and updates every weight).
    short = small(params, max_steps=3, warmup_steps=0)
    for name, r in (("r0", 0), ("again", 0), ("r1", 1)):
        loop.run(dataclasses.replace(short, replicate=r), data, tmp_path / name, tmp_path / "r.csv")
    r0, again, r1 = (weights(tmp_path / name) for name in ("r0", "again", "r1"))
    assert all(torch.equal(r0[k], again[k]) for k in r0)
    assert any(not torch.equal(r0[k], r1[k]) for k in r0)
    config = read_config(tmp_path / "unet")
    assert config["classes"] == ["square"] and config["channels"] == ["CT"]
    assert config["baseline"]["max_steps"] == 80 and config["enabled"] is True


def test_replicate_changes_the_initialization() -> None:
    assert loop.init_seed(0) != loop.init_seed(12345)
    torch.manual_seed(loop.init_seed(0))
    a = build_unet([4, 4, 8, 8, 16, 4], 1, 1).state_dict()
    torch.manual_seed(loop.init_seed(1))
    b = build_unet([4, 4, 8, 8, 16, 4], 1, 1).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_batch_norm_is_stored_and_rebuilt(tmp_path: Path, params: Params) -> None:
    """`baseline.norm: batch` trains BatchNorm layers, records the choice, and the loaded network
    (eval mode: running statistics) predicts as the trained one; a config without the key (saved
    before it existed) rebuilds instance norm, an unknown one is refused."""
    data = bright_squares(tmp_path / "synthetic.h5", n=8, size=32)
    out = tmp_path / "unet"
    net = loop.run(small(params, max_steps=3, norm="batch"), data, out, tmp_path / "log.csv")
    assert net is not None
    kinds = {type(m).__name__ for m in net.modules()}
    assert "BatchNorm2d" in kinds and "InstanceNorm2d" not in kinds
    assert read_config(out)["baseline"]["norm"] == "batch"
    loaded = load_unet(out, ("square",), ("CT",))
    assert loaded is not None
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    config = json.loads((out / CONFIG_FILE).read_text())
    for norm, match in ((None, "does not match the network"), ("group", "unknown baseline.norm")):
        baseline = {k: v for k, v in config["baseline"].items() if k != "norm"}
        if norm is not None:
            baseline["norm"] = norm
        (out / CONFIG_FILE).write_text(json.dumps({**config, "baseline": baseline}))
        with pytest.raises(InputError, match=match):  # instance norm has no running statistics
            load_unet(out, ("square",), ("CT",))


def test_disabled_baseline_writes_a_stub_that_evaluation_skips(
    tmp_path: Path, params: Params
) -> None:
    data = bright_squares(tmp_path / "synthetic.h5", n=4, size=32)
    out, log = tmp_path / "unet", tmp_path / "log.csv"
    assert loop.run(small(params, enabled=False), data, out, log) is None
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE]
    assert read_config(out)["enabled"] is False
    assert load_unet(out, ("square",), ("CT",)) is None
    assert log.read_text().splitlines() == [",".join(LOG_FIELDS)]


def test_baseline_of_other_classes_or_broken_weights_is_refused(
    tmp_path: Path, params: Params
) -> None:
    data = write_synthetic(
        tmp_path / "s.h5",
        np.random.default_rng(0).random((4, 1, 32, 32)),
        np.zeros((4, 32, 32), np.uint8),
        classes=("liver", "spleen"),
    )
    out = tmp_path / "unet"
    loop.run(small(params, max_steps=2, warmup_steps=0), data, out, tmp_path / "log.csv")
    with pytest.raises(InputError, match="trained with classes \\['liver', 'spleen'\\]") as e:
        load_unet(out, ("liver", "kidney"), ("CT",))
    assert str(out / CONFIG_FILE) in str(e.value)
    config = json.loads((out / CONFIG_FILE).read_text())
    (out / CONFIG_FILE).write_text(json.dumps({**config, "dataset": {"slice_size": 128}}))
    with pytest.raises(InputError, match="trained on dataset.slice_size 128, params say 256"):
        load_unet(out, ("liver", "spleen"), ("CT",), slice_size=256)
    assert load_unet(out, ("liver", "spleen"), ("CT",), slice_size=128) is not None
    (out / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="unreadable weights"):
        load_unet(out, ("liver", "spleen"), ("CT",))
    (out / CONFIG_FILE).write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(InputError, match="not a fewsam baseline config"):
        read_config(out)


def test_batches_keep_the_sampler_order_and_repeats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((5, 1, 16, 16)).astype(np.float16)
    label = rng.integers(0, 3, (5, 16, 16)).astype(np.uint8)
    data = write_synthetic(tmp_path / "s.h5", image, label, classes=("liver", "spleen"))
    info = read_synthetic_info(data)
    order = [3, 0, 3, 4, 1]  # not increasing, one sample twice
    with h5py.File(data, "r") as f:
        images, labels = loop.read_batch(f, order, info)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    np.testing.assert_array_equal(images.numpy(), image[order].astype(np.float32))
    np.testing.assert_array_equal(labels.numpy(), label[order])


def test_label_ids_above_the_classes_are_refused(tmp_path: Path, params: Params) -> None:
    label = np.full((4, 32, 32), 3, np.uint8)
    data = write_synthetic(
        tmp_path / "s.h5", np.zeros((4, 1, 32, 32)), label, classes=("liver", "spleen")
    )
    with pytest.raises(InputError, match="label ids above the classes"):
        loop.run(small(params, max_steps=2, warmup_steps=0), data, tmp_path / "u", tmp_path / "l")
    assert not (tmp_path / "u").exists()


def test_infer_scores_the_unet_beside_the_adapter(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    """`evaluate infer --unet` writes the U-Net's label maps on the source grid and an overlay
    column; `score` gives `unet_dsc`/`unet_hd95` among the headline keys."""
    write_dataset(tmp_path / "data")
    data = stage_params(params_dict, tmp_path / "data", zero_shot_prompts=[])
    data["baseline"].update(max_steps=2, warmup_steps=0, batch_size=2)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    p = parse_params(data)
    write_adapter(tmp_path / "adapter", p, ["liver", "spleen"], ["CT"])
    synthetic = write_synthetic(
        tmp_path / "s.h5",
        np.random.default_rng(0).random((4, 1, 32, 32)),
        np.zeros((4, 32, 32), np.uint8),
        classes=("liver", "spleen"),
    )
    _run("train", "baseline", "-p", params_file, "--data", synthetic,
         "--out", tmp_path / "unet", "--log", tmp_path / "log.csv")  # fmt: skip
    out = tmp_path / "reports"
    _run("evaluate", "infer", "-p", params_file, "--adapter", tmp_path / "adapter",
         "--unet", tmp_path / "unet", "--out", out)  # fmt: skip
    _run("evaluate", "score", "-p", params_file, "--pred", out / "predictions", "--out", out)
    source = nib.load(tmp_path / "data" / "labelsTs" / "c.nii.gz")
    written = nib.load(out / "predictions" / "unet" / "c.nii.gz")
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:6] == [
        "dsc", "hd95", "dsc_prompt_free", "hd95_prompt_free", "unet_dsc", "unet_hd95"
    ]  # fmt: skip
    assert metrics["unet_dsc"] == metrics["methods"]["unet"]["dice"]
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert {r["method"] for r in rows} == {"prompt_free", "prompted", "unet"}
    # A disabled baseline scores nothing and fails nothing.
    data["baseline"]["enabled"] = False
    params_file.write_text(yaml.safe_dump(data))
    _run("train", "baseline", "-p", params_file, "--data", synthetic,
         "--out", tmp_path / "unet", "--log", tmp_path / "log.csv")  # fmt: skip
    _run("evaluate", "infer", "-p", params_file, "--adapter", tmp_path / "adapter",
         "--unet", tmp_path / "unet", "--out", out)  # fmt: skip
    assert not (out / "predictions" / "unet").exists()
