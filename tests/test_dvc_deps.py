"""Each stage depends on exactly the code it imports: an edit stales only the stages it can change.

In a micro copy of the project (tests/dvc_project.py), reproduced once, one file of each package
is edited in turn and `dvc status` says which stages see a changed dependency. Only the stages
whose own deps changed are listed (their downstream stages re-run through changed data, which
is DVC's business, not this table's). Non-stage code (pretraining, previews, the grid, the CLI
wiring) stales nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvc_project import STAGES, make_project, repro, sh

pytestmark = pytest.mark.slow

EVERY_STAGE = set(STAGES)
READS_DATASETS = {"phantom", "extract", "synthesize", "infer", "score"}
# Edited file -> the stages that must be stale, and no others.
EXPECTED = {
    "core/errors.py": EVERY_STAGE,
    "core/streams.py": EVERY_STAGE,
    "synth/datasets/base.py": READS_DATASETS,
    "synth/paste.py": {"extract", "synthesize", "infer", "score"},
    "train/loss.py": {"train", "baseline", "infer"},
    "baseline/network.py": {"baseline", "infer"},
    "evaluate/metrics.py": {"infer", "score"},
    "annotate/engines.py": {"infer"},
    "phantom/abdomen.py": {"phantom"},
    "pretrain/loop.py": set(),
    "suggest/run.py": set(),
    "fewsam/preview.py": set(),
    "fewsam/paper_report.py": set(),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("deps"))
    assert repro(root) == EVERY_STAGE
    return root


def stale_stages(root: Path) -> set[str]:
    """Stages whose code or data dependencies differ from dvc.lock."""
    status = json.loads(sh(root, "dvc", "status", "--json").stdout)
    stale = set()
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, dict) and "changed deps" in change:
                stale.add(stage.split(":")[-1])
    return stale


def test_the_table_names_every_package() -> None:
    packages = {path.split("/")[0] for path in EXPECTED}
    assert packages == {
        "core",
        "synth",
        "train",
        "baseline",
        "evaluate",
        "phantom",
        "pretrain",
        "suggest",
        "annotate",
        "fewsam",
    }


def test_status_is_clean_after_repro(project: Path) -> None:
    assert stale_stages(project) == set()


@pytest.mark.parametrize("edited", sorted(EXPECTED))
def test_an_edit_stales_exactly_its_stages(project: Path, edited: str) -> None:
    path = project / edited
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit changes the folder's hash\n")
        assert stale_stages(project) == EXPECTED[edited]
    finally:
        path.write_bytes(original)
    assert stale_stages(project) == set()
