"""The small engine behind every self-check (and the grader's hidden tests).

A check holds an answer to the **contract** its exercise declares in ``helpers.syllabus``:
each group of checks runs under one clause (``check.clause("dtype")``), and a failure
says which clause was broken, in the words students read in the exercise. Calls of the
student's code go through :meth:`SelfCheck.call`, which also fails when the call changed
one of its arguments in place, keeps the global random generator where it was (or seeds
it, :meth:`SelfCheck.call_seeded`) and, when the student's own code raises, shows the
line of their cell it came from and, where the error's signature identifies it, the
common cause.
"""

from __future__ import annotations

import inspect
import linecache
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

import torch

from helpers import syllabus
from helpers.checks.calls import CallReport, Observation, call_and_report, tensors_in
from helpers.exercises import CheckFailed, not_finished, not_written, unfinished

# Captured when helpers is imported (the setup cell, before any student code runs), so a
# submission that replaces torch.allclose cannot make every comparison pass.
_allclose = torch.allclose
_isfinite = torch.isfinite
_isclose = torch.isclose


# Errors whose message (and the student's line) identify a common cause: (pattern of the
# message, pattern the student's line must match or None, the cause in plain words).
ERROR_CAUSES: list[tuple[str, str | None, str]] = [
    (r"must match the size of tensor b", r"\.(sum|amax|max|mean|amin|min|logsumexp|norm)\("
     r"(?![^)]*keepdim)",
     "a reduction along `dim` dropped that dimension, so the result no longer lines up with "
     "the tensor it came from: pass keepdim=True"),
    (r"attn_mask", None,
     "a (B, T) padding mask was passed as attn_mask: it belongs in key_padding_mask "
     "(True = padding)"),
    # PyTorch often fails on such a mask with a reshape error that does not say attn_mask;
    # the student's line does.
    (r"shape '\[[\d, ]*\]' is invalid for input of size", r"attn_mask\s*=",
     "a (B, T) padding mask was passed as attn_mask: it belongs in key_padding_mask "
     "(True = padding)"),
    (r"expected scalar type|same dtype|expected .*dtype|Found dtype|dtype.* but got",
     None, "two tensors of different dtypes met: something earlier in your function fixed "
     "a dtype (a tensor made with the default float32, a `.float()`, or a `dtype=` argument "
     "such as softmax's); make new tensors with dtype=x.dtype or torch.*_like, and let every "
     "result keep its input's dtype"),
    (r"same device|expected device|on the expected device", None,
     "a tensor made inside your function lives on the CPU while the input is elsewhere: "
     "make it with device=x.device, or with torch.*_like"),
    (r"modified by an inplace operation", None,
     "a tensor autograd still needs was changed in place (`w[...] = 0`, `masked_fill_`, "
     "`+=` on a result): compute a new tensor instead, e.g. torch.where or masked_fill"),
    (r"return_types\.(max|min)", None,
     "x.max(dim=...) and x.min(dim=...) return a pair (values, indices): take .values, or "
     "use x.amax(dim=...)"),
    (r"Dimension out of range", None,
     "a `dim` the tensor does not have: count dimensions from the end (dim=-1, -2) so that "
     "any number of leading dimensions works"),
]
_STUDENT_LINE = re.compile(r"\(your line (\d+): `(.*)`\)$")


def student_line(error: BaseException) -> tuple[int, str] | None:
    """The line of the student's own notebook cell an error came from, if any: (number, code).

    Errors relayed from the grader's kernel carry it in their message."""
    relayed = _STUDENT_LINE.search(str(error))
    if relayed:
        return int(relayed.group(1)), relayed.group(2)
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if f.filename.startswith("<ipython-input") or "ipykernel_" in f.filename]
    if not frames:
        return None
    frame = frames[-1]
    code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return frame.lineno, code


def is_stub(error: BaseException) -> bool:
    """Did an exercise's stub raise this (``raise NotImplementedError()``, bare), rather than
    PyTorch saying that something is not implemented (it says what)?"""
    if not isinstance(error, NotImplementedError):
        return False
    return unfinished(error) is not None or not _STUDENT_LINE.sub("", str(error)).strip()


