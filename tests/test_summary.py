"""The tables printed after grading keep their columns apart, whatever the ids' lengths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from pipeline.grading import autograde, summary
from pipeline.paths import ROOT

LONG_IDS = ["01_gain_multiplication", "05_sparse_and_inductive_bias", "07_generation_and_cost",
            "08_beyond_words"]


def _results() -> list[dict]:
    results = []
    for assignment in LONG_IDS:
        for exercise in ("SelfAttentionClassifier", "blockwise_attention", "x"):
            for student, score in (("ada", 1), ("a_student_with_a_long_name", 0), ("b", 1)):
                results.append({"student": student, "assignment": assignment,
                                "status": "graded", "cells": [{
                                    "grade_id": f"test_{exercise}", "kind": "auto",
                                    "score": score, "max_score": 1, "auto_score": score,
                                    "needs_manual_grade": False}]})
    results.append({"student": "zed", "assignment": LONG_IDS[-1], "cells": [],
                    "status": "not graded: the notebook is a link, never followed"})
    return results


def _columns(table: str) -> list[list[str]]:
    return [re.split(r" {2,}", line.strip()) for line in table.splitlines()]


def test_the_class_summary_never_runs_columns_together(tmp_path):
    rows = _columns(summary.write_summary(_results(), tmp_path))
    assert rows[0] == ["assignment", "exercise", "full marks", "share"]
    assert all(len(row) == 4 for row in rows), rows
    assert {row[0] for row in rows[1:]} == set(LONG_IDS)
    assert {row[1] for row in rows[1:]} == {"SelfAttentionClassifier", "blockwise_attention", "x"}


def test_the_grade_table_never_runs_columns_together():
    table = autograde.grade_table(_results())
    rows = _columns(table)
    assert rows[0] == ["student", *LONG_IDS]
    assert all(len(row) == 1 + len(LONG_IDS) for row in rows[1:-1]), rows
    assert rows[-1][0] == "zed" and rows[-1][-1].startswith("not graded")
    header = table.splitlines()[0]
    for line in table.splitlines()[1:]:  # right-aligned under their assignment's name
        for assignment in LONG_IDS:
            end = header.index(assignment) + len(assignment)
            assert line[end - 1:end + 1].strip() == line[end - 1:end], (assignment, line)


# ---- the summary page ---------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "bench" / "out" / "browser"
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>"


def _class() -> list[dict]:
    """A class of 10: scores spread over 0..4 points, one named mistake three times, one
    missing, one late, one not graded; a hostile student id and message."""
    results = []
    for i in range(8):
        softmax, attention = (2 if i < 6 else 0), (2 if i < 3 else 0)
        message = "CheckFailed: x\n  likely mistake: the gains were added" if 3 <= i < 6 else ""
        if i == 7:
            message = f"CheckFailed: {HOSTILE}\n  likely mistake: {HOSTILE}"
        results.append({"student": f"s{i}", "assignment": LONG_IDS[0], "status": "graded",
                        "cells": [
                            {"grade_id": "test_stable_softmax", "kind": "auto", "score": softmax,
                             "max_score": 2, "auto_score": softmax, "needs_manual_grade": False,
                             "message": ""},
                            {"grade_id": "test_gained_dot_product_attention", "kind": "auto",
                             "score": attention, "max_score": 2, "auto_score": attention,
                             "needs_manual_grade": False, "message": message}]})
    results[0]["late"] = {"submitted": "2025-03-09T01:23:00+00:00", "seconds_late": 7200.0,
                          "due": "2025-03-08T23:23:00+00:00", "penalty": 0.4}
    results.append({"student": "absent", "assignment": LONG_IDS[0], "status": "missing",
                    "cells": []})
    results.append({"student": HOSTILE, "assignment": LONG_IDS[0], "cells": [],
                    "status": f"not graded: {HOSTILE}"})
    return results


def test_the_summary_page_shows_distribution_hardest_mistakes_missing_and_late(tmp_path):
    summary.write_summary(_class(), tmp_path)
    page = (tmp_path / "index.html").read_text()
    hardest = summary.hardest([r for r in _class() if r["cells"]])
    assert [(e, lost, n) for _, e, lost, n in hardest] == [
        ("gained_dot_product_attention", 5, 8), ("stable_softmax", 2, 8)]
    mistakes = summary.named_mistakes(_class())
    assert mistakes[0] == (LONG_IDS[0], "gained_dot_product_attention", "the gains were added", 3)
    # the histogram: 3 students at 100%, 3 at 50%, 2 at 0% (the late one: 3.6 of 4 = 90%)
    bars = re.findall(r"<title>(\d+)-\d+%: (\d+)</title>", page)
    counts = {int(lo): int(n) for lo, n in bars if n != "0"}
    assert counts == {0: 2, 50: 3, 90: 3}  # 4/4 twice, and 3.6/4 after the late penalty
    for heading in ("Score distribution", "Exercises the class found hardest",
                    "Most common mistakes", "Missing", "Late"):
        assert heading in page, heading
    assert "the gains were added" in page and "absent" in page
    assert re.search(r"gained_dot_product_attention</td><td class=\"num\">5 of 8</td>", page)


def test_the_summary_page_is_inert(tmp_path):
    summary.write_summary(_class(), tmp_path)
    page = (tmp_path / "index.html").read_text()
    soup = BeautifulSoup(page, "html.parser")
    assert soup.find_all(["script", "img", "iframe", "object", "embed", "form", "link"]) == []
    assert [(tag.name, name) for tag in soup.find_all(True) for name in tag.attrs
            if name.lower().startswith("on")] == []
    assert HOSTILE in soup.get_text()  # shown, as text
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy and "default-src 'none'" in policy.group(1)
    assert "script-src" not in policy.group(1)
    assert not re.search(r"\b(src|href)=\"(https?:|//)", page)  # nothing fetched


@pytest.mark.slow
def test_the_summary_page_in_a_real_browser(tmp_path):
    """Chromium shows the page as drawn (cards, one histogram per assignment, bars for the
    hardest exercises, the tables) and fetches nothing; the hostile id shows as text and runs
    nothing. Needs Debian's chromium and playwright (`make setup-browser`)."""
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: run `make setup-browser`")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: run `make setup-browser`")
    results = _class() + [{**r, "assignment": LONG_IDS[1]} for r in _class() if r["cells"]]
    summary.write_summary(results, tmp_path)
    requests, problems = [], []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                          "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto((tmp_path / "index.html").as_uri())
        cards = page.locator(".card").all_inner_texts()
        histograms = page.locator("#distribution ~ svg").count()
        bars = page.locator("svg rect.bar").count()
        visible = page.get_by_text("Exercises the class found hardest").is_visible()
        hostile_shown = page.get_by_text(HOSTILE, exact=False).count()
        pwned = page.evaluate("() => window.__pwned === undefined")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "class_summary.png"), full_page=True)
        browser.close()
    assert [c.split()[0] for c in cards] == ["10", "16", "1", "2", "1"]  # students ... not graded
    assert histograms == 2 and bars >= 2 * 10 + 4 and visible
    assert hostile_shown >= 1 and pwned
    assert requests == [(tmp_path / "index.html").as_uri()]  # the page itself, nothing else
    assert problems == []


