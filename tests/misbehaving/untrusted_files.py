"""Submissions that attack the grader through files and nbgrader metadata.

``meta_*`` tamper with the nbgrader metadata of their cells: each is graded against the
gradebook's cells, never "autograde failed" with 0 of 0 points, and never for more.
``files_*`` leave links, FIFOs and huge files next to their notebook, or make the
notebook itself a link (``REFUSED``): only a regular notebook file is read, only the
notebook is copied into the scratch course, and a linked notebook is reported and not
graded.
``kernel_*`` do the same from inside the kernel at grading time, in the folder the kernel
runs in: only the graded notebook and its feedback page leave the scratch course, as
regular files, and nothing is written through a link.

``tests/test_untrusted_files_end_to_end.py`` checks what they could not reach.
"""

import os
from pathlib import Path

from misbehaving import ATTENTION, ATTENTION_ALONE, BOTH, NOTEBOOK, SOFTMAX_ONLY, WRONG_ATTENTION

# The student whose notebook the attacks point their links at (graded normally).
VICTIM = "files_victim"
# The student whose submitted notebook is a link (reported, not graded).
LINKED_NOTEBOOK = "files_notebook_is_link"
# What kernel code prints after it made something, so tests know the attack was tried,
# and where it tried it.
MADE = "made "
FOLDER = "kernel folder: "



def _cells(notebook: dict, grade_id: str) -> list[dict]:
    return [cell for cell in notebook["cells"]
            if isinstance(cell.get("metadata"), dict)
            and isinstance(cell["metadata"].get("nbgrader"), dict)
            and cell["metadata"]["nbgrader"].get("grade_id") == grade_id]


def _nbgrader(notebook: dict, grade_id: str) -> dict:
    (cell,) = _cells(notebook, grade_id)
    return cell["metadata"]["nbgrader"]


# ---- tampered metadata -------------------------------------------------------------------

def _answer_as_grade_cell(notebook: dict, folder: Path) -> None:
    """The answer cell claims to be a graded cell worth 100 points."""
    _nbgrader(notebook, "stable_softmax").update(grade=True, points=100)


def _renamed_test_ids(notebook: dict, folder: Path) -> None:
    """Both test cells get new grade ids (and points); they are found by their cell ids."""
    _nbgrader(notebook, "test_stable_softmax").update(grade_id="my_softmax_test", points=50)
    _nbgrader(notebook, "test_gained_dot_product_attention").update(grade_id="free", points=9)


def _unknown_grade_cells(notebook: dict, folder: Path) -> None:
    """New cells marked as graded (code and Think!-style markdown) with ids nobody knows."""
    bonus = {"cell_type": "code", "execution_count": None, "id": "bonus-points", "outputs": [],
             "source": "print('free points')",
             "metadata": {"nbgrader": {"grade": True, "grade_id": "bonus_points", "locked": True,
                                       "points": 100, "schema_version": 3, "solution": False,
                                       "task": False}}}
    essay = {"cell_type": "markdown", "id": "bonus-essay", "source": "I deserve it.",
             "metadata": {"nbgrader": {"grade": True, "grade_id": "bonus_essay<b>",
                                       "locked": False, "points": 10, "schema_version": 3,
                                       "solution": True, "task": False}}}
    notebook["cells"][3:3] = [bonus, essay]


def _test_cell_made_an_answer(notebook: dict, folder: Path) -> None:
    """The test cell of a wrong answer becomes an unlocked answer cell that passes."""
    _nbgrader(notebook, "test_gained_dot_product_attention").update(
        grade=False, locked=False, solution=True)
    (cell,) = _cells(notebook, "test_gained_dot_product_attention")
    cell["source"] = "pass\n"


def _garbage_metadata(notebook: dict, folder: Path) -> None:
    """Unreadable nbgrader metadata: a string, a list, a future schema, points that are no
    number, a missing grade id."""
    (answer,) = _cells(notebook, "stable_softmax")
    answer["metadata"]["nbgrader"] = "garbage"
    _nbgrader(notebook, "test_stable_softmax").update(schema_version=99, points="lots")
    _nbgrader(notebook, "test_gained_dot_product_attention").update(grade_id=None)
    notebook["cells"][0]["metadata"]["nbgrader"] = ["not", "a", "dict"]


