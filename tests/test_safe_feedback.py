"""Feedback pages are inert: nothing a submission displays or writes runs in a browser.

No kernel: hostile notebooks are rendered by the exporter the course configures for
nbgrader's GenerateFeedback (``pipeline.grading.safe_feedback``), with the course's own feedback
preprocessors, and the HTML is searched for anything live.
"""

from __future__ import annotations

import copy
import re

import nbformat
import pytest
from bs4 import BeautifulSoup
from misbehaving.html_outputs import (
    EVIL,
    HOSTILE_HTML,
    PNG,
    _hostile_markdown_and_raw,
    live_hazards,
)
from nbconvert.exporters import HTMLExporter
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from nbgrader.converters import GenerateFeedback
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import GetGrades
from nbgrader.server_extensions.formgrader.formgrader import FormgradeExtension
from traitlets.config import Config, PyFileConfigLoader

from pipeline.grading.safe_feedback import (
    CONTENT_SECURITY_POLICY,
    InertOutputs,
    SafeFeedbackExporter,
    clean_html,
    make_document_inert,
)
from pipeline.grading.safe_formgrader import (
    FORMGRADE_HANDLERS,
    MATHJAX_STAND_IN,
    SafeFormgradeExporter,
    csp_hash,
    make_formgrade_inert,
)
from pipeline.paths import GRADER


def _graded(cell, grade_id: str, points: float, score: float, solution: bool):
    """``cell`` with the nbgrader metadata GetGrades would leave (no gradebook here)."""
    cell.metadata["nbgrader"] = {"grade": True, "solution": solution, "locked": not solution,
                                 "grade_id": grade_id, "points": points, "score": score,
                                 "schema_version": 3}
    return cell


def _hostile_notebook():
    """Hostile outputs, a hostile Think! answer (with attachments) and raw HTML cells."""
    think = _graded(new_markdown_cell("(replaced)"), "think_fixed_vs_gain", 1, 0.5, True)
    display = [
        new_output("display_data", data={"text/html": "<b>kept bold</b>" + "".join(HOSTILE_HTML),
                                          "text/plain": "<IPython.core.display.HTML object>"}),
        new_output("display_data", data={"text/html": "<p>isolated</p><script>alert('iso')</script>"},
                   metadata={"text/html": {"isolated": True}}),
        new_output("display_data", data={"application/javascript": "alert('javascript output')",
                                          "text/plain": "<IPython.core.display.Javascript object>"}),
        new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "m", "version_major": 2,
                                                         "version_minor": 0},
            "text/plain": "IntSlider(value=3)"}),
        new_output("display_data", data={"image/svg+xml": "<svg onload=alert('svg output')/>",
                                          "text/plain": "<IPython.core.display.SVG object>"}),
        new_output("display_data", data={"text/markdown": "# md output\n<script>alert('md')</script>"
                                                           "[x](javascript:alert('md out'))"}),
        new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure 1x1>"},
                   metadata={"image/png": {"width": "1 onerror=alert('width')",
                                           "filenames": f"https://{EVIL}/x.png"},
                             "filenames": {"image/png": f"https://{EVIL}/x.png"}}),
        new_output("execute_result", data={"text/plain": "42"}, execution_count=3),
        new_output("stream", name="stdout", text="plain stdout text <script>alert('stream')</script>\n"),
    ]
    answer = _graded(new_code_cell("from IPython.display import HTML, display\n"
                                   "display(HTML('<script>alert(1)</script>'))", outputs=display),
                     "stable_softmax", 0, 0, True)
    answer.metadata["nbgrader"]["grade"] = False
    error = new_output("error", ename="AssertionError",
                       evalue="stable_softmax: expected rows summing to 1, got 2.0\x1b[0m; "
                              "likely mistake: <script>alert('evalue')</script>",
                       traceback=["hidden_tests/gain_multiplication.py line 3", "grade_()"])
    test = _graded(new_code_cell("check(stable_softmax)\n### BEGIN HIDDEN TESTS\n"
                                 "grade_stable_softmax(stable_softmax)\n### END HIDDEN TESTS",
                                 outputs=[error]), "test_stable_softmax", 2, 0, False)
    nb = new_notebook(cells=[new_markdown_cell("# Tutorial 1\n\nIntro text."),
                             answer, test, think])
    _hostile_markdown_and_raw(nb, None)  # the bank's tampering, as a submission has it
    return nbformat.from_dict(nb)


