"""A bank of misbehaving submissions, built on the full solution of tutorial 01.

Each entry: student id -> (answer cells replaced, test cells replaced, expected
auto-graded points per test cell[, tamper]). A replacement maps a grade_id to a new
source, to None (delete the cell) or to a list of sources (one copy of the cell per
source, all with the same cell id and grade_id, as a hand-edited or badly merged
notebook has). The optional ``tamper(notebook: dict, folder: Path)`` changes the
notebook (a JSON dict) before it is written to ``folder/<id>.ipynb`` and may leave
other things in ``folder`` (links, large files).

Every module of this package that defines ``BANK`` adds its entries (and its
``SANDBOX_ONLY`` names) to the bank graded end to end by ``tests/test_end_to_end.py``.
"""

import importlib
import pkgutil

from helpers import syllabus

# The attacks need a real hidden test to attack; tutorial 01's grade fastest. Names,
# signatures and points come from the declaration, so changing them there changes them here.
NOTEBOOK = "01_gain_multiplication"
SOFTMAX, ATTENTION = syllabus.tutorial(NOTEBOOK).exercises[:2]
assert (SOFTMAX.name, ATTENTION.name) == ("stable_softmax", "gained_dot_product_attention"), \
    "the bank's answers below are written for these two exercises"


def scores(softmax: bool, attention: bool) -> dict[str, int]:
    """The auto-graded points of the two exercises, full or none for each."""
    return {SOFTMAX.test_cell: SOFTMAX.points if softmax else 0,
            ATTENTION.test_cell: ATTENTION.points if attention else 0}


BOTH, SOFTMAX_ONLY, ATTENTION_ONLY = scores(True, True), scores(True, False), scores(False, True)
SOFTMAX_HEADER = f"def {SOFTMAX.name}({SOFTMAX.signature}):\n"
ATTENTION_HEADER = f"def {ATTENTION.name}({ATTENTION.signature}):\n"
# A wrong answer (no softmax) that does not call the student's stable_softmax.
WRONG_ATTENTION = (ATTENTION_HEADER + "    w = z_1 * q_1 + z_2 * q_2\n"
                   "    return w, torch.dot(w, x)\n")
# The marker a tampering submission tries to leave behind; built at run time so that the
# submission's own source (shown in its feedback) does not contain it.
TAMPER_MARK = "TAMPERED"
# A correct answer that does not call the student's stable_softmax, so it can be graded
# on its own after a broken stable_softmax cell.
ATTENTION_ALONE = (ATTENTION_HEADER + "    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)\n"
                   "    return w, torch.dot(w, x)\n")

