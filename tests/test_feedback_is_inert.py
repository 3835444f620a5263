"""Feedback pages of a graded class run nothing, whatever the submissions displayed or wrote.

Grades the sample class plus the misbehaving bank as `make grade` does (the session fixture
``graded``); the bank's ``html_outputs`` students display hostile HTML, JavaScript, widgets
and SVG and write hostile markdown (see ``tests/misbehaving/html_outputs.py``).
"""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from misbehaving import NOTEBOOK, html_outputs
from misbehaving.html_outputs import PNG, live_hazards

from pipeline.grading.safe_feedback import CONTENT_SECURITY_POLICY
from pipeline.nbgrader_cli import nbgrader

pytestmark = pytest.mark.slow
HOSTILE = sorted(html_outputs.BANK)


def _page(course, student: str, folder: str = "feedback") -> str:
    return (course / "grader" / folder / student / NOTEBOOK / f"{NOTEBOOK}.html").read_text()


def _assert_inert_with_policy(html: str) -> BeautifulSoup:
    assert live_hazards(html) == []
    assert "<script" not in html.lower()  # the page runs no JavaScript at all
    soup = BeautifulSoup(html, "html.parser")
    first = soup.head.find(True)
    assert first.name == "meta" and first.get("http-equiv") == "Content-Security-Policy"
    assert first["content"] == CONTENT_SECURITY_POLICY
    return soup


@pytest.mark.parametrize("student", HOSTILE)
def test_hostile_submission_gets_inert_feedback_and_its_points(graded, student):
    course, _, results = graded
    result = results[student, NOTEBOOK]
    scores = {c["grade_id"]: c["score"] for c in result["cells"] if c["kind"] == "auto"}
    assert scores == html_outputs.BANK[student][2], result
    text = _assert_inert_with_policy(_page(course, student)).get_text()
    # the checks' messages and points still show
    assert "✅ stable_softmax: all" in text and "✅ gained_dot_product_attention: all" in text
    assert "gained_dot_product_attention (Score: 2.0 / 2.0)" in text  # exercises by name
    assert "Score: 4.0 / 6.0" in text


def test_hostile_displays_and_markdown_show_as_text_or_pictures(graded):
    soup = BeautifulSoup(_page(graded[0], "html_outputs"), "html.parser")
    text = soup.get_text()
    assert "<script>alert('print')</script> printed text stays text" in text
    assert "IntSlider(value=3)" in text and "<IPython.core.display.Javascript object>" in text
    assert f"data:image/png;base64,{PNG}" in [img.get("src") for img in soup.find_all("img")]
    assert "The gain multiplies the input; attention re-weights" in text  # Think! answer
    assert "<script>alert('script')</script>" in text  # the attempt is visible, inert


def test_hostile_errors_and_bundles_show_as_text(graded):
    text = BeautifulSoup(_page(graded[0], "html_in_errors"), "html.parser").get_text()
    assert "<script>alert('evalue')</script> raised on purpose" in text
    assert "<img src=x onerror=alert('ename')>" in text
    assert "<script>alert('ansi')</script> coloured text" in text
    assert "published" in text and "javascript:alert('bundle')" in text


def test_every_feedback_page_carries_the_policy_and_nothing_live(graded):
    course, _, results = graded
    graded_ones = [key for key, result in results.items() if result["status"] == "graded"]
    for student, notebook_id in graded_ones:  # (a refused submission has no page)
        assert (course / "grader" / "feedback" / student / notebook_id
                / f"{notebook_id}.html").is_file(), (student, notebook_id)
    pages = sorted((course / "grader" / "feedback").rglob("*.html"))
    assert len(pages) >= len(graded_ones) > 0
    for page in pages:
        _assert_inert_with_policy(page.read_text())


def test_check_messages_of_wrong_answers_still_show(graded):
    text = BeautifulSoup(_page(graded[0], "typical_mistakes"), "html.parser").get_text()
    assert "expected" in text and "got" in text and "likely mistake" in text
    assert "Score: 0.0 / 2.0" in text


@pytest.mark.parametrize("student", HOSTILE)
def test_plain_nbgrader_generate_feedback_is_inert_too(graded, student):
    """An instructor running nbgrader's own command with the course config gets the same."""
    course = graded[0]
    nbgrader("generate_feedback", NOTEBOOK, f"--student={student}", "--force",
             "--CourseDirectory.feedback_directory=feedback_cli", course_root=course / "grader")
    soup = _assert_inert_with_policy(_page(course, student, "feedback_cli"))
    assert "✅ stable_softmax: all" in soup.get_text()
