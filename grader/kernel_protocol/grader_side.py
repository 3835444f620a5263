"""The student's definitions as the trusted side sees them: proxies that ask for plain data.

A hidden test receives the student's function or class wrapped by :func:`student`.
Calling it sends the inputs to wherever the student's code lives (their kernel while
grading, this process in unit tests and in the instructor's solution notebooks) through
a *channel*, where the fixed step in ``kernel_protocol.in_kernel`` runs the call and answers
with plain data. Here that answer is parsed strictly (bounded in bytes, values and
nesting before JSON parses it; tensors rebuilt from raw bytes of a known dtype and a
checked shape), so the only thing a submission can influence is the numbers it returns.
The trusted side's inputs are its own: nothing a call does to its arguments comes back,
only the kernel's report of which it changed (``last_report``), which the checks treat
as a broken clause, and where each generator it was given stands after its draws
(:func:`advance_generators`), as in one process.

A module built by the student's class comes back as a description and is rebuilt here
as a :class:`StudentModule`. The members the exercise prescribes as PyTorch layers
(``Exercise.layers`` in ``helpers.syllabus``: ``nn.Linear``, ``nn.LayerNorm``,
``nn.MultiheadAttention``...) become real, trusted copies holding the student's weights,
built on PyTorch's data-less ``meta`` device and filled with the described tensors (so a
description can never make the grader allocate more than the answer's own bytes); the
hidden tests can inspect them and compute references with them. Everything else, the
module itself included, is the student's code: its ``forward`` and methods run remotely,
after the current weights and train/eval mode are sent back, with the global generator
seeded for every call (``global_seed``), and gradients flow through them (the kernel
computes the vector-Jacobian product with the same seed).
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import fnmatch
import json
import keyword
import math
import re
from collections.abc import Iterator
from typing import Any, Protocol

import numpy
import torch
from torch import nn

from helpers import syllabus
from helpers.checks.calls import CallReport, Observation
from kernel_protocol import in_kernel

MAX_REPLY_BYTES = 16 * 2**20  # one answer, before it is parsed
MAX_VALUES = 200_000  # JSON values (numbers, strings, lists, dicts) in one answer
MAX_NESTING = 40  # brackets in brackets in one answer
# Numbers in one rebuilt module, data-less (meta) tensors included: the hidden tests may fill
# or randomise every one of them here, so a description must not ask for more than the
# course's models need (tens of thousands) by a wide margin.
MAX_MODULE_ELEMENTS = 2**24
DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")}


class ProtocolError(Exception):
    """The answer from the student's side is not well-formed plain data."""


class StudentError(Exception):
    """The student's code raised; the subclass carries the name of their exception."""


class Channel(Protocol):
    def ask(self, request: dict) -> dict:
        """Send one request to the probe; return its parsed reply."""


def _scan(text: str) -> None:
    """Refuse, before parsing, an answer with more values or deeper nesting than the bounds:
    ``json.loads`` then never builds more than a bounded number of objects."""
    depth = values = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string, values = True, values + 1
        elif char in "[{":
            depth, values = depth + 1, values + 1
            if depth > MAX_NESTING:
                raise ProtocolError("the answer is nested too deeply")
        elif char in "]}":
            depth -= 1
        elif char == ",":
            values += 1
        if values > MAX_VALUES:
            raise ProtocolError(f"the answer holds more than {MAX_VALUES} values")


def parse_reply(text: str) -> dict:
    """A probe's reply as a dict with "ok" or "error"; anything else is a ProtocolError."""
    if not isinstance(text, str) or len(text) > MAX_REPLY_BYTES:
        raise ProtocolError(f"the answer is missing or larger than {MAX_REPLY_BYTES // 2**20} MB")
    _scan(text)
    try:
        reply = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ProtocolError(f"the answer is not JSON ({str(error)[:100]})") from None
    if not isinstance(reply, dict) or len(reply) != 1 or not {"ok", "error"} & set(reply):
        raise ProtocolError("the answer has an unexpected structure")
    return reply