BANK = {
    # raises inside the function: that exercise scores 0, the rest is graded
    "raises_error": ({ATTENTION.name: ATTENTION_HEADER
                      + "    raise ValueError('oops')\n"}, {},
                     SOFTMAX_ONLY),
    # loops forever while defining the answer: the cell times out, later cells still run
    "infinite_loop": ({SOFTMAX.name: "while True:\n    pass\n",
                       ATTENTION.name: ATTENTION_ALONE}, {},
                      ATTENTION_ONLY),
    # kills its kernel: only the killing cell's exercise is lost; the kernel restarts, the
    # cells before are replayed and the later exercise is still graded
    "kernel_crash": ({SOFTMAX.name: "import os\nos._exit(1)\n",
                      ATTENTION.name: ATTENTION_ALONE}, {},
                     ATTENTION_ONLY),
    # asks for 16 GiB: the memory limit turns it into a MemoryError in that cell only
    "memory_bomb": ({ATTENTION.name: "hog = bytearray(16 * 2**30)\n"}, {},
                    SOFTMAX_ONLY),
    # prints warnings to stderr from a correct answer: no points lost
    "noisy_warnings": ({SOFTMAX.name: "import sys, warnings\n" + SOFTMAX_HEADER
                        + "    warnings.warn('a harmless warning')\n"
                        + "    print('progress...', file=sys.stderr)\n"
                        + "    e = torch.exp(x - x.amax(dim=dim, keepdim=True))\n"
                        + "    return e / e.sum(dim=dim, keepdim=True)\n"}, {},
                       BOTH),
    # empties the test cells of a wrong answer: nbgrader restores them from the gradebook
    "edits_tests": ({ATTENTION.name: ATTENTION_HEADER
                     + "    w = torch.softmax(q_1 + q_2, dim=0)\n    return w, torch.dot(w, x)\n"},
                    {ATTENTION.test_cell: "pass\n"},
                    SOFTMAX_ONLY),
    # makes every comparison in its own process pass: the checks run in the grader's
    "patches_allclose": ({ATTENTION.name: "torch.allclose = lambda *a, **k: True\n"
                          + WRONG_ATTENTION}, {},
                         SOFTMAX_ONLY),
    # segfaults through ctypes: like any kernel death, only that cell's exercise is lost
    "segfault": ({SOFTMAX.name: "import ctypes\nctypes.string_at(0)\n",
                  ATTENTION.name: ATTENTION_ALONE}, {},
                 ATTENTION_ONLY),
    # deletes the test cell of a wrong answer: nbgrader adds it back from the gradebook
    "deletes_tests": ({ATTENTION.name: ATTENTION_HEADER
                       + "    w = torch.softmax(q_1 + q_2, dim=0)\n    return w, torch.dot(w, x)\n"},
                      {ATTENTION.test_cell: None},
                      SOFTMAX_ONLY),
    # installs an IPython handler that swallows every later exception: the kernel still
    # reports the failed execution, and nbgrader records it as an error
    "swallows_errors": ({ATTENTION.name:
                         "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
                         + WRONG_ATTENTION}, {},
                        SOFTMAX_ONLY),
    # two copies of each answer cell and test cell under one id: nbgrader grades the last
    # copy of a cell once (the earlier copy still runs as plain code); no double points
    "duplicated_ids": ({ATTENTION.name: [ATTENTION_ALONE, WRONG_ATTENTION]},
                       {SOFTMAX.test_cell: ["pass\n", "pass\n"]},
                       SOFTMAX_ONLY),
    # a wrong answer that calls sys.exit when the hidden test calls it: the test fails
    "exits_in_test": ({ATTENTION.name: ATTENTION_HEADER
                       + "    import sys\n    sys.exit(0)\n"}, {},
                      SOFTMAX_ONLY),
    # switches off its own copy of the check framework: the hidden tests use the grader's
    "patches_framework": ({ATTENTION.name:
                           "from helpers.checks import framework\n"
                           "framework.SelfCheck.fail = lambda self, *a, **k: None\n"
                           "framework.SelfCheck.expect = lambda self, *a, **k: None\n"
                           "framework._allclose = lambda *a, **k: True\n" + WRONG_ATTENTION},
                          {}, SOFTMAX_ONLY),
    # replaces AssertionError, the base of every check failure, in its own process only
    "redefines_assertion_error": ({ATTENTION.name:
                                   "import builtins\n"
                                   "builtins.AssertionError = type('AssertionError', (), {})\n"
                                   + WRONG_ATTENTION},
                                  {}, SOFTMAX_ONLY),
    # (these two need the Landlock sandbox, see SANDBOX_ONLY)
    # tries to read the hidden tests, the solutions and the gradebook and print them into its
    # own notebook: the sandboxed kernel cannot open (or even see) them; its correct answers
    # still count
    "reads_hidden_tests": ({ATTENTION.name: """\
import pathlib
targets = []
for place in pathlib.Path.cwd().parents:
    targets += [place / "gradebook.db", place / "source" / "01_gain_multiplication"
                / "01_gain_multiplication.ipynb"]
    targets += [place / "hidden_tests" / "gain_multiplication.py",
                place / "grader" / "hidden_tests" / "gain_multiplication.py"]
    targets += list(place.glob("*.py")) + list(place.glob("*/*.py"))
for target in targets:
    try:
        print(target.read_text(errors="replace"))
    except OSError as error:
        print("could not read", target.name, type(error).__name__)
""" + ATTENTION_ALONE}, {}, BOTH),
    # tries to write its mark into the gradebook, grades and results, to create files next
    # to them and to delete other students' graded notebooks: the kernel may write only its
    # own folder; its correct answers still count and nobody else's grade changes
    "writes_gradebook": ({ATTENTION.name: """\
import pathlib, shutil
mark = "TAMP" + "ERED"
for place in pathlib.Path.cwd().parents:
    for name in ("gradebook.db", "grades.csv", "results/x.json", mark):
        try:
            with open(place / name, "a") as handle:
                handle.write(mark)
            print("wrote", place / name)
        except OSError as error:
            print("could not write", place / name, type(error).__name__)
try:
    for other in pathlib.Path.cwd().parents[1].iterdir():
        shutil.rmtree(other, ignore_errors=True)
except OSError as error:
    print("could not list other students", type(error).__name__)
""" + ATTENTION_ALONE}, {}, BOTH),
}

# Without Landlock (not Linux, an old kernel) the grader cannot stop these two.
SANDBOX_ONLY = {"reads_hidden_tests", "writes_gradebook"}


for _module in pkgutil.iter_modules(__path__):
    _extra = importlib.import_module(f"{__name__}.{_module.name}")
    for _student in _extra.BANK:
        if _student in BANK:
            raise ValueError(f"misbehaving student {_student!r} is defined twice")
    BANK.update(_extra.BANK)
    SANDBOX_ONLY |= set(getattr(_extra, "SANDBOX_ONLY", ()))
