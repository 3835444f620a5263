"""Self-checks for tutorial 06 (the causal-mask trick)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.framework import SelfCheck, describe

TensorFn = Callable[[torch.Tensor], torch.Tensor]


# ---- running means ------------------------------------------------------------------------

def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=1e-5,
                                                      rtol=1e-4, equal_nan=True))


def _running_mean_signatures(x: torch.Tensor, out: torch.Tensor) -> dict[str, Callable[[], bool]]:
    """Mistake -> a test of ``out`` against that mistake's signature (a few rows that only
    this mistake produces), built from the rows of ``x`` without computing a running mean."""
    T = x.shape[1]
    mean = x.mean(dim=1)
    nan = torch.full_like(x[:, 0], float("nan"))

    def rows(*pairs: tuple[int, torch.Tensor]) -> Callable[[], bool]:
        return lambda: out.shape == x.shape and all(_same(out[:, t], want) for t, want in pairs)

    return {
        "row 0 was never filled: the loop over positions skips t = 0":
            rows((0, torch.zeros_like(x[:, 0])), (T - 1, mean)),
        "row t averages the rows before t, not up to and including t (x[b, :t] stops before "
        "t; row 0 is then the mean of nothing, nan)": rows((0, nan), (1, x[:, 0])),
        "token 0 is left out of every average (a slice that starts at 1)":
            rows((0, nan), (1, x[:, 1]), (T - 1, x[:, 1:].mean(dim=1))),
        "the running mean runs over the channels (the last dimension) instead of over time":
            lambda: out.shape == x.shape and _same(out[..., 0], x[..., 0])
            and _same(out[..., -1], x.mean(dim=-1)),
        "every row is the mean of the whole sequence: the future is not masked":
            rows((0, mean), (T - 1, mean)),
        "the running sum was divided by T instead of by t + 1 (the number of rows averaged)":
            rows((0, x[:, 0] / T), (1, (x[:, 0] + x[:, 1]) / T)),
        "the lower triangle was normalised by its column sums instead of its row sums: each row "
        "of W must sum to 1": rows((0, x[:, 0] / T), (1, x[:, 0] / T + x[:, 1] / (T - 1))),
        "running sums, not means: divide row t by t + 1": rows((0, x[:, 0]), (1, x[:, 0] + x[:, 1])),
        "the triangle is the wrong way round: row t averages the future rows t..T-1":
            rows((0, mean), (T - 1, x[:, -1])),
        "the weight matrix was transposed (W.T @ x instead of W @ x)":
            rows((T - 1, x[:, -1] / T),
                 (0, sum(x[:, s] / (s + 1) for s in range(T)))),
    }


def _check_running_mean(name: str, running_mean: TensorFn) -> None:
    """Properties that pin down a running mean, without computing one the same way."""
    check = SelfCheck(name)
    generator = torch.Generator().manual_seed(6)
    B, T, C = 3, 7, 4
    x = torch.randn(B, T, C, generator=generator) + 0.5
    original = x.clone()
    out = check.tensor(check.call(running_mean, x), f"{name}(x)")
    check.close(x, original, "the input x is left unchanged",
                likely="x was changed in place; build the result in a new tensor")
    check.expect(tuple(out.shape) == (B, T, C), f"{name}(x) for x of shape {(B, T, C)} has the "
                 "same shape", expected=f"shape {(B, T, C)}", got=f"shape {tuple(out.shape)}",
                 diagnoses={"the time axis was averaged away: there must be one running mean "
                            "per position, not one mean per sequence": tuple(out.shape) == (B, C)})
    out = out.to(x.dtype)
    signatures = _running_mean_signatures(x, out)
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
    changed = x.clone()
    changed[:, 4:] += 10.0
    out_changed = check.call(running_mean, changed).to(x.dtype)
    check.close(out_changed[:, :4], out[:, :4],
                "changing future tokens does not change earlier running means", dims=dims)
    single = torch.randn(2, 1, 3, generator=generator)
    check.close(check.call(running_mean, single), single, "works for a sequence of length 1")
    check.passed()


def check_running_mean_loop(running_mean_loop: TensorFn) -> None:
    """A running mean over time: row t = mean of rows 0..t, for every sequence."""
    _check_running_mean("running_mean_loop", running_mean_loop)


def check_running_mean_matmul(running_mean_matmul: TensorFn) -> None:
    """The same properties as the loop version (the matrix is hidden inside the function)."""
    _check_running_mean("running_mean_matmul", running_mean_matmul)


# ---- causal softmax weights -----------------------------------------------------------------

def _row_softmaxes(scores: torch.Tensor, T: int) -> torch.Tensor:
    """Row t: the softmax of the scores of keys 0..t, zeros after (computed row by row)."""
    rows = scores.reshape(-1, T, T)
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
        right = _row_softmaxes(scores, T).reshape(-1, T, T)
        for t in range(T - 1):  # the last row has no future
            common = flat[:, t][gone[:, t]].reshape(flat.shape[0], -1)
            kept = flat[:, t, : t + 1]
            if not (bool((common > 1e-6).all()) and _same(common, common[:, :1].expand_as(common))
                    and _same(kept / kept.sum(-1, keepdim=True), right[:, t, : t + 1])):
                return False
        return True

    return {
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
        "keys (dim=-1)": lambda: w.shape == scores.shape and scores.dim() > 2 and bool(
            torch.allclose(w.sum(-2), torch.ones(w.shape[:-2] + (T,)), atol=1e-5)),
        "the exponentials were not normalised: divide them by their sum over the keys":
            lambda: _same(w, torch.exp(scores) * lower),
        "the scores were scaled inside causal_attention_weights; they come in ready to use":
            lambda: _same(w, _row_softmaxes(scores / math.sqrt(T), T)),
    }


def check_causal_attention_weights(causal_attention_weights: TensorFn) -> None:
    """Causal weights: zero on the future, a softmax over the past, for any batch shape."""
    check = SelfCheck("causal_attention_weights")
    generator = torch.Generator().manual_seed(60)
    for shape in ((5, 5), (3, 6, 6), (2, 3, 4, 4)):
        scores = 1.5 * torch.randn(*shape, generator=generator)
        original = scores.clone()
        w = check.tensor(check.call(causal_attention_weights, scores),
                         f"causal_attention_weights(scores of shape {shape})")
        check.close(scores, original, "the scores are left unchanged",
                    likely="the scores were changed in place (masked_fill_ with an underscore); "
                           "masked_fill returns a new tensor")
        check.shape(w, shape, f"weights for scores of shape {shape}")
        signatures = _causal_signatures(original, w)
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
        check.close(w, _row_softmaxes(original, T),
                    "row t over the allowed keys 0..t is a softmax of their scores",
                    diagnoses=signatures, dims=dims)
    zeros = check.call(causal_attention_weights, torch.zeros(4, 4))
    uniform = torch.tensor([[1.0, 0, 0, 0], [1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0],
                            [1 / 4, 1 / 4, 1 / 4, 1 / 4]])
    check.close(zeros, uniform, "all-zero scores give the running-mean weights 1/(t+1)",
                dims=("query", "key"))
    check.passed()


# ---- a causal head ----------------------------------------------------------------------

def _make_head(check: SelfCheck, head_class: type[nn.Module], n_embd: int,
               head_size: int) -> nn.Module:
    head = check.call(head_class, n_embd, head_size)
    check.expect(isinstance(head, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=describe(head))
    for name in ("key", "query", "value"):
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
    return head


SWAPPED_SIZES = ("the sizes of nn.Linear are swapped: nn.Linear(in_features, out_features) is "
                 "nn.Linear(n_embd, head_size)")
FIXED_LENGTH = ("the head works for T = 6 but not for this T: the mask has a fixed size; build "
                "it for the T of the input")


def check_CausalSelfAttentionHead(head_class: type[nn.Module]) -> None:
    """Members, shapes, causality, and agreement with F.scaled_dot_product_attention."""
    check = SelfCheck("CausalSelfAttentionHead")
    n_embd, head_size = 12, 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = _make_head(check, head_class, n_embd, head_size)
    generator = torch.Generator().manual_seed(61)
    x = torch.randn(3, 6, n_embd, generator=generator)
    with torch.no_grad():
        out = check.tensor(check.call(head, x), "head(x)")
        check.shape(out, (3, 6, head_size), f"head(x) for x of shape {tuple(x.shape)}")
        q, k, v = head.query(x), head.key(x), head.value(x)
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        alternatives = {
            "the scores were not scaled: divide q @ k^T by sqrt(head_size)":
                F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0),
            "the scores were scaled by 1/sqrt(n_embd); use the head size":
                F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               scale=1 / math.sqrt(n_embd)),
            "the scores were divided by head_size; divide by its square root":
                F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / head_size),
            "no causal mask: every token reads the future too":
                F.scaled_dot_product_attention(q, k, v),
            "queries and keys are swapped (scores = k @ q^T)":
                F.scaled_dot_product_attention(k, q, v, is_causal=True),
        }
        check.close(out, expected, "matches F.scaled_dot_product_attention(q, k, v, "
                    "is_causal=True) with your own projections", mistakes=alternatives,
                    dims=("batch", "position", "channel"))
        changed = x.clone()
        changed[:, 3:] += 5.0
        check.close(check.call(head, changed)[:, :3], out[:, :3],
                    "changing later tokens does not change earlier outputs")
        for T in (1, 9):
            longer = torch.randn(2, T, n_embd, generator=generator)
            try:
                got = head(longer)
            except NotImplementedError as error:
                check.not_implemented(error)
            except Exception as error:  # noqa: BLE001 - reported to the student
                check.expect(False, f"head(x) runs for a sequence of length {T}",
                             expected="a result", got=f"{type(error).__name__}: {error}",
                             likely=FIXED_LENGTH)
            check.shape(got, (2, T, head_size), f"head(x) for a sequence of length {T}",
                        likely=FIXED_LENGTH if tuple(got.shape)[:2] == (2, T) else None)
    check.passed()
