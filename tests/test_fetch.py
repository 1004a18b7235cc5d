"""`fetch-weights` against a local HTTP server (no internet): verified, atomic, clear errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.errors import InputError
from fewsam.cli import app
from train.fetch import OFFICIAL_FILES, fetch_weights

PAYLOAD = bytes(range(256)) * 9000  # 2.3 MB: several read chunks


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A server on 127.0.0.1 serving `tmp_path/www`, which holds a fake sam_vit_b_01ec64.pth."""
    root = tmp_path / "www"
    root.mkdir()
    (root / OFFICIAL_FILES["vit_b"][0]).write_bytes(PAYLOAD)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_verified_against_given_sha(server: str, tmp_path: Path) -> None:
    out = tmp_path / "models"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    path = fetch_weights("vit_b", out, url_base=server, sha256=sha)
    assert path == out / "sam_vit_b_01ec64.pth"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in out.iterdir()) == ["sam_vit_b_01ec64.pth"]
    # Present with the right digest: kept, even with the server gone.
    assert fetch_weights("vit_b", out, url_base="http://127.0.0.1:9", sha256=sha) == path


def test_sha_mismatch_leaves_no_file(server: str, tmp_path: Path) -> None:
    out = tmp_path / "models"
    # The fake file is not Meta's, so the published digest must reject it.
    with pytest.raises(InputError, match="does not match the expected ec2df627"):
        fetch_weights("vit_b", out, url_base=server)
    assert list(out.iterdir()) == []


def test_missing_file_and_unknown_arch(server: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="HTTP 404"):
        fetch_weights("vit_l", tmp_path / "m", url_base=server)
    assert list((tmp_path / "m").iterdir()) == []
    with pytest.raises(InputError, match="no official checkpoint"):
        fetch_weights("tiny", tmp_path / "m")


def test_cli(server: str, tmp_path: Path) -> None:
    out = tmp_path / "models"
    args = ["train", "fetch-weights", "vit_b", "--out", str(out), "--url-base", server]
    ok = CliRunner().invoke(app, [*args, "--sha256", hashlib.sha256(PAYLOAD).hexdigest()])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == str(out / "sam_vit_b_01ec64.pth")
    bad = CliRunner().invoke(app, [*args, "--sha256", "0" * 64])
    assert bad.exit_code == 2
    assert "does not match" in bad.output and len(bad.output.strip().splitlines()) == 1
