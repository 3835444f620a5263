"""Self-checks for tutorial 06 (the causal-mask trick).

Each check runs under a clause of its exercise's contract (``helpers.syllabus``); a likely
mistake is named only when the result has that mistake's signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.framework import SelfCheck, describe

TensorFn = Callable[[torch.Tensor], torch.Tensor]


# ---- running means ------------------------------------------------------------------------

AVERAGED_AWAY = ("the time axis was averaged away: there must be one running mean per "
                 "position, not one mean per sequence")
STACKED_FIRST = ("the rows were stacked along the first axis, giving (T, B, C): stack the "
                 "positions along dim=1")
SQUEEZED = ("with one sequence (B = 1) the batch axis is gone: .squeeze() removed it; keep "
            "every axis of x")
DIVIDED_BY_T = "the running sum was divided by T instead of by t + 1 (the number of rows averaged)"
DIVIDED_BY_SMALL_T = ("row t was divided by t, one less than the number of rows it adds up: "
                      "rows 0..t are t + 1 rows (positions count from 0)")
RUNNING_SUMS = "running sums, not means: divide row t by t + 1"
SKIPPED_ROW_0 = ("row 0 was never filled: the loop over positions skips t = 0 (it keeps the "
                 "zeros of torch.zeros_like, or whatever torch.empty_like found in memory)")
NO_KEEPDIM = ("W.sum(1) without keepdim=True: the (T,) vector of row sums divides the columns "
              "of W, not its rows; keep it a (T, 1) column")
ALL_CHANNELS = (".mean() without dim averaged the channels too: every channel of a row holds "
                "the same number; average over the positions only")
NOT_A_LOOP = ("no loop over the positions: this exercise asks for the slow, direct version "
              "(Exercise 2 is the fast one)")
# Crashes of a running mean whose message and line identify the mistake (see SelfCheck.error_causes)
RUNNING_MEAN_CAUSES = [
    (r"expanded size of the tensor", r"mean\(\s*(dim\s*=\s*)?0",
     "`.mean(dim=0)` averaged the first axis of the slice: for x[:, :t + 1], of shape "
     "(B, t + 1, C), that is the batch axis, not the positions; average over dim=1 there "
     "(dim=0 is right for x[b, :t + 1])"),
    (r"cannot be multiplied|Expected size for first two dimensions|must match the size",
     r"\bx\s*@|matmul\(\s*x\b",
     "the product is the wrong way round: W @ x puts the (T, T) weights on the left, where "
     "they mix the positions (x @ W would multiply the last axis instead)"),
    (r"cannot be multiplied|Expected size for first two dimensions|must match the size",
     r"@\s*x\b|matmul\(\s*\w+\s*,\s*x\b",
     "W does not fit this x: it must be (T, T) with T = x.shape[1], the number of positions "
     "(not x.shape[0], which is B, nor x.shape[-1], which is C), made inside the function for "
     "each x (a W made once, outside, fits one length only)"),
]
MATRIX_PRODUCTS = ("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "einsum", "tensordot")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=1e-5,
                                                      rtol=1e-4, equal_nan=True))


def running_mean_signatures(x: torch.Tensor, out: torch.Tensor
                            ) -> dict[str, Callable[[], bool]]:
    """Mistake -> a test of ``out`` against that mistake's signature (a few rows that only
    this mistake produces), built from the rows of ``x`` without computing a running mean."""
    T = x.shape[1]
    mean = x.mean(dim=1)
    total = [x[:, : t + 1].sum(dim=1) for t in range(T)]
    nan = torch.full_like(x[:, 0], float("nan"))
    by_position = sum(x[:, s] / (s + 1) for s in range(T))

    def rows(*pairs: tuple[int, torch.Tensor]) -> Callable[[], bool]:
        return lambda: out.shape == x.shape and all(_same(out[:, t], want) for t, want in pairs)

    return {
        SKIPPED_ROW_0: lambda: out.shape == x.shape and not _same(out[:, 0], x[:, 0])
            and all(_same(out[:, t], total[t] / (t + 1)) for t in range(1, T)),
        "row t averages the rows before t, not up to and including t (x[b, :t] stops before "
        "t; row 0 is then the mean of nothing, nan)": rows((0, nan), (1, x[:, 0])),
        "token 0 is left out of every average (a slice that starts at 1)":
            rows((0, nan), (1, x[:, 1]), (T - 1, x[:, 1:].mean(dim=1))),
        "the running mean runs over the channels (the last dimension) instead of over time":
            lambda: out.shape == x.shape and _same(out[..., 0], x[..., 0])
            and _same(out[..., -1], x.mean(dim=-1)),
        "every row is the mean of the whole sequence: the future is not masked":
            rows((0, mean), (T - 1, mean)),
        DIVIDED_BY_T: rows((0, x[:, 0] / T), (1, total[1] / T)),
        DIVIDED_BY_SMALL_T: rows((2, total[2] / 2), (T - 1, total[T - 1] / (T - 1))),
        "the lower triangle was normalised by its column sums instead of its row sums: each row "
        "of W must sum to 1": rows((0, x[:, 0] / T), (1, x[:, 0] / T + x[:, 1] / (T - 1))),
        RUNNING_SUMS: rows((0, total[0]), (1, total[1]), (2, total[2])),
        "the triangle is the wrong way round: row t averages the future rows t..T-1":
            rows((0, mean), (T - 1, x[:, -1])),
        "the weight matrix was transposed (W.T @ x instead of W @ x)":
            rows((T - 1, x[:, -1] / T), (0, by_position)),
        NO_KEEPDIM: rows((0, x[:, 0]), (T - 1, by_position)),
        ALL_CHANNELS: rows((0, x[:, 0].mean(dim=-1, keepdim=True).expand_as(x[:, 0])),
                           (T - 1, x.mean(dim=(1, 2)).unsqueeze(-1).expand_as(x[:, 0]))),
    }


def shape_diagnoses(x: torch.Tensor, out: torch.Tensor) -> dict[str, bool]:
    B, T, C = x.shape
    got = tuple(out.shape)
    return {AVERAGED_AWAY: got == (B, C),
            STACKED_FIRST: got == (T, B, C) and B != T,
            SQUEEZED: B == 1 and got == (T, C)}


def _check_running_mean(name: str, running_mean: TensorFn, *, matmul: bool) -> None:
    """Properties that pin down a running mean, without computing one the same way."""
    check = SelfCheck(name)
    check.error_causes = RUNNING_MEAN_CAUSES
    generator = torch.Generator().manual_seed(6)
    B, T, C = 3, 7, 4
    x = torch.randn(B, T, C, generator=generator) + 0.5  # a nonzero mean: sums ≠ means

    check.clause("shape")
    outputs = {}
    for shape in ((B, T, C), (1, 5, 3)):
        data = x if shape == (B, T, C) else torch.randn(*shape, generator=generator)
        out = check.tensor(check.call(running_mean, data), f"{name}(x) for x of shape {shape}")
        got = tuple(out.shape)
        check.expect(got == shape, f"{name}(x) for x of shape {shape} has the same shape",
                     expected=f"shape {shape}", got=f"shape {got}",
                     diagnoses=shape_diagnoses(data, out))
        outputs[shape] = (data, out)

    check.clause("values")
    out = outputs[B, T, C][1].to(x.dtype)
    signatures = running_mean_signatures(x, out)
    dims = ("sequence", "position", "channel")
    check.close(out[:, 0], x[:, 0], "row 0 equals token 0 (the mean of one token)",
                diagnoses=signatures, dims=("sequence", "channel"))
    check.close(out[:, -1], x.mean(dim=1), "the last row equals the mean of the whole sequence",
                diagnoses=signatures, dims=("sequence", "channel"))
    # (t + 1) * mean_t - t * mean_{t-1} must give back token t.
    t = torch.arange(T, dtype=x.dtype).view(1, T, 1)
    recovered = (t + 1) * out - t * torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
    check.close(recovered, x, "each row is the mean of the rows up to and including it "
                "((t + 1)·row t − t·row t−1 gives back token t)", diagnoses=signatures, dims=dims)
    one, one_out = outputs[1, 5, 3]
    check.close(one_out[:, -1], one.mean(dim=1), "for a batch of one sequence, the last row is "
                "its mean", diagnoses=running_mean_signatures(one, one_out))
    changed = x.clone()
    changed[:, 4:] += 10.0
    out_changed = check.call(running_mean, changed).to(x.dtype)
    check.close(out_changed[:, :4], out[:, :4],
                "changing future tokens does not change earlier running means", dims=dims)
    single = torch.randn(2, 1, 3, generator=generator)
    check.close(check.call(running_mean, single), single,
                "a sequence of one token is its own running mean")

    check.clause("dtype")
    check.dtype_follows(running_mean, x, what=f"{name}(x)")
    check.clause("device")
    check.device_follows(running_mean, x, what=f"{name}(x)")
    check.rule("one_product" if matmul else "loops")
    # the loop's long input differs in T alone: a loop over the sequences does not pass
    seen = [check.call_observed(running_mean, torch.randn(*shape, generator=generator))[1]
            for shape in ((2, 3, 4), (3, 9, 4) if matmul else (2, 9, 4))]
    counts = [sum(s.calls.values()) for s in seen]
    if not matmul:
        check.expect(counts[1] > counts[0], "the number of PyTorch operations grows with T "
                     "(a Python loop over the positions)", expected="more operations for x "
                     "of shape (2, 9, 4) than for (2, 3, 4)",
                     got=f"{counts[1]} operations against {counts[0]}", likely=NOT_A_LOOP)
    else:
        check.expect(counts[0] == counts[1], "the number of PyTorch operations does not grow "
                     "with B and T (no Python loop)", expected="as many operations for x of "
                     "shape (3, 9, 4) as for (2, 3, 4)",
                     got=f"{counts[1]} operations against {counts[0]}",
                     likely="a Python loop over sequences or positions: one product W @ x "
                            "handles them all")
        used = set(seen[1].calls) & set(MATRIX_PRODUCTS)
        check.expect(bool(used), "the running mean is a matrix product W @ x",
                     expected="a product with @ (or torch.matmul, bmm, einsum)",
                     got=f"only {', '.join(sorted(seen[1].calls)[:6]) or 'no torch calls'}",
                     likely="no matrix product: build the (T, T) weight matrix W and return "
                            "W @ x")
    check.passed()


def check_running_mean_loop(running_mean_loop: TensorFn) -> None:
    """A running mean over time: row t = mean of rows 0..t, for every sequence."""
    _check_running_mean("running_mean_loop", running_mean_loop, matmul=False)


def check_running_mean_matmul(running_mean_matmul: TensorFn) -> None:
    """The same properties as the loop version, and one product made on x's dtype and
    device."""
    _check_running_mean("running_mean_matmul", running_mean_matmul, matmul=True)


# ---- causal softmax weights -----------------------------------------------------------------

MASK_ADDS_AXIS = ("the mask has an extra leading axis, (1, T, T), which broadcasting adds to "
                  "scores without a batch axis: build it as (T, T)")
OVERFLOW = ("exp of scores in the hundreds overflows to inf (inf/inf = nan): subtract each "
            "row's maximum first, as torch.softmax does")
FINITE_FILL = ("the future was filled with a finite number (like -100, -1e9 or -1e30) "
               "instead of -inf: its weight is tiny or 0 for ordinary scores, but where the "
               "allowed scores lie below that number the future takes all the weight")
OVERFLOW_TIMES_MASK = ("exp of scores in the hundreds overflows to inf, and inf times the mask's 0 "
                       "is nan: mask the future scores with -inf and use torch.softmax, which "
                       "subtracts each row's maximum first")
INVERTED_MASK = ("the mask is inverted: masked_fill fills where the mask is True, so filling "
                 "where tril(ones) == 1 hides the past and the diagonal and keeps the future "
                 "(the last row, with no future, becomes nan); fill where it is 0")
SOFTMAX_NO_DIM = ("softmax without dim=: PyTorch then picks a dimension itself (dim 0 of a 3-D "
                  "tensor, the batch; dim 1 of a 2-D or 4-D one, with a warning); pass dim=-1, "
                  "the keys")
MASK_SIZE = ("the mask does not fit the scores' last two dimensions: take T from "
             "scores.shape[-1] (the keys), whatever comes before them")
WEIGHTS_CAUSES = [
    (r"must match the size of tensor b|shape of the mask", r"mask|where|tril",
     MASK_SIZE),
]
MAX_WITH_FUTURE = ("the maximum was taken over every key, the future included: when a future "
                   "score is far above the allowed ones, their exponentials underflow to 0 "
                   "(0/0 = nan); mask the future first, then take the softmax")


def large_mistakes(scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unstable causal softmaxes, computed in float32 (where exp(89) is inf)."""
    s = scores.float()
    allowed = torch.ones(s.shape[-1], s.shape[-1], dtype=torch.bool).tril()
    overflowed = torch.exp(s).masked_fill(~allowed, 0.0)
    times_mask = torch.exp(s) * allowed
    shifted = torch.exp(s - s.amax(-1, keepdim=True)) * allowed
    return {OVERFLOW: overflowed / overflowed.sum(-1, keepdim=True),
            OVERFLOW_TIMES_MASK: times_mask / times_mask.sum(-1, keepdim=True),
            MAX_WITH_FUTURE: shifted / shifted.sum(-1, keepdim=True)}


