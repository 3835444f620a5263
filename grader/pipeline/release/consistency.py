"""Does every place an exercise lives agree with its declaration in ``helpers/syllabus.py``?

Everything follows from an exercise's name and its tutorial's topic:

===========================  =====================================================
answer cell                  ``solutions/<id>.ipynb``, grade id ``<name>``, defines ``<name>``
test cell                    grade id ``test_<name>``, ``<points>`` points, calls
                             ``check_<name>(<name>)`` and ends with :func:`hidden_block`
self-check                   ``helpers.checks.<topic>.check_<name>``
hidden test                  ``hidden_tests.<topic>.grade_<name>`` (``grader/hidden_tests``)
banks of variants            ``tests/test_hidden_<topic>.py`` (``assert_bank`` on both;
                             checked by ``tests/test_syllabus.py``, not here)
sample mistake               ``sample_mistakes.<topic>.<name>`` (``grader/sample_mistakes``)
demos                        ``helpers.demos.<topic>``
===========================  =====================================================

:func:`problems` lists each disagreement as a sentence that names the file to update. It
reads the solution notebook and imports the tutorial's self-check, hidden-test and
sample-mistake modules; it runs nothing but the answer cells (to read the signatures).
``make assignments`` refuses to generate a release while there is a problem, and
``tests/test_syllabus.py`` runs it for every tutorial.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import nbformat

from helpers import syllabus
from helpers.syllabus import Exercise, Tutorial
from pipeline.markers import BEGIN_HIDDEN, END_HIDDEN, hidden_blocks, without_hidden_blocks
from pipeline.paths import GRADER, SOLUTIONS


def parameters(definition: object, method: str | None = None) -> str:
    """A definition's parameters as declared in the syllabus: ``"x, dim=-1"`` (no
    annotations, no ``self``); for a class its ``__init__``, or ``method``."""
    target = getattr(definition, method) if method else definition
    shown = []
    for parameter in inspect.signature(target).parameters.values():
        if parameter.name == "self":
            continue
        text = parameter.name
        if parameter.default is not inspect.Parameter.empty:
            text += f"={parameter.default!r}"
        shown.append(text)
    return ", ".join(shown)


def hidden_block(tutorial: Tutorial, exercise: Exercise) -> str:
    """The exact hidden block of an exercise's test cell."""
    return (f"{BEGIN_HIDDEN}\n"
            f"from hidden_tests.{tutorial.topic} import {exercise.hidden_test}\n\n"
            f"{exercise.hidden_test}({exercise.name})\n"
            f"{END_HIDDEN}")


def _cells(notebook_id: str) -> dict[str, nbformat.NotebookNode]:
    notebook = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    return {cell.metadata["nbgrader"]["grade_id"]: cell for cell in notebook.cells
            if "grade_id" in cell.metadata.get("nbgrader", {})}


def _module(name: str) -> tuple[object | None, str | None]:
    try:
        return importlib.import_module(name), None
    except ModuleNotFoundError as error:
        if error.name != name:  # the module is there; something it imports is not
            raise
        return None, str(error)


def _where(module: str) -> str:
    """The file a module name stands for, relative to the repository."""
    path = module.replace(".", "/") + ".py"
    return path if module.startswith("helpers") else f"grader/{path}"


def _answer_problems(tutorial: Tutorial, exercise: Exercise, cells: dict, notebook: str
                     ) -> list[str]:
    answer = cells.get(exercise.name)
    if answer is None or not answer.metadata["nbgrader"].get("solution"):
        return [f"{notebook}: no answer cell with grade id {exercise.name!r}"]
    namespace: dict = {}
    try:  # with the imports every setup cell has
        exec(compile("import math\nimport torch\nimport torch.nn.functional as F\n"
                     "from torch import nn\n" + answer.source, f"<{exercise.name}>", "exec"),
             namespace)
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return [f"{notebook}: the answer cell {exercise.name!r} does not run on its own "
                f"({type(error).__name__}: {error})"]
    definition = namespace.get(exercise.name)
    if definition is None:
        return [f"{notebook}: the answer cell {exercise.name!r} does not define "
                f"{exercise.name}"]
    found = []
    if parameters(definition) != exercise.signature:
        found.append(f"{notebook}: {exercise.name}({parameters(definition)}) but "
                     f"helpers/syllabus.py declares ({exercise.signature})")
    for method, declared in exercise.methods.items():
        if not hasattr(definition, method):
            found.append(f"{notebook}: {exercise.name} has no method {method}")
        elif parameters(definition, method) != declared:
            found.append(f"{notebook}: {exercise.name}.{method}"
                         f"({parameters(definition, method)}) but helpers/syllabus.py "
                         f"declares ({declared})")
    return found


def _test_cell_problems(tutorial: Tutorial, exercise: Exercise, cells: dict, notebook: str
                        ) -> list[str]:
    test = cells.get(exercise.test_cell)
    if test is None or not test.metadata["nbgrader"].get("grade"):
        return [f"{notebook}: no autograded test cell with grade id {exercise.test_cell!r}"]
    found = []
    points = test.metadata["nbgrader"].get("points")
    if points != exercise.points:
        found.append(f"{notebook}: {exercise.test_cell} is worth {points} points, "
                     f"helpers/syllabus.py says {exercise.points}")
    visible = without_hidden_blocks(test.source)
    if f"{exercise.check}({exercise.name})" not in visible:
        found.append(f"{notebook}: {exercise.test_cell} does not call "
                     f"{exercise.check}({exercise.name})")
    blocks = hidden_blocks(test.source)
    if blocks != [hidden_block(tutorial, exercise)]:
        found.append(f"{notebook}: the hidden block of {exercise.test_cell} must be exactly:\n"
                     f"{hidden_block(tutorial, exercise)}")
    return found