@pytest.fixture(scope="module")
def feedback_app(tmp_path_factory):
    """nbgrader's GenerateFeedback, configured by the course's nbgrader_config.py."""
    root = tmp_path_factory.mktemp("course")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(GRADER)).load_config()
    config.CourseDirectory.root = str(root)
    return GenerateFeedback(coursedir=CourseDirectory(config=config), config=config)


def _render(app, nb) -> str:
    """HTML as GenerateFeedback exports it (BaseConverter.start), minus the gradebook."""
    exporter = app.exporter_class(parent=app, config=app.config)
    for preprocessor in app.preprocessors:
        if preprocessor is not GetGrades:  # grades are already in the cells' metadata
            exporter.register_preprocessor(preprocessor)
    resources = {"nbgrader": {"notebook": "01_gain_multiplication", "score": 0.5,
                              "max_score": 3, "late_penalty": 0}}
    return exporter.from_notebook_node(nb, resources)[0]


def _heading(soup, level: str, text: str):
    return soup.find(lambda tag: tag.name == level and text in tag.get_text())


def test_the_course_configures_the_safe_exporter_for_feedback(feedback_app):
    assert feedback_app.exporter_class is SafeFeedbackExporter
    exporter = feedback_app.exporter_class(parent=feedback_app, config=feedback_app.config)
    assert exporter.template_name == "feedback"  # nbgrader's own feedback template
    assert exporter.sanitize_html


def test_nothing_hostile_survives_in_the_page(feedback_app):
    html = _render(feedback_app, _hostile_notebook())
    assert live_hazards(html) == []
    assert "<script" not in html.lower()  # not even nbconvert's MathJax loader


def test_what_the_reader_needs_still_shows(feedback_app):
    html = _render(feedback_app, _hostile_notebook())
    soup = BeautifulSoup(html, "html.parser")
    text = soup.get_text()
    assert "plain stdout text" in text
    assert "<script>alert('stream')</script>" in text  # shown as text, not run
    assert "expected rows summing to 1, got 2.0" in text and "likely mistake" in text
    assert _heading(soup, "h1", "Tutorial 1") and "Intro text." in text
    assert _heading(soup, "h2", "My answer")
    assert "The gain multiplies the input; attention re-weights" in text
    assert soup.find("em", string="multiplies") and soup.find("b", string="kept bold")
    assert "<script>alert('script')</script>" in text  # the attempt is visible to the grader
    images = [img["src"] for img in soup.find_all("img") if img.get("src")]
    assert f"data:image/png;base64,{PNG}" in images
    for fallback in ("IntSlider(value=3)", "<IPython.core.display.Javascript object>",
                     "<IPython.core.display.SVG object>", "42"):
        assert fallback in text
    assert "Score: 0.5 / 3.0" in text and "Score: 0.0 / 2.0" in text  # page and test cell
    assert "Score: 0.5 / 1.0" in text  # the Think! answer
    assert "hidden_tests" not in html and "grade_stable_softmax" not in html


def test_the_page_carries_a_script_free_policy_first_in_head(feedback_app):
    html = _render(feedback_app, _hostile_notebook())
    soup = BeautifulSoup(html, "html.parser")
    first = soup.head.find(True)
    assert first.name == "meta" and first["http-equiv"] == "Content-Security-Policy"
    assert first["content"] == CONTENT_SECURITY_POLICY
    policy = dict(part.strip().split(" ", 1) for part in first["content"].split(";"))
    assert policy["script-src"] == "'none'" and policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'" and policy["form-action"] == "'none'"
    assert policy["frame-src"] == "'none'" and policy["default-src"] == "'none'"
    assert policy["img-src"] == "data:" and policy["style-src"] == "'unsafe-inline'"
    assert html.index("Content-Security-Policy") < html.lower().index("<title")
    assert len(soup.find_all("meta", attrs={"http-equiv": True})) == 1


