"""Formgrader in a real browser: a hostile submission, opened under Manual Grading, runs nothing.

A small course copy grades one submission of tutorial 01 (the sample class's full
solution) whose Think! answer holds a ``<script>``, an ``<img onerror>``, an ``<svg
onload>``, ``javascript:`` links, iframes and a form, and whose answer cell displays HTML,
JavaScript, SVG and a widget view with handlers. Formgrader is started on that course the
way ``make formgrader`` starts it (``python -m pipeline.lab formgrader``), and headless
Chromium (Playwright) opens the submission from the Manual Grading pages. Every payload
would leave a mark: an entry in ``window.__pwned``, a changed title, a request to a local
server this test counts. None may appear; the answers' text must show, and a score and a
comment entered in the page must reach the gradebook. A control renders the same graded
notebook with nbgrader's stock exporter, where the payloads do run.

Needs Debian's chromium and the ``playwright`` package (`make setup-browser`); the browser
test is skipped with a message when they are missing, the HTTP checks still run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from pipeline.environment import course_env

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "01_gain_multiplication"
STUDENT = "hostile"
THINK = "think_fixed_vs_gain"
TOKEN = "formgrader-test-token"
VISIBLE = "A gain re-weights the context, so the fixed neuron's weights never change."
OUTPUT_TEXT = "an output the grader reads"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Beacon:
    """A local web server that records every request a payload makes to it."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<p>beacon</p>")

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def js(self, name: str) -> str:
        """JavaScript that leaves all three marks, named ``name`` (no double quotes)."""
        return (f"(window.top.__pwned=window.top.__pwned||[]).push('{name}');"
                f"window.top.document.title='PWNED {name}';"
                f"fetch('{self.url}/{name}',{{mode:'no-cors'}}).catch(function(){{}});"
                f"new Image().src='{self.url}/{name}.png'")


def _think_answer(beacon: Beacon) -> str:
    js = beacon.js
    return "\n\n".join([
        "## My answer", VISIBLE,
        f"<script>{js('think-script')}</script>",
        f'<img src=x onerror="{js("think-img")}">',
        f'<svg onload="{js("think-svg")}"><circle r="4"/></svg>',
        f'<a href="javascript:{js("think-js-link")}">a javascript: link</a>',
        "[a markdown javascript: link](javascript:window.top.__pwned='think-md-link')",
        f'<a href="{beacon.url}/think-web-link">a link to another site</a>',
        f'<iframe src="{beacon.url}/think-iframe"></iframe>',
        f'<iframe src="javascript:{js("think-js-iframe")}"></iframe>',
        f'<form action="{beacon.url}/think-form"><button>send</button></form>',
        f'<details open ontoggle="{js("think-toggle")}"><summary>more</summary></details>',
        f"![a remote image]({beacon.url}/think-md-image)",
        f'<img src="{beacon.url}/think-img-src">',
        f'<video src="{beacon.url}/think-video"></video>',
        f'<p style="background-image: url({beacon.url}/think-css)">styled</p>',
    ])


def _displays(beacon: Beacon) -> str:
    js = beacon.js
    html = (f"<b>{OUTPUT_TEXT}</b><img src=x onerror=\"{js('output-img')}\">"
            f"<script>{js('output-script')}</script>"
            f"<a href=\"javascript:{js('output-js-link')}\">an output link</a>"
            f"<iframe src=\"{beacon.url}/output-iframe\"></iframe>")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" onload="{js("output-svg")}">'
           f"<script>{js('output-svg-script')}</script></svg>")
    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x",
                                                           "version_major": 2,
                                                           "version_minor": 0},
              "text/plain": "IntSlider(value=3)"}
    return ("\n\nfrom IPython.display import HTML, SVG, Javascript, display\n"
            f"display(HTML({html!r}))\n"
            f"display(Javascript({js('output-javascript')!r}))\n"
            f"display(SVG({svg!r}))\n"
            f"display({widget!r}, raw=True)\n")


def _hostile_submission(course: Path, beacon: Beacon) -> Path:
    """The sample class's full solution of tutorial 01, made hostile; its folder."""
    source = course / "grader" / "sample_submissions" / "full_solution" / NOTEBOOK
    notebook = nbformat.read(source / f"{NOTEBOOK}.ipynb", as_version=4)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id == THINK:
            cell.source = _think_answer(beacon)
        elif grade_id == "stable_softmax":
            cell.source += _displays(beacon)
    target = course / "submissions" / STUDENT / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(notebook, target)
    return target.parents[2]


