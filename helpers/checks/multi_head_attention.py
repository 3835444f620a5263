"""Self-checks for tutorial 03 (multi-head attention).

They test properties (shapes, where every number ends up, rows summing to one, masks
respected) and agreement with PyTorch's ``nn.MultiheadAttention``; they never split or
merge heads themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.framework import SelfCheck, describe


def _coded(batch: int, T: int, d_model: int) -> torch.Tensor:
    """Entry [b, t, c] = 10000 b + 100 t + c: every number says where it lives."""
    b = torch.arange(batch).view(-1, 1, 1)
    t = torch.arange(T).view(1, -1, 1)
    c = torch.arange(d_model).view(1, 1, -1)
    return (10000 * b + 100 * t + c).float()


def _where(value: float) -> str:
    value = int(round(float(value)))
    return f"batch {value // 10000}, position {value // 100 % 100}, channel {value % 100}"


def check_split_heads(split_heads: Callable[..., torch.Tensor]) -> None:
    """Shape, and that head h at position t holds channels h*dh..(h+1)*dh-1 of position t."""
    check = SelfCheck("split_heads")
    B, T, H, dh = 2, 5, 3, 4
    x = _coded(B, T, H * dh)
    original = x.clone()
    out = check.tensor(check.call(split_heads, x, H), "split_heads(x, 3)")
    check.shape(out, (B, H, T, dh), f"split_heads of a (B={B}, T={T}, {H * dh}) tensor, 3 heads",
                likely="the result is (B, n_heads, T, d_head): view the channels as "
                       "(n_heads, d_head), then swap the T and head axes")
    check.close(x, original, "x itself is left unchanged",
                likely="x was modified in place; return a new view instead")
    positions = (out // 100 % 100).round()
    wanted_positions = torch.arange(T).view(1, 1, T, 1).expand_as(out).float()
    if not torch.allclose(positions, wanted_positions):
        trap = x.reshape(B, H, T, dh)
        likely = ("you reshaped straight to (B, H, T, d_head) without transposing, so a 'head' "
                  "holds numbers from several positions; view as (B, T, H, d_head) first, "
                  "then transpose(1, 2)") if torch.equal(out, trap) else \
            "row t of every head must come from position t: swap the T and head axes"
        bad = (positions != wanted_positions).nonzero()[0].tolist()
        check.fail("every row of a head comes from a single position (the same t)",
                   expected=f"out[{bad[0]}, {bad[1]}, {bad[2]}] taken from position {bad[2]}",
                   got=f"out[{bad[0]}, {bad[1]}, {bad[2]}, {bad[3]}] = {_where(out[tuple(bad)])}",
                   likely=likely)
    check.n_passed += 1
    channels = (out % 100).round()
    wanted_channels = (torch.arange(H).view(1, H, 1, 1) * dh
                       + torch.arange(dh).view(1, 1, 1, dh)).expand_as(out).float()
    if not torch.allclose(channels, wanted_channels):
        bad = (channels != wanted_channels).nonzero()[0].tolist()
        check.fail("head h holds the h-th block of d_head consecutive channels",
                   expected=f"out[{bad[0]}, {bad[1]}, {bad[2]}, {bad[3]}] = channel "
                            f"{bad[1] * dh + bad[3]}",
                   got=f"channel {int(channels[tuple(bad)])}",
                   likely="heads take consecutive blocks of channels (head 0: 0..d_head-1); "
                          "view the last axis as (n_heads, d_head), not (d_head, n_heads)")
    check.n_passed += 1
    check.close(out // 10000, torch.arange(B).view(B, 1, 1, 1).expand_as(out).float(),
                "the batch axis is left alone", likely="do not move or mix the batch axis")
    single = check.call(split_heads, x, 1)
    check.shape(single, (B, 1, T, H * dh), "split_heads(x, 1)",
                likely="with one head the result is x with a head axis of size 1")
    check.passed()


def check_merge_heads(merge_heads: Callable[..., torch.Tensor]) -> None:
    """Shape, and that head h's block of channels at position t lands at position t."""
    check = SelfCheck("merge_heads")
    B, H, T, dh = 2, 3, 5, 4
    # Head h, position t, channel j of the head carries the code of its destination:
    # batch b, position t, channel h*dh + j.
    destination = (10000 * torch.arange(B).view(B, 1, 1, 1) + 100 * torch.arange(T).view(1, 1, T, 1)
                   + dh * torch.arange(H).view(1, H, 1, 1) + torch.arange(dh).view(1, 1, 1, dh))
    heads = destination.float()
    out = check.tensor(check.call(merge_heads, heads.clone()), "merge_heads(x)")
    check.shape(out, (B, T, H * dh), f"merge_heads of a (B={B}, H={H}, T={T}, d_head={dh}) tensor",
                likely="the result is (B, T, n_heads * d_head): transpose back to "
                       "(B, T, H, d_head), then join the last two axes")
    wanted = _coded(B, T, H * dh)
    if not torch.allclose(out, wanted):
        trap = heads.reshape(B, T, H * dh)
        interleaved = heads.permute(0, 2, 3, 1).reshape(B, T, H * dh)
        if torch.equal(out, trap):
            likely = ("you reshaped straight to (B, T, H * d_head) without transposing back, "
                      "which mixes positions; transpose(1, 2) first, then reshape")
        elif torch.equal(out, interleaved):
            likely = ("the heads were interleaved channel by channel; each head's d_head "
                      "numbers must stay together, head 0 first")
        else:
            likely = "position t must get head 0's numbers for t, then head 1's, and so on"
        bad = (out != wanted).nonzero()[0].tolist()
        check.fail("every head's numbers land at their own position, heads in order",
                   expected=f"out[{bad[0]}, {bad[1]}, {bad[2]}] = {_where(wanted[tuple(bad)])}",
                   got=f"a number meant for {_where(out[tuple(bad)])}", likely=likely)
    check.n_passed += 1
    single = check.call(merge_heads, heads[:, :1].clone())
    check.shape(single, (B, T, dh), "merge_heads of a tensor with one head")
    check.passed()


