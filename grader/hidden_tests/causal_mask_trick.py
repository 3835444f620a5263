"""Hidden tests for tutorial 06 (the causal-mask trick).

Every input is drawn from :func:`fresh_generator`; references are computed here, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.causal_mask_trick import (
    ALL_CHANNELS,
    DIVIDED_BY_SMALL_T,
    FINITE_FILL,
    INVERTED_MASK,
    MASK_ADDS_AXIS,
    NO_KEEPDIM,
    RANDOM_OUTPUT,
    RUNNING_MEAN_CAUSES,
    SKIPPED_ROW_0,
    SOFTMAX_NO_DIM,
    SQUEEZED_HEAD,
    WEIGHTS_CAUSES,
    check_batch_axis,
    check_causality,
    check_gradients,
    check_init,
    check_length,
    check_members,
    close_head,
    falling_scores,
    far_scores,
    future_leak,
    future_mass,
    head_reference,
    large_mistakes,
    large_scores,
    random_output,
    shape_diagnoses,
    value_mistakes,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

TensorFn = Callable[[torch.Tensor], torch.Tensor]


# ---- reference implementations (grader side only) -------------------------------------------

def _running_mean(x: torch.Tensor) -> torch.Tensor:
    counts = torch.arange(1, x.shape[1] + 1, dtype=torch.float64).view(1, -1, 1)
    return x.double().cumsum(dim=1) / counts


def _masked_softmax(scores: torch.Tensor, allowed: torch.Tensor, dim: int = -1,
                    fill: float = float("-inf")) -> torch.Tensor:
    return torch.softmax(scores.double().masked_fill(~allowed, fill), dim=dim)


def _causal(T: int) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool).tril()


# ---- running means --------------------------------------------------------------------------

def _running_mean_mistakes(x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.double()
    B, T, C = x.shape
    counts = torch.arange(1, T + 1, dtype=torch.float64).view(1, -1, 1)
    future_counts = torch.arange(T, 0, -1, dtype=torch.float64).view(1, -1, 1)
    lower = torch.ones(T, T, dtype=torch.float64).tril()
    return {
        "the running sum was divided by T instead of t + 1 (the number of rows averaged)":
            x.cumsum(dim=1) / T,
        "running sums, not means: divide row t by t + 1":
            x.cumsum(dim=1),
        "the mask is on the wrong triangle: row t averages the future rows t..T-1":
            x.flip(1).cumsum(dim=1).flip(1) / future_counts,
        "the wrong triangle, divided by t + 1: row t sums the future rows t..T-1":
            x.flip(1).cumsum(dim=1).flip(1) / counts,
        "every row is the mean of the whole sequence (no causal mask)":
            x.mean(dim=1, keepdim=True).expand(B, T, C),
        "the running mean runs over the channels (last dim) instead of time (dim=1)":
            x.cumsum(dim=-1) / torch.arange(1, C + 1, dtype=torch.float64),
        "the normalised lower-triangular matrix was transposed (W.T @ x instead of W @ x)":
            (lower / lower.sum(dim=1, keepdim=True)).T @ x,
        "the lower-triangular matrix was normalised over its columns instead of its rows":
            (lower / lower.sum(dim=0, keepdim=True)) @ x,
        "row t averages the rows before t, not up to and including t (x[b, :t] stops before "
        "t; row 0 is then the mean of nothing, nan)":
            torch.cat([torch.full_like(x[:, :1], float("nan")),
                       (x.cumsum(dim=1) / counts)[:, :-1]], dim=1),
        "token 0 is left out of every average (a slice that starts at 1)":
            torch.cat([torch.full_like(x[:, :1], float("nan")),
                       x[:, 1:].cumsum(dim=1) / counts[:, :-1]], dim=1),
        NO_KEEPDIM: (lower / lower.sum(dim=1)) @ x,
        ALL_CHANNELS: (x.cumsum(dim=1) / counts).mean(dim=-1, keepdim=True).expand(B, T, C),
    }


def _divided_by_t(x: torch.Tensor, out: torch.Tensor) -> bool:
    """Rows 1..T-1 are the running sums divided by t (row 0 is x_0/0 or, clamped, x_0)."""
    if out.shape != x.shape or x.shape[1] < 3:
        return False
    t = torch.arange(1, x.shape[1], dtype=torch.float64).view(1, -1, 1)
    return bool(torch.allclose(out[:, 1:].double(), x.double().cumsum(dim=1)[:, 1:] / t,
                               atol=1e-5, rtol=1e-4))


def _skipped_row_0(x: torch.Tensor, out: torch.Tensor) -> bool:
    """Rows 1..T-1 are right and row 0 is not (it kept whatever the new tensor held)."""
    if out.shape != x.shape or x.shape[1] < 2:
        return False
    right = _running_mean(x)
    return not bool(torch.allclose(out[:, 0].double(), right[:, 0], atol=1e-5, rtol=1e-4,
                                   equal_nan=True)) and bool(
        torch.allclose(out[:, 1:].double(), right[:, 1:], atol=1e-5, rtol=1e-4))


def _grade_running_mean(name: str, running_mean: TensorFn, *, matmul: bool) -> None:
    check = HiddenCheck(name)
    check.error_causes = RUNNING_MEAN_CAUSES
    generator = fresh_generator(606)

    def size(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=generator))

    # a nonzero mean: sums ≠ means; sizes all different, so no axis can stand for another
    shapes = [(3, 7, 5), (1, size(6, 12), 3), (2, 4, 6), (size(4, 6), size(8, 11), 2)]
    check.clause("shape")
    cases = []
    for shape in shapes:
        x = torch.randn(*shape, generator=generator) + 1.0
        out = check.tensor(check.call(running_mean, x), f"{name}(x) for x of shape {shape}")
        got = tuple(out.shape)
        check.expect(got == shape, f"{name}(x) for x of shape {shape} has the same shape",
                     expected=f"shape {shape}", got=f"shape {got}",
                     diagnoses=shape_diagnoses(x, out))
        cases.append((x, out))

    check.clause("values")
    for x, out in cases:
        check.close(out, _running_mean(x), f"running mean for x of shape {tuple(x.shape)}",
                    mistakes=_running_mean_mistakes(x), dims=("sequence", "position", "channel"),
                    diagnoses={DIVIDED_BY_SMALL_T: lambda x=x, out=out: _divided_by_t(x, out),
                               SKIPPED_ROW_0: lambda x=x, out=out: _skipped_row_0(x, out)})
    single = torch.randn(2, 1, 4, generator=generator)
    check.close(check.call(running_mean, single), single,
                "a sequence of one token is its own running mean")

    x = torch.randn(2, 5, 3, generator=generator)
    check.clause("dtype")
    check.dtype_follows(running_mean, x, what=f"{name}(x)")
    check.clause("device")
    check.device_follows(running_mean, x, what=f"{name}(x)")
    check.passed()


@hidden_test
def grade_running_mean_loop(running_mean_loop: TensorFn) -> None:
    _grade_running_mean("running_mean_loop", running_mean_loop, matmul=False)


@hidden_test
def grade_running_mean_matmul(running_mean_matmul: TensorFn) -> None:
    _grade_running_mean("running_mean_matmul", running_mean_matmul, matmul=True)


# ---- causal weights -------------------------------------------------------------------------

def _weight_mistakes(scores: torch.Tensor) -> dict[str, torch.Tensor]:
    T = scores.shape[-1]
    causal = _causal(T)
    s = scores.double()
    mistakes = {
        "the mask is on the wrong triangle: queries look at the future, not the past":
            _masked_softmax(s, causal.T),
        "the future was masked with 0 instead of -inf (e^0 = 1 still gives it weight)":
            _masked_softmax(s, causal, fill=0.0),
        "the softmax was taken without any mask":
            torch.softmax(s, dim=-1),
        "the mask was applied after the softmax (future zeroed, rows no longer sum to 1)":
            torch.softmax(s, dim=-1) * causal,
        "the diagonal was masked too: a token must be allowed to read itself":
            _masked_softmax(s, causal.tril(-1), fill=-1e9),
        "the scores were scaled inside causal_attention_weights; they come in ready to use":
            _masked_softmax(s / math.sqrt(T), causal),
        "the masked scores were returned without the softmax":
            s.masked_fill(~causal, float("-inf")),
        "the exponentials were not normalised (divide by their sum over the keys)":
            torch.exp(s).masked_fill(~causal, 0.0),
    }
    mistakes["the softmax was taken over the queries (dim=-2, which is dim=1 of a (B, T, T) "
             "tensor) instead of the keys (dim=-1)"] = _masked_softmax(s, causal, dim=-2)
    mistakes[INVERTED_MASK] = _masked_softmax(s, ~causal)
    implicit = 0 if s.dim() in (0, 1, 3) else 1  # what softmax does without dim=
    if implicit != s.dim() - 1:
        mistakes[SOFTMAX_NO_DIM] = _masked_softmax(s, causal, dim=implicit)
    return mistakes


@hidden_test
def grade_causal_attention_weights(causal_attention_weights: TensorFn) -> None:
    check = HiddenCheck("causal_attention_weights")
    check.error_causes = WEIGHTS_CAUSES
    generator = fresh_generator(616)
    T = int(torch.randint(5, 9, (), generator=generator))
    shapes = ((4, 7, 7), (2, 3, 5, 5), (T, T), (2, 1, 1))
    check.clause("shape")
    cases = []
    for shape in shapes:
        scores = 2.0 * torch.randn(*shape, generator=generator)
        w = check.tensor(check.call(causal_attention_weights, scores),
                         f"causal_attention_weights(scores of shape {shape})")
        got = tuple(w.shape)
        check.expect(got == shape, f"the weights for scores of shape {shape} have that shape",
                     expected=f"shape {shape}", got=f"shape {got}",
                     diagnoses={MASK_ADDS_AXIS: got == (1, *shape)})
        cases.append((scores, w))

    check.clause("values")
    for scores, w in cases:
        shape = tuple(scores.shape)
        nan_rows = torch.isnan(w).reshape(-1, shape[-1], shape[-1]).any(-1).any(0)
        wrong = _weight_mistakes(scores)

        def made(mistake: str, w: torch.Tensor = w, wrong: dict = wrong) -> bool:
            return mistake in wrong and w.shape == wrong[mistake].shape and bool(
                torch.allclose(w.double(), wrong[mistake], atol=1e-5, equal_nan=True))

        check.expect(not bool(nan_rows.any()), f"weights for scores of shape {shape} contain no "
                     "nan", expected="no nan",
                     got=f"nan in the rows {nan_rows.nonzero().flatten().tolist()}",
                     diagnoses={"the diagonal was masked too: a token may read itself, so row 0 "
                                "has nothing left and becomes nan":
                                bool(nan_rows[0]) and not bool(nan_rows[1:].any()),
                                INVERTED_MASK: lambda made=made: made(INVERTED_MASK),
                                SOFTMAX_NO_DIM: lambda made=made: made(SOFTMAX_NO_DIM)})
        check.close(w, _masked_softmax(scores, _causal(shape[-1])),
                    f"causal weights for scores of shape {shape}",
                    mistakes=_weight_mistakes(scores),
                    dims=("batch",) * (len(shape) - 2) + ("query", "key"))

    future_leak(check, causal_attention_weights, 1.5 * torch.randn(3, T, T, generator=generator))

    check.clause("large")
    for make, what in ((large_scores, "scores in the hundreds"),
                       (falling_scores, "allowed scores hundreds below the future ones"),
                       (far_scores, "allowed scores about 1e38 below the future ones")):
        big = make(generator, B=3, T=int(torch.randint(4, 7, (), generator=generator)))
        w = check.tensor(check.call(causal_attention_weights, big),
                         f"causal_attention_weights({what})")
        check.close(w, _masked_softmax(big, _causal(big.shape[-1])), f"weights for {what}",
                    mistakes=large_mistakes(big), dims=("batch", "query", "key"),
                    diagnoses={FINITE_FILL: future_mass(w)})

    scores = torch.randn(2, 5, 5, generator=generator)
    check.clause("dtype")
    check.dtype_follows(causal_attention_weights, scores, what="causal_attention_weights")
    check.clause("device")
    check.device_follows(causal_attention_weights, scores, what="causal_attention_weights")
    check.passed()


# ---- the head -------------------------------------------------------------------------------

def _build_head(check: HiddenCheck, head_class: type[nn.Module], n_embd: int, head_size: int,
                generator: torch.Generator) -> nn.Module:
    """The student's head with weights drawn here (its own initialisation is graded apart)."""
    head = check.call(head_class, n_embd, head_size)
    check.expect(isinstance(head, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=type(head).__name__)
    check_members(check, head, n_embd, head_size)
    with torch.no_grad():
        for name in ("query", "key", "value"):
            getattr(head, name).weight.copy_(0.6 * torch.randn(head_size, n_embd,
                                                               generator=generator))
    return head


@hidden_test
def grade_CausalSelfAttentionHead(head_class: type[nn.Module]) -> None:  # noqa: N802
    check = HiddenCheck("CausalSelfAttentionHead")
    generator = fresh_generator(626)

    def size(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=generator))

    check.clause("members")
    n = size(5, 9)
    square = _build_head(check, head_class, n, n, generator)
    wide = _build_head(check, head_class, 12, 3, generator)

    check.clause("init")
    first = size(0, 2**30)
    check_init(check, head_class, seeds=(first, first + size(1, 1000)),
               n_embd=size(40, 60), head_size=size(12, 20))

    check.clause("causal")
    check_batch_axis(check, square, torch.randn(n, n, n, generator=generator))
    check_causality(check, square, torch.randn(2, n, n, generator=generator),
                    split=size(2, n - 2))

    check.clause("values")
    # T ≠ n: a scale by sqrt(T) instead of sqrt(head_size) shows
    for shape in ((size(2, 4), size(4, n - 1), n), (1, size(4, n - 1), n)):
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            out = check.tensor(check.call(square, x), f"head(x) for x of shape {tuple(x.shape)}")
        check.shape(out, (*x.shape[:2], n), f"head(x) for x of shape {tuple(x.shape)}",
                    likely=SQUEEZED_HEAD if shape[0] == 1 and tuple(out.shape) == shape[1:]
                    else None)
        close_head(check, out, head_reference(square, x),
                   f"head output for n_embd = head_size = {n}",
                   mistakes=value_mistakes(square, x, n, n), atol=1e-4,
                   diagnoses={RANDOM_OUTPUT: random_output(check, square, x)})

    check.clause("length")
    # the last one is longer than the usual block sizes, 256 to 1024
    for T in (1, size(17, 24), size(1025, 1100)):
        check_length(check, square, torch.randn(2, T, n, generator=generator), atol=1e-4)

    check.clause("arguments")
    tall = _build_head(check, head_class, size(4, 7), size(9, 16), generator)
    for head in (wide, tall):
        n_embd, head_size = head.key.in_features, head.key.out_features
        x = torch.randn(2, size(4, 8), n_embd, generator=generator)
        with torch.no_grad():
            out = check.tensor(check.call(head, x), f"head(x) with n_embd={n_embd}, "
                               f"head_size={head_size}")
        check.shape(out, (*x.shape[:2], head_size), f"head(x) with n_embd={n_embd}, "
                    f"head_size={head_size}")
        close_head(check, out, head_reference(head, x), f"head output for n_embd={n_embd}, "
                   f"head_size={head_size}", mistakes=value_mistakes(head, x, n_embd, head_size),
                   atol=1e-4)

    check.clause("device")
    on_meta = _build_head(check, head_class, n, n, generator).to("meta")
    check.device_follows(on_meta, torch.randn(2, size(3, 7), n, generator=generator),
                         what="head(x)")

    check.clause("gradients")
    check_gradients(check, wide, torch.randn(2, size(4, 7), 12, generator=generator))

    check.clause("randomness")
    check.no_reseed(head_class, n, size(2, 6), what=f"CausalSelfAttentionHead({n}, ...)")
    check.no_reseed(square, torch.randn(2, size(3, 7), n, generator=generator), what="head(x)")
    check.passed()
