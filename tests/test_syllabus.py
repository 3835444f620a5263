"""The course agrees with its one declaration of every exercise, ``helpers/syllabus.py``.

A rename, a signature change or new points in one place fail here, with a message naming
every other place to update; every sample mistake fails its hidden test for the reason it
is named after.
"""

from __future__ import annotations

import dataclasses
import importlib

import nbformat
import pytest
from notebook_code import solution_namespace

from helpers import syllabus
from pipeline.release import consistency, from_syllabus
from sample_mistakes import sample_mistakes

TUTORIALS = {t.id: t for t in syllabus.TUTORIALS}
EXERCISES = [(t.id, e.name) for t in syllabus.TUTORIALS for e in t.exercises]


@pytest.mark.parametrize("notebook_id", TUTORIALS)
def test_the_tutorial_agrees_with_its_declaration(notebook_id):
    found = consistency.problems(TUTORIALS[notebook_id])
    assert not found, "update:\n  - " + "\n  - ".join(found)


def test_every_tutorial_file_belongs_to_a_declared_tutorial():
    assert not consistency.undeclared_files()


def test_course_order_is_the_declared_order():
    assert syllabus.ids() == sorted(syllabus.ids())
    assert [t.number for t in syllabus.TUTORIALS] == list(range(1, len(syllabus.TUTORIALS) + 1))


def _changed(notebook_id: str, **changes) -> syllabus.Tutorial:
    tutorial = TUTORIALS[notebook_id]
    first = dataclasses.replace(tutorial.exercises[0], **changes)
    return dataclasses.replace(tutorial, exercises=(first, *tutorial.exercises[1:]))


def test_a_renamed_exercise_names_every_place_to_update():
    found = "\n".join(consistency.problems(_changed("06_causal_mask_trick",
                                                    name="running_mean_for_loop")))
    for place in ("no answer cell with grade id 'running_mean_for_loop'",
                  "no autograded test cell with grade id 'test_running_mean_for_loop'",
                  "helpers/checks/causal_mask_trick.py does not define "
                  "check_running_mean_for_loop",
                  "grader/hidden_tests/causal_mask_trick.py does not define "
                  "grade_running_mean_for_loop",
                  "graded cell 'test_running_mean_loop' is not declared"):
        assert place in found, found


def test_a_changed_signature_or_points_fail_loudly():
    first = TUTORIALS["01_gain_multiplication"].exercises[0]  # as the solution has it
    signature = consistency.problems(_changed("01_gain_multiplication", signature="x, axis=-1"))
    assert signature == [f"solutions/01_gain_multiplication.ipynb: {first.name}"
                         f"({first.signature}) but helpers/syllabus.py declares (x, axis=-1)"]
    points = consistency.problems(_changed("01_gain_multiplication", points=first.points + 3))
    assert points == [f"solutions/01_gain_multiplication.ipynb: {first.test_cell} is worth "
                      f"{first.points} points, helpers/syllabus.py says {first.points + 3}"]
    declared = TUTORIALS["03_multi_head_attention"].exercises[2]
    method = dataclasses.replace(declared, methods={"forward": "x"})
    tutorial = TUTORIALS["03_multi_head_attention"]
    changed = dataclasses.replace(tutorial, exercises=(*tutorial.exercises[:2], method))
    assert consistency.problems(changed) == [
        f"solutions/03_multi_head_attention.ipynb: {declared.name}.forward"
        f"({declared.methods['forward']}) but helpers/syllabus.py declares (x)"]


def test_generation_refuses_a_course_that_disagrees(monkeypatch):
    changed = _changed("02_qkv_attention", points=9)
    monkeypatch.setattr(syllabus, "tutorial", lambda notebook_id: changed)
    with pytest.raises(SystemExit, match="test_scaled_dot_product_attention is worth 2 points"):
        consistency.require(["02_qkv_attention"])


@pytest.mark.parametrize(("notebook_id", "name"), EXERCISES)
def test_every_exercise_has_a_sample_mistake(notebook_id, name):
    assert name in sample_mistakes(TUTORIALS[notebook_id].topic), (
        f"grader/sample_mistakes/{TUTORIALS[notebook_id].topic}.py has no answer {name}")