# ---- MultiHeadSelfAttention --------------------------------------------------------------

def _linear(check: SelfCheck, module: nn.Module, name: str, d_model: int, bias: bool
            ) -> nn.Linear:
    layer = getattr(module, name, None)
    check.expect(isinstance(layer, nn.Linear), f"the layer has a member `{name}` (nn.Linear)",
                 expected=f"self.{name} = nn.Linear(...)", got=describe(layer),
                 likely=f"create self.{name} in __init__ with exactly this name")
    check.expect(tuple(layer.weight.shape) == (d_model, d_model),
                 f"`{name}` maps d_model -> d_model",
                 expected=f"weight of shape ({d_model}, {d_model})",
                 got=f"weight of shape {tuple(layer.weight.shape)}",
                 likely="all heads together have width d_model (d_head = d_model // n_heads): "
                        "nn.Linear(d_model, d_model), not d_model * n_heads")
    has_bias = layer.bias is not None
    check.expect(has_bias == bias, f"`{name}` {'has' if bias else 'has no'} bias",
                 expected="a bias" if bias else "bias=False",
                 got="a bias" if has_bias else "no bias",
                 likely=f"nn.Linear(d_model, d_model{'' if bias else ', bias=False'})")
    return layer


def builtin_twin(layer: nn.Module, d_model: int, n_heads: int) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention`` holding the same weights as the student's layer.

    ``in_proj_weight`` packs W_Q, W_K, W_V on top of each other: shape (3 d_model, d_model).
    """
    with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten anyway
        twin = nn.MultiheadAttention(d_model, n_heads, bias=True, batch_first=True)
    with torch.no_grad():
        twin.in_proj_weight.copy_(torch.cat([layer.to_queries.weight, layer.to_keys.weight,
                                             layer.to_values.weight], dim=0))
        twin.in_proj_bias.zero_()
        twin.out_proj.weight.copy_(layer.unify_heads.weight)
        twin.out_proj.bias.copy_(layer.unify_heads.bias)
    return twin.eval()


def _run_builtin(twin: nn.MultiheadAttention, x: torch.Tensor,
                 mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head output and weights of the built-in; ``mask`` uses OUR convention."""
    B, T, _ = x.shape
    kwargs = {}
    if mask is not None:
        # Ours: True = may attend. nn.MultiheadAttention: True = NOT allowed. Invert, and
        # give it the (B * H, T, T) layout it wants for per-sequence masks.
        not_allowed = ~mask.expand(B, twin.num_heads, T, T)
        kwargs["attn_mask"] = not_allowed.reshape(B * twin.num_heads, T, T)
    with torch.no_grad():
        out, weights = twin(x, x, x, need_weights=True, average_attn_weights=False, **kwargs)
    return out, weights


def _forward(check: SelfCheck, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
             what: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        result = check.call(layer, x) if mask is None else check.call(layer, x, mask=mask)
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"forward({what}) returns a pair (out, weights)", expected="(out, weights)",
                 got=describe(result), likely="return out, weights")
    out, weights = result
    check.tensor(out, "out")
    check.tensor(weights, "weights")
    return out, weights


