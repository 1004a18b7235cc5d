"""`fewsam predict`: segment new scans (no labels) with a trained adapter, or with the U-Net
baseline trained on the same synthetic set (`--unet models/unet`). Everything below holds for
both: the U-Net's config.json records channels and preprocessing the same way.

Inputs, checked against the adapter's channels (`config.json` "channels", e.g. ["CT"] or
["flair", "t1ce", "t2"]) before anything is computed:

- one NIfTI file: 3D for a one-channel adapter, or 4D with the adapter's channels on the last
  axis, in the adapter's order;
- a case folder with one file per channel: `<case>_<channel>.nii.gz` (BraTS: `_flair`, `_t1ce`,
  ...), `<channel>.nii.gz`, or nnU-Net's `<case>_0000.nii.gz`, `<case>_0001.nii.gz`, ...; other
  files beside them (`_seg`, unused modalities) are skipped;
- a folder of such inputs, searched recursively; files that are not NIfTI are skipped.

Extensions may be in any case (`.NII.GZ`, `.Nii`); label maps are written as `<case>.nii.gz`.
Each skipped file, hidden ones (`.DS_Store`) aside, is named on stderr once every scan is
segmented, one line each.

The adapter's config is checked first (`evaluate.adapter_check`, the check `evaluate infer` makes
too, here with nothing to compare it with but the inputs' channel counts). Preprocessing is the
adapter's own (its config's "dataset" entry): channels named CT are windowed (`window`), others
scaled between percentiles of their nonzero voxels (`percentiles`); slices resized to
`slice_size` when it is not 0. The label map comes back on the input's grid the way `evaluate
infer`'s do (the logits upsampled to the input's in-plane size before the argmax) and is written
with the input's affine and header (data type uint8). Each output is written
atomically, so an interrupted run leaves finished outputs whole and the others absent.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from baseline.io import load_unet
from baseline.io import read_config as read_unet_config
from baseline.network import predict_unet
from core.atomic import ensure_parent
from core.device import pick_device
from core.errors import InputError, ParamsError
from core.params import Params
from core.progress import make_progress
from core.volume import Volume, spacing_zyx, to_zyx
from evaluate.adapter_check import check_adapter
from evaluate.inference import predict_volume
from evaluate.postprocess import postprocess
from evaluate.refine import REFINERS, Trust, open_refiner, refine_volumes
from evaluate.reports import write_nifti
from synth.datasets.base import ct_window, percentile_normalize, resize_volume
from synth.datasets.nifti_io import check_same_grid, load_nifti, read_image
from train.adapter_io import CONFIG_FILE, load_adapter, read_adapter_config

_NII = re.compile(r"^(?P<stem>.+)\.nii(\.gz)?$", re.IGNORECASE)  # `.NII.GZ` from some exporters
_INDEX = re.compile(r"^\d{4}$")  # nnU-Net channel suffix


@dataclass(frozen=True)
class Scan:
    """One input volume: a single (3D or 4D) file, or one 3D file per adapter channel."""

    name: str  # output file stem
    files: tuple[Path, ...]


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _stem(path: Path) -> str | None:
    m = _NII.match(path.name)
    return m.group("stem") if m and not _hidden(path) else None


def _channel_of(stem: str, channels: Sequence[str]) -> tuple[str, int] | None:
    """(case, channel index) when `stem` names a channel file, else None."""
    lowered = [c.lower() for c in channels]
    prefix, _, suffix = stem.rpartition("_")
    if prefix and suffix.lower() in lowered:
        return prefix, lowered.index(suffix.lower())
    if prefix and _INDEX.match(suffix):
        return prefix, int(suffix)
    if stem.lower() in lowered:
        return "", lowered.index(stem.lower())
    return None


def find_scans(
    input_path: Path, channels: Sequence[str]
) -> tuple[list[Scan], list[tuple[Path, str]]]:
    """The scans under `input_path` (a file, a case folder, or a folder of either), and the
    files of a folder that are no input, each with the reason."""
    if input_path.is_file():
        stem = _stem(input_path)
        if stem is None:
            raise InputError(input_path, "not a NIfTI file (.nii or .nii.gz)")
        return [Scan(stem, (input_path,))], []
    if not input_path.is_dir():
        raise InputError(input_path, "input not found")
    everything = sorted(p for p in input_path.rglob("*") if p.is_file())
    files = [p for p in everything if _stem(p) is not None]
    # Hidden files (`.DS_Store`, macOS `._scan.nii.gz` copies, editor temporaries) are the
    # system's, not the user's: naming each would bury the skips worth reading.
    skipped = [(p, "not a NIfTI file") for p in everything if _stem(p) is None and not _hidden(p)]
    if not files:
        raise InputError(input_path, "no .nii or .nii.gz file in this folder")
    groups: dict[tuple[Path, str], dict[int, Path]] = {}
    loose: list[Path] = []
    for path in files:
        found = _channel_of(_stem(path) or "", channels) if len(channels) > 1 else None
        if found is None:
            loose.append(path)
            continue
        case, index = found
        if index >= len(channels):
            raise InputError(
                path,
                f"channel {index} but the model takes {len(channels)} ({', '.join(channels)})",
            )
        groups.setdefault((path.parent, case or path.parent.name), {})[index] = path
    scans = []
    for (folder, case), by_index in sorted(groups.items()):
        missing = [c for i, c in enumerate(channels) if i not in by_index]
        if missing:
            raise InputError(
                folder,
                f"case {case} lacks the {', '.join(missing)} file(s) the model needs "
                f"(expected {case}_<channel>.nii.gz for {', '.join(channels)})",
            )
        scans.append(Scan(case, tuple(by_index[i] for i in range(len(channels)))))
    grouped_folders = {folder for folder, _ in groups}
    for path in loose:
        if path.parent in grouped_folders:
            # Segmentations or unused modalities beside a case's channel files.
            skipped.append((path, f"not one of the model's channels ({', '.join(channels)})"))
            continue
        stem = _stem(path) or path.name
        prefix, _, suffix = stem.rpartition("_")
        scans.append(Scan(prefix if prefix and _INDEX.match(suffix) else stem, (path,)))
    names = [s.name for s in scans]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(input_path, f"several inputs would be written as {dupes[0]}.nii.gz")
    return scans, sorted(skipped)


def channel_count(scan: Scan) -> int:
    """How many channels `scan` holds, from the headers only (no voxel data read)."""
    if len(scan.files) > 1:
        return len(scan.files)
    path = scan.files[0]
    try:
        shape = load_nifti(path).shape
    except Exception as e:  # nibabel raises many types on foreign or damaged files
        raise InputError(path, f"not a readable NIfTI file ({e})") from None
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 3:
        return 1
    if len(dims) == 4:
        return dims[3]
    raise InputError(path, f"{len(dims)}D image ({'x'.join(map(str, shape))}): expected 3D or 4D")


def check_channels(scan: Scan, channels: Sequence[str]) -> None:
    """InputError when `scan` does not hold exactly the adapter's channels."""
    n = channel_count(scan)
    if n == len(channels):
        return
    want = f"{len(channels)} channel{'s' if len(channels) > 1 else ''} ({', '.join(channels)})"
    how = (
        "a 3D NIfTI"
        if len(channels) == 1
        else "a 4D NIfTI with the channels in this order, or a case folder with "
        + ", ".join(f"<case>_{c}.nii.gz" for c in channels)
    )
    raise InputError(scan.files[0], f"has {n} channel(s) but the model takes {want}: pass {how}")