def future_mass(w: torch.Tensor) -> Callable[[], bool]:
    """A diagnosis of a finite fill: the rows that have a future give it most of their
    weight (the allowed scores lie below the fill)."""
    def signature() -> bool:
        T = w.shape[-1]
        if T < 2:
            return False
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        mass = (w.double() * future).sum(-1)[..., :-1]
        return bool((mass > 0.5).all())
    return signature


def row_softmaxes(scores: torch.Tensor, T: int) -> torch.Tensor:
    """Row t: the softmax of the scores of keys 0..t, zeros after (computed row by row)."""
    rows = scores.double().reshape(-1, T, T)
    out = torch.zeros_like(rows)
    for t in range(T):
        out[:, t, : t + 1] = torch.softmax(rows[:, t, : t + 1], dim=-1)
    return out.reshape(scores.shape)


def _causal_signatures(scores: torch.Tensor, w: torch.Tensor) -> dict[str, Callable[[], bool]]:
    """Mistake -> a test of the weights ``w`` against that mistake's result."""
    T = scores.shape[-1]
    lower = torch.ones(T, T, dtype=torch.bool).tril()
    future = ~lower
    rows_nan = ~torch.isfinite(w.reshape(-1, T, T)).all(-1).all(0) if w.shape == scores.shape \
        else None

    def zero_filled() -> bool:
        if w.shape != scores.shape:
            return False
        flat, gone = w.reshape(-1, T, T), future.expand(w.reshape(-1, T, T).shape)
        right = row_softmaxes(scores, T).reshape(-1, T, T)
        for t in range(T - 1):  # the last row has no future
            common = flat[:, t][gone[:, t]].reshape(flat.shape[0], -1)
            kept = flat[:, t, : t + 1]
            if not (bool((common > 1e-6).all()) and _same(common, common[:, :1].expand_as(common))
                    and _same(kept / kept.sum(-1, keepdim=True), right[:, t, : t + 1])):
                return False
        return True

    implicit = 0 if scores.dim() in (0, 1, 3) else 1  # what softmax does without dim=
    return {
        INVERTED_MASK: lambda: _same(w, torch.softmax(scores.masked_fill(lower, float("-inf")),
                                                      dim=-1)),
        SOFTMAX_NO_DIM: lambda: implicit != scores.dim() - 1 and _same(
            w, torch.softmax(scores.masked_fill(future, float("-inf")), dim=implicit)),
        "the softmax came first and the future was zeroed afterwards, so the rows no longer sum "
        "to 1: set the future scores to -inf before the softmax":
            lambda: _same(w, torch.softmax(scores, dim=-1) * lower),
        "the future was set to 0 instead of -inf: e^0 = 1 still gives it weight": zero_filled,
        "no mask at all: the softmax sees every key, the future too":
            lambda: _same(w, torch.softmax(scores, dim=-1)),
        "the mask is on the wrong triangle: queries read the future, not the past":
            lambda: w.shape == scores.shape and bool(w.tril(-1).abs().max() < 1e-6)
            and bool(w.triu(1).abs().max() > 1e-6)
            and bool(torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5)),
        "the diagonal was masked too: a token may read itself, so row 0 has nothing left and "
        "becomes nan": lambda: rows_nan is not None and bool(rows_nan[0])
        and not bool(rows_nan[1:].any()),
        "the softmax runs over the queries (dim=-2; dim=1 of a (B, T, T) tensor), not over the "
        "keys (dim=-1)": lambda: w.shape == scores.shape and bool(
            torch.allclose(w.sum(-2), torch.ones(w.shape[:-2] + (T,)), atol=1e-5)),
        "the exponentials were not normalised: divide them by their sum over the keys":
            lambda: _same(w, torch.exp(scores) * lower),
        "the scores were scaled inside causal_attention_weights; they come in ready to use":
            lambda: _same(w, row_softmaxes(scores / math.sqrt(T), T)),
    }