class LocalChannel:
    """Runs the probe in this process (unit tests, the instructor's solution notebooks)."""

    def __init__(self, namespace: dict) -> None:
        self.namespace = namespace

    def ask(self, request: dict) -> dict:
        return parse_reply(in_kernel.serve(json.dumps(request), self.namespace))


# ---- plain data both ways ---------------------------------------------------------------------

def encode(value: Any) -> Any:
    """A trusted value as the probe's plain data."""
    if isinstance(value, StudentModule):  # its current values travel with it
        root = value._remote.root
        return {"module": value._remote.object_id, "training": value.training,
                "state": {name: encode(t.detach()) for name, t in _tensors(root)}}
    if isinstance(value, Batches):
        return {"batches": [encode(value.inputs), encode(value.targets)]}
    if isinstance(value, torch.Tensor):
        return {"tensor": in_kernel.tensor_spec(value)}
    if isinstance(value, torch.Generator):
        if value.device.type != "cpu":
            raise TypeError("only a CPU torch.Generator can be sent to the student's code")
        # its whole state: the student's side gets a generator that draws the same numbers
        # (this one is not advanced by the call)
        return {"generator": in_kernel.tensor_spec(value.get_state())}
    if isinstance(value, tuple | list):
        return {type(value).__name__: [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} to the student's code")


class Batches:
    """A ``get_batch()`` for the student's code: its i-th call returns ``(inputs[i],
    targets[i])`` (a function cannot travel; these tensors can)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if inputs.shape[:1] != targets.shape[:1]:
            raise ValueError("as many input batches as target batches")
        self.inputs, self.targets = inputs, targets

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:  # the same, on the trusted side
        index = getattr(self, "_next", 0)
        self._next = index + 1
        return self.inputs[index], self.targets[index]


class OtherObject:
    """Stands for a returned value that is not plain data (only its type name came back)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name[:80]

    def __repr__(self) -> str:
        return f"<a {self.type_name} object>"


def _tensor(spec: Any) -> torch.Tensor:
    if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
        raise ProtocolError("a tensor of an unexpected dtype")
    shape = spec.get("shape")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape)):
        raise ProtocolError("a tensor with an invalid shape")
    if spec.get("device") == "meta":  # sizes only: nothing is allocated
        if math.prod(shape) > 2**40:
            raise ProtocolError("a tensor with an invalid shape")
        return torch.empty(shape, dtype=DTYPES[spec["dtype"]], device="meta")
    try:
        data = base64.b64decode(spec.get("data", ""), validate=True)
    except (ValueError, TypeError):
        raise ProtocolError("a tensor whose data is not base64") from None
    dtype = numpy.dtype(spec["dtype"])
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise ProtocolError("a tensor whose data does not match its shape")
    return torch.from_numpy(numpy.frombuffer(data, dtype=dtype).reshape(shape).copy())


