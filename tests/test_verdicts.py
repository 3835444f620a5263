"""Trusted verdicts without a kernel: the probe's plain data, the proxies, the hidden blocks.

The probe (``kernel_protocol.in_kernel``) is what runs in a student's kernel; the proxies
(``kernel_protocol.grader_side``) are what the hidden tests hold; ``pipeline.grading.verdicts`` reads
the hidden blocks and records the verdict. A reply from a kernel is adversarial: every
malformed one must become a clear failure, never a crash, a pass or a huge allocation.
"""

from __future__ import annotations

import json
import math

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_output
from torch import nn

from helpers.checks.framework import CheckFailed
from hidden_tests.common import fresh_generator, set_salt
from hidden_tests.gain_multiplication import grade_gained_dot_product_attention
from kernel_protocol import in_kernel
from kernel_protocol.grader_side import (
    Batches,
    LocalChannel,
    OtherObject,
    ProtocolError,
    StudentError,
    StudentFunction,
    StudentModule,
    decode,
    global_seed,
    kernel_state,
    last_report,
    observing,
    parse_reply,
    student,
)
from pipeline.grading import verdicts
from pipeline.paths import SOLUTIONS


def _remote(namespace: dict, name: str) -> StudentFunction:
    return StudentFunction(LocalChannel(namespace), name)


# ---- plain data -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32,
                                   torch.uint8, torch.bool, torch.float16, torch.bfloat16])
def test_tensors_travel_as_exact_bytes(dtype):
    value = (10 * torch.randn(3, 4)).to(dtype)
    back = _remote({"f": lambda: value}, "f")()
    assert type(back) is torch.Tensor and back.shape == value.shape
    assert torch.equal(back, value.float() if dtype in (torch.float16, torch.bfloat16) else value)


def test_structures_numbers_and_other_objects_come_back_as_plain_values():
    returned = {"pair": (torch.ones(2), [1, 2.5, None, "text"]), "nan": math.nan, "big": 2**70}
    back = _remote({"f": lambda: (returned, object())}, "f")()
    values, other = back
    assert isinstance(other, OtherObject) and repr(other) == "<a object object>"
    assert isinstance(values["pair"], tuple) and values["pair"][1] == [1, 2.5, None, "text"]
    assert math.isnan(values["nan"]) and values["big"] == float(2**70)


