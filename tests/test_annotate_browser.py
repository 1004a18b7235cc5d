"""The labeling page (annotate/page) in a real browser: Debian's Chromium, driven by Selenium.

A small phantom (4 Synapse cases of 64 x 64 x 12: training scans case0005 and case0006) is copied
without training labels; `suggest` (spread, 2) lists slice 6 of each training scan. The server
runs in a thread on a free port with the shipped tiny SAM. The browser opens the printed address,
picks the organ with the largest area on the first listed slice by its number key, drags a box
over it on the canvas, waits for the draft, presses `s`, and the label file on disk is read back.

The organ is the liver (class 5, 196 pixels); the dragged box, its tight box, is x 11..29, y
23..39. Measured before the thresholds were set: the tiny SAM's draft has Dice 0.81 with the
truth (the test asks for 0.7) and 277 pixels, 262 of them inside the box: SAM's mask is not
bound to its box, and this one reaches 3 rows above it and 1 column left of it (the test allows
4 pixels around the box and asks for 90 % inside). The draft is also compared, pixel for pixel,
with the engine's own answer to that box, so a box sent transposed or shifted fails.

Needs /usr/bin/chromium and /usr/bin/chromedriver (`apt-get install chromium chromium-driver`;
`make test` installs them when it runs as root): nothing is downloaded at run time. With
FEWSAM_SCREENSHOT set, the page with its draft is saved to docs/annotate_page.png.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import uvicorn
from conftest import REPO
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from annotate.engines import Prompt, open_engine
from annotate.serve import hosts_for
from annotate.server import create_app
from annotate.session import Session
from core.params import parse_params
from phantom import annotator
from phantom import generate as phantom
from suggest import run as suggest
from synth.annotations import label_path, read_manifest
from synth.check import annotation_problems
from synth.datasets import open_dataset
from synth.datasets.synapse import map_labels

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "browser-t0ken"
BASE = REPO / "models" / "base" / "tiny_sam.safetensors"
SCREENSHOT = REPO / "docs" / "annotate_page.png"
SMALL = dict(
    synapse_cases=4,
    synapse_size=64,
    synapse_slices=12,
    brats_cases=2,
    brats_size=32,
    brats_slices=8,
)
MIN_DICE = 0.7  # measured 0.81 (module docstring)
MARGIN = 4  # pixels: SAM's draft is not bound to the box (measured: 3 rows above it)
WAIT_S = 30.0

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, params_dict: dict[str, Any]) -> Iterator[Any]:
    """The phantom, an annotation folder with 2 listed slices, and the page served on a port."""
    base = tmp_path_factory.mktemp("annotate_browser")
    data = copy.deepcopy(params_dict)
    data["phantom"].update(SMALL)
    folder = base / "ann"
    data["dataset"].update(format="nifti", root=str(base / "unl"), annotations=str(folder))
    params = parse_params(data)
    phantom.run(params, base / "ph")
    annotator.unlabeled_copy(base / "ph" / "synapse", base / "unl")
    suggest.run(params, folder, 2, "spread")
    engine = open_engine("base", "tiny", str(BASE), 256, 8)
    session = Session(open_dataset(params.dataset, params.seed), folder, engine)
    port = free_port()
    app = create_app(session, TOKEN, hosts_for("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30.0
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", port), timeout=5.0):
        pass
    yield {
        "url": f"http://127.0.0.1:{port}",
        "folder": folder,
        "session": session,
        "truth": base / "ph" / "synapse" / "label",
    }
    server.should_exit = True
    thread.join(timeout=10.0)
    session.close()


@contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    """Headless Debian Chromium with a fresh profile; fails (never skips) when it is missing.
    Selenium Manager is kept offline (SE_OFFLINE): the browser and its driver are given."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: the page tests need Debian's Chromium and its driver "
            "(`apt-get install chromium chromium-driver`; `make test` does it when run as root)",
            pytrace=False,
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def status(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "status").text)


def wait_for(driver: webdriver.Chrome, ready: Any, what: str) -> None:
    """Wait until `ready(driver)`; on timeout fail with the page's status and console."""
    try:
        WebDriverWait(driver, WAIT_S).until(ready)
    except TimeoutException:
        console = [e["message"] for e in driver.get_log("browser")]
        pytest.fail(f"no {what} after {WAIT_S:.0f} s; status {status(driver)!r}; console {console}")