def problems(tutorial: Tutorial) -> list[str]:
    """Every disagreement between ``tutorial``'s declaration and the course's files."""
    notebook = f"solutions/{tutorial.id}.ipynb"
    if not (SOLUTIONS / f"{tutorial.id}.ipynb").exists():
        return [f"{notebook} does not exist"]
    cells = _cells(tutorial.id)
    found: list[str] = []
    checks, missing_checks = _module(f"helpers.checks.{tutorial.topic}")
    hidden, missing_hidden = _module(f"hidden_tests.{tutorial.topic}")
    for module, missing in ((f"helpers.checks.{tutorial.topic}", missing_checks),
                            (f"hidden_tests.{tutorial.topic}", missing_hidden)):
        if missing:
            found.append(f"{_where(module)}: {missing}")
    if importlib.util.find_spec(f"helpers.demos.{tutorial.topic}") is None:
        found.append(f"helpers/demos/{tutorial.topic}.py does not exist")
    for exercise in tutorial.exercises:
        found += _answer_problems(tutorial, exercise, cells, notebook)
        found += _test_cell_problems(tutorial, exercise, cells, notebook)
        if checks is not None and not callable(getattr(checks, exercise.check, None)):
            found.append(f"helpers/checks/{tutorial.topic}.py does not define {exercise.check}")
        if hidden is not None and not callable(getattr(hidden, exercise.hidden_test, None)):
            found.append(f"grader/hidden_tests/{tutorial.topic}.py does not define "
                         f"{exercise.hidden_test}")
    graded = {grade_id for grade_id, cell in cells.items()
              if cell.metadata["nbgrader"].get("grade")}
    declared = {e.test_cell for e in tutorial.exercises} | set(tutorial.think)
    for grade_id in sorted(graded - declared):
        found.append(f"{notebook}: graded cell {grade_id!r} is not declared in "
                     f"helpers/syllabus.py")
    for grade_id, points in tutorial.think.items():
        cell = cells.get(grade_id)
        if cell is None or cell.cell_type != "markdown" or not cell.metadata["nbgrader"].get(
                "grade"):
            found.append(f"{notebook}: no hand-graded Think! answer cell {grade_id!r}")
        elif cell.metadata["nbgrader"].get("points") != points:
            found.append(f"{notebook}: {grade_id} is worth "
                         f"{cell.metadata['nbgrader'].get('points')} points, "
                         f"helpers/syllabus.py says {points}")
    found += _readme_problems(tutorial)
    from sample_mistakes import sample_mistakes

    names = {e.name for e in tutorial.exercises}
    for name in sorted(set(sample_mistakes(tutorial.topic)) - names):
        found.append(f"grader/sample_mistakes/{tutorial.topic}.py: {name} is not an exercise "
                     f"of {tutorial.id}")
    return found


def _readme_problems(tutorial: Tutorial) -> list[str]:
    """The README's table of tutorials has the tutorial's row, with its number and link."""
    readme = SOLUTIONS.parent / "README.md"
    if not readme.exists():
        return []
    row = re.search(rf"^\| *(\d+) *\|[^\n]*\(notebooks/{re.escape(tutorial.id)}\.ipynb\)",
                    readme.read_text(), re.MULTILINE)
    if row is None:
        return [f"README.md: the table of tutorials has no row linking "
                f"notebooks/{tutorial.id}.ipynb"]
    if int(row.group(1)) != tutorial.number:
        return [f"README.md: the row of {tutorial.id} is numbered {row.group(1)}, not "
                f"{tutorial.number}"]
    return []


def undeclared_files() -> list[str]:
    """Files named like a tutorial's modules that no declared tutorial owns."""
    topics = {t.topic for t in syllabus.TUTORIALS}
    ids = {t.id for t in syllabus.TUTORIALS}
    found = [f"solutions/{path.name} is not declared in helpers/syllabus.py"
             for path in sorted(SOLUTIONS.glob("*.ipynb")) if path.stem not in ids]
    helpers = Path(importlib.util.find_spec("helpers").origin).parent
    for folder in (helpers / "checks", helpers / "demos",
                   GRADER / "hidden_tests", GRADER / "sample_mistakes"):
        for path in sorted(folder.glob("*.py")):
            if path.stem not in topics | {"__init__", "framework", "calls", "common"}:
                found.append(f"{path.parent.name}/{path.name} belongs to no declared tutorial")
    return found



def require(ids: list[str]) -> None:
    """Raise, naming every place to update, when a tutorial disagrees with its declaration."""
    found = undeclared_files()
    found += [p for notebook_id in ids for p in problems(syllabus.tutorial(notebook_id))]
    if found:
        raise SystemExit("the course disagrees with helpers/syllabus.py; update:\n  - "
                         + "\n  - ".join(found))