def test_a_tensor_subclass_loses_its_powers():
    class Agreeable(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func is torch.allclose:
                return True
            return super().__torch_function__(func, types, args, kwargs or {})

    back = _remote({"f": lambda: torch.zeros(3).as_subclass(Agreeable)}, "f")()
    assert type(back) is torch.Tensor
    assert not torch.allclose(back, torch.ones(3))


def test_the_graders_inputs_are_its_own_and_changes_are_reported():
    """A call that changes its arguments in place (positional, keyword, inside a tuple)
    never changes the grader's tensors; the kernel reports which it changed."""
    def shift(x, cache=None, mask=None):
        x -= 1
        cache[1].zero_()
        mask.fill_(False)
        return x

    x, cache, mask = torch.zeros(3), (torch.ones(2), torch.ones(2)), torch.ones(2, dtype=bool)
    _remote({"shift": shift}, "shift")(x, cache, mask=mask)
    assert torch.equal(x, torch.zeros(3)) and torch.equal(cache[1], torch.ones(2))
    assert bool(mask.all())
    assert last_report().changed == ("args[0]", "args[1][1]", "mask")


def test_a_call_that_changes_nothing_reports_nothing():
    _remote({"f": lambda x: x * 2}, "f")(torch.ones(3))
    assert last_report().changed == ()


def test_every_call_keeps_the_students_random_stream_and_can_be_seeded():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    draw = _remote({"draw": lambda: torch.rand(4)}, "draw")
    first, second = draw(), draw()
    assert torch.equal(torch.get_rng_state(), before)  # the generator was put back
    assert not torch.equal(first, second)  # each unseeded call gets a seed of its own
    with global_seed(3):
        seeded = draw()
    torch.manual_seed(3)
    assert torch.equal(seeded, torch.rand(4))


def test_an_observed_call_reports_the_torch_functions_it_used():
    with observing():
        _remote({"f": lambda x: torch.softmax(torch.tril(torch.ones(3, 3)) @ x, -1)}, "f")(
            torch.zeros(3, 2, device="meta"))
    seen = last_report().observed
    assert seen.calls.get("softmax") == 1 and "ones" in seen.cpu_tensors


@pytest.mark.parametrize("reply", [
    "not json", "[]", "{}", '{"ok": 1, "error": 2}', '{"something": 1}',
    json.dumps({"ok": {"value": {"tensor": {"dtype": "object", "shape": [1], "data": ""}}}}),
    json.dumps({"ok": {"value": {"tensor": {"dtype": "float64", "shape": [10**9], "data": ""}}}}),
    json.dumps({"ok": {"value": {"tensor": {"dtype": "float64", "shape": [-1], "data": ""}}}}),
    json.dumps({"ok": {"value": {"tensor": {"dtype": "float64", "shape": [1], "data": "@@"}}}}),
    json.dumps({"ok": {"value": [1, 2, 3]}}),
    json.dumps({"ok": {"value": {"pickle": "gASVAAAAAAAAAACMAnNoLg=="}}}),
    json.dumps({"ok": {"value": json.loads("[" * 40 + "]" * 40)}}),
    json.dumps({"ok": {"value": {"module": 0, "tree": {"type": "student", "config": {},
        "parameters": {}, "buffers": {}, "tensors": {}, "numbers": {}, "children": {
            "proj": {"type": "Linear", "config": {"in_features": 10**6, "out_features": 10**6},
                     "parameters": {}, "buffers": {}, "tensors": {}, "numbers": {},
                     "children": {}}}}}}}),
    json.dumps({"ok": {"value": {"module": 0, "tree": "nonsense"}}}),
    json.dumps({"ok": {"nothing": 1}}),
])
def test_malformed_replies_are_protocol_errors(reply):
    class Forger:
        def ask(self, request):
            return parse_reply(reply)

    with pytest.raises(ProtocolError):
        StudentFunction(Forger(), "f", layers={"proj": "Linear"})()


def _layer(kind: str, config: dict, parameters: dict | None = None) -> dict:
    return {"type": kind, "name": kind, "config": config, "parameters": parameters or {},
            "buffers": {}, "tensors": {}, "numbers": {}, "children": {}}


def test_many_large_layers_described_without_their_weights_allocate_nothing():
    """400 Linear(4472, 4472) children, 20 M parameters each: the trusted side builds them on
    the meta device and refuses the description, which lacks their weights."""
    big = _layer("Linear", {"in_features": 4472, "out_features": 4472, "has_bias": True})
    tree = {**_layer("student", {}), "children": {f"l{i}": big for i in range(400)}}
    reply = json.dumps({"ok": {"value": {"module": 0, "tree": tree}}})

    class Forger:
        def ask(self, request):
            return parse_reply(reply)

    with pytest.raises(ProtocolError, match="lacks"):
        StudentFunction(Forger(), "f", layers={"*": "Linear"})()


def test_only_the_layers_an_exercise_prescribes_are_rebuilt_as_pytorchs_own():
    """A class that claims to be nn.Linear stays the student's code (its forward runs in
    their kernel) unless the exercise prescribes a Linear at that place."""
    class Linear(nn.Module):  # a fake, posing as torch.nn's
        def __init__(self):
            super().__init__()
            self.in_features = self.out_features = 2
            self.weight, self.bias = nn.Parameter(torch.ones(2, 2)), None

        def forward(self, x):
            return x * 0 + 42

    Linear.__module__ = "torch.nn.modules.linear"

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.other = Linear(), Linear()

    model = StudentFunction(LocalChannel({"Model": Model}), "Model", layers={"proj": "Linear"})()
    assert type(model.other).__name__ == "StudentModule"
    assert torch.equal(model.other(torch.ones(2)), torch.full((2,), 42.0))  # the student's code
    assert isinstance(model.proj, nn.Linear) and type(model.proj).__module__.startswith("torch")
    root = StudentFunction(LocalChannel({"Linear": Linear}), "Linear", layers={})()
    assert isinstance(root, StudentModule)  # the answer itself is always the student's


def test_decoding_never_runs_a_float_conversion_of_arbitrary_text():
    with pytest.raises(ProtocolError):
        decode({"float": "1e999999999999"})


# ---- errors -------------------------------------------------------------------------------------

def test_the_students_exception_keeps_its_name_and_message():
    def broken(x):
        raise ValueError("shapes do not match")

    with pytest.raises(StudentError) as raised:
        _remote({"broken": broken}, "broken")(torch.ones(2))
    assert type(raised.value).__name__ == "ValueError"
    assert "shapes do not match" in str(raised.value)


def test_not_implemented_passes_through_and_a_missing_name_is_explained():
    def stub():
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        _remote({"stub": stub}, "stub")()
    with pytest.raises(StudentError, match="run the cell that defines it"):
        _remote({}, "missing")()


def test_sys_exit_in_the_students_code_is_an_ordinary_failure():
    import sys

    with pytest.raises(StudentError) as raised:
        _remote({"leave": lambda: sys.exit(0)}, "leave")()
    assert type(raised.value).__name__ == "SystemExit"


# ---- modules ------------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        self.scale = nn.Parameter(torch.ones(d))
        self.positions = torch.arange(4.0)  # a plain tensor attribute, not a parameter
        self.width = d

    def forward(self, x):
        h = self.norm(x + self.attention(x, x, x, need_weights=False)[0])
        return self.scale * (h + self.mlp(h))

    def halve(self, x):
        return x / 2


BLOCK_LAYERS = {"attention": "MultiheadAttention", "norm": "LayerNorm", "mlp": "Sequential",
                "mlp.*": "Linear|ReLU"}


def test_a_module_is_rebuilt_with_pytorchs_own_layers_and_the_students_weights():
    torch.manual_seed(0)
    original = Block()
    model = StudentFunction(LocalChannel({"Block": Block}), "Block", layers=BLOCK_LAYERS)()
    assert isinstance(model, StudentModule) and type(model).__name__ == "StudentModule"
    assert isinstance(model.attention, nn.MultiheadAttention) and model.attention.batch_first
    assert isinstance(model.mlp[1], nn.ReLU) and model.width == 6
    assert isinstance(model.scale, nn.Parameter) and not isinstance(model.positions, nn.Parameter)
    assert repr(model).startswith("Block(")
    assert sorted(dict(model.named_parameters())) == sorted(dict(original.named_parameters()))


def test_forward_and_methods_run_remotely_with_the_weights_set_here():
    model = student(Block)()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape))
    model.eval()
    x = torch.randn(2, 4, 6)
    local = Block()
    local.load_state_dict(model.state_dict())
    local.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), local(x), atol=1e-6)
    assert torch.allclose(model.halve(x), x / 2)


