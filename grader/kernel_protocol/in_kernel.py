"""The one fixed step that runs in a student's kernel: call their code, return plain data.

The grader never imports this module into a kernel: it sends this file's *source* with
every request and evaluates ``serve(request, globals())`` there (``pipeline.grading.verdicts``);
unit tests and solution notebooks call :func:`serve` in-process. It is self-contained
(the standard library, torch, numpy and ``helpers.checks.calls``, which the
self-checks use for the same call) and holds no test, no input chosen in advance and no
reference answer: the trusted side sends the inputs, and decides.

A request is JSON: ``{"op": ..., "target": ..., ...}``. Values travel as JSON with
tensors as ``{"tensor": {"dtype", "shape", "data": base64 of the raw bytes}}`` (a tensor
on PyTorch's data-less ``meta`` device as ``{"dtype", "shape", "device": "meta"}``) and a
CPU ``torch.Generator`` as ``{"generator": <its state, as such a tensor>}``; modules come
back as a description (types, sizes, parameters) so that the trusted side can rebuild
them (``kernel_protocol.grader_side``). Nothing is ever pickled.

Every call runs with the global random generator seeded as the request says and restored
afterwards, so the grader's calls never move the student's own random stream. The reply
also says which arguments the call changed in place, a digest of the generator's state
right after the call (before it is put back: equal digests after calls seeded differently
mean the call reseeded it) and, when asked (``"observe"``),
which torch functions it called, which of them made a CPU tensor and the most elements
of any tensor it made. Whatever this code returns is treated as adversarial by the
receiving side: what it reports about the call is the kernel's word, what it returns is
checked.
"""

from __future__ import annotations

import base64
import json
import linecache
import traceback

import numpy
import torch

from helpers.checks.calls import call_and_report, random_state_kept

OBJECTS = "_course_probe_objects"  # the kernel-side handles of modules the grader built
# torch.nn classes that are described by their constructor arguments (and rebuilt as such)
CONFIG = {
    "Linear": ("in_features", "out_features"),
    "Embedding": ("num_embeddings", "embedding_dim", "padding_idx"),
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine"),
    "MultiheadAttention": ("embed_dim", "num_heads", "dropout", "batch_first", "kdim", "vdim",
                           "add_zero_attn"),
    "Dropout": ("p",),
    "Softmax": ("dim",),
    "GELU": ("approximate",),
    "Flatten": ("start_dim", "end_dim"),
}
MAX_DEPTH = 8
_objects: dict = {}  # the namespace's handles, bound by `serve`