def test_outputs_are_rebuilt_from_safe_fields_only():
    nb = _hostile_notebook()
    nb.cells[1].execution_count = "<script>alert(1)</script>"
    nb, _ = InertOutputs().preprocess(nb, {})
    outputs = nb.cells[1].outputs
    assert nb.cells[1].execution_count is None
    kinds = [sorted(output.get("data", {})) for output in outputs]
    assert ["text/html", "text/plain"] in kinds and ["image/png", "text/plain"] in kinds
    assert all(not {"application/javascript", "image/svg+xml"} & set(k) for k in kinds)
    assert not any("widget" in mime for k in kinds for mime in k)
    png = next(output for output in outputs if "image/png" in output.get("data", {}))
    assert png.metadata == {}  # no injected width, no remote filenames
    html = next(output for output in outputs if "text/html" in output.get("data", {}))
    assert "<script>" not in html.data["text/html"]
    assert all(output.get("metadata", {}).get("text/html") is None for output in outputs)


def test_numeric_image_sizes_are_kept():
    output = new_output("display_data", data={"image/png": PNG},
                        metadata={"image/png": {"width": 320, "height": 240.0}})
    assert InertOutputs().inert_output(output).metadata == {"image/png": {"width": 320,
                                                                          "height": 240.0}}


def test_markdown_keeps_maths_code_and_tables_readable():
    exporter = SafeFeedbackExporter()
    html = exporter.markdown2html({}, "Scores $x<y$.\n\n```python\nw = q < 2\n```\n\n"
                                      "| a | b |\n|:--|--:|\n| 1 | 2 |\n")
    soup = BeautifulSoup(html, "html.parser")
    assert "Scores $x<y$." in soup.get_text() and "w = q < 2" in soup.get_text()
    assert soup.find("th", style="text-align:left;") and soup.find("td")


