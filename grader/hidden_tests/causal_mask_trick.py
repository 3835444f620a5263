"""Hidden tests for tutorial 06 (the causal-mask trick)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.causal_mask_trick import SWAPPED_SIZES
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

TensorFn = Callable[[torch.Tensor], torch.Tensor]
WEIGHTS_ON_X = "the weights were applied to x instead of the values v"


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
        "row 0 was never filled: the loop over positions skips t = 0":
            torch.cat([torch.zeros_like(x[:, :1]), (x.cumsum(dim=1) / counts)[:, 1:]], dim=1),
        "row t averages the rows before t, not up to and including t (x[b, :t] stops before "
        "t; row 0 is then the mean of nothing, nan)":
            torch.cat([torch.full_like(x[:, :1], float("nan")),
                       (x.cumsum(dim=1) / counts)[:, :-1]], dim=1),
        "token 0 is left out of every average (a slice that starts at 1)":
            torch.cat([torch.full_like(x[:, :1], float("nan")),
                       x[:, 1:].cumsum(dim=1) / counts[:, :-1]], dim=1),
    }


def _grade_running_mean(name: str, running_mean: TensorFn) -> None:
    check = HiddenCheck(name)
    generator = fresh_generator(606)
    for B, T, C in ((3, 7, 5), (1, 10, 3), (2, 4, 6)):
        x = torch.randn(B, T, C, generator=generator) + 1.0  # nonzero mean: sums ≠ means
        original = x.clone()
        out = check.tensor(check.call(running_mean, x), f"{name}(x) for x of shape {(B, T, C)}")
        check.close(x, original, "the input is left unchanged",
                    likely="x was changed in place; build the result in a new tensor")
        check.close(out, _running_mean(x), f"running mean for x of shape {(B, T, C)}",
                    mistakes=_running_mean_mistakes(x), dims=("sequence", "position", "channel"))
    single = torch.randn(2, 1, 4, generator=generator)
    check.close(check.call(running_mean, single), single, "a sequence of length 1 is unchanged")
    check.passed()


@hidden_test
def grade_running_mean_loop(running_mean_loop: TensorFn) -> None:
    _grade_running_mean("running_mean_loop", running_mean_loop)


@hidden_test
def grade_running_mean_matmul(running_mean_matmul: TensorFn) -> None:
    _grade_running_mean("running_mean_matmul", running_mean_matmul)


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
    return mistakes


@hidden_test
def grade_causal_attention_weights(causal_attention_weights: TensorFn) -> None:
    check = HiddenCheck("causal_attention_weights")
    generator = fresh_generator(616)
    for shape in ((4, 7, 7), (2, 3, 5, 5), (6, 6), (2, 1, 1)):
        scores = 2.0 * torch.randn(*shape, generator=generator)
        original = scores.clone()
        w = check.tensor(check.call(causal_attention_weights, scores),
                         f"causal_attention_weights(scores of shape {shape})")
        check.close(scores, original, "the scores are left unchanged",
                    likely="the scores were changed in place (masked_fill_ with an underscore); "
                           "masked_fill returns a new tensor")
        w = torch.as_tensor(w)
        nan_rows = torch.isnan(w).reshape(-1, shape[-1], shape[-1]).any(-1).any(0)
        check.expect(not bool(nan_rows.any()), f"weights for scores of shape {shape} contain no "
                     "nan", expected="no nan", got=f"nan in the rows {nan_rows.nonzero().flatten().tolist()}",
                     diagnoses={"the diagonal was masked too: a token may read itself, so row 0 "
                                "has nothing left and becomes nan":
                                bool(nan_rows[0]) and not bool(nan_rows[1:].any())})
        check.close(w, _masked_softmax(scores, _causal(shape[-1])),
                    f"causal weights for scores of shape {shape}",
                    mistakes=_weight_mistakes(scores),
                    dims=("batch",) * (len(shape) - 2) + ("query", "key"))
    big = torch.tensor([[100.0, -50.0, 20.0], [90.0, 100.0, 95.0], [-40.0, 90.0, 100.0]])
    w = check.call(causal_attention_weights, big.clone())
    w = torch.as_tensor(w)
    broken = ~torch.isfinite(w).all(-1) | (w.abs().sum(-1) == 0)
    check.close(w, _masked_softmax(big, _causal(3)), "weights for scores near ±100", diagnoses={
        "exp of scores near 100 overflows to inf (or underflows to 0 for every key): use "
        "torch.softmax, which subtracts the maximum":
            bool(broken.any()) and torch.allclose(w[~broken].double(),
                                                  _masked_softmax(big, _causal(3))[~broken],
                                                  atol=1e-5)}, dims=("query", "key"))
    check.passed()


# ---- the head -------------------------------------------------------------------------------

def _head_outputs(x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor,
                  scale: float, allowed: torch.Tensor | None, dim: int = -1,
                  fill: float = float("-inf"), swap: bool = False) -> torch.Tensor:
    x = x.double()
    q, k, v = x @ wq.double().T, x @ wk.double().T, x @ wv.double().T
    if swap:
        q, k = k, q
    scores = q @ k.transpose(-2, -1) * scale
    if allowed is None:
        weights = torch.softmax(scores, dim=dim)
    else:
        weights = _masked_softmax(scores, allowed, dim=dim, fill=fill)
    return weights @ v


def _build_head(check: HiddenCheck, head_class: type[nn.Module], n_embd: int,
                head_size: int) -> nn.Module:
    head = check.call(head_class, n_embd, head_size)
    check.expect(isinstance(head, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=type(head).__name__)
    for name in ("key", "query", "value"):
        layer = getattr(head, name, None)
        check.expect(isinstance(layer, nn.Linear), f"member `{name}` is an nn.Linear",
                     expected=f"self.{name} = nn.Linear(n_embd, head_size, bias=False)",
                     got=type(layer).__name__)
        check.expect(tuple(layer.weight.shape) == (head_size, n_embd),
                     f"`{name}` maps n_embd={n_embd} to head_size={head_size}",
                     expected=f"weight of shape {(head_size, n_embd)}",
                     got=f"weight of shape {tuple(layer.weight.shape)}",
                     diagnoses={SWAPPED_SIZES: tuple(layer.weight.shape) == (n_embd, head_size)
                                and n_embd != head_size})
        check.expect(layer.bias is None, f"`{name}` has no bias",
                     expected="bias=False", got="a bias vector")
    n_params = sum(p.numel() for p in head.parameters())
    check.expect(n_params == 3 * n_embd * head_size, "the head has exactly the three projections",
                 expected=f"{3 * n_embd * head_size} parameters",
                 got=f"{n_params} parameters")
    return head


@hidden_test
def grade_CausalSelfAttentionHead(head_class: type[nn.Module]) -> None:  # noqa: N802
    check = HiddenCheck("CausalSelfAttentionHead")
    generator = fresh_generator(626)
    for n_embd, head_size, B, T in ((12, 3, 2, 6), (8, 8, 3, 5), (10, 16, 1, 9)):
        head = _build_head(check, head_class, n_embd, head_size)
        weights = {name: 0.6 * torch.randn(head_size, n_embd, generator=generator)
                   for name in ("query", "key", "value")}
        with torch.no_grad():
            for name, value in weights.items():
                getattr(head, name).weight.copy_(value)
        wq, wk, wv = weights["query"], weights["key"], weights["value"]
        x = torch.randn(B, T, n_embd, generator=generator)
        with torch.no_grad():
            out = check.tensor(check.call(head, x), f"head(x) for x of shape {(B, T, n_embd)}")
        check.expect(tuple(out.shape) == (B, T, head_size), f"head(x) for x of shape "
                     f"{(B, T, n_embd)} has shape {(B, T, head_size)}",
                     expected=f"shape {(B, T, head_size)}", got=f"shape {tuple(out.shape)}",
                     diagnoses={WEIGHTS_ON_X: tuple(out.shape) == (B, T, n_embd)})
        causal = _causal(T)
        scale = 1 / math.sqrt(head_size)
        mistakes = {
            "the scores were not scaled: divide by sqrt(head_size)":
                _head_outputs(x, wq, wk, wv, 1.0, causal),
            "the scores were divided by head_size instead of sqrt(head_size)":
                _head_outputs(x, wq, wk, wv, 1 / head_size, causal),
            "the scores were multiplied by sqrt(head_size) instead of divided":
                _head_outputs(x, wq, wk, wv, math.sqrt(head_size), causal),
            "no causal mask: tokens read the future":
                _head_outputs(x, wq, wk, wv, scale, None),
            "the mask is on the wrong triangle: tokens read the future, not the past":
                _head_outputs(x, wq, wk, wv, scale, causal.T),
            "the future was masked with 0 instead of -inf":
                _head_outputs(x, wq, wk, wv, scale, causal, fill=0.0),
            "the softmax was taken over dim=1 (the queries) instead of the keys (dim=-1)":
                _head_outputs(x, wq, wk, wv, scale, causal, dim=1),
            "queries and keys are swapped (scores = k @ q^T)":
                _head_outputs(x, wq, wk, wv, scale, causal, swap=True),
        }
        if head_size != n_embd:  # else these coincide with the mistakes about head_size
            mistakes["the scores were scaled by the embedding size C (n_embd) instead of "
                     "head_size"] = _head_outputs(x, wq, wk, wv, 1 / math.sqrt(n_embd), causal)
            mistakes["the scores were divided by C (n_embd) itself; use 1/sqrt(head_size)"] = \
                _head_outputs(x, wq, wk, wv, 1 / n_embd, causal)
        if head_size == n_embd:
            mistakes[WEIGHTS_ON_X] = \
                _head_outputs(x, wq, wk, torch.eye(n_embd), scale, causal)
        check.close(out, _head_outputs(x, wq, wk, wv, scale, causal),
                    f"head output for n_embd={n_embd}, head_size={head_size}, T={T}",
                    mistakes=mistakes, atol=1e-4)
    check.passed()