def likely_cause(error: BaseException, line: str | None,
                 extra: Sequence[tuple[str, str | None, str]] = ()) -> str | None:
    """The common cause an error's message (and the student's line) identify, or None.

    ``extra``: an exercise's own causes, tried before the common ones."""
    message = str(error)
    for pattern, line_pattern, cause in (*extra, *ERROR_CAUSES):
        if re.search(pattern, message) and (
                line_pattern is None or (line is not None and re.search(line_pattern, line))):
            return cause
    return None


def describe(value: Any, max_items: int = 6, start: int = 0) -> str:
    """A short, readable description of a value for failure messages (a tensor's entries
    from flat index ``start`` on, so that a preview can show where two tensors differ)."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}, on the meta device"
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().flatten()
        start = max(0, min(start, flat.numel() - max_items))
        shown = ", ".join(_fmt(v) for v in flat[start:start + max_items].tolist())
        before, after = ("..., ", f" (from flat entry {start})") if start else ("", "")
        more = ", ..." if flat.numel() > start + max_items else ""
        return (f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}: "
                f"[{before}{shown}{more}]{after}")
    if isinstance(value, tuple | list):
        return f"{type(value).__name__} of {len(value)}: (" + ", ".join(
            describe(v, 3) for v in value[:3]) + (", ..." if len(value) > 3 else "") + ")"
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ranges(indices: list[int], at_most: int = 6) -> str | None:
    """[0, 1, 2, 5] -> "0-2, 5"; None when that takes more than ``at_most`` pieces."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts) if len(parts) <= at_most else None


def where_different(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float,
                    dims: Sequence[str] | None = None) -> str:
    """Where two same-shaped tensors differ: how many entries, the first one, and along
    which indices of each dimension (when the differences are confined to some of them)."""
    a, e = actual.double(), expected.double()
    bad = ~_isclose(a, e, atol=atol, rtol=rtol)
    if a.dim() == 0:
        return f"expected {_fmt(e.item())}, got {_fmt(a.item())}"
    n_bad, total = int(bad.sum()), bad.numel()
    if n_bad == 0:
        return ""
    first = tuple(bad.nonzero()[0].tolist())
    text = (f"{n_bad} of {total} entries differ; the first at index {list(first)}: "
            f"expected {_fmt(e[first].item())}, got {_fmt(a[first].item())}")
    confined = []
    for d in range(bad.dim()):
        if bad.shape[d] < 2:
            continue
        hit = bad.transpose(0, d).reshape(bad.shape[d], -1).any(dim=1).nonzero().flatten()
        hit = hit.tolist()
        listed = _ranges(hit)
        if len(hit) < bad.shape[d] and listed is not None:
            name = dims[d] if dims is not None and d < len(dims) else f"dimension {d}"
            confined.append(f"{name} {listed} only")
    if confined:
        text += "; differences at " + ", ".join(confined)
    return text


def shape_difference(got: tuple[int, ...], wanted: tuple[int, ...]) -> str | None:
    """A plain description of how two shapes relate, when there is a simple one."""
    if len(got) + 1 == len(wanted):
        for i in range(len(wanted)):
            if wanted[:i] + wanted[i + 1:] == got:
                return f"dimension {i} (of size {wanted[i]}) is missing"
    if len(got) == len(wanted) + 1:
        for i in range(len(got)):
            if got[:i] + got[i + 1:] == wanted and got[i] == 1:
                return f"an extra dimension of size 1 at position {i}"
    if len(got) == len(wanted) and sorted(got) == sorted(wanted) and got != wanted:
        return "the same sizes in a different order"
    return None