def test_clean_html_escapes_rather_than_hides():
    assert clean_html("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert clean_html(b"<b onclick=x>ok</b>") == "<b>ok</b>"
    cell = clean_html('<table><tr><td style="position:fixed;text-align:right">1</td></tr></table>')
    assert '<td style="text-align:right;">1</td>' in cell


def test_the_last_pass_catches_what_a_template_lets_through():
    page = ('<!DOCTYPE html><html><head><title>t</title>'
            '<meta http-equiv="refresh" content="0;url=https://x"></head><body>'
            '<a name="x" onmouseover="alert(1)" href="  JAVASCRIPT:alert(2)">a</a>'
            '<script>alert(3)</script><img src="data:image/png;base64,AAAA">'
            '<img src="data:image/svg+xml;base64,AAAA"></body></html>')
    inert = make_document_inert(page)
    assert live_hazards(inert) == []
    soup = BeautifulSoup(inert, "html.parser")
    assert soup.head.find(True)["http-equiv"] == "Content-Security-Policy"
    assert [img.get("src") for img in soup.find_all("img")] == ["data:image/png;base64,AAAA",
                                                                None]


def test_feedback_never_embeds_local_files():
    assert SafeFeedbackExporter(embed_images=True).embed_images is False


def test_the_hazard_search_finds_what_stock_nbgrader_lets_through(feedback_app):
    """The search above is not vacuous: nbgrader's own exporter fails it on the same page."""
    config = copy.deepcopy(feedback_app.config)
    config.HTMLExporter.preprocessors = []  # the course's config refuses to render it at all
    stock = GenerateFeedback(coursedir=feedback_app.coursedir, config=config,
                             exporter_class=HTMLExporter)
    hazards = "\n".join(live_hazards(_render(stock, _hostile_notebook())))
    for found in ("<script>", "<iframe>", "<base>", "<form>", "onerror=", "javascript:",
                  "meta <meta", "<svg>"):
        assert found in hazards.lower(), found


def test_the_table_of_contents_names_each_exercise():
    from pipeline.grading.safe_feedback import name_exercises

    page = ('<ul><li><a href="#test_TransformerBlock">Test cell</a> (Score: 0.0 / 3.0)</li>'
            '<li><a href="#think_why_scale">Written response</a> (Score: 1.0 / 1.0)</li>'
            '<li><a href="#elsewhere">Test cell</a></li></ul><a href="#top">Test cell</a>')
    named = name_exercises(page)
    assert '<a href="#test_TransformerBlock">TransformerBlock</a> (Score: 0.0 / 3.0)' in named
    assert '<a href="#think_why_scale">Think! why scale</a>' in named
    assert "Test cell" not in named.replace('<a href="#top">Test cell</a>', "")


# ---- formgrader's Manual Grading page (pipeline.grading.safe_formgrader) ------------------------------

BASE_URL = "/user/instructor"
# what formgrader's SubmissionHandler gives the exporter
FORMGRADE_RESOURCES = {"assignment_id": "01_gain_multiplication",
                       "notebook_id": "01_gain_multiplication", "submission_id": "abc123",
                       "index": 0, "total": 1, "base_url": BASE_URL, "student": "hostile",
                       "last_name": None, "first_name": None,
                       "notebook_path": "./autograded/hostile/01_gain_multiplication/"
                                        "01_gain_multiplication.ipynb"}
# formgrader's own controls, which its template writes into each graded cell
FORMGRADER_CONTROLS = ["input.score", "input.extra-credit", "button.mark-graded",
                       "button.full-credit", "button.no-credit", "textarea.comment"]


def _formgrader_config() -> Config:
    """The configuration formgrader gives its exporter: its own settings (the ``formgrade``
    template), then the course's nbgrader_config.py over them."""
    config = Config(FormgradeExtension().build_extra_config())
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(GRADER)).load_config())
    return config


@pytest.fixture(scope="module")
def formgrade_page() -> str:
    exporter = SafeFormgradeExporter(config=_formgrader_config())
    return exporter.from_notebook_node(_hostile_notebook(), dict(FORMGRADE_RESOURCES))[0]


def _notebook_part(html: str):
    """The rendered notebook of a formgrade page, without formgrader's score controls."""
    notebook = BeautifulSoup(html, "html.parser").find(id="notebook-container")
    for control in notebook.select(", ".join(FORMGRADER_CONTROLS)):
        control.decompose()
    return notebook


def test_formgrader_shows_a_hostile_submission_inert(formgrade_page):
    notebook = _notebook_part(formgrade_page)
    assert live_hazards(str(notebook)) == []
    assert all(link["href"].startswith("#") for link in notebook.find_all("a", href=True))
    text = notebook.get_text()
    assert "The gain multiplies the input; attention re-weights" in text
    assert "<script>alert('script')</script>" in text  # the attempt shows, as text
    assert "plain stdout text" in text and "kept bold" in text and "IntSlider(value=3)" in text
    soup = BeautifulSoup(formgrade_page, "html.parser")
    # the Think! answer can still be graded: its score and comment fields are there
    assert soup.select_one("input.score#think_fixed_vs_gain")
    assert soup.select_one("textarea.comment#think_fixed_vs_gain-comment")


