"""A bank of misbehaving submissions, built on the full solution of tutorial 01.

Each entry: student id -> (answer cells replaced: grade_id -> source, test cells replaced:
grade_id -> source, or None to delete the cell; expected auto-graded points per test cell).
"""

NOTEBOOK = "01_gain_multiplication"

_SOFTMAX_HEADER = "def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:\n"
_ATTENTION_HEADER = ("def gained_dot_product_attention(x, q_1, q_2, z_1, z_2):\n")
# A correct answer that does not call the student's stable_softmax, so it can be graded
# on its own after a broken stable_softmax cell.
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
    # makes every comparison pass: the checks compare with a reference taken before
    "patches_allclose": ({"gained_dot_product_attention": "torch.allclose = lambda *a, **k: True\n"
                          + _ATTENTION_HEADER + "    w = z_1 * q_1 + z_2 * q_2\n"
                          + "    return w, torch.dot(w, x)\n"}, {},
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
                         + _ATTENTION_HEADER + "    w = z_1 * q_1 + z_2 * q_2\n"
                         + "    return w, torch.dot(w, x)\n"}, {},
                        {"test_stable_softmax": 2, "test_gained_dot_product_attention": 0}),
}