def large_scores(generator: torch.Generator, B: int = 2, T: int = 5) -> torch.Tensor:
    """Scores in the hundreds, far apart: exp of them overflows in float32, and a future
    score often lies hundreds above the allowed ones."""
    return 150 + 150 * torch.randn(B, T, T, generator=generator)


def falling_scores(generator: torch.Generator, B: int = 2, T: int = 5) -> torch.Tensor:
    """Scores in the hundreds where every allowed score lies about 300 below the future ones:
    a future filled with a finite number like -100 would take all the weight."""
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    return 50 * torch.randn(B, T, T, generator=generator) - 300 * allowed


def far_scores(generator: torch.Generator, B: int = 2, T: int = 5) -> torch.Tensor:
    """Scores of size 1e37 where every allowed score lies about 1e38 below the future ones,
    near float32's lowest number (-3.4e38): a future filled with any finite number down to
    about -1e37 (-1e9, -1e15, -1e30) takes all the weight; only -inf (or the lowest number
    of the dtype) keeps it at 0."""
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    return 1e37 * torch.randn(B, T, T, generator=generator).clamp(-2.0, 2.0) - 1e38 * allowed


def future_leak(check: SelfCheck, weights_fn: TensorFn, scores: torch.Tensor) -> None:
    """The future's weights are exactly 0, not merely small (computed in float64, where
    e^-100 is far from the smallest number there is)."""
    T = scores.shape[-1]
    w = check.tensor(check.call(weights_fn, scores.double()),
                     f"causal_attention_weights(float64 scores of shape {tuple(scores.shape)})")
    future = torch.ones(T, T, dtype=torch.bool).triu(1).expand(scores.shape)
    if w.shape != scores.shape:
        check.shape(w, tuple(scores.shape), "the weights for float64 scores")
    leaked = w.detach().double().masked_select(future).abs().max().item()
    check.expect(leaked == 0.0, "the future gets weight exactly 0, not merely a small one",
                 expected="0.0 wherever the key comes after the query",
                 got=f"weights up to {leaked:.3g} on future keys",
                 diagnoses={FINITE_FILL: 0.0 < leaked < 1e-3})


