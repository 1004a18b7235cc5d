"""`slices.csv`, the manifest of the annotation folder: parsed as people save it, written back.

Tolerated because spreadsheets and editors produce them: a UTF-8 byte-order mark (Excel's "CSV
UTF-8"), CRLF line ends, blank lines (also rows of empty cells), columns in any order, header
names in other case or with spaces around them, `;` or tab as the separator (spreadsheets in
locales whose decimal mark is a comma), whole numbers written as `3.0`. Columns fewsam does not
know are kept, in their order, when fewsam writes the manifest back.

Refused with InputError naming the file (and the line): a missing file, text that is not UTF-8, a
missing `case`, `slice` or `axis` column, a value that cannot be read. Row-level facts that need
the dataset (a duplicated row, an unknown case, a slice outside its scan) are problems of
`synth.annotations.folder`, so that every one of them is listed, not only the first.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.atomic import write_text
from core.errors import InputError

MANIFEST = "slices.csv"
REQUIRED = ("case", "slice", "axis")
# Written in this order; `negative` last, so a person editing by hand finds it at the end.
FIELDS = (
    "case",
    "slice",
    "axis",
    "position_mm",
    "rank",
    "strategy",
    "score",
    "round",
    "draft_sha256",
    "file_sha256",
    "negative",
)
_YES = {"1", "yes", "y", "true", "x"}
_NO = {"", "0", "no", "n", "false"}


@dataclass(frozen=True)
class SliceRow:
    """One listed slice.

    case          training case id (as the dataset reader names it)
    slice         voxel index of the slice along `axis` of the label file
    axis          the file's voxel axis (0/1/2) closest to superior-inferior (2 for axial storage)
    position_mm   world coordinate of the slice centre along that direction (mm)
    rank          order of suggestion within its round (1 = first)
    strategy      how it was chosen (spread, random, diverse, uncertain, or manual)
    score         the strategy's score for it (distance, entropy; None when none)
    round         1 for the first suggestions, 2 for the next, ...
    draft_sha256  SHA-256 of the slice as `suggest` wrote it (zeros or the model's draft)
    file_sha256   SHA-256 of the label file right after `suggest` (or the page) last wrote it
    negative      True: the slice truly shows none of the classes (a negative exemplar)
    extra         columns fewsam does not know, (name, value) in file order, kept on write
    line          line of the row in the file (0 for rows not read from a file); not written
    """

    case: str
    slice: int
    axis: int
    position_mm: float = float("nan")
    rank: int = 0
    strategy: str = "manual"
    score: float | None = None
    round: int = 1
    draft_sha256: str = ""
    file_sha256: str = ""
    negative: bool = False
    extra: tuple[tuple[str, str], ...] = ()
    line: int = field(default=0, compare=False)


def _int(text: str, name: str) -> int:
    value = float(text)  # "3.0" from a spreadsheet is 3; "3.5" is refused below
    if not value.is_integer():
        raise ValueError(f"{name} {text!r} is not a whole number")
    return int(value)


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise ValueError(f"negative {text!r} is not one of 1/0, yes/no, true/false")


def _parse_row(raw: dict[str, str], extras: list[str], path: Path, line: int) -> SliceRow:
    get = {k: (raw.get(k) or "").strip() for k in FIELDS}
    try:
        if not get["case"]:
            raise ValueError("empty case")
        return SliceRow(
            case=get["case"],
            slice=_int(get["slice"], "slice"),
            axis=_int(get["axis"], "axis"),
            position_mm=float(get["position_mm"] or "nan"),
            rank=_int(get["rank"] or "0", "rank"),
            strategy=get["strategy"] or "manual",
            score=float(get["score"]) if get["score"] else None,
            round=_int(get["round"] or "1", "round"),
            draft_sha256=get["draft_sha256"],
            file_sha256=get["file_sha256"],
            negative=_flag(get["negative"]),
            extra=tuple((name, raw.get(name) or "") for name in extras),
            line=line,
        )
    except ValueError as e:
        raise InputError(path, f"line {line}: not a valid row ({e})") from None


def _delimiter(header: str) -> str:
    if "," in header:
        return ","
    return ";" if ";" in header else ("\t" if "\t" in header else ",")


def read_manifest(folder: Path) -> list[SliceRow]:
    """The rows of `<folder>/slices.csv` in file order; InputError on what cannot be read."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(path, "annotation manifest not found (run `fewsam synth suggest`)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text (byte {e.start}); save it as CSV UTF-8") from None
    lines = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text.split("\n")[0]))
    header: list[str] | None = None
    rows = []
    for raw in lines:
        if not any(cell.strip() for cell in raw):
            continue  # a blank line, or a row of empty cells
        if header is None:
            header = [name.strip().lower() for name in raw]
            missing = [f for f in REQUIRED if f not in header]
            if missing:
                raise InputError(path, f"missing column(s) {', '.join(missing)}")
            extras = [name for name in header if name not in FIELDS]
            continue
        if len(raw) > len(header) and any(cell.strip() for cell in raw[len(header) :]):
            raise InputError(path, f"line {lines.line_num}: more cells than columns")
        values = dict(zip(header, raw, strict=False))
        rows.append(_parse_row(values, extras, path, lines.line_num))
    if header is None:
        raise InputError(path, "empty manifest (no header line)")
    return rows


def write_manifest(folder: Path, rows: list[SliceRow]) -> None:
    """Write `<folder>/slices.csv` atomically, rows in the given order, unknown columns kept."""
    extras: list[str] = []
    for row in rows:
        extras.extend(name for name, _ in row.extra if name not in extras)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*FIELDS, *extras], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values: dict[str, object] = asdict(row)
        del values["extra"], values["line"]
        values["position_mm"] = f"{row.position_mm:.3f}"
        values["score"] = "" if row.score is None else f"{row.score:.6g}"
        values["negative"] = "1" if row.negative else ""
        values.update(dict(row.extra))
        writer.writerow(values)
    write_text(Path(folder) / MANIFEST, buffer.getvalue())


def listed_cases(rows: list[SliceRow]) -> dict[str, list[SliceRow]]:
    """Rows grouped by case, cases sorted, each case's rows by slice."""
    out: dict[str, list[SliceRow]] = {}
    for row in sorted(rows, key=lambda r: (r.case, r.slice)):
        out.setdefault(row.case, []).append(row)
    return out
