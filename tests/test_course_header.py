"""Each student notebook numbers itself from the course's list of tutorials."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook

from pipeline.paths import NOTEBOOKS, assignment_ids
from pipeline.release.preprocessors import CourseHeader


def test_the_header_is_renumbered_from_the_course_list():
    ids = assignment_ids()
    nb = new_notebook(cells=[new_markdown_cell("**The course** · tutorial 1 of 1\n\n# Title"),
                             new_markdown_cell("tutorial 9 of 9 (an unrelated sentence)")])
    nb, _ = CourseHeader().preprocess(nb, {"unique_key": ids[-1]})
    assert nb.cells[0].source.startswith(f"**The course** · tutorial {len(ids)} of {len(ids)}")
    assert nb.cells[1].source == "tutorial 9 of 9 (an unrelated sentence)"  # first header only


def test_a_notebook_outside_the_course_is_left_alone():
    nb = new_notebook(cells=[new_markdown_cell("tutorial 1 of 1")])
    nb, _ = CourseHeader().preprocess(nb, {"unique_key": "99_not_a_tutorial"})
    assert nb.cells[0].source == "tutorial 1 of 1"


def test_every_student_notebook_says_where_it_stands_in_the_course():
    ids = assignment_ids()
    for number, notebook_id in enumerate(ids, start=1):
        notebook = nbformat.read(NOTEBOOKS / f"{notebook_id}.ipynb", as_version=4)
        header = next(c.source for c in notebook.cells if c.cell_type == "markdown"
                      and "tutorial" in c.source and " of " in c.source)
        assert f"tutorial {number} of {len(ids)}" in header, notebook_id