def check_causal_attention_weights(causal_attention_weights: TensorFn) -> None:
    """Causal weights: zero on the future, a softmax over the past, for any batch shape."""
    check = SelfCheck("causal_attention_weights")
    check.error_causes = WEIGHTS_CAUSES
    generator = torch.Generator().manual_seed(60)
    shapes = ((5, 5), (3, 6, 6), (2, 3, 4, 4))
    cases = []
    check.clause("shape")
    for shape in shapes:
        scores = 1.5 * torch.randn(*shape, generator=generator)
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
        signatures = _causal_signatures(scores, w)
        T = shape[-1]
        dims = ("batch",) * (len(shape) - 2) + ("query", "key")
        check.finite(w, f"weights for scores of shape {shape}", diagnoses=signatures)
        future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        leaked = w.masked_select(future.expand(shape)).abs().max().item()
        check.expect(leaked < 1e-6, "no weight on future positions (above the diagonal)",
                     expected="weights of 0 wherever the key comes after the query",
                     got=f"weights up to {leaked:.3g} on future keys", diagnoses=signatures)
        check.close(w.sum(dim=-1), torch.ones(shape[:-1]),
                    "each query's weights sum to 1 over the keys (last dimension)",
                    diagnoses=signatures, dims=dims[:-1])
        check.close(w, row_softmaxes(scores, T),
                    "row t over the allowed keys 0..t is a softmax of their scores",
                    diagnoses=signatures, dims=dims)
    zeros = check.call(causal_attention_weights, torch.zeros(4, 4))
    uniform = torch.tensor([[1.0, 0, 0, 0], [1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0],
                            [1 / 4, 1 / 4, 1 / 4, 1 / 4]])
    check.close(zeros, uniform, "all-zero scores give the running-mean weights 1/(t+1)",
                dims=("query", "key"))
    future_leak(check, causal_attention_weights, cases[1][0])

    check.clause("large")
    for big, what in ((large_scores(generator), "scores in the hundreds"),
                      (falling_scores(generator), "allowed scores hundreds below the future "
                                                  "ones"),
                      (far_scores(generator), "allowed scores about 1e38 below the future "
                                              "ones")):
        w = check.tensor(check.call(causal_attention_weights, big),
                         f"causal_attention_weights({what})")
        check.close(w, row_softmaxes(big, big.shape[-1]), f"weights for {what}",
                    mistakes=large_mistakes(big), dims=("batch", "query", "key"),
                    diagnoses={FINITE_FILL: future_mass(w)})

    check.clause("dtype")
    check.dtype_follows(causal_attention_weights, cases[1][0], what="causal_attention_weights")
    check.clause("device")
    check.device_follows(causal_attention_weights, cases[1][0], what="causal_attention_weights")
    check.passed()


