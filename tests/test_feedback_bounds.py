"""The feedback sanitiser is given bounded markup only, and a page is bounded in time.

bleach takes time quadratic in the nesting depth and in the attributes per tag of what it
reads. These tests render hostile notebooks with the course's feedback exporter and look
at what bleach was handed (never at how long anything took): every piece is well-formed,
shallow and small, or a plain note stands in for it; a page past its time is a short
inert page with the points.
"""

from __future__ import annotations

import time

import nbformat
import pytest
from bleach._vendor import html5lib
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from nbgrader.converters import GenerateFeedback
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import GetGrades
from traitlets.config import PyFileConfigLoader

from pipeline.grading import bounded_markup, safe_feedback
from pipeline.grading.bounded_markup import (
    MAX_ATTRIBUTES,
    MAX_DEPTH,
    MAX_MARKUP_CHARS,
    MAX_PAGE_MARKUP,
    MAX_TEXT_CHARS,
    TooComplex,
    bound_markup,
)
from pipeline.grading.safe_feedback import CONTENT_SECURITY_POLICY, clean_html, minimal_page
from pipeline.paths import GRADER

LEFT_OUT = "Not shown on this page"


def nested(count: int, tag: str = "b") -> str:
    """``count`` tags open inside each other, each with attributes of its own."""
    return "".join(f'<{tag} id="n{i}" title="t{i}">' for i in range(count)) + "deep"


def _graded(cell, grade_id: str, solution: bool):
    cell.metadata["nbgrader"] = {"grade": True, "solution": solution, "locked": not solution,
                                 "grade_id": grade_id, "points": 2, "score": 0,
                                 "schema_version": 3}
    return cell