def decode(value: Any, channel: Channel | None = None, depth: int = 0,
           layers: dict[str, str] | None = None) -> Any:
    """Plain data from the probe -> trusted Python values (strictly checked)."""
    if depth > in_kernel.MAX_DEPTH + 2:
        raise ProtocolError("the answer is nested too deeply")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:10_000]
    if not isinstance(value, dict) or not value:
        raise ProtocolError("an unexpected value in the answer")
    kind = next(iter(value))
    if kind == "tensor":
        return _tensor(value["tensor"])
    if kind == "ndarray":
        return _tensor(value["ndarray"]).numpy()
    if kind == "float" and value["float"] in ("nan", "inf", "-inf"):
        return float(value["float"])
    if kind in ("tuple", "list") and isinstance(value[kind], list):
        items = [decode(v, channel, depth + 1, layers) for v in value[kind]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and isinstance(value["dict"], list):
        pairs = [decode(pair, channel, depth + 1, layers) for pair in
                 ({"tuple": p} if isinstance(p, list) else p for p in value["dict"])]
        try:
            return dict(pairs)
        except TypeError:
            raise ProtocolError("a dict with unusable keys") from None
    if kind == "module" and isinstance(value.get("module"), int) and channel is not None:
        remote = _Remote(channel, value["module"], [], layers)
        return build_module(value.get("tree"), remote)
    if kind == "object":
        return OtherObject(str(value["object"]))
    raise ProtocolError(f"an unexpected value in the answer ({kind[:20]!r})")


def _raise(error: Any) -> None:
    if not isinstance(error, dict):
        raise ProtocolError("an error without a description")
    name = str(error.get("type", "Error"))[:60]
    message = str(error.get("message", ""))[:2000]
    if name == "NotImplementedError" and not re.sub(r"\(your line \d+: `.*`\)$", "",
                                                    message).strip():
        raise NotImplementedError(message)  # a stub: not answered yet
    if not name.isidentifier() or keyword.iskeyword(name):
        name = "Error"
    raised = type(name, (StudentError,), {})(message)
    if "observed" in error:  # an observed call: what it did before it failed
        raised.observed = _observation(error["observed"])
    raise raised


def _answer(channel: Channel, request: dict) -> dict:
    reply = channel.ask(request)
    if "error" in reply:
        _raise(reply["error"])
    if not isinstance(reply["ok"], dict) or "value" not in reply["ok"]:
        raise ProtocolError("an answer without a value")
    return reply["ok"]


# ---- what a call did besides returning ----------------------------------------------------------

_SEED: contextvars.ContextVar[int | None] = contextvars.ContextVar("seed", default=None)
_OBSERVE: contextvars.ContextVar[bool] = contextvars.ContextVar("observe", default=False)
_LAST: contextvars.ContextVar[CallReport | None] = contextvars.ContextVar("last", default=None)
_next_seed = iter(range(1_000_003, 2**62, 7919))  # for calls no test seeded


@contextlib.contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Calls inside run with the student's global generator seeded with ``seed`` (it is put
    back afterwards); outside, every call gets a seed of its own."""
    token = _SEED.set(int(seed))
    try:
        yield
    finally:
        _SEED.reset(token)


@contextlib.contextmanager
def observing() -> Iterator[None]:
    """Calls inside also report the torch functions they used (``last_report().observed``)."""
    token = _OBSERVE.set(True)
    try:
        yield
    finally:
        _OBSERVE.reset(token)


def last_report() -> CallReport | None:
    """What the last call of the student's code did besides returning (see ``CallReport``)."""
    return _LAST.get()


def _call_options() -> dict:
    seed = _SEED.get()
    return {"global_seed": next(_next_seed) if seed is None else seed,
            "observe": _OBSERVE.get()}


def _record(answer: dict) -> None:
    """Keep the reply's report of the call (strictly checked) for ``last_report``."""
    changed, seen = answer.get("changed", []), answer.get("observed")
    if (not isinstance(changed, list) or len(changed) > 20
            or not all(isinstance(c, str) and len(c) <= 100 for c in changed)):
        raise ProtocolError("an answer with a malformed list of changed arguments")
    rng_after = answer.get("rng_after", "")
    if not isinstance(rng_after, str) or len(rng_after) > 64 or not all(
            c in "0123456789abcdef" for c in rng_after):
        raise ProtocolError("an answer with a malformed digest of the random state")
    observation = _observation(seen) if seen is not None else None
    _LAST.set(CallReport(tuple(changed), observation, rng_after))


def _observation(seen: Any) -> Observation:
    """The kernel's report of the torch functions a call used (strictly checked)."""
    calls, cpu, largest, indices, off = (
        seen.get(k) if isinstance(seen, dict) else None
        for k in ("calls", "cpu_tensors", "largest", "cpu_indices", "off_device"))
    if (not isinstance(calls, dict) or len(calls) > 500 or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in calls.items())
            or not all(isinstance(names, list) and len(names) <= 50
                       and all(isinstance(c, str) for c in names)
                       for names in (cpu, indices, off))
            or not isinstance(largest, int) or isinstance(largest, bool)):
        raise ProtocolError("an answer with a malformed report of the call")
    return Observation({k[:80]: v for k, v in calls.items()}, tuple(c[:80] for c in cpu),
                       largest, tuple(c[:80] for c in indices), tuple(c[:80] for c in off))