def test_gradients_flow_back_from_the_students_forward():
    model = student(Block)()
    local = Block()
    local.load_state_dict(model.state_dict())
    x = torch.randn(2, 4, 6)
    model(x).square().sum().backward()
    local(x).square().sum().backward()
    for (name, mine), (_, theirs) in zip(sorted(model.named_parameters()),
                                         sorted(local.named_parameters()), strict=True):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-5), name


class DetachedResidual(Block):
    """Right values, but the residual path is cut: no gradient reaches x along it."""

    def forward(self, x):
        h = self.norm(x.detach() + self.attention(x, x, x, need_weights=False)[0])
        return self.scale * (h + self.mlp(h))


@pytest.mark.parametrize("cls", [Block, DetachedResidual])
def test_gradients_reach_the_graders_inputs_as_the_students_forward_sends_them(cls):
    model = student(cls)()
    local = cls()
    local.load_state_dict(model.state_dict())
    x = torch.randn(2, 4, 6)
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = model(mine), local(theirs)
    assert torch.allclose(out, expected, atol=1e-6)
    out.square().sum().backward()
    expected.square().sum().backward()
    assert torch.allclose(mine.grad, theirs.grad, atol=1e-5)
    prescribed = Block()
    prescribed.load_state_dict(model.state_dict())
    right = x.clone().requires_grad_()
    prescribed(right).square().sum().backward()
    assert torch.allclose(mine.grad, right.grad, atol=1e-5) is (cls is Block)