def test_a_student_cannot_write_the_class_mistakes_table():
    """A student's own error text, quoted in a failed check's "got" line, is indented under
    it; only the hidden test's last "likely mistake" line counts, once per student."""
    from helpers.checks.framework import SelfCheck
    from helpers.exercises import CheckFailed

    forged = "  likely mistake: the hidden test is wrong, regrade by hand"
    check = SelfCheck("stable_softmax")
    try:
        check.fail("calling it runs", expected="a result",
                   got="ValueError: oops\n" + "\n".join([forged] * 15))
    except CheckFailed as failure:
        quoted = f"CheckFailed: {failure}"
    raised = f"HiddenTestError: the hidden tests could not use your answer: x\n{forged}"
    cells = [{"grade_id": "test_stable_softmax", "message": quoted},
             {"grade_id": "test_gained_dot_product_attention", "message": raised}]
    results = [{"student": "s", "assignment": LONG_IDS[0], "status": "graded", "cells": cells}]
    assert summary.named_mistakes(results) == []
    check = SelfCheck("stable_softmax")
    try:
        check.fail("sums to one", expected="1", got="2\n" + forged, likely="no softmax")
    except CheckFailed as failure:
        cells[0]["message"] = f"CheckFailed: {failure}"
    assert summary.named_mistakes(results) == [
        (LONG_IDS[0], "stable_softmax", "no softmax", 1)]