@pytest.fixture(scope="module")
def feedback_app(tmp_path_factory):
    """nbgrader's GenerateFeedback, configured by the course's nbgrader_config.py."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(GRADER)).load_config()
    config.CourseDirectory.root = str(tmp_path_factory.mktemp("course"))
    return GenerateFeedback(coursedir=CourseDirectory(config=config), config=config)


def _render(app, nb, **traits) -> tuple[str, dict]:
    """The page as GenerateFeedback exports it, minus the gradebook."""
    exporter = app.exporter_class(parent=app, config=app.config, **traits)
    for preprocessor in app.preprocessors:
        if preprocessor is not GetGrades:
            exporter.register_preprocessor(preprocessor)
    resources = {"nbgrader": {"notebook": "01_gain_multiplication", "score": 2,
                              "max_score": 4, "late_penalty": 0}}
    return exporter.from_notebook_node(nbformat.from_dict(nb), resources)


@pytest.fixture
def handed_to_bleach(monkeypatch) -> list[str]:
    """Everything the sanitiser is given while the test runs."""
    given, cleaner = [], safe_feedback._CLEANER

    class Spy:
        def clean(self, text: str) -> str:
            given.append(text)
            return cleaner.clean(text)

    monkeypatch.setattr(safe_feedback, "_CLEANER", Spy())
    return given


def _shape(html: str) -> tuple[int, int]:
    """(deepest nesting, most attributes on one element) of ``html`` as bleach's own parser
    builds it."""
    fragment = html5lib.parseFragment(html, treebuilder="etree", namespaceHTMLElements=False)
    deepest, attributes, todo = 0, 0, [(fragment, 0)]
    while todo:
        element, depth = todo.pop()
        deepest, attributes = max(deepest, depth), max(attributes, len(element.attrib))
        todo.extend((child, depth + 1) for child in element)
    return deepest, attributes


def _hostile_notebook() -> dict:
    """Tags nested thousands deep (each with attributes of its own) where a student writes
    (a Think! answer, markdown, raw cells) and where code displays (HTML, Markdown), next
    to an honest table and text."""
    think = _graded(new_markdown_cell(nested(8_000)), "think_fixed_vs_gain", True)
    quotes = new_markdown_cell("> " * 20_000 + "quoted")  # Markdown that renders 20 000 deep
    table = ('<table class="dataframe"><thead><tr><th>step</th><th>loss</th></tr></thead>'
             '<tbody><tr><td>1</td><td>0.25</td></tr></tbody></table>')
    shows = new_code_cell("display(HTML(bomb))", outputs=[
        new_output("display_data", data={"text/html": nested(40_000, "div")}),
        new_output("display_data", data={"text/markdown": nested(40_000, "i")}),
        new_output("display_data", data={"text/html": table}),
        new_output("stream", name="stdout", text="honest output\n")])
    raw = nbformat.v4.new_raw_cell(nested(30_000, "span"))
    return new_notebook(cells=[new_markdown_cell("# Tutorial 1\n\nIntro text."), think, quotes,
                               shows, raw])


def test_nested_tags_with_distinct_attributes_never_reach_the_sanitiser(feedback_app,
                                                                        handed_to_bleach):
    html, _ = _render(feedback_app, _hostile_notebook())
    assert handed_to_bleach, "nothing was sanitised"
    for piece in handed_to_bleach:
        assert len(piece) <= 2 * MAX_MARKUP_CHARS  # (text runs get a marker every so often)
        depth, attributes = _shape(piece)
        assert depth <= MAX_DEPTH + 1 and attributes <= MAX_ATTRIBUTES
    soup = BeautifulSoup(html, "html.parser")
    text = soup.get_text()
    assert text.count(LEFT_OUT) >= 4  # the answer, the two outputs, the raw cell
    assert "Intro text." in text and "honest output" in text and "0.25" in text
    assert soup.find("table", class_="dataframe") is not None  # an honest table stays one
    assert "could not be made" not in text  # the real page, not the stand-in
    assert f'content="{CONTENT_SECURITY_POLICY}"' in html


def test_the_sanitiser_sees_a_shallow_tree_however_another_parser_reads_the_original():
    tricks = {
        "end tags inside attribute values": '<b title="</b>">x' * 2_000,
        "end tags out of scope": "<b id=1><object></b></object>" * 2_000,
        "end tags inside comments": "<b id=1><!-- > </b> -->" * 2_000,
        "comments closed by --!>": "<!-- --!><b id=1>" * 2_000,
        "end tags inside CDATA": "<b id=1><![CDATA[ ]]></b> ]]>" * 1_000,
        "raw text that never ends": "<textarea>" + "<b id=1>" * 2_000,
        "unclosed quotes": '<b title="' + "<b id=1>" * 2_000,
        "unclosed paragraphs and cells": "<p id=1><td id=2><li id=3>x" * 2_000,
    }
    for name, html in tricks.items():
        try:
            bounded = bound_markup(html)
        except TooComplex:
            continue
        depth, attributes = _shape(bounded)
        assert depth <= MAX_DEPTH + 1 and attributes <= MAX_ATTRIBUTES, name
        assert bound_markup(bounded) == bounded, name  # its own fixed point: well-formed


def test_over_the_bounds_is_a_plain_note():
    for html, words in ((nested(MAX_DEPTH + 1), "nests elements more than"),
                        ("<b " + " ".join(f"a{i}=1" for i in range(MAX_ATTRIBUTES + 1)) + ">",
                         f"{MAX_ATTRIBUTES + 1} attributes"),
                        ("<p>" + "x" * MAX_MARKUP_CHARS + "</p>", "characters long"),
                        ('<b title="' + "&lt;" * 300 + '">', "special characters")):
        with pytest.raises(TooComplex, match=words):
            bound_markup(html)
        note = clean_html(html)
        assert note.startswith('<p class="left-out"><em>[Not shown on this page: ') and \
            words in note and "<b" not in note


def test_ordinary_markup_comes_through_unchanged_to_the_reader():
    markup = ('<h2 id="x">Heading</h2><p>Text with <code>a &lt; b</code>, <em>stress</em> and '
              '<a href="https://example.org/?a=1&amp;b=2">a link</a>.</p><ul><li>one</li>'
              '<li>two<ul><li>nested</li></ul></li></ul><pre>  indented\n  code &amp; more</pre>'
              '<img src="data:image/png;base64,iVBORw0KGgo=" alt="figure" width="10"><br>'
              '<table><tr><td style="text-align: right">1</td></tr></table>')
    assert bound_markup(markup) == markup
    assert clean_html(markup) == safe_feedback._CLEANER.clean(markup)
    loose = "<p>one<p>two<ul><li>a<li>b</ul>x &amp y <3 <!-- hidden --> end"
    assert BeautifulSoup(bound_markup(loose), "html.parser").get_text() == \
        "onetwoabx & y <3  end"


def test_one_page_hands_the_sanitiser_a_bounded_amount(feedback_app, handed_to_bleach):
    piece = "<p>" + "word " * (MAX_MARKUP_CHARS // 6) + "</p>"
    outputs = [new_output("display_data", data={"text/html": piece}) for _ in range(40)]
    nb = new_notebook(cells=[new_code_cell("show()", outputs=outputs)])
    html, _ = _render(feedback_app, nb)
    assert sum(len(given) for given in handed_to_bleach) <= MAX_PAGE_MARKUP + MAX_MARKUP_CHARS
    assert "the page already shows all the markup one page may hold" in html
    assert html.count("word word") >= 3  # the first ones show


def test_a_long_text_output_is_cut_on_the_page(feedback_app):
    text = "line of output\n" * (3 * MAX_TEXT_CHARS // 15)
    nb = new_notebook(cells=[new_code_cell("print(...)", outputs=[
        new_output("stream", name="stdout", text=text)])])
    html, _ = _render(feedback_app, nb)
    assert "more characters not shown on this page" in html
    assert len(html) < 2 * MAX_TEXT_CHARS


def test_a_page_past_its_time_is_a_short_inert_page_with_the_points(feedback_app,
                                                                    monkeypatch):
    def stalls(html: str) -> str:  # stands in for a page that takes too long to clean
        time.sleep(60)
        return html

    monkeypatch.setattr(safe_feedback, "make_document_inert", stalls)
    nb = new_notebook(cells=[new_markdown_cell("Intro text.")])
    html, resources = _render(feedback_app, nb, time_limit=1)
    assert resources["output_extension"] == ".html"  # nbgrader still writes <id>.html
    assert "could not be made: it took longer than 1 s to make" in html
    assert f'content="{CONTENT_SECURITY_POLICY}"' in html and "Intro text." not in html
    assert "<script" not in html.lower()


def test_the_short_page_lists_the_points_and_escapes_every_name():
    page = minimal_page("01_gain<x>", "why <not>", [("test_<b>x</b>", 1.5, 2),
                                                    ("think_y", None, 1)])
    soup = BeautifulSoup(page, "html.parser")
    assert soup.find("meta", attrs={"http-equiv": "Content-Security-Policy"})["content"] == \
        CONTENT_SECURITY_POLICY
    assert [row.get_text(" ") for row in soup.find_all("tr")[1:]] == [
        "test_<b>x</b> 1.5 / 2", "think_y to be graded / 1"]
    assert soup.find("b") is None and "why <not>" in soup.get_text()


def test_the_time_limit_is_only_armed_in_the_main_thread_and_disarmed_after():
    import signal
    import threading

    with bounded_markup.time_limit(30) as armed:
        assert armed and signal.getitimer(signal.ITIMER_REAL)[0] > 0
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    seen = []
    worker = threading.Thread(target=lambda: seen.append(
        bounded_markup.time_limit(30).__enter__()))
    worker.start()
    worker.join()
    assert seen == [False]
