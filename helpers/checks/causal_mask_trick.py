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

def _check_running_mean(name: str, running_mean: TensorFn) -> None:
    """Properties that pin down a running mean, without computing one the same way."""
    check = SelfCheck(name)
    generator = torch.Generator().manual_seed(6)
    B, T, C = 3, 7, 4
    x = torch.randn(B, T, C, generator=generator) + 0.5
    original = x.clone()
    out = check.tensor(check.call(running_mean, x), f"{name}(x)")
    check.close(x, original, "the input x is left unchanged",
                likely="x was modified in place; build the result in a new tensor")
    check.shape(out, (B, T, C), f"{name}(x) for x of shape {(B, T, C)}",
                likely="keep every position: the output has one row per token, like x")
    out = out.to(x.dtype)
    check.close(out[:, 0], x[:, 0], "row 0 equals token 0 (the mean of one token)",
                likely="position 0 has only itself to average: average over time (dim=1) "
                       "and only over rows 0..t (not the future), dividing by t + 1, not T")
    check.close(out[:, -1], x.mean(dim=1), "the last row equals the mean of the whole sequence",
                likely="the last token sees every token, so its running mean is the full mean; "
                       "average over the time dimension (dim=1), not the channels")
    # (t + 1) * mean_t - t * mean_{t-1} must give back token t.
    t = torch.arange(T, dtype=x.dtype).view(1, T, 1)
    recovered = (t + 1) * out - t * torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
    check.close(recovered, x, "each row is the mean of the rows up to and including it",
                likely="row t averages rows 0..t: that is t + 1 rows (divide by t + 1, not by T "
                       "or t)")
    changed = x.clone()
    changed[:, 4:] += 10.0
    out_changed = check.call(running_mean, changed).to(x.dtype)
    check.close(out_changed[:, :4], out[:, :4],
                "changing future tokens does not change earlier running means",
                likely="row t must only use rows 0..t: you are looking at the future "
                       "(wrong triangle?)")
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
                    likely="the scores were modified in place (masked_fill_ with an underscore); "
                           "use masked_fill, which returns a new tensor")
        check.shape(w, shape, f"weights for scores of shape {shape}",
                    likely="the weights have the same shape as the scores")
        check.finite(w, f"weights for scores of shape {shape}",
                     likely="a row with every entry masked gives nan: each position must at "
                            "least see itself (keep the diagonal)")
        T = shape[-1]
        future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        leaked = w.masked_select(future.expand(shape)).abs().max().item()
        check.expect(leaked < 1e-6, "no weight on future positions (above the diagonal)",
                     expected="weights of 0 wherever the key comes after the query",
                     got=f"weights up to {leaked:.3g} on future keys",
                     likely="mask the upper triangle (keys after the query) with -inf before "
                            "the softmax; masking with 0 still gives e^0 = 1 to the future")
        check.close(w.sum(dim=-1), torch.ones(shape[:-1]),
                    "each query's weights sum to 1 over the keys (last dimension)",
                    likely="take the softmax over the last dimension (dim=-1), the keys; "
                           "dim=1 normalises over the wrong axis")
        # On the past, the weights must be an ordinary softmax of the scores.
        rows = scores.reshape(-1, T, T)
        weights = w.reshape(-1, T, T)
        for t in range(T):
            expected = torch.softmax(rows[:, t, : t + 1], dim=-1)
            check.close(weights[:, t, : t + 1], expected,
                        f"row {t} over the allowed keys 0..{t} is a softmax of their scores",
                        likely="the softmax should see the past scores unchanged (no extra "
                               "scaling, no mask applied after the softmax)")
    zeros = check.call(causal_attention_weights, torch.zeros(4, 4))
    uniform = torch.tensor([[1.0, 0, 0, 0], [1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0],
                            [1 / 4, 1 / 4, 1 / 4, 1 / 4]])
    check.close(zeros, uniform, "all-zero scores give the running-mean weights 1/(t+1)",
                likely="with equal scores every allowed key gets the same weight")
    check.passed()


# ---- a causal head ----------------------------------------------------------------------

def _make_head(check: SelfCheck, head_class: type[nn.Module], n_embd: int,
               head_size: int) -> nn.Module:
    head = check.call(head_class, n_embd, head_size)
    check.expect(isinstance(head, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=describe(head),
                 likely="subclass nn.Module and call super().__init__() first")
    for name in ("key", "query", "value"):
        layer = getattr(head, name, None)
        check.expect(isinstance(layer, nn.Linear), f"member `{name}` is an nn.Linear",
                     expected=f"self.{name} = nn.Linear(n_embd, head_size, bias=False)",
                     got=describe(layer))
        check.expect(layer.in_features == n_embd and layer.out_features == head_size,
                     f"`{name}` maps n_embd={n_embd} features to head_size={head_size}",
                     expected=f"nn.Linear({n_embd}, {head_size})",
                     got=f"nn.Linear({layer.in_features}, {layer.out_features})",
                     likely="the arguments are (in_features=n_embd, out_features=head_size)")
        check.expect(layer.bias is None, f"`{name}` has no bias",
                     expected="bias=False", got="a bias vector",
                     likely="pass bias=False: the projections are pure matrix products")
    return head


def check_causal_self_attention_head(head_class: type[nn.Module]) -> None:
    """Members, shapes, causality, and agreement with F.scaled_dot_product_attention."""
    check = SelfCheck("CausalSelfAttentionHead")
    n_embd, head_size = 12, 4
    torch.manual_seed(0)
    head = _make_head(check, head_class, n_embd, head_size)
    generator = torch.Generator().manual_seed(61)
    x = torch.randn(3, 6, n_embd, generator=generator)
    with torch.no_grad():
        out = check.tensor(check.call(head, x), "head(x)")
        check.shape(out, (3, 6, head_size), f"head(x) for x of shape {tuple(x.shape)}",
                    likely="the output is (B, T, head_size): weights (B, T, T) @ values")
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
                    "is_causal=True) with your own projections", mistakes=alternatives)
        changed = x.clone()
        changed[:, 3:] += 5.0
        check.close(check.call(head, changed)[:, :3], out[:, :3],
                    "changing later tokens does not change earlier outputs",
                    likely="the mask must hide keys after the query")
        for T in (1, 9):
            longer = torch.randn(2, T, n_embd, generator=generator)
            got = check.call(head, longer)
            check.shape(got, (2, T, head_size), f"head(x) for a sequence of length {T}",
                        likely="build the mask for the T of the input, not a fixed size")
    check.passed()