def _stripped_and_deleted(notebook: dict, folder: Path) -> None:
    """The first answer and its test lose their nbgrader metadata (the other exercise's
    answer and test cells are deleted by the bank entry itself)."""
    for grade_id in ("stable_softmax", "test_stable_softmax"):
        (cell,) = _cells(notebook, grade_id)
        del cell["metadata"]["nbgrader"]


# ---- files next to the submitted notebook ------------------------------------------------

def _links_next_to_notebook(notebook: dict, folder: Path) -> None:
    grader = folder.parents[2]  # <grader>/sample_submissions/<student>/<id>
    course = grader.parent
    links = {
        "gradebook.db": "../../../gradebook.db",
        "abs_gradebook.db": grader / "gradebook.db",
        "solution.ipynb": course / "solutions" / f"{NOTEBOOK}.ipynb",
        "source": grader / "source",
        "hidden_tests": grader / "hidden_tests",
        "other_student.ipynb": f"../../{VICTIM}/{NOTEBOOK}/{NOTEBOOK}.ipynb",
        f"{NOTEBOOK}.html": "../../../gradebook.db",
    }
    for name, target in links.items():
        (folder / name).symlink_to(target)
    os.mkfifo(folder / "pipe")
    with open(folder / "big.bin", "wb") as handle:  # 1 GiB, sparse
        handle.truncate(2**30)
    (folder / "data").mkdir()
    (folder / "data" / "notes.txt").write_text("my notes")
    (folder / "data" / "leak").symlink_to(grader / "gradebook.db")


def _notebook_is_link(notebook: dict, folder: Path) -> None:
    (folder / f"{NOTEBOOK}.ipynb").symlink_to(f"../../{VICTIM}/{NOTEBOOK}/{NOTEBOOK}.ipynb")


# ---- things the kernel makes while it is graded ---------------------------------------------

# Where the course is, seen from a kernel: its folder is inside grader/.scratch/, and
# grader/ is on PYTHONPATH (either may change; then the absolute links are not tried). It
# works in its own folder and tries the folder nbgrader writes its graded notebook to
# (autograded/<student>/<id>/ of its scratch course), named after the student it knows it is.
def _kernel_code(student: str, body: str) -> str:
    return f'''\
import os, pathlib, socket
here = pathlib.Path.cwd()
grader = next((p.parent for p in here.parents if p.name == ".scratch"), None)
for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if grader is None and entry and pathlib.Path(entry).name == "grader":
        grader = pathlib.Path(entry)
victim = grader / "sample_submissions" / "{VICTIM}" / "{NOTEBOOK}" / "{NOTEBOOK}.ipynb" \\
    if grader else None
print("{FOLDER}" + str(here))
folders = {{"its folder": here}}
batch = next((p for p in here.parents if p.parent.name == ".scratch"), None)
if batch is not None and batch / "autograded" / "{student}" / "{NOTEBOOK}" != here:
    folders["autograded"] = batch / "autograded" / "{student}" / "{NOTEBOOK}"

def attempt(what, make):
    for where, folder in folders.items():
        try:
            make(folder)
            print("{MADE}" + what + " in " + where)
        except Exception as error:
            print("could not make", what, "in", where, type(error).__name__)
''' + body


_KERNEL_LINKS = f'''\
targets = {{
    "gradebook.db": "../../../gradebook.db",
    "abs_gradebook.db": os.path.abspath("../../../gradebook.db"),
    "source": "../../../source",
    "solution.ipynb": "../../../source/{NOTEBOOK}/{NOTEBOOK}.ipynb",
    "other_student.ipynb": "../../{VICTIM}/{NOTEBOOK}/{NOTEBOOK}.ipynb",
    "{NOTEBOOK}.html": "../../../gradebook.db",
    "timestamp.txt": "../../../gradebook.db",
}}
if grader is not None:
    targets.update({{"course_gradebook.db": grader / "gradebook.db",
                    "hidden_tests": grader / "hidden_tests", "victim.ipynb": victim,
                    "grades.csv": grader / "grades.csv"}})
for name, target in targets.items():
    attempt("link " + name, lambda folder: os.symlink(target, folder / name))
attempt("nested link", lambda folder: (os.makedirs(folder / "nested", exist_ok=True),
                                       os.symlink("../../../../gradebook.db",
                                                  folder / "nested" / "leak")))
'''