# ---- a causal head ----------------------------------------------------------------------

SWAPPED_SIZES = ("the sizes of nn.Linear are swapped: nn.Linear(in_features, out_features) is "
                 "nn.Linear(n_embd, head_size)")
FIXED_LENGTH = ("the head works for shorter sequences but not for this T: something made once "
                "(in __init__ or on the first call) has a fixed size, such as a mask of a fixed "
                "block_size sliced [:T, :T]; build the mask in forward, for the T of the input")
NO_MASK = "no causal mask: every token reads the future too"
WRONG_TRIANGLE = "the mask is on the wrong triangle: tokens read the future, not the past"
ZERO_FILL = ("the future scores were set to 0 instead of -inf: e^0 = 1 still gives the future "
             "weight (your causal_attention_weights gets this right)")
QUERY_AXIS = ("the softmax runs over the queries (dim=-2, which is dim=1 of (B, T, T) scores), "
              "not over the keys (dim=-1)")
BATCH_TRANSPOSED = ("k.T of a (B, T, head_size) tensor reverses all three axes, so it moves the "
                    "batch axis too: transpose only the last two axes, k.transpose(-2, -1)")
BATCH_SWAPPED = ("k.transpose(0, 1) of a (B, T, head_size) tensor swaps the batch and time axes, "
                 "so it moves the batch axis: transpose the last two, k.transpose(-2, -1)")
WEIGHTS_ON_X = "the weights were applied to x instead of the values v = value(x)"
RANDOM_OUTPUT = ("the output changes from one call to the next: dropout (or another random "
                 "step) in forward; the head's formula has none")
RESEEDED = ("the starting weights do not depend on the global seed: torch.manual_seed (or a "
            "generator of its own) inside __init__ gives every head the same start")
REINITIALISED = ("the weights were re-initialised (nn.init.xavier_uniform_, normal_(std=0.02), "
                 "...): keep the start nn.Linear gives them by itself")
SQUEEZED_HEAD = ("with one sequence (B = 1) the batch axis is gone: .squeeze() removed it; keep "
                 "every axis (B, T, head_size)")
MASK_BUFFER = ("a mask made once in __init__ (register_buffer or an attribute) has a fixed "
               "size, such as block_size = 1024, so a longer sequence fails: build the mask in "
               "forward, for the T of the input")
ZEROED = ("the weights were set to zeros (nn.init.zeros_): with zero queries and keys every "
          "score is 0, every row of weights a plain running mean, and no gradient reaches them")
DETACHED = ("a projection was cut off from the gradient (.detach(), torch.no_grad() or "
            ".data): training could never change its weights")
SCALE_BY_T = ("the scores were divided by sqrt(T), the sequence length; the scale is "
              "1/sqrt(head_size), the length of each query and key")
VALUES_FROM_KEY = "the values were made by the key layer (v = self.key(x)): use self.value"
SCALE_AFTER_SOFTMAX = ("the weights were scaled after the softmax; the scale belongs to the "
                       "scores, before the softmax")
PRECEDENCE = ("1/d**1/2 is (1/d)/2, not 1/sqrt(d): ** binds before /; write d ** -0.5 or "
              "1 / math.sqrt(d)")