def test_a_class_that_is_not_a_module_is_not_rebuilt_as_one():
    class Plain:
        def forward(self, x):
            return x

    assert isinstance(student(Plain)(), OtherObject)


# ---- hidden blocks and verdicts -----------------------------------------------------------------

def test_hidden_blocks_of_every_solution_name_existing_hidden_tests():
    found = 0
    for path in SOLUTIONS.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if "### BEGIN HIDDEN TESTS" in cell.source:
                calls = verdicts.hidden_calls(cell.source)
                assert calls, cell.source
                for call in calls:
                    module = __import__(call.module, fromlist=[call.function])
                    assert callable(getattr(module, call.function)), call
                    assert call.argument in cell.source
                found += len(calls)
    assert found >= 17


def test_a_hidden_block_with_anything_else_is_refused():
    source = ("check(f)\n### BEGIN HIDDEN TESTS\nimport os\nos.system('x')\n"
              "### END HIDDEN TESTS\n")
    with pytest.raises(ValueError, match="unexpected statement"):
        verdicts.hidden_calls(source)


def _attention(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, w @ x


def test_the_verdict_passes_a_right_answer_and_names_a_wrong_one():
    calls = verdicts.hidden_calls(
        "### BEGIN HIDDEN TESTS\nfrom hidden_tests.gain_multiplication import "
        "grade_gained_dot_product_attention\n\ngrade_gained_dot_product_attention(attend)\n"
        "### END HIDDEN TESTS\n")
    assert verdicts.verdict(calls, LocalChannel({"attend": _attention})) is None
    wrong = lambda x, q_1, q_2, z_1, z_2: _attention(x, q_1, q_2, 1.0, 1.0)  # noqa: E731
    name, message = verdicts.verdict(calls, LocalChannel({"attend": wrong}))
    assert name == "CheckFailed" and "expected" in message and "got" in message
    name, message = verdicts.verdict(calls, LocalChannel({}))
    assert name == "CheckFailed" and "run the cell that defines it" in message


def test_inputs_are_fresh_while_grading_and_fixed_in_unit_tests():
    assert torch.equal(torch.randn(3, generator=fresh_generator(5)),
                       torch.randn(3, generator=fresh_generator(5)))
    set_salt(123456789)
    try:
        salted = torch.randn(3, generator=fresh_generator(5))
    finally:
        set_salt(0)
    assert not torch.equal(salted, torch.randn(3, generator=fresh_generator(5)))


def test_hidden_tests_pass_local_functions_through_the_probe():
    seen = []

    class Recording(LocalChannel):
        def ask(self, request):
            seen.append(request["op"])
            return super().ask(request)

    grade_gained_dot_product_attention(StudentFunction(Recording({"a": _attention}), "a"))
    assert seen and set(seen) == {"call"}


def test_the_verdict_is_the_cells_only_error():
    cell = new_code_cell("check(f)")
    cell.outputs = [new_output("stream", name="stdout", text="hello\n"),
                    new_output("error", ename="CheckFailed", evalue="self-check words",
                               traceback=[])]
    verdicts.record(cell, ("CheckFailed", "f (hidden test): check 2 failed"))
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert [e.evalue for e in errors] == ["f (hidden test): check 2 failed"]
    assert "[your code raised] CheckFailed: self-check words" in cell.outputs[1].text
    verdicts.record(cell, None)
    assert not any(o.output_type == "error" for o in cell.outputs)
    assert cell.outputs[-1].text == "Hidden tests: passed.\n"


def test_the_probe_holds_no_test_and_no_reference():
    source = verdicts.PROBE_SOURCE
    for secret in ("def grade_", "_reference", "from hidden_tests", "mistakes", "manual_seed"):
        assert secret not in source, secret
    assert "def serve(" in source and in_kernel.serve.__doc__


def test_check_failed_is_what_hidden_tests_raise():
    with pytest.raises(CheckFailed):
        grade_gained_dot_product_attention(lambda *a: (torch.zeros(7), torch.tensor(0.0)))


class Shift(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return x + self.w


def _sgd(model, get_batch, steps):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        x, y = get_batch()
        loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_a_module_passed_to_the_students_function_carries_the_values_set_here():
    channel = LocalChannel({"Shift": Shift, "peek": lambda model: model.w.detach().clone()})
    model = StudentFunction(channel, "Shift", layers={})()
    with torch.no_grad():
        model.w.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(StudentFunction(channel, "peek")(model), torch.tensor([1.0, 2.0, 3.0]))


def test_batches_travel_as_a_get_batch_and_a_training_loop_runs_with_gradients():
    channel = LocalChannel({"Shift": Shift, "train": _sgd})
    model = StudentFunction(channel, "Shift", layers={})()
    inputs, targets = torch.zeros(3, 2, 3), torch.ones(3, 2, 3)
    losses = StudentFunction(channel, "train")(model, Batches(inputs, targets), 3)
    local = Shift()
    assert losses == pytest.approx(_sgd(local, Batches(inputs, targets), 3))
    assert losses[0] > losses[-1]


def test_what_a_training_call_left_in_the_students_module_can_be_read_back():
    """Every call sends the trusted side's values first, so only ``kernel_state`` sees what
    training did there: a loop that trained a copy leaves the module as it was."""
    def train_a_copy(model, get_batch, steps):
        import copy
        return _sgd(copy.deepcopy(model), get_batch, steps)

    channel = LocalChannel({"Shift": Shift, "train": _sgd, "train_a_copy": train_a_copy})
    inputs, targets = torch.zeros(3, 2, 3), torch.ones(3, 2, 3)
    for name, trained in (("train", True), ("train_a_copy", False)):
        model = StudentFunction(channel, "Shift", layers={})()
        before = model.w.detach().clone()
        StudentFunction(channel, name)(model, Batches(inputs, targets), 3)
        after = kernel_state(model)
        assert set(after) == {"w"}
        assert torch.equal(model.w.detach(), before)  # the trusted side's copy is its own
        assert (not torch.equal(after["w"], before)) is trained, name
    with pytest.raises(TypeError, match="rebuilt from the student's side"):
        kernel_state(nn.Linear(2, 2))


def test_a_generator_moves_on_as_the_students_side_draws_from_it():
    """As in one process: two calls with one generator draw different numbers, and a call
    that draws from a copy leaves the trusted side's generator where it was."""
    def draw(n, generator=None):
        return torch.rand(n, generator=generator)

    def draw_from_a_copy(n, generator=None):
        copy = torch.Generator()
        copy.set_state(generator.get_state())
        return torch.rand(n, generator=copy)

    channel = LocalChannel({"draw": draw, "copy": draw_from_a_copy})
    generator = torch.Generator().manual_seed(5)
    first = StudentFunction(channel, "draw")(4, generator=generator)
    second = StudentFunction(channel, "draw")(4, generator=generator)
    assert torch.equal(torch.cat([first, second]), torch.rand(8, generator=torch.Generator(
        ).manual_seed(5)))
    copied = torch.Generator().manual_seed(5)
    assert torch.equal(StudentFunction(channel, "copy")(4, generator=copied),
                       StudentFunction(channel, "copy")(4, generator=copied))
