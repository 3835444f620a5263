"""Every exercise has tiered hints (the idea, then one step), and no hint gives the answer.

A hint is a collapsible block ``<details><summary>💡 Hint N: ...</summary> ... </details>``
in the markdown before the exercise's answer cell. The first names the idea (what to
compute, which shape to aim for, which pitfall to watch), the second gives one step; a
student who opens every hint still has to write the code. Measured against ``solutions/``:
no hint may contain a line of the solution, or most of one.
"""

from __future__ import annotations

import difflib
import re

import nbformat
import pytest
from notebook_code import SOLUTIONS

from helpers import syllabus

IDS = syllabus.ids()
HINT = re.compile(r"<details>\s*<summary>(?P<summary>.*?)</summary>(?P<body>.*?)</details>",
                  re.DOTALL)
NUMBERED = re.compile(r"💡 Hint (?P<number>\d+): \S")
MIN_LINE = 12  # solution lines shorter than this (normalised) are too generic to count
MOST = 0.6  # a hint may not contain this share (or 12 characters, if more) of a line


def normalise(text: str) -> str:
    """Code as a plain character string: no whitespace, no markdown or HTML markup."""
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[\s`]", "", text)


def solution_lines(source: str) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if "### BEGIN SOLUTION" in line:
            inside = True
        elif "### END SOLUTION" in line:
            inside = False
        elif inside:
            code = line.split("#", 1)[0] if not line.strip().startswith(('"', "'")) else ""
            if len(normalise(code)) >= MIN_LINE:
                lines.append(normalise(code))
    return lines


def exercises(notebook_id: str) -> list[tuple[str, list[tuple[str, str]], list[str]]]:
    """(grade_id, hints as (summary, body), solution lines) for every answer cell, where the
    hints are those of the markdown since the previous answer cell."""
    notebook = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    found, markdown = [], []
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and not meta.get("solution"):
            markdown.append(cell.source)
        elif cell.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            hints = [(m["summary"].strip(), m["body"]) for m in HINT.finditer("\n".join(markdown))]
            found.append((meta["grade_id"], hints, solution_lines(cell.source)))
            markdown = []
    return found


CASES = [(notebook_id, *exercise) for notebook_id in IDS for exercise in exercises(notebook_id)]


def test_every_notebook_has_exercises():
    assert len(IDS) >= 6 and all(any(c[0] == i for c in CASES) for i in IDS)


@pytest.mark.parametrize(("notebook_id", "grade_id", "hints", "lines"), CASES,
                         ids=[f"{c[0][:2]}-{c[1]}" for c in CASES])
def test_hints_are_tiered(notebook_id, grade_id, hints, lines):
    numbers = []
    for summary, body in hints:
        match = NUMBERED.search(summary)
        assert match, f"{grade_id}: a hint's summary must read '💡 Hint N: <what it is about>'"
        numbers.append(int(match["number"]))
        assert body.strip(), f"{grade_id}: hint {numbers[-1]} is empty"
    assert numbers[:2] == [1, 2] and numbers == list(range(1, len(numbers) + 1)), \
        f"{grade_id}: expected Hint 1 (the idea) and Hint 2 (one step), found {numbers}"


@pytest.mark.parametrize(("notebook_id", "grade_id", "hints", "lines"), CASES,
                         ids=[f"{c[0][:2]}-{c[1]}" for c in CASES])
def test_no_hint_gives_the_answer(notebook_id, grade_id, hints, lines):
    assert lines, f"{grade_id}: no solution lines found"
    for summary, body in hints:
        text = normalise(summary + body)
        for line in lines:
            match = difflib.SequenceMatcher(None, line, text, autojunk=False).find_longest_match(
                0, len(line), 0, len(text))
            limit = max(MIN_LINE, MOST * len(line))
            shared = line[match.a:match.a + match.size]
            assert match.size < limit, (
                f"{notebook_id} {grade_id}, {summary!r} contains {match.size} characters of the "
                f"solution line {line!r}: {shared!r}")


def test_the_measure_catches_a_hint_that_is_the_answer():
    line = normalise("weights = torch.softmax(scores, dim=-1)")
    for hint, caught in (("Then `torch.softmax(scores, dim=-1)` gives the weights.", True),
                         ("the softmax runs over the keys: which dimension is that?", False)):
        text = normalise(hint)
        match = difflib.SequenceMatcher(None, line, text, autojunk=False).find_longest_match(
            0, len(line), 0, len(text))
        assert (match.size >= max(MIN_LINE, MOST * len(line))) is caught