REFUSED_LENGTH = "head(x) runs for a sequence of length"
NAMES = ("key", "query", "value")


def _make_head(check: SelfCheck, head_class: type[nn.Module], n_embd: int,
               head_size: int, seed: int) -> nn.Module:
    head = check.call_seeded(seed, head_class, n_embd, head_size)
    check.expect(isinstance(head, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=describe(head))
    return head


def check_members(check: SelfCheck, head: nn.Module, n_embd: int, head_size: int) -> None:
    """key, query and value: nn.Linear(n_embd, head_size, bias=False)."""
    for name in NAMES:
        layer = getattr(head, name, None)
        check.expect(isinstance(layer, nn.Linear), f"member `{name}` is an nn.Linear",
                     expected=f"self.{name} = nn.Linear(n_embd, head_size, bias=False)",
                     got=describe(layer))
        check.expect(layer.in_features == n_embd and layer.out_features == head_size,
                     f"`{name}` maps n_embd={n_embd} features to head_size={head_size}",
                     expected=f"nn.Linear({n_embd}, {head_size})",
                     got=f"nn.Linear({layer.in_features}, {layer.out_features})",
                     diagnoses={SWAPPED_SIZES: layer.in_features == head_size
                                and layer.out_features == n_embd})
        check.expect(layer.bias is None, f"`{name}` has no bias",
                     expected="bias=False", got="a bias vector")
    n_params = sum(p.numel() for p in head.parameters())
    check.expect(n_params == 3 * n_embd * head_size, "the head has exactly the three projections",
                 expected=f"{3 * n_embd * head_size} parameters", got=f"{n_params} parameters")


def check_init(check: SelfCheck, head_class: type[nn.Module], seeds: tuple[int, int],
               n_embd: int = 48, head_size: int = 16) -> None:
    """nn.Linear's own start (uniform in ±1/sqrt(n_embd)), drawn from the global generator:
    the same seed gives the same head, two seeds two different heads."""
    first, again, other = (check.call_seeded(seed, head_class, n_embd, head_size)
                           for seed in (seeds[0], seeds[0], seeds[1]))

    def weights(head: nn.Module) -> torch.Tensor:
        return torch.cat([getattr(head, name).weight.detach().double().flatten()
                          for name in NAMES])

    # the start's statistics first: a zeroed or re-initialised start is named as such, not
    # as a reseed (zero weights are also the same for every seed)
    bound = 1 / math.sqrt(n_embd)
    for name in NAMES:
        w = getattr(other, name).weight.detach().double()
        largest, std = w.abs().max().item(), w.std().item()
        check.expect(largest <= bound + 1e-6 and std > 0.75 * bound / math.sqrt(3),
                     f"`{name}` starts as nn.Linear makes it (uniform in ±1/sqrt(n_embd))",
                     expected=f"weights spread evenly over ±{bound:.3f} (std about "
                              f"{bound / math.sqrt(3):.3f})",
                     got=f"largest |weight| {largest:.3g}, std {std:.3g}",
                     diagnoses={ZEROED: largest == 0.0, REINITIALISED: largest > 0.0})
    check.expect(torch.equal(weights(first), weights(again)), "the same seed gives the same "
                 "starting weights (they are drawn from PyTorch's global generator)",
                 expected="equal weights for torch.manual_seed(s) before each",
                 got="different weights")
    check.expect(not torch.equal(weights(first), weights(other)), "two seeds give two "
                 "different heads", expected="different weights for two seeds",
                 got="the same weights", likely=RESEEDED)


def head_reference(head: nn.Module, x: torch.Tensor, scale: float | None = None,
                   causal: bool = True, swap: bool = False, upper: bool = False,
                   values_from_x: bool = False, fill: float = float("-inf"), dim: int = -1,
                   keys: str = "right", values: str = "value") -> torch.Tensor:
    """The head's output computed from its own projections (float64), right or wrong.

    ``keys``: "right" transposes the last two axes of k; "T" reverses all of them (k.T),
    "01" swaps the first two (k.transpose(0, 1)); both only run for x of shape (n, n, n)."""
    with torch.no_grad():
        q, k, v = (getattr(head, n)(x).double() for n in ("query", "key", values))
    if values_from_x:
        v = x.double()
    if swap:
        q, k = k, q
    T = x.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k_t = {"right": k.transpose(-2, -1), "T": k.permute(2, 1, 0),
           "01": k.transpose(0, 1)}[keys]
    scores = q @ k_t * scale
    if causal:
        allowed = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~(allowed.T if upper else allowed), fill)
    return torch.softmax(scores, dim=dim) @ v