def truth_plane(truth: Path, case: str, index: int) -> np.ndarray:
    """Slice `index` (axis 2) of the phantom's truth, as the page shows it (H x W class ids).

    The phantom is stored (L, P, S): the shown plane is the file's plane transposed (rows J,
    columns I), the patient's left on the image's right."""
    number = int(case.removeprefix("case"))
    data = map_labels(np.asarray(nib.load(truth / f"label{number:04d}.nii.gz").dataobj))
    return np.ascontiguousarray(data[:, :, index].T.astype(np.uint8))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def drag_box(driver: webdriver.Chrome, box: tuple[int, int, int, int], hw: tuple[int, int]) -> None:
    """Drag on the `#ui` canvas from the centre of pixel (x0, y0) to that of (x1, y1)."""
    ui = driver.find_element(By.ID, "ui")
    rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", ui)
    h, w = hw

    def offset(x: int, y: int) -> tuple[int, int]:  # from the element's centre, CSS pixels
        cx = (x + 0.5) * rect["width"] / w - rect["width"] / 2
        cy = (y + 0.5) * rect["height"] / h - rect["height"] / 2
        return round(cx), round(cy)

    x0, y0, x1, y1 = box
    actions = ActionChains(driver)
    actions.move_to_element_with_offset(ui, *offset(x0, y0)).click_and_hold()
    actions.move_to_element_with_offset(ui, *offset((x0 + x1) // 2, (y0 + y1) // 2))
    actions.move_to_element_with_offset(ui, *offset(x1, y1)).release().perform()


def test_a_dragged_box_is_drafted_and_saved_into_the_label_file(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")
    with chromium(tmp_path / "profile") as browser:
        drive_and_check(world, browser)


def drive_and_check(world: dict[str, Any], browser: webdriver.Chrome) -> None:
    folder, session = world["folder"], world["session"]
    row = read_manifest(folder)[0]
    assert (row.case, row.slice, row.axis, row.rank) == ("case0005", 6, 2, 1)
    path = label_path(folder, row.case)
    before = np.asarray(nib.load(path).dataobj).copy()
    truth = truth_plane(world["truth"], row.case, row.slice)
    areas = np.bincount(truth.ravel(), minlength=9)[1:]
    cls = int(areas.argmax()) + 1
    organ = truth == cls
    rows, cols = np.nonzero(organ)
    box = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
    h, w = truth.shape

    browser.get(f"{world['url']}/?token={TOKEN}")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#slices li")) == 2, "list")
    canvas = browser.find_element(By.ID, "image")
    wait_for(
        browser,
        lambda d: (
            (canvas.get_property("width"), canvas.get_property("height")) == (w, h)
            and status(d).startswith(f"{row.case}, slice {row.slice}")
        ),
        "slice shown",
    )
    ActionChains(browser).send_keys(str(cls)).perform()
    chosen = browser.find_element(By.CSS_SELECTOR, "#palette li.selected")
    assert chosen.get_attribute("data-k") == str(cls)

    drag_box(browser, box, (h, w))
    name = session.classes[cls - 1]
    wait_for(browser, lambda d: status(d).startswith(f"mask of {name}"), "mask")
    if os.environ.get("FEWSAM_SCREENSHOT"):
        assert browser.get_screenshot_as_file(str(SCREENSHOT))
    drawn = np.array(browser.execute_script("return Array.from(state.label);"), np.uint8)
    drawn = drawn.reshape(h, w)
    ActionChains(browser).send_keys("s").perform()
    wait_for(browser, lambda d: status(d).startswith("saved"), "save")
    assert status(browser) == "saved"  # not "(the slice still has no label)"
    wait_for(
        browser, lambda d: "done" in d.find_element(By.CSS_SELECTOR, "#slices li").text, "done"
    )

    after = np.asarray(nib.load(path).dataobj)
    saved = after[:, :, row.slice].T  # back to the shown plane (see truth_plane)
    np.testing.assert_array_equal(saved, drawn)  # the file holds what the page drew
    np.testing.assert_array_equal(saved, session.label(0)[0])
    assert set(np.unique(saved).tolist()) == {0, cls}
    # The page sent the dragged box in slice pixels: its draft is SAM's answer to that box.
    mask = saved == cls
    answer = session.engine.predict(session.embedding(0), Prompt(cls, box), None)
    np.testing.assert_array_equal(mask, answer.mask)
    # In file voxels (i = x, j = y on file slice k), the draft lies in and around the box.
    x0, y0, x1, y1 = box
    plane = after[:, :, row.slice] == cls
    m = MARGIN
    inside = plane[x0 : x1 + 1, y0 : y1 + 1].sum()
    near = plane[max(x0 - m, 0) : x1 + m + 1, max(y0 - m, 0) : y1 + m + 1].sum()
    assert near == plane.sum() and inside >= 0.9 * plane.sum(), (inside, near, plane.sum())
    score = dice(mask, organ)
    assert score >= MIN_DICE, score
    others = [k for k in range(after.shape[2]) if k != row.slice]
    np.testing.assert_array_equal(after[:, :, others], before[:, :, others])

    left = annotation_problems(session.reader, folder)
    assert [(p.path.name, p.unfinished) for p in left] == [("case0006.nii.gz", True)], left
    assert "slice 6 is listed but was never saved" in left[0].problem
