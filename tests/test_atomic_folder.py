"""core.atomic.atomic_folder: model folders (weights + config) change as one, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.atomic import atomic_folder
from core.errors import InputError

OWNED = ("weights.bin", "config.json")


def write(folder: Path, version: str) -> None:
    with atomic_folder(folder, OWNED) as tmp:
        assert tmp.parent == folder.parent and tmp != folder
        for name in OWNED:
            (tmp / name).write_text(version)


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_success_swaps_in_the_whole_folder_and_leaves_no_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "model"
    write(out, "v1")
    write(out, "v2")
    assert contents(out) == {"config.json": "v2", "weights.bin": "v2"}
    assert [p.name for p in out.parent.iterdir()] == ["model"]


def test_a_failure_inside_the_block_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "model"
    write(out, "v1")
    with pytest.raises(RuntimeError), atomic_folder(out, OWNED) as tmp:
        (tmp / "weights.bin").write_text("half")
        raise RuntimeError("killed half-way")
    assert contents(out) == {"config.json": "v1", "weights.bin": "v1"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_first_write_that_fails_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_folder(out, OWNED):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_other_files_is_refused_not_deleted(tmp_path: Path) -> None:
    out = tmp_path / "model"
    write(out, "v1")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds other files \(notes.txt\)"):
        write(out, "v2")
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "weights.bin").read_text() == "v1"


def test_a_file_where_the_folder_goes_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.write_text("not a folder")
    with pytest.raises(InputError, match="is a file"):
        write(out, "v1")
    assert out.read_text() == "not a folder"