class SelfCheck:
    """Collects the checks of one exercise; fails at the first broken one.

    A failure says what was checked, what was expected, what came back, which clause of
    the exercise's contract it broke and, for a comparison of tensors, where they differ.
    It names a *likely mistake* only when the result has that mistake's signature: it
    matches what the known wrong variant computes (``mistakes`` of :meth:`close`,
    ``diagnoses`` of :meth:`expect`), or the failed condition can have no other cause (the
    ``likely`` argument).

    >>> check = SelfCheck("stable_softmax")
    >>> check.clause("values").expect(True, "output is a tensor", expected="a tensor",
    ...                               got="a tensor")
    >>> check.passed()
    ✅ stable_softmax: all 1 checks passed.
    """

    # Tests set this to a list to see every check run: (exercise, clause, passed).
    record: ClassVar[list[tuple[str, str | None, bool]] | None] = None
    # ... and this to a set to see the names of the parameters the checks pass.
    arguments: ClassVar[set[str] | None] = None

    def __init__(self, exercise: str) -> None:
        self.exercise = exercise
        # The exercise's own name: subclasses decorate `exercise` ("... (hidden test)").
        self.name = exercise.split(" (")[0]
        self.n_passed = 0
        declared = syllabus.exercise(self.name)
        self.contract = dict(declared.contract) if declared else {}
        self.rules = dict(declared.rules) if declared else {}
        self.current: str | None = None
        # An exercise's own (message pattern, line pattern, cause) for crashes of the
        # student's code, tried before ERROR_CAUSES.
        self.error_causes: list[tuple[str, str | None, str]] = []

    # -- the contract ----------------------------------------------------------------
    def clause(self, name: str) -> SelfCheck:
        """The checks that follow test this clause of the contract (or rule)."""
        if name not in self.contract and name not in self.rules:
            raise KeyError(f"{self.name} declares no clause or rule {name!r} in "
                           f"helpers/syllabus.py (it has {sorted(self.contract)}, rules "
                           f"{sorted(self.rules)})")
        self.current = name
        return self

    def rule(self, name: str) -> SelfCheck:
        """The checks that follow test this rule (how to build it; self-checks only)."""
        if name not in self.rules:
            raise KeyError(f"{self.name} declares no rule {name!r} in helpers/syllabus.py")
        self.current = name
        return self

    def _note(self, passed: bool) -> None:
        if SelfCheck.record is not None:
            SelfCheck.record.append((self.name, self.current, passed))

    # -- failing -----------------------------------------------------------------
    def fail(self, check: str, *, expected: str, got: str, likely: str | None = None,
             where: str | None = None) -> None:
        # Continuation lines are indented under their field, so that a line the student's
        # own code wrote (an error message in "got") can never pass for a field of ours.
        def field(text: str) -> str:
            return str(text).replace("\n", "\n" + " " * 12)

        lines = [
            f"{self.exercise}: check {self.n_passed + 1} failed: {field(check)}",
            f"  expected: {field(expected)}",
            f"  got:      {field(got)}",
        ]
        if where:
            lines.append(f"  where:    {field(where)}")
        if self.current in self.contract:
            lines.append(f"  contract: {self.contract[self.current]}")
        elif self.current in self.rules:
            lines.append(f"  rule:     {self.rules[self.current]}")
        if likely:
            lines.append(f"  likely mistake: {likely}")
        self._note(False)
        # `from None`: the student needs the message, not our traceback.
        raise CheckFailed("\n".join(lines), self.current) from None

    def expect(self, condition: bool, check: str, *, expected: str, got: str,
               likely: str | None = None, where: str | None = None,
               diagnoses: Mapping[str, Any] | None = None) -> None:
        """Pass when ``condition`` holds; otherwise fail with the given words.

        ``likely`` is named only for a condition that identifies the mistake by itself.
        ``diagnoses`` maps a mistake to its signature (a bool, or a callable returning one,
        evaluated only on failure): the first signature that holds is named.
        """
        if not condition:
            for description, signature in (diagnoses or {}).items():
                if signature() if callable(signature) else signature:
                    likely = description
                    break
            self.fail(check, expected=expected, got=got, likely=likely, where=where)
        self._passed_one()

    def _passed_one(self) -> None:
        self.n_passed += 1
        self._note(True)

    # -- running the student's code ---------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the student's function; turn a crash into a readable failure.

        The global random generator is where it was afterwards. An argument the call
        changed in place fails the contract's "unchanged" clause. ``NotImplementedError``
        from this exercise passes through unchanged: it means "not done yet". From another
        exercise's stub it says which exercise to finish first.
        """
        return self._checked_call(fn, args, kwargs)[0]

    def call_seeded(self, seed: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """:meth:`call` with the global random generator seeded with ``seed`` first (and put
        back afterwards): for answers that draw from it."""
        return self._checked_call(fn, args, kwargs, seed=seed)[0]

    def call_observed(self, fn: Callable[..., Any], *args: Any,
                      **kwargs: Any) -> tuple[Any, Observation]:
        """:meth:`call`, and what the call did: the torch functions it used, which of them
        made a CPU tensor, the most elements of any tensor it made."""
        value, report = self._checked_call(fn, args, kwargs, observe=True)
        return value, report.observed or Observation()

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict, *, seed: int | None,
             observe: bool) -> tuple[Any, CallReport]:
        """Call where the student's code lives; here, in this process."""
        return call_and_report(fn, args, kwargs, seed=seed, observe=observe)

    def _checked_call(self, fn: Callable[..., Any], args: tuple, kwargs: dict, *,
                      seed: int | None = None, observe: bool = False) -> tuple[Any, CallReport]:
        if not callable(fn):
            self.fail(f"{self.name} is callable", expected="a function or class",
                      got=describe(fn))
        if SelfCheck.arguments is not None:
            SelfCheck.arguments.update(_parameter_names(fn, self.name)[:len(args)], kwargs)
        try:
            value, report = self._run(fn, args, kwargs, seed=seed, observe=observe)
        except Exception as error:  # noqa: BLE001 - any crash is reported to the student
            if is_stub(error):
                self.not_implemented(error)
            self.crashed(fn, error, args, kwargs)
        if report.changed:
            self._changed_in_place(fn, report.changed)
        if "unchanged" in self.contract and any(True for a in (*args, *kwargs.values())
                                                for _ in tensors_in(a, "")):
            self.n_passed += 1  # a check of the "unchanged" clause, whatever clause is current
            if SelfCheck.record is not None:
                SelfCheck.record.append((self.name, "unchanged", True))
        return value, report

    def crashed(self, fn: Callable[..., Any], error: BaseException, args: tuple,
                kwargs: dict) -> NoReturn:
        """Fail because the student's code raised: their line, and the common cause."""
        before = getattr(error, "arguments_before", {})  # as passed in, before any change
        shown = ", ".join([describe(before.get(f"args[{i}]", a), 3) for i, a in enumerate(args)]
                          + [f"{k}={describe(before.get(k, v), 3)}" for k, v in kwargs.items()])
        line = student_line(error)
        message = _STUDENT_LINE.sub("", str(error)).strip()
        where = f"called with ({shown})"
        if line is not None:
            where += f"; the error came from your code, line {line[0]} of its cell: `{line[1]}`"
        changed_paths = getattr(error, "changed_in_place", ())
        if changed_paths:
            names = ", ".join(_argument_name(fn, path, self.name) for path in changed_paths)
            where += (f"; before the error, the call had changed {names} in place (an "
                      "in-place method such as `unsqueeze_` or `masked_fill_`): the contract "
                      "asks to leave the arguments unchanged")
        self.fail(f"calling {getattr(fn, '__name__', self.name)} runs without an error",
                  expected="a result", got=f"{type(error).__name__}: {message}",
                  where=where, likely=likely_cause(error, line[1] if line else None,
                                                   self.error_causes))

    def _changed_in_place(self, fn: Callable[..., Any], paths: Sequence[str]) -> NoReturn:
        names = ", ".join(_argument_name(fn, path, self.name) for path in paths)
        if "unchanged" in self.contract:
            self.current = "unchanged"
        self.fail(f"{getattr(fn, '__name__', self.name)} leaves its arguments unchanged",
                  expected="every argument as it was passed in",
                  got=f"changed in place: {names}",
                  likely="an argument was changed in place (`x -= ...`, `x[...] = ...`, "
                         "`masked_fill_`, `.div_(...)`): compute into a new tensor instead")

    def backward(self, output: torch.Tensor, what: str) -> None:
        """``output.sum().backward()``, with a failure (an in-place change autograd needed, a
        result cut off from the graph) reported like any crash of the student's code."""
        try:
            output.sum().backward()
        except Exception as error:  # noqa: BLE001 - reported to the student
            line = student_line(error)
            self.fail(f"gradients flow back through {what}", expected="a backward pass",
                      got=f"{type(error).__name__}: {_STUDENT_LINE.sub('', str(error)).strip()}",
                      likely=likely_cause(error, line[1] if line else None,
                                          self.error_causes))

    def no_reseed(self, fn: Callable[..., Any], *args: Any, what: str,
                  **kwargs: Any) -> Any:
        """Call ``fn`` twice, with the global generator seeded differently before each: the
        generator must end in two different states. (A call that seeds it itself, with
        ``torch.manual_seed`` inside, leaves it in the same state both times: every later
        "random" draw, a batch or a dropout mask, would then repeat.) A third call, from the
        first seed again, must end where the first did: a reseed from the OS or the clock
        (``torch.seed()``) ends somewhere new every time. Returns the first result."""
        first, report = self._checked_call(fn, args, kwargs, seed=8191)
        second = self._checked_call(fn, args, kwargs, seed=131071)[1]
        reseeded = bool(report.rng_after) and report.rng_after == second.rng_after
        self.expect(not reseeded, f"{what} leaves PyTorch's global random generator running "
                    "(it never reseeds it)", expected="different random states after calls "
                    "started from two different seeds", got="the same state after both calls",
                    likely="torch.manual_seed (or set_seed) inside the call resets the global "
                           "generator: every later draw (a batch, a dropout mask) repeats; "
                           "seed once, outside, before the work starts")
        # A reseed from the clock or the OS gives a different state every time: the same
        # seed and the same draws must leave the generator in the same state.
        again = self._checked_call(fn, args, kwargs, seed=8191)[1]
        self.expect(report.rng_after == again.rng_after, f"{what} leaves PyTorch's global "
                    "random generator where the same seed and the same draws leave it "
                    "(reproducible)", expected="the same random state after two calls started "
                    "from the same seed", got="two different states",
                    likely="the call reseeds the generator with a fresh seed from the OS or "
                           "the clock (torch.seed(), or a seed made from the time): no "
                           "later draw can be reproduced; seed once, outside, with a fixed "
                           "number")
        return first

    def not_implemented(self, error: NotImplementedError) -> NoReturn:
        """Re-raise a stub's ``NotImplementedError`` saying which exercise to write first."""
        other = unfinished(error)
        if other is not None and other != self.name:
            raise not_finished(other, self.name) from None
        if other == self.name:
            raise not_written(other) from None
        raise error

    # -- dtype and device follow the input --------------------------------------------
    def dtype_follows(self, fn: Callable[..., Any], *args: Any, what: str,
                      **kwargs: Any) -> Any:
        """Call ``fn`` with every floating-point tensor argument in float64: each
        floating-point tensor it returns must be float64 too. Returns the result."""
        for dtype in (torch.float64, torch.float32):
            def convert(t: torch.Tensor, dtype: torch.dtype = dtype) -> torch.Tensor:
                return t.to(dtype) if t.is_floating_point() else t
            out = self.call(fn, *_mapped(args, convert), **_mapped(kwargs, convert))
            name = str(dtype).removeprefix("torch.")
            wrong = [(path, t.dtype) for path, t in tensors_in(out, "result")
                     if t.is_floating_point() and t.dtype != dtype]
            self.expect(not wrong, f"{what} with {name} inputs returns {name}",
                        expected=f"{name} results", got=", ".join(
                            f"{path} is {kind}" for path, kind in wrong) or name,
                        likely="the result was converted to another dtype (`.float()`, "
                               "`.double()`, or a tensor made with a fixed dtype): keep the "
                               "input's dtype")
        return out

    def device_follows(self, fn: Callable[..., Any], *args: Any, what: str,
                       likely: str | None = None, **kwargs: Any) -> None:
        """Call ``fn`` with its tensor arguments on PyTorch's data-less ``meta`` device,
        which stands in for a GPU: it must make no tensor on the CPU and return its results
        on the meta device, and it must not copy a tensor to the CPU (``.cpu()``,
        ``.numpy()``, ``.to("cpu")``). (An answer that only reads values into Python, like
        ``.item()`` or ``.tolist()``, cannot be run there and passes this check.) ``likely``
        replaces the usual "likely mistake" where the exercise knows more (the functions its
        answer calls)."""
        to_meta = lambda t: t.to("meta")  # noqa: E731
        args, kwargs = _mapped(args, to_meta), _mapped(kwargs, to_meta)
        crash = None
        try:
            out, report = self._run(fn, args, kwargs, seed=None, observe=True)
        except Exception as error:  # noqa: BLE001 - only a device mismatch is a failure
            if is_stub(error):
                self.not_implemented(error)
            seen = getattr(error, "observed", None)
            made_on_cpu = bool(seen is not None and seen.cpu_tensors)
            copied = seen.copied_to_cpu if seen is not None else ()
            # A 0-dim CPU tensor as masked_fill's value is allowed on a GPU, not on meta.
            if not made_on_cpu and not copied and (
                    not re.search(r"device", str(error))
                    or re.search(r"meta tensors?|no data|`value` to be on same device",
                                 str(error))):
                self._passed_one()  # needs the values: cannot be run without them
                return
            line = student_line(error)
            yours = f" (from your code, line {line[0]} of its cell: `{line[1]}`)" if line else ""
            got = f"{type(error).__name__}: {_STUDENT_LINE.sub('', str(error)).strip()}{yours}"
            if made_on_cpu:  # PyTorch's own words about the meta device would only confuse
                got = (f"a tensor made on the CPU (first by `{seen.cpu_tensors[0]}`), which "
                       f"then met the input's device{yours}")
            if copied:
                got = f"moved to the CPU: {_copy_call(copied[0])} on a tensor of device meta{yours}"
            if copied[:1] in (("numpy",), ("__array__",)) or (
                    not copied and re.search(r"to numpy", str(error))):
                likely = ("the numbers went through NumPy (`.numpy()`), which holds CPU tensors "
                          "only: on a GPU this fails; stay in torch")
            elif copied:
                likely = COPIED_TO_CPU
            crash, made, off = error, [], []
        else:
            made = sorted(set(report.observed.cpu_tensors if report.observed else ()))
            off = [path for path, t in tensors_in(out, "result") if not t.is_meta]
            got = f"CPU tensors made by {', '.join(made[:5]) or 'the result'}"
            copied = report.observed.copied_to_cpu if report.observed else ()
            if copied:
                got = f"moved to the CPU: {_copy_call(copied[0])} on a tensor of device meta"
                likely = COPIED_TO_CPU
        self.expect(crash is None and not made and not off and not copied, f"{what} makes no CPU tensor when "
                    "its input is on another device (tested on PyTorch's meta device, a stand-in for a GPU "
                    "that holds no numbers)",
                    expected="every new tensor on the input's device", got=got,
                    likely=likely or ("a tensor was created without device=...: on a GPU it "
                                      "would sit on the CPU; pass device=x.device, or use "
                                      "torch.*_like / x.new_*"))

    # -- common expectations ---------------------------------------------------------
    def tensor(self, value: Any, what: str) -> torch.Tensor:
        self.expect(isinstance(value, torch.Tensor), f"{what} is a torch.Tensor",
                    expected="a torch.Tensor", got=describe(value))
        return value

    def shape(self, value: torch.Tensor, shape: tuple[int, ...], what: str,
              likely: str | None = None) -> None:
        got = tuple(value.shape)
        self.expect(got == tuple(shape), f"{what} has shape {tuple(shape)}",
                    expected=f"shape {tuple(shape)}", got=f"shape {got}", likely=likely,
                    where=shape_difference(got, tuple(shape)))

    def finite(self, value: torch.Tensor, what: str, likely: str | None = None,
               diagnoses: Mapping[str, Any] | None = None) -> None:
        value = torch.as_tensor(value).detach()
        bad = ~_isfinite(value)
        where = None
        if bad.any() and value.dim() > 0:
            where = f"first at index {bad.nonzero()[0].tolist()}"
        self.expect(int(bad.sum()) == 0, f"{what} contains only finite numbers",
                    expected="no nan or inf", got=f"{int(bad.sum())} non-finite entries in "
                    f"{describe(value)}", likely=likely, where=where, diagnoses=diagnoses)

    def close(
        self,
        actual: torch.Tensor,
        expected: torch.Tensor,
        check: str,
        *,
        likely: str | None = None,
        mistakes: Mapping[str, torch.Tensor] | None = None,
        atol: float = 1e-5,
        rtol: float = 1e-4,
        dims: Sequence[str] | None = None,
        diagnoses: Mapping[str, Any] | None = None,
    ) -> None:
        """Compare with a tolerance (never ``==`` on floats).

        ``mistakes`` maps a description of a known mistake to the output that mistake would
        produce; when the actual output matches one of them (nan where it has nan), that
        description becomes the "likely mistake" of the message. ``likely`` is named only
        when this comparison cannot fail for another reason (e.g. "x is left unchanged").
        ``diagnoses`` (as for :meth:`expect`) name mistakes recognised by a property of the
        result rather than by its exact value. Otherwise the message says where the two
        differ (``dims`` names the dimensions).
        """
        actual = torch.as_tensor(actual).detach()
        expected = torch.as_tensor(expected).detach().to(actual.device)
        if actual.shape != expected.shape:
            self.shape(actual, tuple(expected.shape), check)
        ok = _allclose(actual.double(), expected.double(), atol=atol, rtol=rtol)
        if not ok:
            for description, wrong in (mistakes or {}).items():
                wrong = torch.as_tensor(wrong).detach().to(actual.device)
                if wrong.shape == actual.shape and _allclose(
                        actual.double(), wrong.double(), atol=atol, rtol=rtol, equal_nan=True):
                    likely = description
                    break
            else:
                for description, signature in (diagnoses or {}).items():
                    if signature() if callable(signature) else signature:
                        likely = description
                        break
            # The previews start just before the first difference, when it lies beyond them.
            bad = ~_isclose(actual.double(), expected.double(), atol=atol, rtol=rtol)
            first = int(bad.flatten().nonzero()[0]) if bad.any() else 0
            start = first - 1 if first >= 6 else 0
            self.fail(check, expected=describe(expected, start=start),
                      got=describe(actual, start=start), likely=likely,
                      where=where_different(actual, expected, atol=atol, rtol=rtol, dims=dims))
        self._passed_one()

    def passed(self) -> None:
        print(f"✅ {self.exercise}: all {self.n_passed} checks passed.")