# ---- functions and classes ------------------------------------------------------------------

class StudentFunction:
    """A function or class of the student's, called where their code lives.

    ``layers``: the member paths the exercise prescribes as PyTorch layers (from its
    declaration in ``helpers.syllabus``); only those are rebuilt as PyTorch's own layers.
    """

    def __init__(self, channel: Channel, name: str, display_name: str | None = None,
                 layers: dict[str, str] | None = None) -> None:
        self._channel, self._target = channel, name
        self.__name__ = display_name or name
        declared = syllabus.exercise(name)
        self.layers = layers if layers is not None else dict(declared.layers if declared else {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _LAST.set(None)
        answer = _answer(self._channel, {
            "op": "call", "target": self._target, "args": encode(list(args)),
            "kwargs": encode([[k, v] for k, v in kwargs.items()]),
            "grad_enabled": torch.is_grad_enabled(), **_call_options()})
        _record(answer)
        advance_generators(answer, args, kwargs)
        return decode(answer["value"], self._channel, layers=self.layers)

    def __repr__(self) -> str:
        return f"<the student's {self.__name__}>"


def advance_generators(answer: dict, args: tuple, kwargs: dict) -> None:
    """Set each generator the call was given to where the student's side left it, as a call
    in one process would: a generator moves on with every draw made from it."""
    states = answer.get("generators", {})
    if not isinstance(states, dict) or len(states) > 8:
        raise ProtocolError("an answer with a malformed report of its generators")
    given = dict([*((f"args[{i}]", a) for i, a in enumerate(args)), *kwargs.items()])
    for name, spec in states.items():
        generator = given.get(name)
        if not isinstance(generator, torch.Generator):
            raise ProtocolError("a generator state for an argument that is no generator")
        state = _tensor(spec.get("tensor") if isinstance(spec, dict) else None)
        if state.dtype != torch.uint8 or state.shape != generator.get_state().shape:
            raise ProtocolError("a generator state of the wrong size")
        try:
            generator.set_state(state)
        except (RuntimeError, ValueError):
            raise ProtocolError("a generator state PyTorch refuses") from None


def student(target: Any, exercise: str | None = None) -> Any:
    """``target`` as a proxy: a :class:`StudentFunction` stays one; a local function or
    class (unit tests, the solution notebooks) is served in-process through the probe.
    ``exercise`` names the exercise it answers (for the layers its text prescribes)."""
    declared = syllabus.exercise(exercise) if exercise else None
    layers = dict(declared.layers) if declared else None
    if isinstance(target, StudentFunction):
        if layers is not None:
            target.layers = layers
        return target
    name = getattr(target, "__name__", "the answer")
    return StudentFunction(LocalChannel({name: target}), name, layers=layers)


# ---- modules --------------------------------------------------------------------------------

class _Remote:
    """Where a rebuilt module's original lives: the channel, its handle, its attribute path."""

    def __init__(self, channel: Channel, object_id: int, path: list[str],
                 layers: dict[str, str] | None = None) -> None:
        self.channel, self.object_id, self.path = channel, object_id, path
        self.layers = layers or {}
        self.root: StudentModule | None = None

    def child(self, name: str) -> _Remote:
        remote = _Remote(self.channel, self.object_id, [*self.path, name], self.layers)
        remote.root = self.root
        return remote

    def request(self, op: str, attribute: str | None, args: tuple, kwargs: dict) -> dict:
        root = self.root
        state = {name: encode(t.detach()) for name, t in _tensors(root)}
        return {"op": op, "object": self.object_id,
                "path": self.path + ([attribute] if attribute else []),
                "state": state, "training": root.training,
                "grad_enabled": torch.is_grad_enabled(),
                "args": encode(list(args)), "kwargs": encode([[k, v] for k, v in kwargs.items()]),
                **_call_options()}

    def call(self, attribute: str | None, args: tuple, kwargs: dict) -> Any:
        _LAST.set(None)
        request = self.request("call", attribute, args, kwargs)
        answer = _answer(self.channel, request)
        _record(answer)
        value = decode(answer["value"], self.channel, layers=self.layers)
        parameters = [p for _, p in self.root.named_parameters()]
        # the trusted side's input tensors that want a gradient get it from the kernel too
        inputs = {name: t for name, t in
                  [*((f"args[{i}]", a) for i, a in enumerate(args)), *kwargs.items()]
                  if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad}
        if not (torch.is_grad_enabled()
                and (any(p.requires_grad for p in parameters) or inputs)):
            return value
        request = {**request, "input_grads": list(inputs)}
        tensors = (*parameters, *inputs.values())
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = _RemoteForward.apply(self, request, list(inputs), value, *tensors)
        elif (isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor)
              and value[0].is_floating_point()):  # (out, weights), (out, cache): through out
            first = _RemoteForward.apply(self, {**request, "output": 0}, list(inputs), value[0],
                                         *tensors)
            value = (first, *value[1:])
        return value


def _tensors(root: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a rebuilt module that the original must hold: parameters, buffers and
    plain tensor attributes, by dotted name."""
    yield from root.named_parameters()
    yield from root.named_buffers()
    for prefix, module in root.named_modules():
        for name in getattr(module, "_plain_tensors", ()):
            yield (f"{prefix}.{name}" if prefix else name), getattr(module, name)


class _RemoteForward(torch.autograd.Function):
    """Lets gradients flow from a remote output to the rebuilt module's parameters and to
    the trusted side's inputs that require them (``inputs`` names them as the request does)."""

    @staticmethod
    def forward(ctx, remote: _Remote, request: dict, inputs: list[str], value: torch.Tensor,
                *tensors: torch.Tensor) -> torch.Tensor:
        ctx.remote, ctx.request, ctx.inputs = remote, request, inputs
        ctx.shapes = [(t.shape, t.dtype) for t in tensors]
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # the same request (the same seed: the same dropout draws), asking for gradients
        remote, request = ctx.remote, dict(ctx.request)
        request.update(op="vjp", grad_output=encode(grad_output), grad_enabled=True)
        grads = decode(_answer(remote.channel, request)["value"], remote.channel)
        if not isinstance(grads, dict) or not all(
                isinstance(grads.get(kind, {}), dict) for kind in ("parameters", "inputs")):
            raise ProtocolError("gradients that are not a mapping")
        names = [("parameters", name) for name, _ in remote.root.named_parameters()]
        names += [("inputs", name) for name in ctx.inputs]
        result = []
        for (kind, name), (shape, dtype) in zip(names, ctx.shapes, strict=True):
            grad = grads.get(kind, {}).get(name)
            ok = isinstance(grad, torch.Tensor) and grad.shape == shape
            result.append(grad.to(dtype) if ok else None)
        return (None, None, None, None, *result)


class StudentModule(nn.Module):
    """A module of the student's class, rebuilt from its description (see module docstring)."""

    def __init__(self, name: str, remote: _Remote, methods: list[str]) -> None:
        super().__init__()
        self._student_name, self._remote, self._methods = name, remote, set(methods)
        self._plain_tensors: list[str] = []

    def _get_name(self) -> str:
        return self._student_name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._remote.call(None, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in self.__dict__.get("_methods", ()):
                remote = self.__dict__["_remote"]
                method = lambda *args, **kwargs: remote.call(name, args, kwargs)  # noqa: E731
                method.__name__ = name
                return method
            raise


def kernel_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a rebuilt ``module`` as the student's side holds them now, by dotted
    name, with nothing sent first: what a call that was to train the module left there
    (every other request sends the trusted side's values, so a call never changes them)."""
    remote = getattr(module, "_remote", None)
    if not isinstance(module, StudentModule) or remote is None:
        raise TypeError("kernel_state takes a module rebuilt from the student's side")
    value = decode(_answer(remote.channel, {"op": "state", "object": remote.object_id})["value"],
                   remote.channel)
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
        raise ProtocolError("a module's state that is not tensors by name")
    return value


def _known(kind: str, config: dict) -> nn.Module | None:
    """A PyTorch layer of ``kind`` with the described sizes, its tensors on the data-less
    ``meta`` device until the description's own values fill them (None: not one we rebuild)."""
    def size(key: str) -> int:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 10**6:
            raise ProtocolError(f"{kind}.{key} is not a sensible size")
        return value

    def flag(key: str) -> bool:
        return bool(config.get(key))

    with torch.device("meta"):
        if kind == "Linear":
            return nn.Linear(size("in_features"), size("out_features"), bias=flag("has_bias"))
        if kind == "Embedding":
            padding = config.get("padding_idx")
            return nn.Embedding(size("num_embeddings"), size("embedding_dim"),
                                padding_idx=padding if isinstance(padding, int) else None)
        if kind == "LayerNorm":
            shape = decode(config.get("normalized_shape"))
            if (not isinstance(shape, tuple | list) or len(shape) > 4 or not all(
                    isinstance(n, int) and 0 < n <= 10**6 for n in shape)):
                raise ProtocolError("LayerNorm.normalized_shape is not a sensible shape")
            eps = config.get("eps")
            return nn.LayerNorm(tuple(shape), eps=eps if isinstance(eps, float) else 1e-5,
                                elementwise_affine=flag("elementwise_affine"),
                                bias=flag("has_bias"))
        if kind == "MultiheadAttention":
            embed = size("embed_dim")
            kdim = size("kdim") if config.get("kdim") else embed
            vdim = size("vdim") if config.get("vdim") else embed
            dropout = config.get("dropout")
            return nn.MultiheadAttention(
                embed, size("num_heads"), dropout=dropout if isinstance(dropout, float) else 0.0,
                bias=flag("has_in_proj_bias"), add_bias_kv=flag("has_bias_k"),
                add_zero_attn=flag("add_zero_attn"), kdim=kdim, vdim=vdim,
                batch_first=flag("batch_first"))
        if kind == "Dropout":
            p = config.get("p")
            return nn.Dropout(p if isinstance(p, float) and 0 <= p <= 1 else 0.5)
        if kind == "Softmax":
            dim = config.get("dim")
            return nn.Softmax(dim=dim if isinstance(dim, int) else None)
        if kind == "GELU":
            return nn.GELU(approximate="tanh" if config.get("approximate") == "tanh" else "none")
    simple = {"ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh, "Identity": nn.Identity,
              "Sequential": nn.Sequential, "ModuleList": nn.ModuleList, "ModuleDict": nn.ModuleDict}
    return simple[kind]() if kind in simple else None


CONTAINERS = ("Sequential", "ModuleList", "ModuleDict")  # hold members, prescribe none


def _prescribed(layers: dict[str, str], path: str, kind: str) -> bool:
    """Does the exercise prescribe a PyTorch ``kind`` at member ``path`` ("mlp.0")?"""
    return any(fnmatch.fnmatchcase(path, pattern) and kind in allowed.split("|")
               for pattern, allowed in layers.items())


def build_module(tree: Any, remote: _Remote, depth: int = 0, path: str = "",
                 inside_layer: bool = False) -> nn.Module:
    """Rebuild a described module; the root's remote handle is shared by its children.

    The root is always the student's module. A member is rebuilt as PyTorch's own layer
    only where the exercise prescribes that layer (``remote.layers``), or where it is a
    part of such a layer (``MultiheadAttention.out_proj``); anything else that claims to
    be a PyTorch layer stays the student's code, run in their kernel.
    """
    if not isinstance(tree, dict) or depth > in_kernel.MAX_DEPTH:
        raise ProtocolError("a module description with an unexpected structure")
    fields = {key: tree.get(key) for key in ("parameters", "buffers", "tensors", "numbers",
                                              "children", "config")}
    if not all(isinstance(v, dict) for v in fields.values()):
        raise ProtocolError("a module description with an unexpected structure")
    kind, name = str(tree.get("type")), str(tree.get("name", "Module"))[:80]
    trusted = depth > 0 and kind != "student" and (
        inside_layer or _prescribed(remote.layers, path, kind))
    module = _known(kind, fields["config"]) if trusted else None
    if module is None:
        methods = [m for m in tree.get("methods", []) if isinstance(m, str) and m.isidentifier()]
        module = StudentModule(name if kind == "student" else f"{name} (rebuilt)", remote,
                               methods)
    if depth == 0:
        remote.root = module
    generic = isinstance(module, StudentModule)
    own_parts = dict(module.named_children())  # a trusted layer's own sub-layers
    for child_name, child in fields["children"].items():
        if not str(child_name).isidentifier() and not str(child_name).isdigit():
            raise ProtocolError("a child module with an unusable name")
        child_path = f"{path}.{child_name}" if path else str(child_name)
        if not generic and child_name in own_parts:
            _fill_layer(own_parts[child_name], child)
            continue
        rebuilt = build_module(child, remote.child(str(child_name)), depth + 1, child_path,
                               inside_layer=not generic and kind not in CONTAINERS)
        module.add_module(str(child_name), rebuilt)
    _fill(module, fields, generic)
    if not generic:
        missing = [n for n, t in (*module.named_parameters(), *module.named_buffers())
                   if t.is_meta]
        if missing:
            raise ProtocolError(f"the description of {kind} `{path}` lacks {missing[0]}")
    module.train(bool(tree.get("training", True)))
    if depth == 0:
        _within_budget(module)
    return module


def _within_budget(module: nn.Module) -> None:
    """Refuse a module whose tensors, data-less ones included, hold more numbers than any
    answer of the course needs: filling them here would cost the grader time and memory."""
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [getattr(m, key) for m in module.modules() if isinstance(m, StudentModule)
                for key in m._plain_tensors]
    total = sum(t.numel() for t in tensors)
    if total > MAX_MODULE_ELEMENTS:
        raise ProtocolError(f"the module holds {total:,} numbers, more than the "
                            f"{MAX_MODULE_ELEMENTS:,} any answer of this course needs")


def _fill_layer(layer: nn.Module, tree: Any) -> None:
    """Fill a trusted layer's own sub-layer (``out_proj``) with the described tensors."""
    if not isinstance(tree, dict) or not all(
            isinstance(tree.get(k), dict) for k in ("parameters", "buffers")):
        raise ProtocolError("a module description with an unexpected structure")
    _fill(layer, {"parameters": tree["parameters"], "buffers": tree["buffers"]}, False)


def _fill(module: nn.Module, fields: dict, generic: bool) -> None:
    """Put the described tensors and numbers into ``module``."""
    for key, value in fields["parameters"].items():
        tensor = decode(value)
        if not isinstance(tensor, torch.Tensor) or not key.isidentifier():
            raise ProtocolError("a parameter that is not a tensor")
        if generic:
            module.register_parameter(key, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
            continue
        current = module._parameters.get(key)
        if current is None or current.shape != tensor.shape or not tensor.is_floating_point():
            raise ProtocolError(f"parameter {key} does not match its layer's sizes")
        module._parameters[key] = nn.Parameter(tensor)
    for key, value in fields["buffers"].items():
        tensor = decode(value)
        if isinstance(tensor, torch.Tensor) and key.isidentifier():
            module.register_buffer(key, tensor)
    if generic:
        for key, value in fields["tensors"].items():
            tensor = decode(value)
            if isinstance(tensor, torch.Tensor) and key.isidentifier() and not hasattr(
                    nn.Module, key):
                object.__setattr__(module, key, tensor)
                module._plain_tensors.append(key)
        for key, value in fields["numbers"].items():
            if isinstance(value, bool | int | float | str) and key.isidentifier() and not hasattr(
                    module, key):
                object.__setattr__(module, key, value)


__all__ = ["Batches", "Channel", "LocalChannel", "OtherObject", "ProtocolError", "StudentError",
           "StudentFunction", "StudentModule", "advance_generators", "build_module", "decode",
           "encode", "global_seed", "kernel_state", "last_report", "observing", "parse_reply",
           "student"]