def check_batch_axis(check: SelfCheck, head: nn.Module, x: torch.Tensor) -> None:
    """For a square ``x`` (n, n, n) and a head from n to n features, an answer that transposes
    the wrong axes of k still runs: its output then names the mistake."""
    with torch.no_grad():
        out = check.tensor(check.call(head, x), f"head(x) for x of shape {tuple(x.shape)}")
    for keys, message in (("T", BATCH_TRANSPOSED), ("01", BATCH_SWAPPED)):
        wrong = out.shape == x.shape and _same(out, head_reference(head, x, keys=keys))
        check.expect(not wrong, "k is transposed over its last two axes only (position and "
                     "channel), never over the batch axis", expected="k.transpose(-2, -1)",
                     got=f"{'k.T' if keys == 'T' else 'k.transpose(0, 1)'} (the output matches "
                     "it exactly)", likely=message)


def check_causality(check: SelfCheck, head: nn.Module, x: torch.Tensor, split: int) -> None:
    """Changing the tokens from ``split`` on leaves the outputs before it as they were."""
    # both calls under one seed: a head that draws random numbers (dropout) is then told
    # so by the values check, not blamed for reading the future
    with torch.no_grad():
        out = check.tensor(check.call_seeded(17, head, x),
                           f"head(x) for x of shape {tuple(x.shape)}")
        changed = x.clone()
        changed[:, split:] += 3.0
        out_changed = check.tensor(check.call_seeded(17, head, changed),
                                   "head(x) with later tokens changed")
    if out.shape != out_changed.shape or out.shape[:2] != x.shape[:2]:
        check.shape(out, tuple(x.shape[:2]) + (out.shape[-1],), "head(x)")
    check.close(out_changed[:, :split], out[:, :split],
                f"changing the tokens from position {split} on does not change the outputs "
                "before it", dims=("batch", "position", "channel"), diagnoses={
                    NO_MASK: lambda: _same(out, head_reference(head, x, causal=False)),
                    WRONG_TRIANGLE: lambda: _same(out, head_reference(head, x, upper=True)),
                    ZERO_FILL: lambda: _same(out, head_reference(head, x, fill=0.0)),
                    QUERY_AXIS: lambda: _same(out, head_reference(head, x, dim=-2)),
                })


def value_mistakes(head: nn.Module, x: torch.Tensor, n_embd: int,
                   head_size: int) -> dict[str, torch.Tensor]:
    """What the usual wrong heads return for ``x``, from the head's own projections."""
    mistakes = {
        "the scores were not scaled: divide q @ k^T by sqrt(head_size)":
            head_reference(head, x, scale=1.0),
        "the scores were divided by head_size; divide by its square root":
            head_reference(head, x, scale=1 / head_size),
        "the scores were multiplied by sqrt(head_size) instead of divided by it":
            head_reference(head, x, scale=math.sqrt(head_size)),
        "queries and keys are swapped (scores = k @ q^T)": head_reference(head, x, swap=True),
    }
    if n_embd == head_size:  # else the shapes differ
        mistakes[WEIGHTS_ON_X] = head_reference(head, x, values_from_x=True)
    if n_embd != head_size:  # else these are the right answer
        mistakes["the scores were scaled by 1/sqrt(n_embd) (the embedding size C); the scale "
                 "is 1/sqrt(head_size)"] = head_reference(head, x, scale=n_embd ** -0.5)
    if x.shape[1] != head_size:
        mistakes[SCALE_BY_T] = head_reference(head, x, scale=x.shape[1] ** -0.5)
    mistakes[PRECEDENCE] = head_reference(head, x, scale=1 / (2 * head_size))
    mistakes[SCALE_AFTER_SOFTMAX] = head_reference(head, x, scale=1.0) * head_size ** -0.5
    mistakes[VALUES_FROM_KEY] = head_reference(head, x, values="key")
    return mistakes


def check_no_mask_buffer(check: SelfCheck, head: nn.Module) -> None:
    """No matrix kept from __init__ (a buffer or a plain tensor attribute): a mask made there
    has a fixed size, whatever length the input has."""
    kept = [name for name, b in head.named_buffers() if b.dim() >= 2]
    kept += [name for name, value in vars(head).items()
             if isinstance(value, torch.Tensor) and value.dim() >= 2]
    check.expect(not kept, "the head keeps no mask made in __init__ (the length T comes from "
                 "each input)", expected="only the three projections",
                 got=f"a matrix kept as {', '.join(kept)}", likely=MASK_BUFFER)


def check_length(check: SelfCheck, head: nn.Module, x: torch.Tensor, *,
                 atol: float = 1e-5) -> None:
    """The head runs, and is right, for the length of ``x``; a crash or a wrong length is
    put down to something of a fixed size, a wrong value to the usual mistakes."""
    B, T, n = x.shape
    try:
        with torch.no_grad():
            got = head(x)
    except NotImplementedError as error:
        check.not_implemented(error)
    except Exception as error:  # noqa: BLE001 - reported to the student
        check.expect(False, f"{REFUSED_LENGTH} {T}", expected="a result",
                     got=f"{type(error).__name__}: {error}"[:300], likely=FIXED_LENGTH)
    got = check.tensor(got, f"head(x) for a sequence of length {T}")
    check.shape(got, (B, T, n), f"head(x) for a sequence of length {T}",
                likely=FIXED_LENGTH if tuple(got.shape)[:2] != (B, T) else None)
    close_head(check, got, head_reference(head, x), f"head(x) for a sequence of length {T}",
               mistakes=value_mistakes(head, x, n, n), atol=atol)


