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

NOTEBOOK = "01_gain_multiplication"

_SOFTMAX_HEADER = "def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:\n"
_ATTENTION_HEADER = ("def gained_dot_product_attention(x, q_1, q_2, z_1, z_2):\n")
# A correct answer that does not call the student's stable_softmax, so it can be graded
# on its own after a broken stable_softmax cell.
_WRONG_ATTENTION = (_ATTENTION_HEADER + "    w = z_1 * q_1 + z_2 * q_2\n"
                    "    return w, torch.dot(w, x)\n")
# The marker a tampering submission tries to leave behind; built at run time so that the
# submission's own source (shown in its feedback) does not contain it.
TAMPER_MARK = "TAMPERED"
_ATTENTION_ALONE = (_ATTENTION_HEADER + "    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)\n"
                    "    return w, torch.dot(w, x)\n")

BANK = {
    # raises inside the function: that exercise scores 0, the rest is graded
    "raises_error": ({"gained_dot_product_attention": _ATTENTION_HEADER
                      + "    raise ValueError('oops')\n"}, {},
                     {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # loops forever while defining the answer: the cell times out, later cells still run
    "infinite_loop": ({"stable_softmax": "while True:\n    pass\n",
                       "gained_dot_product_attention": _ATTENTION_ALONE}, {},
                      {"test_stable_softmax": 0, "test_gained_dot_product_attention": 2}),
    # kills its kernel: only the killing cell's exercise is lost; the kernel restarts, the
    # cells before are replayed and the later exercise is still graded
    "kernel_crash": ({"stable_softmax": "import os\nos._exit(1)\n",
                      "gained_dot_product_attention": _ATTENTION_ALONE}, {},
                     {"test_stable_softmax": 0, "test_gained_dot_product_attention": 2}),
    # asks for 16 GiB: the memory limit turns it into a MemoryError in that cell only
    "memory_bomb": ({"gained_dot_product_attention": "hog = bytearray(16 * 2**30)\n"}, {},
                    {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # prints warnings to stderr from a correct answer: no points lost
    "noisy_warnings": ({"stable_softmax": "import sys, warnings\n" + _SOFTMAX_HEADER
                        + "    warnings.warn('a harmless warning')\n"
                        + "    print('progress...', file=sys.stderr)\n"
                        + "    e = torch.exp(x - x.amax(dim=dim, keepdim=True))\n"
                        + "    return e / e.sum(dim=dim, keepdim=True)\n"}, {},
                       {"test_stable_softmax": 2, "test_gained_dot_product_attention": 2}),
    # empties the test cells of a wrong answer: nbgrader restores them from the gradebook
    "edits_tests": ({"gained_dot_product_attention": _ATTENTION_HEADER
                     + "    w = torch.softmax(q_1 + q_2, dim=0)\n    return w, torch.dot(w, x)\n"},
                    {"test_gained_dot_product_attention": "pass\n"},
                    {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # makes every comparison in its own process pass: the checks run in the grader's
    "patches_allclose": ({"gained_dot_product_attention": "torch.allclose = lambda *a, **k: True\n"
                          + _WRONG_ATTENTION}, {},
                         {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # segfaults through ctypes: like any kernel death, only that cell's exercise is lost
    "segfault": ({"stable_softmax": "import ctypes\nctypes.string_at(0)\n",
                  "gained_dot_product_attention": _ATTENTION_ALONE}, {},
                 {"test_stable_softmax": 0, "test_gained_dot_product_attention": 2}),
    # deletes the test cell of a wrong answer: nbgrader adds it back from the gradebook
    "deletes_tests": ({"gained_dot_product_attention": _ATTENTION_HEADER
                       + "    w = torch.softmax(q_1 + q_2, dim=0)\n    return w, torch.dot(w, x)\n"},
                      {"test_gained_dot_product_attention": None},
                      {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # installs an IPython handler that swallows every later exception: the kernel still
    # reports the failed execution, and nbgrader records it as an error
    "swallows_errors": ({"gained_dot_product_attention":
                         "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
                         + _WRONG_ATTENTION}, {},
                        {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # two copies of each answer cell and test cell under one id: nbgrader grades the last
    # copy of a cell once (the earlier copy still runs as plain code); no double points
    "duplicated_ids": ({"gained_dot_product_attention": [_ATTENTION_ALONE, _WRONG_ATTENTION]},
                       {"test_stable_softmax": ["pass\n", "pass\n"]},
                       {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # a wrong answer that calls sys.exit when the hidden test calls it: the test fails
    "exits_in_test": ({"gained_dot_product_attention": _ATTENTION_HEADER
                       + "    import sys\n    sys.exit(0)\n"}, {},
                      {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # switches off its own copy of the check framework: the hidden tests use the grader's
    "patches_framework": ({"gained_dot_product_attention":
                           "from helpers.checks import framework\n"
                           "framework.SelfCheck.fail = lambda self, *a, **k: None\n"
                           "framework.SelfCheck.expect = lambda self, *a, **k: None\n"
                           "framework._allclose = lambda *a, **k: True\n" + _WRONG_ATTENTION},
                          {}, {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
    # replaces AssertionError, the base of every check failure, in its own process only
    "redefines_assertion_error": ({"gained_dot_product_attention":
                                   "import builtins\n"
                                   "builtins.AssertionError = type('AssertionError', (), {})\n"
                                   + _WRONG_ATTENTION},
                                  {}, {"test_stable_softmax": 2,
                                       "test_gained_dot_product_attention": 0}),
    # (these two need the Landlock sandbox, see SANDBOX_ONLY)
    # tries to read the hidden tests, the solutions and the gradebook and print them into its
    # own notebook: the sandboxed kernel cannot open (or even see) them; its correct answers
    # still count
    "reads_hidden_tests": ({"gained_dot_product_attention": """\
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
""" + _ATTENTION_ALONE}, {}, {"test_stable_softmax": 2, "test_gained_dot_product_attention": 2}),
    # tries to write its mark into the gradebook, grades and results, to create files next
    # to them and to delete other students' graded notebooks: the kernel may write only its
    # own folder; its correct answers still count and nobody else's grade changes
    "writes_gradebook": ({"gained_dot_product_attention": """\
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
""" + _ATTENTION_ALONE}, {}, {"test_stable_softmax": 2, "test_gained_dot_product_attention": 2}),
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
