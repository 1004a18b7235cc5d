"""Stage `score`: Dice and HD95 of folders of label maps against the ground truth.

Predictions are NIfTI label maps, `<case>.nii.gz`, either in one subfolder per method
(`reports/predictions/<method>/`, what `infer` writes) or in one flat folder (one method, named
after the folder). Each is scored per class under a protocol (`evaluate.protocols`) against the
ground truth of its case, on the ground truth's grid; the reports are those of
`evaluate.reports`, and a per-class table is printed.

Two sources of ground truth:

- pipeline mode (`run_pipeline`): the dataset reader of `params.dataset`, its test cases (at
  most `evaluate.max_cases`) on their source grid and with their source spacing, whatever
  `dataset.slice_size` the models worked at;
- folder mode (`run_folders`): any folder of `<case>.nii.gz` label maps (nnU-Net's `labelsTs/`,
  say), so other tools' predictions are scored under exactly the same protocol; spacing from the
  ground-truth files' headers. The class names come from `--classes` or from a dataset.json in
  or just above the folder; without either the command stops, since the label ids found in the
  files cannot tell how many classes there are (a class absent from every file would vanish).

`run` is `fewsam evaluate score`: it checks the options, then picks the mode.

Every case of the ground truth needs a prediction of every method and every prediction a ground
truth; a prediction must lie on its ground truth's grid (shape and affine) and hold ids 0..K
only. Anything else is an `InputError` naming the file. No model is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from core.atomic import ensure_parent
from core.errors import InputError, ParamsError
from core.params import Params, load_params
from core.progress import track
from core.volume import Volume, spacing_zyx, to_zyx
from evaluate import reports
from evaluate.layout import evaluation_cases, method_order, nifti_cases
from evaluate.protocols import (
    PROTOCOLS,
    ClassScore,
    ProtocolName,
    Summary,
    score_case,
    summarize,
)
from synth.datasets import open_dataset
from synth.datasets.nifti import read_dataset_json
from synth.datasets.nifti_io import AFFINE_TOLERANCE_MM, NiftiVolume, label_ids, read_label

# method -> case -> the case's class scores
Results = dict[str, dict[str, list[ClassScore]]]


@dataclass(frozen=True)
class MethodFiles:
    """The label maps of one method: its folder and case -> file."""

    folder: Path
    files: dict[str, Path]


# method -> its files
Predictions = dict[str, MethodFiles]


@dataclass(frozen=True)
class Truth:
    """The ground truth of one case on its source grid."""

    case: str
    label: np.ndarray  # Z x H x W uint8 class ids 0..K (`core.volume.to_zyx` of the file)
    shape_ijk: tuple[int, ...]  # the file's array shape
    affine: np.ndarray
    spacing: tuple[float, float, float]  # mm along (Z, H, W)
    source: Path  # the file whose grid it is, named in messages

    @classmethod
    def of_volume(cls, volume: Volume) -> Truth:
        """A reader's labeled volume on its source grid."""
        assert volume.label is not None
        shape = getattr(volume.header, "get_data_shape", tuple)()[:3]
        if len(shape) < 3:  # no NIfTI header (synapse-npz): the identity affine, no transpose
            shape = volume.label.shape[::-1]
        return cls(
            volume.case,
            volume.label,
            tuple(int(n) for n in shape),
            volume.affine,
            volume.spacing,
            volume.source,
        )

    @classmethod
    def of_file(cls, case: str, path: Path, num_classes: int) -> Truth:
        """A ground-truth label map file (ids 0..num_classes)."""
        volume = read_label(path)
        ids = _ids_within(volume, num_classes, "ground-truth")
        spacing = spacing_zyx(volume.zooms, volume.affine)
        return cls(case, to_zyx(ids, volume.affine), ids.shape, volume.affine, spacing, path)


def find_predictions(folder: Path) -> Predictions:
    """The methods and case files under `folder`: flat (one method) or one subfolder each."""
    if not folder.is_dir():
        raise InputError(folder, "prediction folder not found")
    flat = nifti_cases(folder)
    if flat:
        return {folder.resolve().name: MethodFiles(folder, flat)}
    found = {
        sub.name: MethodFiles(sub, nifti_cases(sub))
        for sub in folder.iterdir()
        if sub.is_dir() and not sub.name.startswith(".")
    }
    if not found:
        raise InputError(
            folder, "no prediction: expected <case>.nii.gz files or <method>/<case>.nii.gz"
        )
    return {method: found[method] for method in method_order(list(found))}


