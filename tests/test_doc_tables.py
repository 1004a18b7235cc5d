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
        _record("lcc-9-synth-s0", 0.50, 0.70),
        _record("lcc-9-synth-s1", 0.70, 0.70),
        _record("default-lcc-s0", 0.50, 0.60),
        _record("default-lcc-s1", 0.60, 0.80),
        # The same grid point on another CPU: fewsam moved by 0.03 (replicate 1), the U-Net more.
        _record("intel-lcc-9-synth-s0", 0.50, 0.60),
        _record("intel-lcc-9-synth-s1", 0.73, 0.90),
        # The default run on the other CPU, replicates 0 and (queued under its own name) 3.
        _record("default-lcc-intel-s0", 0.50, 0.60),
        _record("default-lcc-intel-more-s3", 0.52, 0.90),
        # Groups of another recipe and the runs before post-processing: not in the tables.
        _record("lr005-9-synth-s0", 0.10, 0.10),
        _record("default-s0", 0.10, 0.10),
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
    # The other CPU's U-Net: 60 and 90, 75 ± 21.21; fewsam's largest change 0.73 - 0.70.
    assert "the same replicates on another CPU (Intel Xeon) | 75.00 ± 21.21 |" in text
    assert "fewsam's DSC moved by at most 3.00 points" in text
    # The default table: this run's value, then the replicates' spread on each CPU (60 and 80:
    # 70 ± 14.14; 60 and 90: 75 ± 21.21).
    assert "| U-Net, same synthetic data | 60.00 | 70.00 ± 14.14 (2) | 75.00 ± 21.21 (2) |" in text
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


def _selftrain_record(replicate: int, shift: float) -> dict:
    """A self-training record at 9 exemplars: every student `shift` above its teacher in both
    test cases, the U-Net taught by fewsam 0.02 above the one taught by itself."""
    base = {"adapter": 0.5, "adapter_prompted": 0.45, "unet": 0.6}
    base = {k: v + 0.2 * replicate for k, v in base.items()}
    values = {
        **base,
        "adapter_st": base["adapter"] + shift,
        "adapter_st_prompted": base["adapter_prompted"] + shift,
        "unet_st_sam": base["unet"] + shift + 0.02,
        "unet_st_unet": base["unet"] + shift,
    }
    return {
        "exemplars": 9,
        "replicate": replicate,
        **values,
        "case_dice": {k: {"case0001": v - 0.1, "case0002": v + 0.1} for k, v in values.items()},
    }


def test_the_selftrain_study_gives_its_table_and_result_rows(project: Path) -> None:
    lines = [json.dumps(_selftrain_record(r, 0.05)) for r in (0, 1)]
    (project / doc_tables.SELFTRAIN).write_text("\n".join(lines) + "\n")
    page = project / "docs" / "selftrain.md"
    page.write_text(
        "<!-- table:selftrain:start -->\n<!-- table:selftrain:end -->\n"
        "<!-- table:results:start -->\n<!-- table:results:end -->\n"
    )
    doc_tables.update(project)
    text = page.read_text()
    # Before 50 and 70 (60 ± 14.14), after 55 and 75; every paired difference is +5 points.
    assert (
        "| 9 | fewsam prompt-free, retrained on its own pseudo-labels | 2 | 60.00 ± 14.14 | "
        "65.00 ± 14.14 | +5.00 [+5.00, +5.00] |" in text
    )
    assert (
        "| 9 | U-Net: fewsam's pseudo-labels against its own | 2 | 75.00 ± 14.14 | "
        "77.00 ± 14.14 | +2.00 [+2.00, +2.00] |" in text
    )
    assert (
        "| U-Net, retrained on fewsam's pseudo-labels | 77.00 ± 14.14 (from 70.00 ± 14.14) |"
        in (text)
    )
    assert f"`{doc_tables.SELFTRAIN}`." in text


def test_a_replicate_group_joins_the_prefixes_it_names_and_nothing_else() -> None:
    names = ["a-s1", "a-s0", "a-more-s3", "a-more-s4", "ab-s2", "a-s0x", "b-s0"]
    records = [_record(n, 0.5, 0.5) for n in names]
    assert [r.name for r in doc_tables.replicate_groups(records, "a")] == ["a-s0", "a-s1"]
    joined = doc_tables.replicate_groups(records, "a+a-more")
    assert [r.name for r in joined] == ["a-s0", "a-s1", "a-more-s3", "a-more-s4"]
    assert [r.name for r in doc_tables.replicate_groups(records, "b")] == ["b-s0"]
