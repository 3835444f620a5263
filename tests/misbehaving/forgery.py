"""Wrong answers dressed up to look right: every trick an attacker who read the grader tried.

Each submission answers ``gained_dot_product_attention`` wrongly (scores used as weights,
no softmax) and adds one trick against the checks. The hidden tests run in the grader's
process and judge only the numbers the kernel returns, so none of them earns the point;
``stable_softmax`` (graded before the trick runs) keeps its 2 points.
"""

from misbehaving import (
    ATTENTION,
    ATTENTION_ALONE,
    ATTENTION_ONLY,
    SOFTMAX,
    SOFTMAX_ONLY,
    WRONG_ATTENTION,
)

BANK = {
    # the returned tensor is a subclass whose __torch_function__ says every comparison holds
    "tensor_subclass": ({ATTENTION.name: """\
class Agreeable(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.__eq__, torch.isclose):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


def gained_dot_product_attention(x, q_1, q_2, z_1, z_2):
    w = z_1 * q_1 + z_2 * q_2
    return w.as_subclass(Agreeable), torch.dot(w, x).as_subclass(Agreeable)
"""}, {}, SOFTMAX_ONLY),
    # a TorchFunctionMode left entered for the rest of the kernel's life
    "torch_function_mode": ({ATTENTION.name: """\
from torch.overrides import TorchFunctionMode


class AlwaysClose(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.isclose):
            return True
        return func(*args, **(kwargs or {}))


AlwaysClose().__enter__()
""" + WRONG_ATTENTION}, {}, SOFTMAX_ONLY),
    # a background thread that patches the checks again and again, after any restore
    "background_thread": ({ATTENTION.name: """\
import threading
import time
from helpers.checks import framework


def keep_patching():
    while True:
        torch.allclose = lambda *a, **k: True
        framework.SelfCheck.fail = lambda self, *a, **k: None
        framework._allclose = lambda *a, **k: True
        time.sleep(0.001)


threading.Thread(target=keep_patching, daemon=True).start()
""" + WRONG_ATTENTION}, {}, SOFTMAX_ONLY),
    # the answer itself patches the check framework while the hidden test calls it
    "patches_during_call": ({ATTENTION.name: """\
def gained_dot_product_attention(x, q_1, q_2, z_1, z_2):
    import sys
    for module in list(sys.modules.values()):
        for name in ("SelfCheck", "HiddenCheck"):
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                for method in ("fail", "expect", "close", "shape", "finite"):
                    setattr(cls, method, lambda self, *a, **k: None)
    w = z_1 * q_1 + z_2 * q_2
    return w, torch.dot(w, x)
"""}, {}, SOFTMAX_ONLY),
    # puts a fake hidden-test package in sys.modules and behind __import__
    "fake_hidden_tests": ({ATTENTION.name: """\
import builtins
import sys
import types

fake = types.ModuleType("hidden_tests")
fake.__path__ = []
for name in ("gain_multiplication", "common"):
    module = types.ModuleType(f"hidden_tests.{name}")
    module.grade_stable_softmax = module.grade_gained_dot_product_attention = lambda f: None
    sys.modules[f"hidden_tests.{name}"] = module
    setattr(fake, name, module)
sys.modules["hidden_tests"] = fake
real_import = builtins.__import__
builtins.__import__ = lambda name, *a, **k: (
    sys.modules.get(name) or real_import(name, *a, **k)) if name.startswith("hidden") else \\
    real_import(name, *a, **k)
""" + WRONG_ATTENTION}, {}, SOFTMAX_ONLY),
    # a trace hook that skips the `raise` of every failing check
    "settrace": ({ATTENTION.name: """\
import sys
import threading


def skip_failures(frame, event, arg):
    if frame.f_code.co_name in ("fail", "expect", "close"):
        return None if event != "call" else (lambda *a: None)
    return skip_failures


sys.settrace(skip_failures)
threading.settrace(skip_failures)
""" + WRONG_ATTENTION}, {}, SOFTMAX_ONLY),
    # an IPython input transformer that turns every later cell (the locked test cells
    # included) into `pass`
    "input_transformer": ({ATTENTION.name: WRONG_ATTENTION + """\
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])
"""}, {}, SOFTMAX_ONLY),
    # shadows exec() in its namespace to forge the probe's answers: plain data that does not
    # fit (a tensor whose bytes do not match its shape, absurd nesting, huge sizes)
    "forged_answers": ({ATTENTION.name: WRONG_ATTENTION + """\
import json

_forgeries = iter([
    {"ok": {"value": {"tuple": [{"tensor": {"dtype": "float64", "shape": [10**9],
                                            "data": ""}}, 1.0]}}},
    {"ok": {"value": {"tuple": [{"tensor": {"dtype": "object", "shape": [7], "data": ""}},
                                1.0]}}},
    {"ok": {"value": {"module": 0, "tree": {"type": "Linear", "config": {
        "in_features": 10**6, "out_features": 10**6}}}}},
    {"ok": {"value": json.loads("[" * 50 + "]" * 50)}},
])


def exec(code, namespace=None):
    try:
        forged = json.dumps(next(_forgeries))
    except StopIteration:
        forged = json.dumps({"ok": {"value": {"tuple": [1.0, 1.0]}}})
    namespace["serve"] = lambda request, names: forged
"""}, {}, SOFTMAX_ONLY),
    # would call the grader's own reference, were it anywhere the kernel can import from
    "calls_reference": ({ATTENTION.name: """\
import pathlib
import sys

for place in pathlib.Path.cwd().parents:
    sys.path.append(str(place / "grader"))
    sys.path.append(str(place))
try:
    from hidden_tests.gain_multiplication import _reference_attention as reference
except Exception as error:
    print("no reference:", type(error).__name__)
    reference = None


def gained_dot_product_attention(x, q_1, q_2, z_1, z_2):
    if reference is not None:
        w, y = reference(x, q_1, q_2, z_1, z_2)
        return w.float(), y.float()
    w = z_1 * q_1 + z_2 * q_2
    return w, torch.dot(w, x)
"""}, {}, SOFTMAX_ONLY),
    # looks for the hidden tests in its own process: loaded modules, line cache, objects
    "searches_memory": ({ATTENTION.name: """\
import gc
import linecache
import sys

print("hidden modules:", sorted(k for k in sys.modules if "hidden" in k))
print("cached hidden source:", sorted(k for k in linecache.cache if "hidden" in k))
print("hidden objects:", sum(1 for o in gc.get_objects()
                             if "hidden_tests" in str(getattr(o, "__module__", ""))))
""" + WRONG_ATTENTION}, {}, SOFTMAX_ONLY),
    # changes the grader's inputs in place (zeroes the patterns) and returns uniform weights:
    # the grader's inputs are its own, and a changed argument fails the "unchanged" clause
    "zeroes_its_inputs": ({ATTENTION.name: """\
def gained_dot_product_attention(x, q_1, q_2, z_1, z_2):
    q_1.zero_()
    q_2.zero_()
    w = torch.full_like(x, 1.0 / x.numel())
    return w, torch.dot(w, x)
"""}, {}, SOFTMAX_ONLY),
    # an overflowing softmax that clamps its input in place, so that its logits look tame
    "clamps_its_input": ({SOFTMAX.name: """\
def stable_softmax(x, dim=-1):
    x.clamp_(-60, 60)
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
""", ATTENTION.name: ATTENTION_ALONE}, {},
        ATTENTION_ONLY),
    # puts a number into the test cell's outputs (nbgrader reads a displayed number as
    # partial credit, before any error): the verdict alone scores the cell
    "displays_a_score": ({ATTENTION.name: """\
def gained_dot_product_attention(x, q_1, q_2, z_1, z_2):
    import sys
    sys.displayhook(2)
    return torch.ones_like(x), x.sum()
"""}, {}, SOFTMAX_ONLY),
    # makes every later self-check display a value instead of checking (nbgrader reads a
    # displayed value that is not a number as full marks)
    "self_checks_display": ({ATTENTION.name: """\
def _full_marks(*args, **kwargs):
    get_ipython().displayhook("full marks")


for _name in [n for n in list(globals()) if n.startswith("check_")]:
    globals()[_name] = _full_marks
""" + WRONG_ATTENTION}, {}, SOFTMAX_ONLY),
    # answers the grader with 30 MB of text (base64 patched in its own process): refused by
    # size before anything is decoded or parsed
    "huge_reply": ({ATTENTION.name: """\
import base64
base64.b64encode = lambda data: b"A" * (30 * 2**20)
""" + WRONG_ATTENTION}, {}, SOFTMAX_ONLY),
}

# Without a sandbox the grader's folder is on disk next to the kernel's working folder.
SANDBOX_ONLY = {"calls_reference"}
