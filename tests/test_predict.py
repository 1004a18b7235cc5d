"""`fewsam predict`: geometry kept, the adapter's preprocessing, inputs that do not fit refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from reliability_files import assert_one_line_error
from test_postprocess import flood_fill_reference
from typer.testing import CliRunner

from baseline.io import load_unet, save_unet
from baseline.network import build_unet
from core.errors import ParamsError
from core.params import LoraParams, ModelParams, parse_params, to_dict
from core.volume import to_zyx
from evaluate.predict import Scan, find_scans, read_scan
from evaluate.predict import run as predict_run
from fewsam.cli import app
from train.adapter_io import save_adapter
from train.model import build_fewsam

# Oblique, anisotropic, translated: any axis mix-up in reading or writing changes it.
AFFINE = np.array(
    [[0.0, -0.75, 0.1, 120.0], [0.8, 0.0, 0.0, -64.0], [0.0, 0.05, 3.0, 18.0], [0, 0, 0, 1]]
)
SHAPE = (36, 28, 5)  # I x J x K: W = 36, H = 28, Z = 5
MR = ["flair", "t1ce", "t2"]


@pytest.fixture
def params_file(tmp_path: Path, params_dict: dict[str, Any]) -> Path:
    data = json.loads(json.dumps(params_dict))
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(device="cpu")
    data["evaluate"].update(batch_size=2)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def make_adapter(folder: Path, params_file: Path, channels: list[str], slice_size: int) -> Path:
    data = yaml.safe_load(params_file.read_text())
    data["dataset"]["slice_size"] = slice_size
    params = parse_params(data)
    torch.manual_seed(0)
    model = build_fewsam(
        ModelParams("tiny", None, 64), LoraParams(2, 2.0, 0.0, True, True, "lora", False), 2
    )
    config = {"classes": ["a", "b"], "channels": channels, "dataset": to_dict(params.dataset)}
    save_adapter(model, folder, config)
    return folder


def write_scan(path: Path, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> nib.Nifti1Image:
    data = np.random.default_rng(seed).normal(40.0, 80.0, shape).astype(np.float32)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_qform(AFFINE, code=1)
    img.header.set_sform(AFFINE, code=2)
    img.header["descrip"] = b"test scan"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return img


def predict(*args: str) -> Any:
    return CliRunner().invoke(app, ["predict", *args])


@pytest.mark.parametrize("slice_size", [0, 32])
def test_predict_keeps_affine_header_and_shape(
    tmp_path: Path, params_file: Path, slice_size: int
) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, ["CT"], slice_size)
    write_scan(tmp_path / "scan.nii.gz")
    out = tmp_path / "out" / "seg.nii.gz"
    result = predict("--adapter", str(adapter), "-i", str(tmp_path / "scan.nii.gz"),
                     "-o", str(out), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    seg = nib.load(out)
    assert seg.shape == SHAPE
    assert np.allclose(seg.affine, AFFINE)
    assert seg.header.get_qform(coded=True)[1] == 1 and seg.header.get_sform(coded=True)[1] == 2
    assert seg.header["descrip"].tobytes().startswith(b"test scan")
    assert seg.get_data_dtype() == np.uint8
    assert np.asarray(seg.dataobj).max() <= 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.nii.gz"]  # no temp file left


def test_predict_folder_of_scans(tmp_path: Path, params_file: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, ["CT"], 0)
    write_scan(tmp_path / "in" / "one.nii.gz", seed=1)
    write_scan(tmp_path / "in" / "two_0000.nii", shape=(20, 24, 3), seed=2)  # nnU-Net name
    result = predict("--adapter", str(adapter), "-i", str(tmp_path / "in"),
                     "-o", str(tmp_path / "out"), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.nii.gz", "two.nii.gz"]
    assert nib.load(tmp_path / "out" / "two.nii.gz").shape == (20, 24, 3)


def test_predict_multichannel_case_folder_and_4d(tmp_path: Path, params_file: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, MR, 0)
    case = tmp_path / "Brats18_X_1"
    for i, modality in enumerate(["flair", "t1", "t1ce", "t2", "seg"]):
        write_scan(case / f"Brats18_X_1_{modality}.nii.gz", seed=i)
    result = predict("--adapter", str(adapter), "-i", str(case), "-o", str(tmp_path / "out"),
                     "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert nib.load(tmp_path / "out" / "Brats18_X_1.nii.gz").shape == SHAPE

    stacked = np.stack(
        [np.asarray(nib.load(case / f"Brats18_X_1_{m}.nii.gz").dataobj) for m in MR], -1
    )
    nib.save(nib.Nifti1Image(stacked, AFFINE), tmp_path / "four_d.nii.gz")
    result = predict("--adapter", str(adapter), "-i", str(tmp_path / "four_d.nii.gz"),
                     "-o", str(tmp_path / "four_d_seg.nii.gz"), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    seg = nib.load(tmp_path / "four_d_seg.nii.gz")
    assert seg.shape == SHAPE and np.allclose(seg.affine, AFFINE)
    # The 4D file and the case folder are the same scan: the same label map.
    first = np.asarray(nib.load(tmp_path / "out" / "Brats18_X_1.nii.gz").dataobj)
    assert np.array_equal(np.asarray(seg.dataobj), first)


def test_case_folder_channels_in_adapter_order(tmp_path: Path) -> None:
    for i, m in enumerate(["t2", "flair", "seg", "t1ce"]):
        write_scan(tmp_path / "c" / f"c_{m}.nii.gz", seed=i)
    (scan,), skipped = find_scans(tmp_path / "c", MR)
    assert scan.name == "c"
    assert [p.name for p in scan.files] == ["c_flair.nii.gz", "c_t1ce.nii.gz", "c_t2.nii.gz"]
    reason = "not one of the model's channels (flair, t1ce, t2)"
    assert skipped == [(tmp_path / "c" / "c_seg.nii.gz", reason)]


def test_find_scans_takes_any_case_of_extension_and_lists_skipped_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for name in ["upper.NII.GZ", "mixed.Nii", "notes.txt", ".DS_Store", "._upper.NII.GZ",
                 "sub/readme.md"]:  # fmt: skip
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")  # names only: nothing is read
    scans, skipped = find_scans(folder, ["CT"])
    assert [(s.name, [p.name for p in s.files]) for s in scans] == [
        ("mixed", ["mixed.Nii"]),
        ("upper", ["upper.NII.GZ"]),
    ]
    # Hidden files (system bookkeeping) are left out without a word.
    assert skipped == [
        (folder / "notes.txt", "not a NIfTI file"),
        (folder / "sub" / "readme.md", "not a NIfTI file"),
    ]


def test_predict_any_case_of_extension_names_skipped_files(
    tmp_path: Path, params_file: Path
) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, ["CT"], 0)
    folder = tmp_path / "in"
    # Written under lower-case names, then renamed: nibabel cannot save a mixed-case one.
    write_scan(folder / "upper.nii.gz", seed=1)
    (folder / "upper.nii.gz").rename(folder / "upper.NII.GZ")
    write_scan(folder / "mixed.nii", seed=2)
    (folder / "mixed.nii").rename(folder / "mixed.Nii")
    (folder / "notes.txt").write_text("scanned on the new machine\n")
    (folder / ".DS_Store").write_bytes(b"\0")
    out = tmp_path / "out"
    result = predict("--adapter", str(adapter), "-i", str(folder), "-o", str(out),
                     "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["mixed.nii.gz", "upper.nii.gz"]
    assert nib.load(out / "mixed.nii.gz").shape == SHAPE
    assert result.stdout.splitlines() == [str(out / "mixed.nii.gz"), str(out / "upper.nii.gz")]
    assert result.stderr.splitlines() == [
        f"predict: skipped {folder / 'notes.txt'} (not a NIfTI file)"
    ]

    # A single output file keeps its name, with the extension written in lower case.
    result = predict("--adapter", str(adapter), "-i", str(folder / "mixed.Nii"),
                     "-o", str(tmp_path / "seg.NII.GZ"), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(tmp_path / "seg.nii.gz")]
    seg = nib.load(tmp_path / "seg.nii.gz")  # gzip-compressed, as the name says
    assert np.array_equal(
        np.asarray(seg.dataobj), np.asarray(nib.load(out / "mixed.nii.gz").dataobj)
    )


@pytest.mark.parametrize("content", [[], ["notes.txt", "scan.mha", ".DS_Store"]])
def test_predict_folder_without_nifti_is_one_error(
    tmp_path: Path, params_file: Path, content: list[str]
) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, ["CT"], 0)
    folder = tmp_path / "imagesTs"  # e.g. the test folder of a dataset, not filled yet
    folder.mkdir()
    for name in content:
        (folder / name).write_text("x")
    out = tmp_path / "out"
    result = predict("--adapter", str(adapter), "-i", str(folder), "-o", str(out),
                     "-p", str(params_file))  # fmt: skip
    assert_one_line_error(result, folder, "no .nii or .nii.gz file in this folder")
    assert not out.exists()


def test_predict_refusal_comes_alone_without_skip_lines(tmp_path: Path, params_file: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, ["CT"], 0)
    folder = tmp_path / "in"
    write_scan(folder / "mri4d.nii.gz", shape=(*SHAPE, 3))
    (folder / "notes.txt").write_text("x")
    result = predict("--adapter", str(adapter), "-i", str(folder), "-o", str(tmp_path / "out"),
                     "-p", str(params_file))  # fmt: skip
    assert_one_line_error(result, folder / "mri4d.nii.gz", "3 channel(s)")


def test_ct_window_from_the_adapter_config(tmp_path: Path) -> None:
    data = np.full(SHAPE, -125.0, np.float32)
    data[..., 2] = 275.0
    data[..., 3] = 75.0
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "ct.nii.gz")
    config = {"window": [-125.0, 275.0], "percentiles": [0.5, 99.5]}
    volume = read_scan(Scan("ct", (tmp_path / "ct.nii.gz",)), ["CT"], config)
    # C x Z x H x W in the readers' orientation: the file's I axis runs anterior-posterior, so it
    # gives the rows (H = 36) and J the columns (W = 28).
    assert volume.image.shape == (1, 5, 36, 28)
    assert volume.image[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0, 0.5, 0.0]
    zooms = nib.load(tmp_path / "ct.nii.gz").header.get_zooms()
    assert volume.spacing == pytest.approx((zooms[2], zooms[0], zooms[1]))


def test_wrong_channel_count_refused(tmp_path: Path, params_file: Path) -> None:
    ct = make_adapter(tmp_path / "ct_adapter", params_file, ["CT"], 0)
    write_scan(tmp_path / "mri4d.nii.gz", shape=(*SHAPE, 3))
    out = tmp_path / "seg.nii.gz"
    result = predict("--adapter", str(ct), "-i", str(tmp_path / "mri4d.nii.gz"), "-o", str(out),
                     "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 2
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "3 channel(s)" in message and "CT" in message
    assert not out.exists()

    mr = make_adapter(tmp_path / "mr_adapter", params_file, MR, 0)
    write_scan(tmp_path / "flair_only.nii.gz")
    result = predict("--adapter", str(mr), "-i", str(tmp_path / "flair_only.nii.gz"), "-o",
                     str(out), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 2
    assert "flair, t1ce, t2" in result.output and not out.exists()


def test_case_folder_missing_a_modality_refused(tmp_path: Path, params_file: Path) -> None:
    mr = make_adapter(tmp_path / "adapter", params_file, MR, 0)
    for m in ["flair", "t2"]:
        write_scan(tmp_path / "case" / f"case_{m}.nii.gz")
    result = predict("--adapter", str(mr), "-i", str(tmp_path / "case"), "-o",
                     str(tmp_path / "out"), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 2
    assert "t1ce" in result.output
    assert not (tmp_path / "out").exists()


def make_unet(folder: Path, params_file: Path, features: list[int], enabled: bool = True) -> Path:
    params = parse_params(yaml.safe_load(params_file.read_text()))
    torch.manual_seed(0)
    net = build_unet(features, 1, 2)
    config = {"features": features, "classes": ["a", "b"], "channels": ["CT"],
              "dataset": to_dict(params.dataset)}  # fmt: skip
    save_unet(folder, net if enabled else None, config)
    return folder


@pytest.mark.parametrize("postprocess", ["largest_component", "none"])
def test_predict_with_the_unet_baseline(
    tmp_path: Path, params_file: Path, postprocess: str
) -> None:
    data = yaml.safe_load(params_file.read_text())
    data["evaluate"]["postprocess"] = postprocess
    params_file.write_text(yaml.safe_dump(data))
    unet = make_unet(tmp_path / "unet", params_file, [4, 4, 8, 8, 16, 4])
    img = write_scan(tmp_path / "scan.nii.gz", seed=3)
    out = tmp_path / "seg.nii.gz"
    result = predict("--unet", str(unet), "-i", str(tmp_path / "scan.nii.gz"), "-o", str(out),
                     "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    seg = nib.load(out)
    assert seg.shape == SHAPE and np.allclose(seg.affine, AFFINE)
    # Reference: the CT window by hand, the network on each slice zero-padded to a multiple of
    # 16, argmax; slice order as core.volume.to_zyx gives it (its own tests check the axes).
    lo, hi = yaml.safe_load(params_file.read_text())["dataset"]["window"]
    hu = to_zyx(np.asarray(img.dataobj, np.float32), AFFINE)
    x = torch.from_numpy(np.clip((hu - lo) / (hi - lo), 0, 1)[:, None].copy())
    net = load_unet(unet, ("a", "b"), ("CT",))
    with torch.no_grad():
        logits = net(torch.nn.functional.pad(x, (0, -x.shape[3] % 16, 0, -x.shape[2] % 16)))
    argmax = logits[..., : x.shape[2], : x.shape[3]].argmax(1).numpy().astype(np.uint8)
    # evaluate.postprocess: largest_component keeps each class's largest component.
    want = flood_fill_reference(argmax, 2) if postprocess == "largest_component" else argmax
    got = to_zyx(np.asarray(seg.dataobj), AFFINE)
    assert len(np.unique(want)) > 1  # a map that can tell a wrong model or preprocessing apart
    assert (flood_fill_reference(argmax, 2) != argmax).any()  # one the post-processing changes
    assert np.array_equal(got, want)


def test_predict_refuses_a_unet_stub_and_a_checkpoint(tmp_path: Path, params_file: Path) -> None:
    write_scan(tmp_path / "scan.nii.gz")
    out = tmp_path / "seg.nii.gz"
    stub = make_unet(tmp_path / "stub", params_file, [4, 4, 8, 8, 16, 4], enabled=False)
    result = predict("--unet", str(stub), "-i", str(tmp_path / "scan.nii.gz"), "-o", str(out),
                     "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 2
    assert "config.json" in result.output and "baseline.enabled" in result.output
    result = predict("--unet", str(stub), "--checkpoint", "sam.pth", "-i",
                     str(tmp_path / "scan.nii.gz"), "-o", str(out), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 2 and "--checkpoint" in result.output
    # The stage function refuses the pair itself, for callers other than the CLI.
    params = parse_params(yaml.safe_load(params_file.read_text()))
    with pytest.raises(ParamsError, match="--checkpoint"):
        predict_run(params, tmp_path / "adapter", tmp_path / "scan.nii.gz", out, "sam.pth", stub)
    assert not out.exists()


def test_predict_refuses_a_unet_config_without_preprocessing(
    tmp_path: Path, params_file: Path
) -> None:
    unet = make_unet(tmp_path / "unet", params_file, [4, 4, 8, 8, 16, 4])
    config = json.loads((unet / "config.json").read_text())
    del config["dataset"]
    (unet / "config.json").write_text(json.dumps(config))
    write_scan(tmp_path / "scan.nii.gz")
    result = predict("--unet", str(unet), "-i", str(tmp_path / "scan.nii.gz"),
                     "-o", str(tmp_path / "seg.nii.gz"), "-p", str(params_file))  # fmt: skip
    assert result.exit_code == 2
    assert "config.json" in result.output and "preprocessing" in result.output
    assert not (tmp_path / "seg.nii.gz").exists()