@pytest.fixture(scope="module")
def beacon():
    server = Beacon()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def course(course_copy, run_in_course, tmp_path_factory, beacon) -> Path:
    """A course copy of its own with the hostile submission graded."""
    course = tmp_path_factory.mktemp("formgrader") / "course"
    shutil.copytree(course_copy, course, ignore=shutil.ignore_patterns(
        ".scratch", "autograded", "feedback", "results", "sample_submissions", "summary",
        "submissions"))
    run_in_course(["-c", f"from pipeline.classroom.sample_class import build; build(ids=[{NOTEBOOK!r}])"],
                  course)
    submissions = _hostile_submission(course, beacon)
    run_in_course(["-m", "pipeline.grading", str(submissions), "--jobs", "1"], course)
    return course


def _graded_notebook(course: Path) -> Path:
    return course / "grader" / "autograded" / STUDENT / NOTEBOOK / f"{NOTEBOOK}.ipynb"


def _get(url: str) -> tuple[int, str]:
    joiner = "&" if "?" in url else "?"
    try:
        with urllib.request.urlopen(f"{url}{joiner}token={TOKEN}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.fixture(scope="module")
def formgrader(course):
    """Formgrader started as `make formgrader` starts it, on the course copy; its URL."""
    port = _free_port()
    log = (course / "formgrader.log").open("w")
    # JupyterLab draws every cell of a notebook at once (not only those in view), so that
    # the live notebook's answers can be read without scrolling
    settings = course / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**course_env(grader=course / "grader"),
           "JUPYTERLAB_SETTINGS_DIR": str(course / "lab-settings")}
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.lab", "formgrader", "--no-browser",
         f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         "--LabApp.news_url=None"],
        cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if _get(f"{url}/api/status")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                break
            time.sleep(0.5)
        else:
            server.kill()
        if server.poll() is not None:
            pytest.fail("formgrader did not start:\n" + (course / "formgrader.log").read_text()[-3000:])
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def _submission_id(course: Path) -> str:
    with Gradebook(f"sqlite:///{course / 'grader' / 'gradebook.db'}") as gb:
        return gb.find_submission_notebook(NOTEBOOK, NOTEBOOK, STUDENT).id


def test_the_hostile_submission_reached_the_gradebook_with_its_payloads(course):
    cells = nbformat.read(_graded_notebook(course), as_version=4).cells
    think = next(c for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == THINK)
    assert "<script>" in think.source and "onerror=" in think.source
    outputs = json.dumps([c.get("outputs", []) for c in cells])
    assert "output-script" in outputs and "application/javascript" in outputs


def test_formgrader_opens_the_courses_gradebook(formgrader, course):
    status, body = _get(f"{formgrader}/formgrader/api/assignments")
    assert status == 200
    ids = sorted(p.name for p in (course / "grader" / "release").iterdir())
    assert sorted(a["name"] for a in json.loads(body)) == ids
    # (the copied gradebook may already hold what earlier tests graded in the shared copy)
    status, body = _get(f"{formgrader}/formgrader/api/notebooks/{NOTEBOOK}")
    notebooks = {n["name"]: n["num_submissions"] for n in json.loads(body)}
    assert list(notebooks) == [NOTEBOOK] and notebooks[NOTEBOOK] >= 1
    status, body = _get(f"{formgrader}/formgrader/api/submitted_notebooks/{NOTEBOOK}/{NOTEBOOK}")
    assert (STUDENT, 4.0) in [(s["student"], s["code_score"]) for s in json.loads(body)]


def test_files_next_to_a_submission_are_not_served(formgrader, course):
    submission = _submission_id(course)
    base = f"{formgrader}/formgrader/submissions/{submission}"
    assert _get(f"{base}/")[0] == 200
    for path in (f"{NOTEBOOK}.ipynb", "../../../nbgrader_config.py"):
        assert _get(f"{base}/{path}")[0] == 404, path


# ---- in the browser -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    api = pytest.importorskip("playwright.sync_api",
                              reason="playwright is not installed: run `make setup-browser`")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: run `make setup-browser`")
    with api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def _offline(page) -> None:
    """Only this machine answers (formgrader and the beacon): a page's remote loads (a
    badge, a CDN) fail at once, as they would in CI, instead of waiting on a network."""
    page.route("**/*", lambda route: route.continue_()
               if route.request.url.startswith(("http://127.0.0.1:", "about:", "data:"))
               else route.abort())