def test_formgrader_page_runs_only_formgraders_own_scripts(formgrade_page):
    soup = BeautifulSoup(formgrade_page, "html.parser")
    first = soup.head.find(True)
    assert first.name == "meta" and first["http-equiv"] == "Content-Security-Policy"
    policy = dict(part.strip().split(" ", 1) for part in first["content"].split(";"))
    assert policy["default-src"] == "'none'" and policy["object-src"] == "'none'"
    assert policy["frame-src"] == "'none'" and policy["form-action"] == "'none'"
    assert policy["base-uri"] == "'none'"
    sources = policy["script-src"].split()
    assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources
    assert {csp_hash(handler) for handler in FORMGRADE_HANDLERS} <= set(sources)
    scripts = soup.find_all("script")
    assert soup.find(id="notebook-container").find("script") is None
    for script in scripts:
        if script.get("src"):
            assert script["src"].startswith(f"{BASE_URL}/formgrader/static/"), script
        else:  # formgrader's inline scripts (its ids, name toggle, tooltips, MathJax stand-in)
            assert csp_hash(script.string or "") in sources
    assert len([s for s in scripts if not s.get("src")]) == 4
    assert "mathjax" not in " ".join(s.get("src", "") for s in scripts).lower()
    handlers = [value for tag in soup.find_all(True) for name, value in tag.attrs.items()
                if name.lower().startswith("on")]
    assert sorted(handlers) == sorted(FORMGRADE_HANDLERS)
    # formgrader's own navigation still leads somewhere
    assert soup.select_one(f"nav a[href='{BASE_URL}/formgrader/gradebook']")


def test_formgrader_trusts_no_script_where_the_notebook_could_be():
    """No ``#notebook-container``: nothing on the page counts as formgrader's own."""
    page = ('<html><head><script src="/formgrader/static/js/formgrade.js"></script>'
            '<script>var ok = 1;</script></head><body><div id="elsewhere">'
            '<script>alert(1)</script><a href="https://x.example/">x</a></div></body></html>')
    soup = BeautifulSoup(make_formgrade_inert(page), "html.parser")
    assert [script.string for script in soup.find_all("script")] == [MATHJAX_STAND_IN]
    assert soup.find("a").get("href") is None


def test_the_formgrade_hazard_search_finds_what_stock_formgrader_renders():
    """Not vacuous: nbgrader's own formgrader exporter leaves the notebook part live."""
    config = _formgrader_config()
    config.HTMLExporter.preprocessors = []  # as it is without the course's check
    stock = HTMLExporter(config=config).from_notebook_node(_hostile_notebook(),
                                                           dict(FORMGRADE_RESOURCES))[0]
    hazards = "\n".join(live_hazards(str(_notebook_part(stock)))).lower()
    for found in ("<script>", "<iframe>", "onerror=", "javascript:", "<svg>"):
        assert found in hazards, found


def test_the_course_config_refuses_a_plain_html_exporter():
    """nbgrader's stock formgrader (a plain HTMLExporter under the course's config) renders
    an error instead of a live submission; the course's exporters pass the same check."""
    config = _formgrader_config()
    with pytest.raises(RuntimeError, match=re.escape("`make formgrader`")):
        HTMLExporter(config=config).from_notebook_node(_hostile_notebook(),
                                                       dict(FORMGRADE_RESOURCES))
    assert SafeFormgradeExporter(config=config).from_notebook_node(
        new_notebook(cells=[new_markdown_cell("ok")]), dict(FORMGRADE_RESOURCES))[0]


def test_a_submission_cannot_give_its_elements_the_ids_of_score_fields():
    """formgrade.js finds a test cell's score field by ``#<grade_id>``; a Think! answer
    holding ``<h6 id="test_...">`` above the test cell would tie that test's score to the
    answer's panel. Only the template's score fields keep an id in the notebook."""
    hostile = _graded(new_markdown_cell('Answer <h6 id="test_stable_softmax">x</h6>\n\n'
                                        '<a name="test_stable_softmax">y</a>'),
                      "think_equal_gains", 1, 0, True)
    test = _graded(new_code_cell("check_stable_softmax(stable_softmax)"),
                   "test_stable_softmax", 2, 0, False)
    page = SafeFormgradeExporter(config=_formgrader_config()).from_notebook_node(
        new_notebook(cells=[hostile, test]), dict(FORMGRADE_RESOURCES))[0]
    owners = BeautifulSoup(page, "html.parser").select("#test_stable_softmax")
    assert [element.name for element in owners] == ["input"]
    assert "score" in owners[0]["class"]
    notebook = BeautifulSoup(page, "html.parser").find(id="notebook-container")
    assert not notebook.find_all(attrs={"name": "test_stable_softmax"})
