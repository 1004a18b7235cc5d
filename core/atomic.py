"""Atomic writes: a file appears under its final name only once it is complete."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from core.errors import InputError

# Temporary files of writes that started before this moment belong to processes that came before
# this one (the module is imported before any write of this process begins).
_STARTED = time.time()
# mkstemp's random part: 8 characters of [a-z0-9_].
_RANDOM = r"[a-z0-9_]{8}"


def plain_mode(directory: bool) -> int:
    """The mode `open()`/`mkdir()` would give under the current umask (mkstemp/mkdtemp use 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def ensure_parent(final: str | Path) -> None:
    """Create the folder of `final`; InputError naming `final` when that is impossible.

    Stages call it for their outputs before the work starts, so an output path that cannot be
    written (a regular file where a folder should be) fails at once, not after hours of work.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(final, f"cannot be written ({e.strerror or e})") from e


def clean_stale(final: str | Path) -> list[Path]:
    """Remove temporary files `.{name}.XXXXXXXX*.tmp` of `final` left by killed processes.

    A process killed with SIGKILL cannot remove its temporary file. Only files last modified
    before this process started are removed, so a write of this process is never touched.
    Returns the paths removed.
    """
    final = Path(final)
    pattern = re.compile(re.escape(f".{final.name}.") + _RANDOM + r"(\.[A-Za-z0-9]+)*\.tmp")
    removed = []
    with contextlib.suppress(OSError):  # a folder that cannot be listed has nothing to clean
        for entry in os.scandir(final.parent):
            if not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):  # gone already, or not a plain file
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < _STARTED:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` when the block succeeds.

    On any exception the temporary file is removed, so an interrupted or failed write never leaves
    a file that looks finished. A process killed outright (SIGKILL, power loss) leaves its hidden
    temporary file; the next write of the same `final` removes it (`clean_stale`). The temp name
    keeps `suffix` so libraries that look at extensions (nibabel, matplotlib) still work.
    """
    final = Path(final)
    ensure_parent(final)
    clean_stale(final)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent
        )
    except OSError as e:
        raise InputError(final, f"cannot be written ({e.strerror or e})") from e
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the final file the permissions a plain open() would.
    os.chmod(tmp_path, plain_mode(directory=False))
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(final: str | Path, owned: Iterable[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; it replaces `final` when the block succeeds.

    A model folder is several files that must change together (weights and the config that
    describes them), so they are written side by side and swapped in by one rename. An existing
    `final` is replaced only when it holds nothing but the `owned` file names: a folder with
    anything else in it (a user's files, a wrong --out) is refused rather than deleted.
    """
    final = Path(final)
    owned = set(owned)
    if final.exists():
        if not final.is_dir():
            raise InputError(final, "is a file; this output is written as a folder")
        others = sorted(p.name for p in final.iterdir() if p.name not in owned)
        if others:
            raise InputError(final, f"holds other files ({', '.join(others[:3])}); not replaced")
    ensure_parent(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as e:
        raise InputError(final, f"cannot be written ({e.strerror or e})") from e
    os.chmod(tmp, plain_mode(directory=True))
    old = final.parent / f"{tmp.name}.old"
    try:
        yield tmp
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_text(final: str | Path, text: str) -> None:
    """Write `text` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(final: str | Path, obj: Any) -> None:
    """Write `obj` as sorted, indented JSON atomically."""
    write_text(final, json.dumps(obj, indent=2, sort_keys=True) + "\n")