def close_head(check: SelfCheck, out: torch.Tensor, expected: torch.Tensor, what: str, *,
               mistakes: dict[str, torch.Tensor] | None = None, likely: str | None = None,
               diagnoses: dict[str, Callable[[], bool]] | None = None,
               atol: float = 1e-5) -> None:
    """Compare two (B, T, head_size) outputs channel by channel: the numbers shown run along
    the positions (position 0 reads only itself, so it is the same in most wrong answers)."""
    def along(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(-2, -1)

    check.close(along(out), along(expected), f"{what} (shown channel by channel, along the "
                "positions)", mistakes={k: along(v) for k, v in (mistakes or {}).items()},
                likely=likely, diagnoses=diagnoses, atol=atol,
                dims=("batch", "channel", "position"))


def random_output(check: SelfCheck, head: nn.Module, x: torch.Tensor) -> Callable[[], bool]:
    """A diagnosis: two calls under two seeds give two different outputs."""
    def differs() -> bool:
        with torch.no_grad():
            first, second = (check.call_seeded(seed, head, x) for seed in (1, 2))
        return isinstance(first, torch.Tensor) and not _same(first, second)
    return differs


def check_gradients(check: SelfCheck, head: nn.Module, x: torch.Tensor) -> None:
    """In training mode, a loss of the output sends a gradient to all three projections."""
    head.train()
    head.zero_grad()
    out = check.tensor(check.call(head, x), "head(x) in training mode")
    check.expect(out.requires_grad, "in training mode the output carries a gradient",
                 expected="an output with requires_grad=True", got="an output without one",
                 likely=DETACHED)
    check.backward(out.pow(2), "head(x)")
    for name in NAMES:
        grad = getattr(head, name).weight.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the gradient reaches {name}.weight", expected="a nonzero gradient",
                     got="no gradient" if grad is None else "a zero gradient",
                     likely=DETACHED if grad is None else None)


def check_CausalSelfAttentionHead(head_class: type[nn.Module]) -> None:  # noqa: N802
    """Members, initialisation, causality, values for several sizes and lengths, device and
    gradients."""
    check = SelfCheck("CausalSelfAttentionHead")
    generator = torch.Generator().manual_seed(61)

    check.clause("members")
    head = _make_head(check, head_class, 12, 4, seed=0)
    check_members(check, head, 12, 4)

    check.clause("init")
    check_init(check, head_class, seeds=(5, 6))

    check.clause("causal")
    square = _make_head(check, head_class, 6, 6, seed=1)
    check_batch_axis(check, square, torch.randn(6, 6, 6, generator=generator))
    check_causality(check, square, torch.randn(2, 6, 6, generator=generator), split=3)

    check.clause("values")
    for shape in ((3, 6, 6), (1, 6, 6)):
        x = torch.randn(*shape, generator=generator)
        B = shape[0]
        with torch.no_grad():
            out = check.tensor(check.call(square, x), f"head(x) for x of shape {tuple(x.shape)}")
        check.shape(out, (B, 6, 6), f"head(x) for x of shape {tuple(x.shape)}",
                    likely=SQUEEZED_HEAD if B == 1 and tuple(out.shape) == (6, 6) else None)
        close_head(check, out, head_reference(square, x), "head(x) matches causal "
                   "softmax(q k^T / sqrt(head_size)) v with your own projections",
                   mistakes=value_mistakes(square, x, 6, 6),
                   diagnoses={RANDOM_OUTPUT: random_output(check, square, x)})

    check.clause("length")
    check_no_mask_buffer(check, square)
    for T in (1, 20, 300):  # 300: longer than the lecture's block_size of 256
        check_length(check, square, torch.randn(2, T, 6, generator=generator))

    check.clause("arguments")
    for n_embd, head_size in ((12, 4), (6, 10)):
        other = head if (n_embd, head_size) == (12, 4) else _make_head(
            check, head_class, n_embd, head_size, seed=2)
        x = torch.randn(2, 5, n_embd, generator=generator)
        with torch.no_grad():
            out = check.tensor(check.call(other, x), f"head(x) with n_embd={n_embd}, "
                               f"head_size={head_size}")
        check.shape(out, (2, 5, head_size), f"head(x) with n_embd={n_embd}, "
                    f"head_size={head_size}")
        close_head(check, out, head_reference(other, x), f"head(x) with n_embd={n_embd}, "
                   f"head_size={head_size}",
                   mistakes=value_mistakes(other, x, n_embd, head_size))

    check.clause("device")
    on_meta = _make_head(check, head_class, 8, 8, seed=3).to("meta")
    check.device_follows(on_meta, torch.randn(2, 5, 8, generator=generator), what="head(x)")

    check.clause("gradients")
    check_gradients(check, head, torch.randn(2, 5, 12, generator=generator))

    check.clause("randomness")
    check.no_reseed(head_class, 12, 4, what="CausalSelfAttentionHead(12, 4)")
    check.no_reseed(head, torch.randn(2, 5, 12, generator=generator), what="head(x)")
    check.passed()
