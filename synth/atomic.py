"""Atomic writes: a file appears under its final name only once it is complete."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synth.errors import InputError


def plain_mode(directory: bool) -> int:
    """The mode `open()`/`mkdir()` would give under the current umask (mkstemp/mkdtemp use 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` when the block succeeds.

    On any exception the temporary file is removed, so an interrupted or failed write never leaves
    a file that looks finished. The temp name keeps `suffix` so libraries that look at extensions
    (nibabel, matplotlib) still work.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
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


def write_text(final: str | Path, text: str) -> None:
    """Write `text` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(final: str | Path, obj: Any) -> None:
    """Write `obj` as sorted, indented JSON atomically."""
    write_text(final, json.dumps(obj, indent=2, sort_keys=True) + "\n")