# Records every Content-Security-Policy violation, from the start of each page.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
    e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def test_the_control_payloads_run_in_nbgraders_stock_rendering(chromium, course, beacon):
    """nbgrader's own exporter, as stock formgrader uses it, renders the same notebook live."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config

    config = Config()
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": NOTEBOOK, "notebook_id": NOTEBOOK, "submission_id": "x",
                 "index": 0, "total": 1, "base_url": "", "student": STUDENT,
                 "last_name": None, "first_name": None, "notebook_path": "x"}
    html, _ = HTMLExporter(config=config).from_filename(str(_graded_notebook(course)),
                                                        resources=resources)
    page = chromium.new_page()
    _offline(page)
    try:
        page.set_content(html, wait_until="domcontentloaded")
        page.wait_for_function("() => (window.__pwned || []).length >= 3", timeout=30_000)
        ran = page.evaluate("() => window.__pwned")
    finally:
        page.close()
    assert {"think-script", "think-img", "output-img"} <= set(ran)
    deadline = time.monotonic() + 10
    while not any(hit.startswith("/think-script") for hit in beacon.hits):
        assert time.monotonic() < deadline, f"the beacon saw {beacon.hits}"
        time.sleep(0.1)


def test_a_hostile_submission_runs_nothing_in_manual_grading(chromium, formgrader, course,
                                                            beacon):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(60_000)
    _offline(page)
    seen = len(beacon.hits)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        # Manual Grading: the assignment, its notebook, the (only) submission
        page.goto(f"{formgrader}/formgrader/gradebook?token={TOKEN}")
        page.click(f"a[href$='/formgrader/gradebook/{NOTEBOOK}']")
        page.click(f"a[href$='/formgrader/gradebook/{NOTEBOOK}/{NOTEBOOK}']")
        page.click("a[href*='/formgrader/submissions/']")
        page.wait_for_url("**/formgrader/submissions/**")
        page.wait_for_function("() => window.formgrader && formgrader.loaded"
                               " && formgrader.grades.loaded && formgrader.comments.loaded")
        page.wait_for_load_state("networkidle")
        notebook = page.locator("#notebook-container").first
        text = notebook.inner_text()
        assert VISIBLE in text and OUTPUT_TEXT in text
        assert "<script>" in text and "onerror=" in text  # the attempts show as text
        # links in the notebook lead nowhere, whatever they said
        submission_url = page.url
        for link in notebook.locator("a:not([href^='#'])").all():
            link.click(force=True)
        assert page.url == submission_url
        # a manual score and a comment for the Think! answer
        page.fill(f"#{THINK}", "1")
        page.fill(f"#{THINK}-comment", "Graded in a browser that ran nothing.")
        page.keyboard.press("Escape")  # formgrader's "defocus and save"
        page.locator(f"#{THINK}").dispatch_event("change")
        page.wait_for_load_state("networkidle")
        deadline = time.monotonic() + 30
        while True:
            with Gradebook(f"sqlite:///{course / 'grader' / 'gradebook.db'}") as gb:
                grade = gb.find_grade(THINK, NOTEBOOK, NOTEBOOK, STUDENT)
                comment = gb.find_comment(THINK, NOTEBOOK, NOTEBOOK, STUDENT)
                saved = (grade.manual_score, comment.manual_comment)
            if saved == (1, "Graded in a browser that ran nothing.") or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert saved == (1, "Graded in a browser that ran nothing.")
        page.wait_for_timeout(1000)  # anything delayed
        pwned = page.evaluate("() => window.__pwned || null")
        title = page.title()
        violations = page.evaluate("() => window.__violations")
    finally:
        context.close()
    assert pwned is None
    assert title == NOTEBOOK
    assert beacon.hits[seen:] == [] and not [url for url in requests if beacon.url in url]
    # formgrader's own scripts ran under the page's policy, and nothing else was left to block
    assert violations == []


def test_the_live_notebook_opens_inert_in_jupyterlab(chromium, formgrader, course, beacon):
    """Formgrader's "open live notebook" link: JupyterLab shows the graded notebook
    untrusted (nothing in it runs), with its answers and outputs."""
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)
    _offline(page)
    seen = len(beacon.hits)
    requests = []  # answered ones: the server's policy blocks remote images before they leave
    page.on("response", lambda response: requests.append(response.url))
    path = _graded_notebook(course).relative_to(course / "grader")
    try:
        page.goto(f"{formgrader}/lab/tree/{path}?token={TOKEN}")
        page.wait_for_function("texts => texts.every(t => document.body.textContent.includes(t))",
                               arg=[OUTPUT_TEXT, VISIBLE])  # every cell rendered
        page.wait_for_timeout(1000)  # anything delayed
        pwned = page.evaluate("() => window.__pwned || null")
    finally:
        page.close()
    assert pwned is None
    assert beacon.hits[seen:] == [] and not [url for url in requests if beacon.url in url]
