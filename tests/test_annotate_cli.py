"""`fewsam annotate` as a person starts it: the installed command prints one URL with a token,
serves the page and the API on loopback, and refuses a folder it cannot work on in one line."""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from reliability_files import FEWSAM, assert_installed_one_line_error, run_installed

from core.params import parse_params
from phantom import annotator
from phantom import generate as phantom
from suggest import run as suggest

pytestmark = pytest.mark.slow

SMALL = dict(
    synapse_cases=4, synapse_size=32, synapse_slices=8, brats_cases=2, brats_size=32, brats_slices=8
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, params_dict: dict[str, Any]) -> Path:
    base = tmp_path_factory.mktemp("annotate_cli")
    data = copy.deepcopy(params_dict)
    data["phantom"].update(SMALL)
    data["dataset"].update(
        format="nifti", root=str(base / "unl"), annotations=str(base / "annotations")
    )
    data["model"].update(checkpoint=str(REPO / "models" / "base" / "tiny_sam.safetensors"))
    params = parse_params(data)
    phantom.run(params, base / "ph")
    annotator.unlabeled_copy(base / "ph" / "synapse", base / "unl")
    suggest.run(params, base / "annotations", 2, "spread")
    (base / "params.yaml").write_text(yaml.safe_dump(data))
    return base


def test_prints_one_url_and_serves_page_and_api(project: Path) -> None:
    port = free_port()
    args = [str(FEWSAM), "annotate", "--engine", "base", "--port", str(port)]
    proc = subprocess.Popen(
        [*args, "-p", str(project / "params.yaml")],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # type: ignore[union-attr]
        assert lines[0].startswith("annotate: engine base (tiny), 2 slices in "), lines
        match = re.fullmatch(rf"open (http://127\.0\.0\.1:{port}/\?token=([\w-]+))\n", lines[1])
        assert match, lines
        url, token = match.groups()
        # A browser: keeps the cookie the first load sets, and follows the redirect to /.
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        for _ in range(100):  # the server starts after the line is printed
            try:
                with browser.open(url) as page:
                    text = page.read().decode()
                break
            except urllib.error.HTTPError:
                raise
            except OSError:
                time.sleep(0.1)
        assert "fewsam annotate" in text and "app.js" in text
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/slices", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request) as response:
            slices = json.loads(response.read())["slices"]
        assert [(s["case"], s["done"]) for s in slices] == [
            ("case0005", False),
            ("case0006", False),
        ]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/slices")
        assert refused.value.code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_another_host_warns(project: Path) -> None:
    port = free_port()
    args = [str(FEWSAM), "annotate", "--engine", "base", "--host", "0.0.0.0", "--port", str(port)]
    proc = subprocess.Popen(
        [*args, "-p", str(project / "params.yaml")],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        warning = proc.stderr.readline()  # type: ignore[union-attr]
        assert warning.startswith("warning: serving on 0.0.0.0"), warning
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_refusals_are_one_line(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    params = project / "params.yaml"
    no_manifest = run_installed("annotate", "--annotations", empty, "-p", params, cwd=tmp_path)
    assert_installed_one_line_error(no_manifest, empty, "no slices.csv")
    engine = run_installed("annotate", "--engine", "sam3", "-p", params, cwd=tmp_path)
    assert_installed_one_line_error(engine, "unknown engine 'sam3'")
    adapter = run_installed("annotate", "--engine", "adapter", "-p", params, cwd=tmp_path)
    assert_installed_one_line_error(adapter, "needs --adapter")