def _read_4d(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """I x J x K x C float32 data of a 4D NIfTI (checked finite) and its image."""
    try:
        img = load_nifti(path)
        data = img.get_fdata(dtype=np.float32, caching="unchanged")  # the image keeps no copy
    except Exception as e:  # truncated gzip, short reads, bad headers
        raise InputError(path, f"unreadable or truncated NIfTI ({e})") from None
    data = data.reshape(data.shape[:4])
    if not np.isfinite(data).all():
        raise InputError(path, "NaN or inf voxels")
    return data, img


def read_scan(scan: Scan, channels: Sequence[str], dataset: dict[str, Any]) -> Volume:
    """Read and normalize `scan` as training did: C x Z x H x W in [0, 1] on the input's grid."""
    window = [float(v) for v in dataset["window"]]
    percentiles = [float(v) for v in dataset["percentiles"]]
    if len(scan.files) == 1 and channel_count(scan) > 1:
        data, img = _read_4d(scan.files[0])
        affine, header = np.asarray(img.affine, np.float64), img.header
        raw = [to_zyx(data[..., c], affine) for c in range(data.shape[3])]
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        del data  # the Z x H x W copies replace the I x J x K x C array
    else:
        vols = [read_image(p) for p in scan.files]
        for other in vols[1:]:
            check_same_grid(vols[0], other)
        raw = [to_zyx(v.data, v.affine) for v in vols]
        affine, header, zooms = vols[0].affine, vols[0].header, vols[0].zooms
        del vols  # the Z x H x W copies replace the I x J x K arrays
    # Peak memory is two float32 volumes per channel (file order and slice order, briefly):
    # windowing works in place and one channel is not copied again by stacking.
    normalized = []
    for i, (x, name) in enumerate(zip(raw, channels, strict=True)):
        source = scan.files[i] if len(scan.files) > 1 else scan.files[0]
        if name.upper() == "CT":
            normalized.append(ct_window(x, (window[0], window[1]), in_place=True))
        else:
            normalized.append(percentile_normalize(x, (percentiles[0], percentiles[1]), source))
    del raw, x
    image = normalized[0][None] if len(normalized) == 1 else np.stack(normalized)
    spacing = spacing_zyx((zooms[0], zooms[1], zooms[2]), affine)
    return Volume(scan.name, image, None, affine, spacing, scan.files[0], header)


def output_paths(scans: list[Scan], output: Path) -> list[Path]:
    """Where each scan's label map goes: `output` itself when it names a NIfTI file (its
    extension in lower case, which `write_nifti` compresses by and nibabel reads back)."""
    stem = _stem(output)
    if stem is not None:
        if len(scans) != 1:
            raise InputError(
                output, f"the input holds {len(scans)} scans: give a folder as --output"
            )
        return [output.with_name(stem + output.name[len(stem) :].lower())]
    return [output / f"{s.name}.nii.gz" for s in scans]


def read_model_config(adapter: Path, unet: Path | None) -> dict[str, Any]:
    """The config.json of the model that will segment (the U-Net when `unet` is given), checked
    before any scan is read."""
    if unet is None:
        config = read_adapter_config(adapter)
        check_adapter(config, Path(adapter) / CONFIG_FILE)
        return config
    config = read_unet_config(unet)
    if not config.get("enabled"):
        raise InputError(
            Path(unet) / CONFIG_FILE,
            "a stub: the baseline was not trained (baseline.enabled was false)",
        )
    if not isinstance(config.get("dataset"), dict) or not isinstance(config.get("channels"), list):
        raise InputError(Path(unet) / CONFIG_FILE, "lacks its channels or preprocessing (dataset)")
    return config


def load_model(
    adapter: Path, unet: Path | None, checkpoint: str | None, config: dict[str, Any]
) -> tuple[torch.nn.Module, Callable[..., np.ndarray], dict[str, Any]]:
    """The model, the function that labels a volume with it (`predict_volume` or `predict_unet`,
    which take the same model, image, batch, out_hw and on_batch) and its config."""
    if unet is None:
        model, config = load_adapter(adapter, checkpoint)
        return model, predict_volume, config
    net = load_unet(unet, tuple(config["classes"]), tuple(config["channels"]))
    assert net is not None  # read_model_config refused a stub
    return net, predict_unet, config


def run(
    params: Params,
    adapter: Path,
    input_path: Path,
    output: Path,
    checkpoint: str | None = None,
    unet: Path | None = None,
    refine: str = "none",
) -> list[Path]:
    """Segment every scan of `input_path` with the adapter, or with the U-Net baseline of the
    folder `unet`; returns the files written, in order. Each label map is post-processed as
    `evaluate.postprocess` says; `refine` (none | litemedsam | base): SAM then refines it from
    boxes (`evaluate.refine`), with the margin and trust rule of `params.evaluate`."""
    if unet is not None and checkpoint is not None:
        raise ParamsError("--checkpoint goes with the adapter; the U-Net has no base weights")
    if refine != "none" and refine not in REFINERS:
        raise ParamsError(f"--refine: one of none, {', '.join(REFINERS)}; got {refine!r}")
    config = read_model_config(adapter, unet)
    channels = tuple(config["channels"])
    scans, skipped = find_scans(input_path, channels)
    for scan in scans:  # refuse before computing anything
        check_channels(scan, channels)
    targets = output_paths(scans, output)
    sources = {p.resolve() for s in scans for p in s.files}
    for target in targets:
        if target.resolve() in sources:
            raise InputError(target, "output would overwrite an input scan")
        ensure_parent(target)  # an unwritable output fails before any scan is segmented
    model, predict, config = load_model(adapter, unet, checkpoint, config)
    model = model.to(pick_device(params.train.device))
    refiner = None
    if refine != "none":
        refiner = open_refiner(refine, params.model, len(config["classes"]))
    size = int(config["dataset"]["slice_size"])
    written = []
    with make_progress() as progress:
        for scan, target in zip(scans, targets, strict=True):
            volume = read_scan(scan, channels, config["dataset"])
            _, z, h, w = volume.image.shape
            task = progress.add_task(scan.name, total=z)
            label = predict(
                model,
                resize_volume(volume, size).image,
                params.evaluate.batch_size,
                out_hw=(h, w),
                on_batch=lambda n, task=task: progress.advance(task, n),
            )
            label = postprocess(label, len(config["classes"]), params.evaluate.postprocess)
            if refiner is not None:
                ev = params.evaluate
                step = progress.add_task(f"{scan.name} refine", total=z)
                label = refine_volumes(
                    refiner,
                    volume.image,
                    {"label": label},
                    len(config["classes"]),
                    ev.refine_margin,
                    Trust.of(ev),
                    on_slice=lambda step=step: progress.advance(step, 1),
                )["label"]
            write_nifti(target, label, volume.affine, volume.header)
            written.append(target)
    # After the work, so that a run that fails prints its one error line and nothing else.
    for path, why in skipped:
        print(f"predict: skipped {path} ({why})", file=sys.stderr)
    return written