_KERNEL_REPLACES_NOTEBOOK = f'''\
def replace(folder):
    os.remove(folder / "{NOTEBOOK}.ipynb")
    os.symlink(victim if victim else "../../{VICTIM}/{NOTEBOOK}/{NOTEBOOK}.ipynb",
               folder / "{NOTEBOOK}.ipynb")
attempt("link in place of the notebook", replace)
'''

_KERNEL_SPECIAL_FILES = f'''\
def big(folder):
    with open(folder / "big.bin", "wb") as handle:
        handle.truncate(2**30)
def bind(folder):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock"))
attempt("1 GiB file", big)
attempt("fifo", lambda folder: os.mkfifo(folder / "pipe"))
attempt("fifo timestamp", lambda folder: os.mkfifo(folder / "timestamp.txt"))
attempt("fifo page", lambda folder: os.mkfifo(folder / "{NOTEBOOK}.html"))
attempt("socket", bind)
'''


def _kernel_attack(student: str, body: str) -> tuple:
    return (student, ({ATTENTION.name: _kernel_code(student, body)
                       + ATTENTION_ALONE}, {}, BOTH))


BANK = {
    # the answer cell claims to be graded, worth 100 points: graded against the gradebook
    "meta_answer_as_grade_cell": ({ATTENTION.name: WRONG_ATTENTION}, {},
                                  SOFTMAX_ONLY, _answer_as_grade_cell),
    # test cells renamed (and re-pointed): matched by their cell ids, graded as usual
    "meta_renamed_test_ids": ({ATTENTION.name: WRONG_ATTENTION}, {},
                              SOFTMAX_ONLY, _renamed_test_ids),
    # cells that claim grade ids the gradebook does not know: they run, never graded
    "meta_unknown_grade_cells": ({}, {}, BOTH, _unknown_grade_cells),
    # a test cell turned into an answer cell that passes: locked and restored again
    "meta_test_cell_made_an_answer": ({ATTENTION.name: WRONG_ATTENTION}, {},
                                      SOFTMAX_ONLY, _test_cell_made_an_answer),
    # unreadable metadata of every kind: rebuilt from the gradebook
    "meta_garbage": ({}, {}, BOTH, _garbage_metadata),
    # metadata stripped from one exercise, the other's answer and test cells deleted
    "meta_stripped_and_deleted": ({ATTENTION.name: None},
                                  {"test_gained_dot_product_attention": None},
                                  SOFTMAX_ONLY, _stripped_and_deleted),
    # what the attacks below point at: graded as usual, its notebook never changes
    VICTIM: ({}, {}, BOTH),
    # links to the gradebook, the solutions, the hidden tests and another student, a FIFO,
    # a 1 GiB file and a folder next to the notebook: only the notebook is read
    "files_links_next_to_notebook": ({}, {}, BOTH, _links_next_to_notebook),
}
# The notebook is a link to another student's: reported by name, not graded. It gets a
# result without cells ("not graded: ..."), so it is graded in a class of its own
# (tests/test_untrusted_files_end_to_end.py), not in the bank every student of which
# must be graded.
REFUSED = {LINKED_NOTEBOOK: ({}, {}, {}, _notebook_is_link)}
# At grading time, in the kernel's folder and in the graded notebook's: links to the scratch
# and the course gradebook, the source, the hidden tests and other students; its own
# notebook replaced by a link to another student's submission; a 1 GiB sparse file, FIFOs
# (posing as the feedback page and as nbgrader's timestamp file) and a socket. None of it
# leaves the scratch course, and nothing is written through a link.
BANK.update([_kernel_attack("kernel_links_in_its_folder", _KERNEL_LINKS),
             _kernel_attack("kernel_replaces_its_notebook", _KERNEL_REPLACES_NOTEBOOK),
             _kernel_attack("kernel_special_files", _KERNEL_SPECIAL_FILES)])
