"""Download an official SAM checkpoint and verify its SHA-256 before it gets its final name.

The file streams into a temporary file beside the destination; only a complete download whose
SHA-256 matches is renamed to `sam_vit_*.pth`, so an interrupted or corrupted download never
leaves a file that looks usable. The expected digests are the published ones for Meta's files
(the same values micro-sam and other projects pin).
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import DownloadColumn, TransferSpeedColumn

from core.atomic import atomic_path
from core.errors import InputError
from core.progress import make_progress
from train.base_weights import sha256_file

OFFICIAL_URL_BASE = "https://dl.fbaipublicfiles.com/segment_anything"
OFFICIAL_FILES: dict[str, tuple[str, str]] = {
    "vit_b": (
        "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    "vit_l": (
        "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_h": (
        "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
}
CHUNK = 1 << 20


def fetch_weights(
    arch: str,
    out_dir: Path,
    url_base: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the official checkpoint of `arch` into `out_dir` and return its path.

    `url_base` replaces Meta's server (a mirror); `sha256` replaces the published digest (a
    mirror holding other bytes). A file already present with the right digest is kept.
    """
    if arch not in OFFICIAL_FILES:
        known = ", ".join(OFFICIAL_FILES)
        raise InputError(arch, f"no official checkpoint for this arch (known: {known})")
    name, expected = OFFICIAL_FILES[arch]
    expected = (sha256 or expected).lower()
    final = Path(out_dir) / name
    if final.is_file() and sha256_file(final) == expected:
        return final
    url = f"{(url_base or OFFICIAL_URL_BASE).rstrip('/')}/{name}"
    with atomic_path(final, suffix=".part") as tmp:
        digest = _download(url, tmp, timeout)
        if digest != expected:
            raise InputError(url, f"SHA-256 {digest} does not match the expected {expected}")
    return final


def _download(url: str, dest: Path, timeout: float) -> str:
    """Stream `url` into `dest` with a progress bar; return the hex SHA-256 of what was written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
            total = response.length
            columns = (DownloadColumn(), TransferSpeedColumn())
            with make_progress(*columns) as progress:  # type: ignore[arg-type]
                task = progress.add_task(Path(url).name, total=total)
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
    except urllib.error.HTTPError as e:
        raise InputError(url, f"download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise InputError(url, f"download failed ({reason})") from None
    return digest.hexdigest()
