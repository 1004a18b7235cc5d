"""The docs' generated tables: regenerated from the committed records, they must equal what is
committed; and the generator itself, on a small archive whose numbers are known by hand."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from core.errors import InputError
from fewsam import doc_tables, exp_archive
from fewsam.exp_records import ExpRecord

ROOT = Path(__file__).resolve().parents[1]


def test_committed_tables_match_their_records() -> None:
    stale = doc_tables.update(ROOT, check=True)
    assert stale == [], (
        f"tables differ from their records in {[str(p) for p in stale]}: "
        "run `fewsam report --docs` and commit"
    )


def _record(name: str, dsc: float, unet: float) -> ExpRecord:
    metrics = {
        "dsc": dsc,
        "dsc_prompt_free": dsc + 0.01,
        "unet_dsc": unet,
        "zero_shot_dsc": 0.4,
        "zero_shot_box_dsc": 0.65,
    }
    return ExpRecord(name, "0" * 40, "1" * 40, "success", "2026-01-01", {}, metrics, {}, None)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "docs").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps({"dsc": 0.5, "unet_dsc": 0.6}))
    records = [
        _record("lr005-9-synth-s0", 0.50, 0.70),
        _record("lr005-9-synth-s1", 0.70, 0.70),
        _record("default-s0", 0.50, 0.60),
        _record("default-s1", 0.60, 0.80),
    ]
    exp_archive.save(tmp_path / doc_tables.ARCHIVE, records)
    return tmp_path


def test_blocks_are_regenerated_and_staleness_is_reported(project: Path) -> None:
    page = project / "docs" / "results.md"
    page.write_text(
        "# Results\n\n<!-- table:results:start -->\n| old | table |\n<!-- table:results:end -->\n"
        "text after\n\n<!-- table:default:start -->\n<!-- table:default:end -->\n"
    )
    assert doc_tables.update(project, check=True) == [page]
    assert "old" in page.read_text()  # check mode writes nothing
    assert doc_tables.update(project) == [page]
    text = page.read_text()
    # Hand-computed: mean of 50 and 70 is 60, sample sd sqrt(((50-60)^2 + (70-60)^2) / 1) = 14.14.
    assert "| fewsam, prompted (one point per organ) | 60.00 ± 14.14 |" in text
    assert "| fewsam, prompt-free | 61.00 ± 14.14 |" in text
    assert "| U-Net, same synthetic data | 70.00 |" in text  # sd 0: shown as one value
    # The default table: this run's value, then the replicates' spread (60 and 80: 70 ± 14.14).
    assert "| U-Net, same synthetic data | 60.00 | 70.00 ± 14.14 (2) |" in text
    assert "old" not in text and "text after" in text
    assert doc_tables.update(project, check=True) == []


def test_a_new_record_makes_the_committed_table_stale(project: Path) -> None:
    page = project / "README.md"
    page.write_text("<!-- table:results:start -->\n<!-- table:results:end -->\n")
    doc_tables.update(project)
    records = exp_archive.load(project / doc_tables.ARCHIVE)
    changed = [dataclasses.replace(r, metrics={**r.metrics, "dsc": 0.9}) for r in records]
    exp_archive.save(project / doc_tables.ARCHIVE, changed)
    assert doc_tables.update(project, check=True) == [page]


def test_an_unknown_table_names_the_page(project: Path) -> None:
    page = project / "docs" / "x.md"
    page.write_text("<!-- table:nosuch:start -->\n<!-- table:nosuch:end -->\n")
    with pytest.raises(InputError, match="x.md.*unknown table `nosuch`"):
        doc_tables.update(project, check=True)
