"""The tables printed after grading keep their columns apart, whatever the ids' lengths."""

from __future__ import annotations

import re

from pipeline import grading, summary

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
    table = grading.grade_table(_results())
    rows = _columns(table)
    assert rows[0] == ["student", *LONG_IDS]
    assert all(len(row) == 1 + len(LONG_IDS) for row in rows[1:-1]), rows
    assert rows[-1][0] == "zed" and rows[-1][-1].startswith("not graded")
    header = table.splitlines()[0]
    for line in table.splitlines()[1:]:  # right-aligned under their assignment's name
        for assignment in LONG_IDS:
            end = header.index(assignment) + len(assignment)
            assert line[end - 1:end + 1].strip() == line[end - 1:end], (assignment, line)
