"""Widgets in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Starts JupyterLab on localhost (no token, a temporary folder) with tutorial 01's student
notebook, its exercises filled in with the solutions; runs every cell; moves a slider of
the gain demo; and checks that the figure changed. Screenshots land in
``bench/out/browser/``. Needs Debian's chromium and the ``playwright`` package
(`make setup-browser`); skipped with a message when they are missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from pipeline.classroom.sample_class import SOLUTION_MARKERS
from pipeline.paths import NOTEBOOKS, ROOT

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "01_gain_multiplication"
SCREENSHOTS = ROOT / "bench" / "out" / "browser"

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: run `make setup-browser`")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed: run `make setup-browser`",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _filled_student_notebook(folder: Path) -> Path:
    """The student notebook with every answer cell completed from the solution."""
    solution = nbformat.read(ROOT / "solutions" / f"{NOTEBOOK}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: SOLUTION_MARKERS.sub("", c.source)
               for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")}
    notebook = nbformat.read(NOTEBOOKS / f"{NOTEBOOK}.ipynb", as_version=4)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers and cell.cell_type == "code":
            cell.source = answers[grade_id]
    path = folder / f"{NOTEBOOK}.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    _filled_student_notebook(folder)
    port = _free_port()
    log = (folder / "jupyterlab.log").open("w")
    env = {k: v for k, v in os.environ.items() if k != "COURSE_WIDGETS"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         "--IdentityProvider.token=", f"--ServerApp.root_dir={folder}",
         "--LabApp.news_url=None", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s:\n"
                        + (folder / "jupyterlab.log").read_text()[-3000:])
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_moving_a_gain_slider_redraws_the_figure(lab):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{lab}/lab/tree/{NOTEBOOK}.ipynb")
        page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                               ".jp-mod-idle, .jp-Toolbar-kernelStatus", state="attached")
        page.click(".jp-Notebook")
        page.keyboard.press("Escape")
        page.get_by_role("menuitem", name="Run").click()
        page.locator("li[data-command='runmenu:run-all']").click()
        slider = page.locator(".widget-slider").first
        slider.wait_for(state="visible", timeout=120_000)
        slider.scroll_into_view_if_needed()
        demo = slider.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea-output')]")
        figure = demo.locator("img").first
        figure.wait_for(state="visible")
        before = figure.get_attribute("src")
        page.screenshot(path=str(SCREENSHOTS / "gain_demo_before.png"))
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        for _ in range(8):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "([el, old]) => { const img = el.querySelector('img'); "
            "return img && img.getAttribute('src') !== old; }",
            arg=[demo.element_handle(), before], timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "gain_demo_after.png"))
        readout = slider.locator(".widget-readout").first.inner_text()
        browser.close()
    assert float(readout) > 0, "the slider did not move"
