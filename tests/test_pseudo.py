"""Self-training sets (`fewsam synth pseudo`): the synthetic set, unchanged, then the teacher's
prompt-free label maps of the training slices that are not exemplars, never taken from the
training labels; training takes the result; bad teachers are refused with one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import yaml
from test_inference import stage_params, write_adapter, write_dataset
from typer.testing import CliRunner

from baseline import loop
from baseline.io import load_unet, save_unet
from baseline.network import build_unet, predict_unet
from core.params import Params, parse_params
from core.schema import read_exemplars, read_synthetic_info
from evaluate import pseudo
from fewsam.cli import app
from synth.body import body_mask
from synth.datasets import open_dataset


@pytest.fixture
def workspace(tmp_path: Path, params_dict: dict[str, Any]) -> tuple[Path, Params]:
    """A 2 + 2 case NIfTI dataset, 2 exemplars, a 6-sample synthetic set and a random U-Net."""
    write_dataset(tmp_path / "data")
    data = stage_params(params_dict, tmp_path / "data", zero_shot_prompts=[])
    data["exemplars"] = 2
    data["synth"].update(samples=6, workers=1)
    data["dataset"]["annotations"] = str(tmp_path / "no-annotations")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    for args in (
        ["synth", "extract", "--out", tmp_path / "ex.h5", "--csv", tmp_path / "ex.csv"],
        ["synth", "run", "--exemplars", tmp_path / "ex.h5", "--out", tmp_path / "syn.h5"],
    ):
        result = CliRunner().invoke(app, [*map(str, args), "-p", str(tmp_path / "params.yaml")])
        assert result.exit_code == 0, result.output
    params = parse_params(data)
    info = read_synthetic_info(tmp_path / "syn.h5")
    torch.manual_seed(3)
    net = build_unet(params.baseline.features, 1, 2)
    save_unet(tmp_path / "unet", net, loop.unet_config(params, info))
    return tmp_path, params


def invoke(tmp: Path, *args: str | Path) -> Any:
    return CliRunner().invoke(
        app,
        ["synth", "pseudo", "-p", str(tmp / "params.yaml"), "--data", str(tmp / "syn.h5"),
         "--exemplars", str(tmp / "ex.h5"), *map(str, args)],
    )  # fmt: skip


def test_the_set_is_the_synthetic_set_then_the_teachers_maps(
    workspace: tuple[Path, Params],
) -> None:
    tmp, params = workspace
    result = invoke(tmp, "--unet", tmp / "unet", "--out", tmp / "st.h5")
    assert result.exit_code == 0, result.output
    info = read_synthetic_info(tmp / "st.h5")
    ex = read_exemplars(tmp / "ex.h5")
    exemplar_slices = set(zip(ex.case, ex.slice.tolist(), strict=True))
    assert len(exemplar_slices) == 2
    # What it should hold, computed here from the volumes and the network.
    reader = open_dataset(params.dataset, params.seed)
    net = load_unet(tmp / "unet", reader.classes, reader.channels)
    want_case, want_slice, want_label, want_image = [], [], [], []
    for case in reader.cases("train"):
        volume = reader.load(case)
        maps = predict_unet(net, volume.image, 4)
        for z in range(volume.image.shape[1]):
            if body_mask(volume.image[:, z]).mean() < 0.05 or (case, z) in exemplar_slices:
                continue
            want_case.append(case)
            want_slice.append(z)
            want_label.append(maps[z])
            want_image.append(volume.image[:, z])
    assert 0 < len(want_case) < 12  # 2 cases x 6 slices, less the 2 exemplars
    with h5py.File(tmp / "syn.h5") as src, h5py.File(tmp / "st.h5") as f:
        n = src["image"].shape[0]
        assert info.length == n + len(want_case)
        for name in ("image", "label", "exemplar", "background"):
            assert np.array_equal(f[name][:n], src[name][:]), name
        assert [c.decode() for c in f["pseudo_case"][:]] == want_case
        assert f["pseudo_slice"][:].tolist() == want_slice
        assert np.array_equal(f["label"][n:], np.stack(want_label))
        assert np.array_equal(f["image"][n:], np.stack(want_image).astype(np.float16))
        assert (f["exemplar"][n:] == -1).all() and (f["background"][n:] == -1).all()
    record = info.params["selftrain"]
    assert record["teacher"] == "unet" and record["slices"] == len(want_case)
    assert record["cases"] == 2 and record["params"] == {"body_fraction": 0.05, "stride": 1}
    assert f"{len(want_case)} slices of 2 training scans pseudo-labeled by the unet" in (
        result.output
    )


def test_training_labels_are_never_used(
    workspace: tuple[Path, Params], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file when the reader hands out the training scans without their labels."""
    tmp, params = workspace
    pseudo.run(params, tmp / "syn.h5", tmp / "ex.h5", tmp / "a.h5", unet=tmp / "unet")
    real_open = pseudo.open_dataset

    def unlabeled(*args: Any, **kwargs: Any) -> Any:
        reader = real_open(*args, **kwargs)
        load = reader.load
        reader.load = lambda case, resize=True: dataclasses.replace(  # type: ignore[method-assign]
            load(case, resize), label=None
        )
        return reader

    monkeypatch.setattr(pseudo, "open_dataset", unlabeled)
    pseudo.run(params, tmp / "syn.h5", tmp / "ex.h5", tmp / "b.h5", unet=tmp / "unet")
    with h5py.File(tmp / "a.h5") as a, h5py.File(tmp / "b.h5") as b:
        for name in ("image", "label", "pseudo_case", "pseudo_slice"):
            assert np.array_equal(a[name][:], b[name][:]), name