def check_multi_head_self_attention(attention_cls: type[nn.Module]) -> None:
    """Members, shapes, distributions, masks, and agreement with ``nn.MultiheadAttention``."""
    check = SelfCheck("MultiHeadSelfAttention")
    B, T, d_model, H = 2, 6, 12, 3
    dh = d_model // H
    with torch.random.fork_rng(devices=[]):  # building layers must not move the notebook's RNG
        layer = check.call(attention_cls, d_model, H)
    check.expect(isinstance(layer, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=describe(layer),
                 likely="subclass nn.Module and call super().__init__() first")
    for name in ("to_queries", "to_keys", "to_values"):
        _linear(check, layer, name, d_model, bias=False)
    _linear(check, layer, "unify_heads", d_model, bias=True)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # larger weights than the default: softmax far from uniform
        for name in ("to_queries", "to_keys", "to_values", "unify_heads"):
            getattr(layer, name).weight.copy_(torch.randn(d_model, d_model, generator=generator)
                                              / math.sqrt(d_model) * 1.5)
        layer.unify_heads.bias.copy_(0.1 * torch.randn(d_model, generator=generator))
    x = torch.randn(B, T, d_model, generator=generator)

    out, weights = _forward(check, layer, x, None, "x")
    check.shape(out, (B, T, d_model), "out", likely="merge the heads and apply unify_heads")
    check.shape(weights, (B, H, T, T), "weights",
                likely="return the weights of every head, (B, n_heads, T, T), "
                       "not their average or one head")
    check.expect(bool((weights >= 0).all()), "weights are non-negative",
                 expected="weights >= 0", got=describe(weights),
                 likely="return the weights after the softmax, not the scores")
    check.close(weights.sum(-1), torch.ones(B, H, T), "each query's weights sum to 1 over keys",
                likely="apply the softmax over the last axis (keys), dim=-1")

    twin = builtin_twin(layer, d_model, H)
    ref_out, ref_weights = _run_builtin(twin, x, None)
    diagnosis = None
    if not torch.allclose(weights, ref_weights, atol=1e-5, rtol=1e-4):
        for factor, words in ((math.sqrt(dh / d_model), "scores were divided by sqrt(d_model); "
                               "each head's dot products have length d_head: sqrt(d_head)"),
                              (math.sqrt(dh), "the scores were not scaled: divide by "
                               "sqrt(d_head)")):
            scaled = builtin_twin(layer, d_model, H)
            with torch.no_grad():
                scaled.in_proj_weight[:d_model] *= factor
            if torch.allclose(weights, _run_builtin(scaled, x, None)[1], atol=1e-5, rtol=1e-4):
                diagnosis = words
        if diagnosis is None and torch.allclose(weights.mean(1), ref_weights.mean(1),
                                                atol=1e-5, rtol=1e-4):
            diagnosis = "the heads come out in a different order than their channel blocks"
    check.close(weights.mean(1), ref_weights.mean(1),
                "head-averaged weights match nn.MultiheadAttention's (its default output)",
                likely=diagnosis or "check split_heads (view, then transpose), the scale "
                "sqrt(d_head) and the softmax over keys (dim=-1)")
    check.close(weights, ref_weights, "each head's weights match nn.MultiheadAttention's",
                likely=diagnosis or "head h must use channels h*d_head..(h+1)*d_head-1 of "
                "the queries and keys")
    check.close(out, ref_out, "out matches nn.MultiheadAttention's output",
                likely="weights agree, so look after the softmax: weights @ v, then "
                       "merge_heads, then unify_heads")

    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    out_c, weights_c = _forward(check, layer, x, causal, "x, mask=causal (T, T)")
    check.shape(weights_c, (B, H, T, T), "weights with a (T, T) mask",
                likely="the mask broadcasts against the (B, H, T, T) scores")
    leaked = weights_c.masked_select(~causal.expand_as(weights_c)).abs().max().item()
    check.expect(leaked < 1e-6, "masked positions (mask False) get zero weight",
                 expected="weight 0 wherever the mask is False",
                 got=f"weights up to {leaked:.3g} on masked positions",
                 likely="set masked scores to -inf before the softmax "
                        "(True = may attend: fill where the mask is False)"
                 if weights_c.masked_select(causal.expand_as(weights_c)).min() > 0 else
                 "the mask looks inverted: True means 'may attend', fill where it is False")
    ref_out_c, ref_weights_c = _run_builtin(twin, x, causal)
    check.close(weights_c, ref_weights_c, "masked weights match nn.MultiheadAttention's "
                "(given ~mask, its True = NOT allowed)")
    check.close(out_c, ref_out_c, "masked output matches nn.MultiheadAttention's")

    keep = torch.ones(B, T, dtype=torch.bool)
    keep[0, -2:] = False  # the last two keys of sequence 0 are padding
    padding = keep.view(B, 1, 1, T)
    out_p, weights_p = _forward(check, layer, x, padding, "x, mask of shape (B, 1, 1, T)")
    ref_out_p, ref_weights_p = _run_builtin(twin, x, padding)
    check.close(weights_p, ref_weights_p, "a (B, 1, 1, T) padding mask hides those keys",
                likely="the mask must broadcast against (B, H, T, T) scores; "
                       "use masked_fill(~mask, -inf) or torch.where(mask, scores, -inf)")
    check.close(out_p, ref_out_p, "output with a padding mask matches nn.MultiheadAttention's")
    check.passed()