COPIED_TO_CPU = ("an input was moved to the CPU (`.cpu()`, `.numpy()`, `.to(\"cpu\")`): on a GPU "
                 "everything after that line computes on the CPU and the result comes back "
                 "there; leave the inputs where they are and compute with torch on their device")


def _copy_call(name: str) -> str:
    """How a student wrote the method that copied a tensor to the CPU: "`.cpu()`"..."""
    return {"__array__": "`np.asarray(...)` (NumPy)", "to": '`.to("cpu")`',
            "as_tensor": '`torch.as_tensor(..., device="cpu")`'}.get(name, f"`.{name}()`")


def _mapped(value: Any, convert: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``convert`` applied to every tensor in it (tuples, lists, dicts too)."""
    if isinstance(value, torch.Tensor):
        return convert(value)
    if isinstance(value, tuple | list):
        return type(value)(_mapped(v, convert) for v in value)
    if isinstance(value, dict):
        return {k: _mapped(v, convert) for k, v in value.items()}
    return value


def _parameter_names(fn: Callable[..., Any], exercise: str) -> list[str]:
    """The names of ``fn``'s positional parameters, from its signature or, for the grader's
    stand-ins, from the exercise's declaration."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        parameters = list(inspect.signature(target).parameters.values())
        names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY,
                                                           p.POSITIONAL_OR_KEYWORD)]
        if names or not any(p.kind == p.VAR_POSITIONAL for p in parameters):
            return names
    except (TypeError, ValueError):
        pass
    declared = syllabus.exercise(exercise)
    if declared is None:
        return []
    method = getattr(fn, "__name__", None)  # a method of the student's module, by its name
    if method in declared.methods:
        signature = declared.methods[method]
    elif isinstance(fn, torch.nn.Module):
        signature = declared.methods.get("forward", "")
    else:
        signature = declared.signature
    return [p.split("=")[0].strip() for p in signature.split(",") if p.strip()]


def _argument_name(fn: Callable[..., Any], path: str, exercise: str) -> str:
    """"args[1][0]" -> "q_1[0]" where the name of argument 1 is known."""
    match = re.fullmatch(r"args\[(\d+)\](.*)", path)
    if not match:
        return path
    names = _parameter_names(fn, exercise)
    index = int(match.group(1))
    return (names[index] if index < len(names) else f"argument {index + 1}") + match.group(2)