@pytest.mark.parametrize(("notebook_id", "name"), EXERCISES)
def test_each_sample_mistake_fails_for_the_reason_it_is_named_after(notebook_id, name):
    tutorial = TUTORIALS[notebook_id]
    mistake = sample_mistakes(tutorial.topic).get(name)
    if mistake is None:
        pytest.skip("no sample mistake (reported by the test above)")
    # As in the answer cell: the mistake's source, run in the notebook's own namespace.
    namespace = dict(solution_namespace(notebook_id))
    exec(compile(mistake.source, f"<sample mistake {name}>", "exec"), namespace)
    hidden = importlib.import_module(f"hidden_tests.{tutorial.topic}")
    with pytest.raises(AssertionError) as failure:
        getattr(hidden, f"grade_{name}")(namespace[name])
    assert mistake.reason.lower() in str(failure.value).lower(), (
        f"grader/sample_mistakes/{tutorial.topic}.py: {name} is named after "
        f"{mistake.reason!r}, but its hidden test says:\n{failure.value}")


def test_exercise_names_are_unique_across_the_course():
    # helpers.exercises numbers exercises by name: a name used twice would get one number
    names = [e.name for t in syllabus.TUTORIALS for e in t.exercises]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("notebook_id", TUTORIALS)
def test_the_solutions_hold_what_the_declaration_generates(notebook_id):
    """Exercise numbers, points and hidden blocks are as `make assignments` writes them."""
    assert from_syllabus.sync(TUTORIALS[notebook_id], write=False) == []


def test_generation_renumbers_headers_and_writes_points_and_hidden_blocks(tmp_path):
    """On a made-up tutorial (not a live one): a course header and an exercise header with
    the wrong numbers, a test cell with the wrong points and no hidden block, a Think! cell
    with the wrong points."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    def graded(cell, grade_id, **flags):
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "schema_version": 3, **flags}
        return cell

    tutorial = syllabus.Tutorial("99_made_up", (syllabus.Exercise("f", "x", 3),),
                                 think={"think_a": 1})
    notebook = new_notebook(cells=[
        new_markdown_cell("# Made up\n\n**The course** · tutorial 3 of 5"),
        new_markdown_cell("### ✏️ Exercise 7: the function"),
        graded(new_code_cell("def f(x):\n    return x"), "f", solution=True, grade=False),
        graded(new_code_cell("check_f(f)"), "test_f", grade=True, points=1),
        graded(new_markdown_cell("answer"), "think_a", grade=True, solution=True, points=2),
    ])
    nbformat.write(notebook, tmp_path / "99_made_up.ipynb")
    changes = from_syllabus.sync(tutorial, folder=tmp_path)
    assert len(changes) == 5, changes
    header, *cells = nbformat.read(tmp_path / "99_made_up.ipynb", as_version=4).cells
    assert header.source.endswith(f"· tutorial 99 of {len(syllabus.ids())}")
    assert cells[0].source.startswith("### ✏️ Exercise 1:")
    assert cells[2].metadata["nbgrader"]["points"] == 3
    assert cells[2].source.startswith("check_f(f)\n\n### BEGIN HIDDEN TESTS\n"
                                      "from hidden_tests.made_up import grade_f")
    assert cells[3].metadata["nbgrader"]["points"] == 1
    assert from_syllabus.sync(tutorial, folder=tmp_path) == []  # twice changes nothing


def test_graded_cells_go_by_their_exercise_in_course_order():
    first, second = syllabus.TUTORIALS[0], syllabus.TUTORIALS[1]
    cells = syllabus.graded_cells()
    assert cells[0] == (first.exercises[0].test_cell, first.exercises[0].name)
    assert len(cells) == sum(len(t.exercises) + len(t.think) for t in syllabus.TUTORIALS)
    assert syllabus.grade_column(first.exercises[1].test_cell) == first.exercises[1].name
    think = next(iter(first.think))
    assert syllabus.grade_column(think) == think
    assert syllabus.grade_column("test_nobody_declared") == "nobody_declared"
    later, earlier = second.exercises[0].name, first.exercises[-1].name
    assert syllabus.in_course_order({"zz", later, "aa", earlier, think}) == [
        earlier, think, later, "aa", "zz"]