def test_stride_and_an_adapter_teacher(workspace: tuple[Path, Params]) -> None:
    tmp, params = workspace
    write_adapter(tmp / "adapter", params, ["liver", "spleen"], ["CT"])
    every = pseudo.run(params, tmp / "syn.h5", tmp / "ex.h5", tmp / "a.h5", adapter=tmp / "adapter")
    p2 = dataclasses.replace(params, selftrain=dataclasses.replace(params.selftrain, stride=2))
    half = pseudo.run(p2, tmp / "syn.h5", tmp / "ex.h5", tmp / "b.h5", adapter=tmp / "adapter")
    assert every["teacher"] == "adapter" and half["slices"] < every["slices"]
    with h5py.File(tmp / "a.h5") as a, h5py.File(tmp / "b.h5") as b:
        ok = {(c, z) for c, z in zip(a["pseudo_case"][:], a["pseudo_slice"][:], strict=True)}
        assert set(zip(b["pseudo_case"][:], b["pseudo_slice"][:], strict=True)) <= ok


def test_training_takes_the_set(workspace: tuple[Path, Params]) -> None:
    tmp, params = workspace
    pseudo.run(params, tmp / "syn.h5", tmp / "ex.h5", tmp / "st.h5", unet=tmp / "unet")
    p = dataclasses.replace(
        params,
        baseline=dataclasses.replace(params.baseline, max_steps=2, warmup_steps=1, batch_size=4),
    )
    net = loop.run(p, tmp / "st.h5", tmp / "student", tmp / "log.csv")
    assert net is not None and (tmp / "student").is_dir()


@pytest.mark.parametrize(
    ("teachers", "message"),
    [
        ((), "give exactly one teacher: --adapter or --unet"),
        (("--unet", "unet", "--adapter", "unet"), "give exactly one teacher"),
        (("--unet", "stub"), "is the stub of a disabled baseline"),
    ],
)
def test_a_bad_teacher_is_one_line_and_no_file(
    workspace: tuple[Path, Params], teachers: tuple[str, ...], message: str
) -> None:
    tmp, params = workspace
    save_unet(tmp / "stub", None, loop.unet_config(params, read_synthetic_info(tmp / "syn.h5")))
    args = [tmp / t if i % 2 else t for i, t in enumerate(teachers)]
    result = invoke(tmp, *args, "--out", tmp / "st.h5")
    assert result.exit_code != 0
    (line,) = result.stderr.splitlines()
    assert message in line, line
    assert not (tmp / "st.h5").exists()


def test_stats_check_only_synthesized_samples(workspace: tuple[Path, Params]) -> None:
    from fewsam import synth_stats

    tmp, _ = workspace
    pseudo.run(workspace[1], tmp / "syn.h5", tmp / "ex.h5", tmp / "st.h5", unet=tmp / "unet")
    plain = synth_stats.run(tmp / "ex.h5", tmp / "syn.h5")
    extended = synth_stats.run(tmp / "ex.h5", tmp / "st.h5")
    assert plain.failing == extended.failing
    line = [s for s in extended.text.splitlines() if "samples have more" in s]
    assert line and line[0].endswith("of 6 samples have more than their exemplar"), line