def encode(value, depth: int = 0):
    """Any value -> JSON-able plain data (tensors as raw bytes, modules described)."""
    if depth > MAX_DEPTH:
        return {"object": "a structure nested too deeply"}
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else float(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else {"float": repr(value)}
    if isinstance(value, torch.nn.Module):
        return {"module": _register(value), "tree": describe(value)}
    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_spec(value), "parameter": isinstance(value, torch.nn.Parameter)}
    if isinstance(value, numpy.ndarray):
        return {"ndarray": tensor_spec(torch.from_numpy(numpy.ascontiguousarray(value)))}
    if isinstance(value, numpy.generic):
        return encode(value.item(), depth)
    if isinstance(value, tuple | list):
        return {type(value).__name__: [encode(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    return {"object": type(value).__name__}


def tensor_spec(value: torch.Tensor) -> dict:
    """A tensor as plain data: dtype, shape and the raw bytes (none for a meta tensor)."""
    value = torch.Tensor.detach(value)
    if value.dtype in (torch.bfloat16, torch.float16):
        value = value.float()
    if value.is_meta:
        return {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                "device": "meta"}
    array = value.cpu().contiguous().numpy()
    return {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def decode(value):
    """Inverse of :func:`encode` for what the trusted side sends (inputs, states)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "tensor" in value:
        spec = value["tensor"]
        if spec.get("device") == "meta":
            return torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]), device="meta")
        array = numpy.frombuffer(base64.b64decode(spec["data"]), dtype=spec["dtype"])
        return torch.from_numpy(array.reshape(spec["shape"]).copy())
    if "generator" in value:  # a CPU torch.Generator, sent as its state (a uint8 tensor)
        generator = torch.Generator()
        generator.set_state(decode({"tensor": value["generator"]}))
        return generator
    if "float" in value:
        return float(value["float"])
    if "tuple" in value:
        return tuple(decode(v) for v in value["tuple"])
    if "list" in value:
        return [decode(v) for v in value["list"]]
    if "dict" in value:
        return {decode(k): decode(v) for k, v in value["dict"]}
    if "module" in value:  # a module built earlier, with the values the trusted side holds
        module = _objects[value["module"]]
        _load(module, value.get("state", {}))
        module.train(bool(value.get("training", module.training)))
        return module
    if "batches" in value:  # get_batch(): the i-th call returns the i-th (inputs, targets)
        inputs, targets = (decode(v) for v in value["batches"])
        count = iter(range(len(inputs)))
        return lambda: (lambda i: (inputs[i], targets[i]))(next(count))
    raise ValueError(f"cannot decode {sorted(value)}")


def _register(module: torch.nn.Module) -> int:
    for key, known in _objects.items():
        if known is module:
            return key
    _objects[len(_objects)] = module
    return len(_objects) - 1


def describe(module: torch.nn.Module, depth: int = 0) -> dict:
    """A module as plain data: its type, sizes, tensors, methods and children."""
    cls = type(module)
    torch_type = cls.__module__.startswith("torch.nn.") and cls.__name__
    node = {"type": torch_type or "student", "name": cls.__name__, "config": {},
            "parameters": {}, "buffers": {}, "tensors": {}, "numbers": {}, "methods": [],
            "children": {}, "training": module.training}
    if torch_type:
        for key in CONFIG.get(cls.__name__, ()):
            node["config"][key] = encode(getattr(module, key, None))
        for key in ("bias", "in_proj_bias", "bias_k"):
            node["config"]["has_" + key] = getattr(module, key, None) is not None
    else:
        for key, value in vars(module).items():
            if key.startswith("_") or key == "training":
                continue
            if isinstance(value, torch.Tensor):
                node["tensors"][key] = encode(value)
            elif isinstance(value, bool | int | float | str):
                node["numbers"][key] = encode(value)
    node["methods"] = sorted(
        key for klass in cls.__mro__ if klass.__module__ and not klass.__module__.startswith(
            ("torch", "builtins")) for key, value in vars(klass).items()
        if callable(value) and not key.startswith("_"))
    for key, value in module._parameters.items():
        if value is not None:
            node["parameters"][key] = encode(value)
    for key, value in module._buffers.items():
        if value is not None:
            node["buffers"][key] = encode(value)
    if depth < MAX_DEPTH:
        for key, child in module._modules.items():
            if child is not None:
                node["children"][key] = describe(child, depth + 1)
    return node


def _load(module: torch.nn.Module, state: dict) -> None:
    """Copy the trusted side's values into the module's tensors, by dotted name; a tensor
    whose dtype the trusted side changed (``module.double()``) takes the new dtype."""
    with torch.no_grad():
        for name, value in state.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            target = getattr(owner, leaf)
            value = decode(value)
            if target.is_meta != value.is_meta:
                # moved to or from the meta device (``module.to("meta")``): a tensor cannot
                # change that in place, so the module gets a new one, as ``.to`` does
                if leaf in owner._parameters:
                    owner._parameters[leaf] = torch.nn.Parameter(
                        value, requires_grad=target.requires_grad)
                else:
                    owner._buffers[leaf] = value
            elif target.dtype != value.dtype:
                target.data = value.to(device=target.device)
            else:
                target.copy_(value)


def _resolve(request: dict, namespace: dict):
    if "object" in request:
        target = _objects[request["object"]]
    elif request["target"] in namespace:
        target = namespace[request["target"]]
    else:
        raise NameError(f"name {request['target']!r} is not defined: run the cell that "
                        "defines it")
    for attribute in request.get("path", []):
        target = getattr(target, attribute)
    return target


def _observed(seen) -> dict:
    """An observation of a call, as plain JSON for the grader."""
    return {"calls": seen.calls, "cpu_tensors": list(seen.cpu_tensors), "largest": seen.largest,
            "cpu_indices": list(seen.cpu_indices), "off_device": list(seen.off_device)}


def _call(request: dict, namespace: dict):
    if request["op"] == "state":  # a module's tensors as they are now, nothing sent first
        module = _objects[request["object"]]
        return {"value": encode({name: t.detach() for name, t in module.state_dict().items()})}
    root = _objects[request["object"]] if "object" in request else None
    if root is not None:
        root.train(request.get("training", root.training))
        _load(root, request.get("state", {}))
    target = _resolve(request, namespace)
    args, kwargs = decode(request.get("args", [])), dict(decode(request.get("kwargs", [])))
    seed = request.get("global_seed") if isinstance(request.get("global_seed"), int) else None
    with torch.set_grad_enabled(bool(request.get("grad_enabled"))):
        if request["op"] == "call":
            value, report = call_and_report(target, args, kwargs, seed=seed,
                                            observe=bool(request.get("observe")))
            answer = {"value": encode(value), "changed": list(report.changed),
                      "rng_after": report.rng_after,
                      # where the generators it was given stand now (they move on with draws)
                      "generators": {name: encode(g.get_state()) for name, g in
                                     [*((f"args[{i}]", a) for i, a in enumerate(args)),
                                      *kwargs.items()] if isinstance(g, torch.Generator)}}
            if report.observed is not None:
                seen = report.observed
                answer["observed"] = _observed(seen)
            return answer
        # the inputs the trusted side wants gradients for: its tensors that require them
        wanted = set(request.get("input_grads", []))
        inputs = {name: t.requires_grad_() for name, t in
                  [*((f"args[{i}]", a) for i, a in enumerate(args)), *kwargs.items()]
                  if name in wanted and isinstance(t, torch.Tensor) and t.is_floating_point()}
        with random_state_kept(seed):  # "vjp": the forward again, with the same random draws
            output = target(*args, **kwargs)
        if request.get("output") == 0 and isinstance(output, tuple) and output:
            output = output[0]  # forward returned (out, ...): the gradient flows through out
        named = {k: p for k, p in root.named_parameters() if p.requires_grad}
        if not (isinstance(output, torch.Tensor) and output.requires_grad and (named or inputs)):
            return {"value": encode({})}  # nothing reaches the parameters or the inputs
        grads = torch.autograd.grad(output, [*named.values(), *inputs.values()],
                                    decode(request["grad_output"]), allow_unused=True)
        keys = [*(("parameters", k) for k in named), *(("inputs", k) for k in inputs)]
        found: dict = {"parameters": {}, "inputs": {}}
        for (kind, key), grad in zip(keys, grads, strict=True):
            if grad is not None:
                found[kind][key] = grad
        return {"value": encode(found)}


def _where(error: BaseException) -> str:
    """" (line N: `code`)" for the last frame in the student's own cells, else ""."""
    frames = traceback.extract_tb(error.__traceback__)
    student = [f for f in frames if f.filename.startswith("<ipython-input")
               or "ipykernel_" in f.filename]
    if not student:
        return ""
    frame = student[-1]
    line = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return f" (your line {frame.lineno}: `{line[:160]}`)" if line else f" (line {frame.lineno})"


def serve(request: str, namespace: dict) -> str:
    """Answer one JSON request of the trusted side; errors come back as plain data too."""
    global _objects
    try:
        _objects = namespace.setdefault(OBJECTS, {})
        request = json.loads(request)
        return json.dumps({"ok": _call(request, namespace)})
    except BaseException as error:  # noqa: BLE001 - every failure is the student's to read
        described = {"type": type(error).__name__, "message": str(error)[:2000] + _where(error)}
        seen = getattr(error, "observed", None)
        if seen is not None:  # an observed call: what it did before it failed
            described["observed"] = _observed(seen)
        return json.dumps({"error": described})
