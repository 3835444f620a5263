"""Hidden tests for tutorial 06 (the causal-mask trick)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

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
    }


def _grade_running_mean(name: str, running_mean: TensorFn) -> None:
    check = HiddenCheck(name)
    generator = fresh_generator(606)
    for B, T, C in ((3, 7, 5), (1, 10, 3), (2, 4, 6)):
        x = torch.randn(B, T, C, generator=generator) + 1.0  # nonzero mean: sums ≠ means
        original = x.clone()
        out = check.tensor(check.call(running_mean, x), f"{name}(x) for x of shape {(B, T, C)}")
        check.finite(out, f"{name}(x) for x of shape {(B, T, C)}",
                     likely="a division by zero or the mean of an empty slice: row t averages "
                            "rows 0..t, that is t + 1 rows (x[:, : t + 1], divide by t + 1)")
        check.close(x, original, "the input is left unchanged",
                    likely="x was modified in place; write the result into a new tensor")
        check.close(out, _running_mean(x), f"running mean for x of shape {(B, T, C)}",
                    mistakes=_running_mean_mistakes(x))
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
    if s.dim() >= 3:
        mistakes["the softmax was taken over dim=1 instead of the keys (dim=-1)"] = \
            _masked_softmax(s, causal, dim=1)
        mistakes["the softmax was taken over the queries (dim=-2) instead of the keys (dim=-1)"] = \
            _masked_softmax(s, causal, dim=-2)
    else:
        mistakes["the softmax was taken over the queries (dim=0) instead of the keys (dim=-1)"] = \
            _masked_softmax(s, causal, dim=0)
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
                    likely="masked_fill_ (with an underscore) changes the scores in place; "
                           "use masked_fill")
        n_nan = int(torch.isnan(torch.as_tensor(w)).sum())
        check.expect(n_nan == 0, f"weights for scores of shape {shape} contain no nan",
                     expected="no nan", got=f"{n_nan} nan entries",
                     likely="a row whose keys are all masked gives nan: the diagonal must stay "
                            "allowed (a token reads itself), and only keys after the query are "
                            "masked")
        check.close(w, _masked_softmax(scores, _causal(shape[-1])),
                    f"causal weights for scores of shape {shape}",
                    mistakes=_weight_mistakes(scores))
    big = torch.tensor([[100.0, -50.0, 20.0], [90.0, 100.0, 95.0], [-40.0, 90.0, 100.0]])
    w = check.call(causal_attention_weights, big.clone())
    check.finite(torch.as_tensor(w), "weights for scores near ±100",
                 likely="exp of large scores overflows: use torch.softmax, which subtracts "
                        "the maximum")
    check.close(w, _masked_softmax(big, _causal(3)), "weights for scores near ±100")
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
                     likely="nn.Linear(n_embd, head_size): inputs first, outputs second")
        check.expect(layer.bias is None, f"`{name}` has no bias",
                     expected="bias=False", got="a bias vector",
                     likely="the bias was left on the projections: pass bias=False")
    n_params = sum(p.numel() for p in head.parameters())
    check.expect(n_params == 3 * n_embd * head_size, "the head has exactly the three projections",
                 expected=f"{3 * n_embd * head_size} parameters",
                 got=f"{n_params} parameters",
                 likely="only key, query and value (no extra layers or biases)")
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
        causal = _causal(T)
        scale = 1 / math.sqrt(head_size)
        mistakes = {
            "the scores were not scaled: divide by sqrt(head_size)":
                _head_outputs(x, wq, wk, wv, 1.0, causal),
            "the scores were scaled by the embedding size C (n_embd) instead of head_size":
                _head_outputs(x, wq, wk, wv, 1 / math.sqrt(n_embd), causal),
            "the scores were divided by C (n_embd) itself; use 1/sqrt(head_size)":
                _head_outputs(x, wq, wk, wv, 1 / n_embd, causal),
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
        if head_size == n_embd:
            mistakes["the weights were applied to x instead of the values v"] = \
                _head_outputs(x, wq, wk, torch.eye(n_embd), scale, causal)
        check.close(out, _head_outputs(x, wq, wk, wv, scale, causal),
                    f"head output for n_embd={n_embd}, head_size={head_size}, T={T}",
                    mistakes=mistakes, atol=1e-4)
    check.passed()