def check_cases(predictions: Predictions, cases: Sequence[str], truth: str) -> None:
    """Every case has a prediction of every method, and every prediction is of a case.

    truth: what the cases are, for messages ("the ground truth in labelsTs").
    """
    for method, found in predictions.items():
        missing = [case for case in cases if case not in found.files]
        if missing:
            raise InputError(
                found.folder / f"{missing[0]}.nii.gz",
                f"missing: no {method} prediction of case {missing[0]} "
                f"({len(missing)} of the {len(cases)} cases of {truth} lack one)",
            )
        extra = sorted(set(found.files) - set(cases))
        if extra:
            raise InputError(found.files[extra[0]], f"case {extra[0]} is not among {truth}")


def _ids_within(volume: NiftiVolume, num_classes: int, what: str) -> np.ndarray:
    """The label data as uint8; InputError naming the file when an id is above the classes."""
    present = label_ids(volume.data)
    bad = [int(i) for i in present if not 0 <= int(i) <= num_classes]
    if bad:
        shown = ", ".join(str(i) for i in bad[:8])
        raise InputError(
            volume.path,
            f"{what} label ids {shown} outside 0..{num_classes} ({num_classes} classes)",
        )
    return volume.data.astype(np.uint8, copy=False)


def read_prediction(path: Path, truth: Truth, num_classes: int) -> np.ndarray:
    """The Z x H x W label map in `path`, checked to lie on `truth`'s grid."""
    volume = read_label(path)
    if volume.data.shape != truth.shape_ijk:
        got, expected = ("x".join(map(str, s)) for s in (volume.data.shape, truth.shape_ijk))
        raise InputError(
            path, f"grid {got} differs from the ground truth's {expected} ({truth.source})"
        )
    if not np.allclose(volume.affine, truth.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        diff = float(np.abs(volume.affine - truth.affine).max())
        raise InputError(
            path, f"affine differs from the ground truth's ({truth.source}) by up to {diff:.4g} mm"
        )
    return to_zyx(_ids_within(volume, num_classes, "predicted"), truth.affine)


def score_predictions(
    predictions: Predictions,
    truths: Iterable[Truth],
    num_classes: int,
    protocol: ProtocolName,
) -> Results:
    """Every method's class scores of every case; one ground truth and one prediction held."""
    results: Results = {method: {} for method in predictions}
    for truth in truths:
        for method, found in predictions.items():
            pred = read_prediction(found.files[truth.case], truth, num_classes)
            scores = score_case(pred, truth.label, num_classes, truth.spacing, protocol)
            results[method][truth.case] = scores
    return results


def per_class_table(summaries: dict[str, Summary], classes: Sequence[str], unit: str) -> Table:
    """Rich table: one row per class and the mean, Dice and HD95 of each method."""
    table = Table(title=f"Test set: Dice and HD95 ({unit})")
    table.add_column("class")
    for method in summaries:
        table.add_column(f"{reports.METHOD_TITLES.get(method, method)}\nDice", justify="right")
        table.add_column("HD95", justify="right")

    def fmt(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for i, name in enumerate(classes):
        cells = []
        for s in summaries.values():
            cells += [fmt(s.class_dice[i], 3), fmt(s.class_hd95[i], 2)]
        table.add_row(name, *cells)
    means = []
    for s in summaries.values():
        means += [fmt(s.dice, 3), fmt(s.hd95, 2)]
    table.add_row("[bold]mean[/bold]", *means)
    return table


def write_reports(
    out: Path, results: Results, classes: Sequence[str], protocol: ProtocolName
) -> dict[str, Any]:
    """metrics.json, per_case.csv and per_class.csv under `out`; prints the per-class table."""
    summaries = {
        m: summarize(list(by_case.values()), len(classes)) for m, by_case in results.items()
    }
    cases = len(next(iter(results.values())))
    metrics = reports.metrics_dict(protocol, classes, cases, summaries)
    reports.write_per_case(out / "per_case.csv", results, classes)
    reports.write_per_class(out / "per_class.csv", summaries, classes)
    reports.write_metrics(out / "metrics.json", metrics)
    # Off a terminal (DVC logs, pipes) rich would wrap the table at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(per_class_table(summaries, classes, metrics["hd95_unit"]))
    return metrics


def run_pipeline(
    params: Params, predictions: Path, out: Path, protocol: ProtocolName | None = None
) -> dict[str, Any]:
    """Score `predictions` against the dataset's test cases; `protocol` overrides the params'."""
    ensure_parent(out / "metrics.json")  # an unwritable `out` fails before any case is read
    reader = open_dataset(params.dataset, params.seed)
    cases = evaluation_cases(reader, params.evaluate.max_cases)
    protocol = protocol or params.evaluate.protocol
    scored = [case for case in cases if reader.labeled(case)]
    if not scored:
        return write_unscored(out, reader.classes, protocol, len(cases))
    found = unscored_dropped(find_predictions(predictions), set(cases) - set(scored))
    check_cases(found, scored, f"the labeled test cases of {reader.root}")

    def truths() -> Iterator[Truth]:
        for case in track(scored, "score"):
            yield Truth.of_volume(reader.load(case, resize=False))

    results = score_predictions(found, truths(), len(reader.classes), protocol)
    return write_reports(out, results, reader.classes, protocol)


def unscored_dropped(predictions: Predictions, unlabeled: set[str]) -> Predictions:
    """`predictions` without the label maps of unlabeled test scans (segmented, not scored)."""
    out = {}
    for method, found in predictions.items():
        files = {case: path for case, path in found.files.items() if case not in unlabeled}
        if files or not found.files:
            out[method] = MethodFiles(found.folder, files)
    return out


def write_unscored(
    out: Path, classes: Sequence[str], protocol: ProtocolName, segmented: int
) -> dict[str, Any]:
    """The reports when no test scan has a label: `cases: 0`, null headline scores, empty CSVs."""
    metrics: dict[str, Any] = {
        "protocol": protocol,
        "hd95_unit": "voxel" if protocol == "transunet" else "mm",
        "cases": 0,
        "note": f"nothing was scored: none of the {segmented} test scans has a label",
    }
    for dsc_key, hd95_key in reports.HEADLINE_KEYS.values():
        metrics[dsc_key] = metrics[hd95_key] = None
    reports.write_per_case(out / "per_case.csv", {}, classes)
    reports.write_per_class(out / "per_class.csv", {}, classes)
    reports.write_metrics(out / "metrics.json", metrics)
    print(metrics["note"])
    return metrics


def parse_classes(text: str) -> tuple[str, ...]:
    """`liver, spleen` -> ("liver", "spleen"); ParamsError on an empty name."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise ParamsError(f"--classes: empty class name in {text!r} (give names like a,b,c)")
    return names


def folder_classes(folder: Path) -> tuple[str, ...]:
    """Class names of a ground-truth folder from an nnU-Net/MSD dataset.json in it or just above
    it; ParamsError asking for --classes when neither names them."""
    for meta in (folder / "dataset.json", folder.parent / "dataset.json"):
        if meta.is_file():
            _, classes = read_dataset_json(meta)
            if classes:
                return classes
    raise ParamsError(
        f"--classes: required with --gt {folder}, which has no dataset.json (in it or just "
        'above it) naming the classes; give the names of ids 1..K, e.g. --classes "liver,spleen"'
    )


def run_folders(
    predictions: Path,
    ground_truth: Path,
    out: Path,
    protocol: ProtocolName = "transunet",
    classes: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Score a folder of predictions against a folder of ground-truth label maps; `classes`
    names ids 1..K (default: the folder's dataset.json, see `folder_classes`)."""
    if not ground_truth.is_dir():
        raise InputError(ground_truth, "ground-truth folder not found")
    # Before `out` is created: a refused command leaves nothing behind.
    names = classes or folder_classes(ground_truth)
    ensure_parent(out / "metrics.json")
    files = nifti_cases(ground_truth)
    if not files:
        raise InputError(ground_truth, "no <case>.nii.gz ground truth in this folder")
    found = find_predictions(predictions)
    check_cases(found, list(files), f"the ground truth in {ground_truth}")

    truths = (Truth.of_file(c, p, len(names)) for c, p in track(list(files.items()), "score"))
    results = score_predictions(found, truths, len(names), protocol)
    return write_reports(out, results, names, protocol)


def check_protocol(protocol: str | None) -> ProtocolName | None:
    """`--protocol` checked: one of PROTOCOLS, or None for the default."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ParamsError(f"--protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    return protocol  # type: ignore[return-value]


def run(
    params_path: Path,
    predictions: Path,
    out: Path,
    ground_truth: Path | None = None,
    protocol: str | None = None,
    classes: str | None = None,
) -> dict[str, Any]:
    """`fewsam evaluate score`: the options checked, then the pipeline mode (the params' dataset,
    read from `params_path`) or, with `ground_truth`, the folder mode."""
    chosen = check_protocol(protocol)
    if ground_truth is None:
        if classes is not None:
            raise ParamsError("--classes goes with --gt (the dataset names its own classes)")
        return run_pipeline(load_params(params_path), predictions, out, chosen)
    names = parse_classes(classes) if classes is not None else None
    return run_folders(predictions, ground_truth, out, chosen or "transunet", names)
