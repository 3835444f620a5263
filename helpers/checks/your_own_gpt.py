"""Self-checks for tutorial 09 (your own GPT).

Your modules are compared with PyTorch's own layers holding the same weights
(``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` with ``norm_first=True`` and
tutorial 7's ``TinyLM``, a GPT built from them), and a text fed in pieces with the cache must
give what it gives at once. Your training loop trains a stand-in model (a table of logits)
whose first AdamW steps have a closed form; your ``generate`` writes with a stand-in model
whose logits come from a table and which notes how it is called. A likely mistake is named
only when the result has its signature.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.framework import SelfCheck, describe
from helpers.checks.generation_and_cost import check_sample_next_token
from helpers.checks.qkv_attention import expect_no_padding_idx
from helpers.checks.transformer_block import expect_default_eps
from helpers.demos.generation_and_cost import TinyLM
from helpers.exercises import ExerciseNotFinished
from helpers.training import single_thread

TOL = {"atol": 1e-5, "rtol": 1e-4}
GRADIENT_CUT = ("no gradient reached this parameter: a .detach(), .data, .item() or "
                "torch.no_grad() cuts it off from the output")
Cache = tuple[torch.Tensor, torch.Tensor]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pair(check: SelfCheck, result: Any, what: str, names: str) -> tuple[Any, Any]:
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{what} returns a pair {names}", expected=names, got=describe(result))
    return result[0], result[1]


def cache_pair(check: SelfCheck, cache: Any, what: str) -> Cache:
    check.expect(isinstance(cache, tuple | list) and len(cache) == 2
                 and all(isinstance(t, torch.Tensor) for t in cache),
                 f"{what} is a pair (K, V) of tensors", expected="(K, V)", got=describe(cache))
    return cache[0], cache[1]


TRAIN_ONLY = ("in training mode the output changed, in evaluation mode it is right: dropout "
              "(or another layer that acts only in training) was added; this model has none")


def expect_same_in_training(check: SelfCheck, module: nn.Module, args: tuple,
                            reference: torch.Tensor, what: str, dims: tuple[str, ...]) -> None:
    """The module computes the same in training mode as in evaluation mode (no dropout)."""
    module.train()
    try:
        with torch.no_grad():
            result = check.call_seeded(17, module, *args)
    finally:
        module.eval()
    out = result[0] if isinstance(result, tuple | list) and len(result) == 2 else result
    check.tensor(out, f"{what} in training mode")
    check.close(out, reference, f"{what} in training mode is the same: no dropout",
                likely=TRAIN_ONLY, dims=dims, **TOL)


def _expect_grads(check: SelfCheck, module: nn.Module) -> None:
    for name, parameter in module.named_parameters():
        grad = parameter.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the output's gradient reaches {name}", expected="a non-zero gradient",
                     got="None" if grad is None else "zeros", likely=GRADIENT_CUT)


# ---- Exercise 1: CausalSelfAttention ---------------------------------------------------------

NEW_FIRST = ("the new keys and values were put before the cached ones: append them at the "
             "end, so that the cache stays in the order of the text")
ONLY_NEW = "the returned cache holds only the new positions: it must hold every position so far"
OLD_CACHE = "the cache it was given came back unchanged: the new keys and values must be added"
KV_SWAPPED = "keys and values were swapped in the cache: return (K, V), keys first"
KEYS_TWICE = "the cache holds the keys twice: its second tensor must be the values, V"
TOP_LEFT = ("the mask ignores the cache: query i of the new positions read keys 0..i of the "
            "whole text (as is_causal=True does), not every cached key and the new keys 0..i "
            "(a mask of T rows and t + T columns, shifted right by t)")
NO_MASK_WITH_CACHE = ("no mask once a cache is given: with more than one new position, each "
                      "new query also read the new positions after it")
CACHE_IGNORED = ("the cached keys and values were not attended to: the new queries read only "
                 "the new positions")
DETACHED_CACHE = ("the returned cache is detached: a text fed in pieces in training would "
                  "send no gradient from a later piece back through the cached keys and "
                  "values; return them as computed")


QKV_BIAS = "to_queries, to_keys and to_values take bias=False: the text asks for maps without bias"
HEAD_BIAS = ("head has no bias: keep nn.Linear's default (bias=True), so that the model can "
             "learn how common each character is")


def expect_linear(check: SelfCheck, owner: nn.Module, name: str, d_in: int, d_out: int,
                   bias: bool, path: str = "", wrong_bias: str | None = None) -> None:
    """``owner.name`` is an nn.Linear of the given sizes and bias; ``wrong_bias`` is named
    when only the bias is wrong."""
    layer = getattr(owner, name, None)
    wanted = f"nn.Linear({d_in}, {d_out}{'' if bias else ', bias=False'})"
    is_linear = isinstance(layer, nn.Linear)
    got = describe(layer) if not is_linear else (
        f"nn.Linear({layer.in_features}, {layer.out_features}, bias={layer.bias is not None})")
    sizes = is_linear and layer.in_features == d_in and layer.out_features == d_out
    check.expect(sizes and (layer.bias is not None) == bias, f"{path}{name} is {wanted}",
                 expected=wanted, got=got,
                 diagnoses={wrong_bias: sizes} if wrong_bias else None)


def expect_attention_members(check: SelfCheck, layer: nn.Module, d: int, path: str = "") -> None:
    for name in ("to_queries", "to_keys", "to_values"):
        expect_linear(check, layer, name, d, d, False, path,
                       wrong_bias=None if path else QKV_BIAS)
    expect_linear(check, layer, "unify_heads", d, d, True, path)


def set_linear(layer: nn.Linear, generator: torch.Generator, gain: float = 1.0) -> None:
    with torch.no_grad():
        layer.weight.copy_(gain * torch.randn(layer.weight.shape, generator=generator)
                           / math.sqrt(layer.weight.shape[1]))
        if layer.bias is not None:
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=generator))


def set_attention(layer: nn.Module, generator: torch.Generator) -> None:
    """Weights larger than the default, so that the softmax is far from uniform."""
    for name in ("to_queries", "to_keys", "to_values", "unify_heads"):
        set_linear(getattr(layer, name), generator, gain=1.5)


def _load_attention(twin: nn.MultiheadAttention, layer: nn.Module, query_gain: float = 1.0,
                    unify: bool = True) -> nn.MultiheadAttention:
    """``twin`` holding the layer's maps (``query_gain`` scales the scores)."""
    with torch.no_grad():
        twin.in_proj_weight.copy_(torch.cat([query_gain * layer.to_queries.weight,
                                             layer.to_keys.weight, layer.to_values.weight]))
        twin.in_proj_bias.zero_()
        if unify:
            twin.out_proj.weight.copy_(layer.unify_heads.weight)
            twin.out_proj.bias.copy_(layer.unify_heads.bias)
        else:
            twin.out_proj.weight.copy_(torch.eye(twin.embed_dim))
            twin.out_proj.bias.zero_()
    return twin


def _attention_twin(layer: nn.Module, d: int, H: int, **changes: Any) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention`` holding the same weights as your layer."""
    with torch.random.fork_rng(devices=[]):  # its own initial weights are overwritten
        twin = nn.MultiheadAttention(d, H, bias=True, batch_first=True)
    return _load_attention(twin, layer, **changes).eval()


def _blocked(T: int, t: int = 0, shift: bool = True) -> torch.Tensor:
    """PyTorch's attn_mask (True = may NOT attend) for T queries after t cached keys: query
    i may read keys up to t + i (``shift``), or up to i."""
    rows = torch.arange(T)[:, None] + (t if shift else 0)
    return torch.arange(t + T)[None, :] > rows


def _twin_out(twin: nn.MultiheadAttention, queries: torch.Tensor, keys: torch.Tensor,
              mask: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return twin(queries, keys, keys, attn_mask=mask, need_weights=False)[0]


SOFTMAX_QUERIES = ("the softmax ran over the queries (dim=-2): each query's weights must sum "
                   "to 1 over the keys (dim=-1)")
SPLIT_NO_TRANSPOSE = ("the heads were split by a view straight to (B, n_heads, T, head size), "
                      "without the transpose: positions and heads got mixed")
FLOAT_MASK = ("the mask was a float tensor of 0s and 1s: a float mask is added to the scores, "
              "so nothing was blocked; use a boolean mask (True = may attend)")


def _by_hand(layer: nn.Module, x: torch.Tensor, H: int, *, softmax_dim: int = -1,
             transpose: bool = True, float_mask: bool = False) -> torch.Tensor:
    """Causal attention with the layer's maps, computed here, with one likely mistake."""
    B, T, d = x.shape
    with torch.no_grad():
        q, k, v = ((m(x).view(B, T, H, d // H).transpose(1, 2) if transpose
                    else m(x).view(B, H, T, d // H))
                   for m in (layer.to_queries, layer.to_keys, layer.to_values))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // H)
        allowed = ~_blocked(T)
        scores = scores + allowed.float() if float_mask else \
            scores.masked_fill(~allowed, float("-inf"))
        out = (torch.softmax(scores, dim=softmax_dim) @ v).transpose(1, 2).reshape(B, T, d)
        return layer.unify_heads(out)


def _heads_of(x: torch.Tensor, weight: torch.Tensor, H: int) -> torch.Tensor:
    """Head h's keys (or values) are x times rows h*dh..(h+1)*dh-1 of the map's weight."""
    d_out, d_in = weight.shape
    return torch.einsum("btc,hec->bhte", x, weight.reshape(H, d_out // H, d_in))


def _attention_call(check: SelfCheck, layer: nn.Module, x: torch.Tensor, cache: Cache | None,
                    what: str) -> tuple[torch.Tensor, Cache]:
    with torch.no_grad():
        result = check.call(layer, x) if cache is None else check.call(layer, x, cache=cache)
    out, new = pair(check, result, what, "(out, cache)")
    check.tensor(out, f"out of {what}")
    return out, cache_pair(check, new, f"the cache of {what}")


def _expect_all_positions(check: SelfCheck, got: torch.Tensor, full: torch.Tensor,
                          given: torch.Tensor, name: str, t: int) -> None:
    """The cache returned after a second piece covers both pieces."""
    T = full.shape[2]
    check.expect(tuple(got.shape) == tuple(full.shape), f"{name} after x[:, :{t}] and then "
                 f"x[:, {t}:] covers all {T} positions", expected=f"shape {tuple(full.shape)}",
                 got=f"shape {tuple(got.shape)}", diagnoses={
                     OLD_CACHE: got.shape == given.shape and torch.equal(got, given),
                     ONLY_NEW: got.dim() == 4 and got.shape[2] == T - t})


def expect_cache_shape(check: SelfCheck, cache: Cache, shape: tuple[int, ...],
                        what: str) -> None:
    for name, tensor in zip("KV", cache, strict=True):
        check.expect(tuple(tensor.shape) == shape, f"{name} of {what} has shape {shape}",
                     expected=f"(B, n_heads, t + T, d_model // n_heads) = {shape}",
                     got=f"shape {tuple(tensor.shape)}", diagnoses={
                         "the cache holds the keys and values before the heads were split: "
                         "keep them as (B, n_heads, positions, head size)":
                             tensor.dim() == 3 and tensor.shape[-1] == shape[1] * shape[3]})


@single_thread()
def check_CausalSelfAttention(attention_cls: type[nn.Module]) -> None:
    """Members, shapes, agreement with nn.MultiheadAttention, the cache, pieces, gradients."""
    check = SelfCheck("CausalSelfAttention")
    d, H, B, T, t = 12, 3, 2, 7, 3
    check.clause("members")
    layer = check.call_seeded(0, attention_cls, d, H)
    check.expect(isinstance(layer, nn.Module), "CausalSelfAttention(12, 3) builds an nn.Module",
                 expected="an nn.Module", got=describe(layer))
    expect_attention_members(check, layer, d)
    set_attention(layer, _generator(1))
    layer.eval()
    x = torch.randn(B, T, d, generator=_generator(2))

    check.clause("shape")
    out, cache = _attention_call(check, layer, x, None, f"forward(x of {(B, T, d)})")
    check.shape(out, (B, T, d), f"out of forward(x of {(B, T, d)})")
    expect_cache_shape(check, cache, (B, H, T, d // H), f"forward(x of {(B, T, d)})")
    one_head = check.call_seeded(0, attention_cls, 8, 1)
    set_attention(one_head, _generator(3))
    one_head.eval()
    x_one = torch.randn(1, 5, 8, generator=_generator(4))
    out_one, cache_one = _attention_call(check, one_head, x_one, None,
                                         "forward(x of (1, 5, 8)) with one head")
    check.shape(out_one, (1, 5, 8), "out with one head")
    expect_cache_shape(check, cache_one, (1, 1, 5, 8), "forward(x of (1, 5, 8)) with one head")

    check.clause("values")
    twin = _attention_twin(layer, d, H)
    reference = _twin_out(twin, x, x, _blocked(T))
    dh = d // H
    check.close(out, reference, "out matches nn.MultiheadAttention with a causal mask", mistakes={
        "no causal mask: every position also read the positions after it":
            _twin_out(twin, x, x, None),
        "the scores were not scaled: divide them by sqrt(d_model // n_heads)":
            _twin_out(_attention_twin(layer, d, H, query_gain=math.sqrt(dh)), x, x, _blocked(T)),
        "the scores were scaled by sqrt(d_model) instead of sqrt(d_model // n_heads), the "
        "size of one head": _twin_out(_attention_twin(layer, d, H, query_gain=1 / math.sqrt(H)),
                                      x, x, _blocked(T)),
        "unify_heads was skipped: the merged heads must go through it":
            _twin_out(_attention_twin(layer, d, H, unify=False), x, x, _blocked(T)),
        SOFTMAX_QUERIES: _by_hand(layer, x, H, softmax_dim=-2),
        SPLIT_NO_TRANSPOSE: _by_hand(layer, x, H, transpose=False),
        FLOAT_MASK: _by_hand(layer, x, H, float_mask=True),
    }, dims=("batch", "position", "channel"), **TOL)
    check.close(out_one, _twin_out(_attention_twin(one_head, 8, 1), x_one, x_one, _blocked(5)),
                "with one head, out matches nn.MultiheadAttention too",
                dims=("batch", "position", "channel"), **TOL)
    expect_same_in_training(check, layer, (x,), reference, "out",
                            ("batch", "position", "channel"))

    check.clause("cache")
    K, V = (_heads_of(x, getattr(layer, name).weight, H) for name in ("to_keys", "to_values"))
    swapped = cache[1].shape == K.shape and torch.allclose(cache[1].to(K.dtype), K, **TOL)
    check.close(cache[0], K, "K holds every position's keys, split into heads",
                mistakes={KV_SWAPPED: V} if swapped else None,
                dims=("batch", "head", "position", "channel"), **TOL)
    check.close(cache[1], V, "V holds every position's values, split into heads",
                mistakes={KEYS_TWICE: K}, dims=("batch", "head", "position", "channel"), **TOL)
    _, first = _attention_call(check, layer, x[:, :t], None, f"forward(x[:, :{t}])")
    piece, second = _attention_call(check, layer, x[:, t:], first,
                                    f"forward(x[:, {t}:], cache=<the cache of x[:, :{t}]>)")
    for name, got, full, given in (("K", second[0], K, first[0]), ("V", second[1], V, first[1])):
        _expect_all_positions(check, got, full, given, name, t)
        check.close(got, full, f"{name} after x[:, :{t}] and then x[:, {t}:] holds all {T} "
                    "positions, in order", mistakes={
                        NEW_FIRST: torch.cat([full[:, :, t:], full[:, :, :t]], dim=2)},
                    dims=("batch", "head", "position", "channel"), **TOL)

    check.clause("pieces")
    check.close(piece, reference[:, t:], f"out of x[:, {t}:] with the cache of the first {t} "
                "positions equals out of the whole x there", mistakes={
                    TOP_LEFT: _twin_out(twin, x[:, t:], x, _blocked(T - t, t, shift=False)),
                    NO_MASK_WITH_CACHE: _twin_out(twin, x[:, t:], x, None),
                    CACHE_IGNORED: _twin_out(twin, x[:, t:], x[:, t:], _blocked(T - t)),
                }, dims=("batch", "position", "channel"), **TOL)
    steps, running = [], None
    for p in range(T):
        step, running = _attention_call(check, layer, x[:, p:p + 1], running,
                                        f"forward(x[:, {p}:{p + 1}], cache)")
        steps.append(step)
    check.close(torch.cat(steps, dim=1), reference, "one position at a time with the cache "
                "gives out of the whole x", mistakes={TOP_LEFT: torch.cat(
                    [_twin_out(twin, x[:, p:p + 1], x[:, :p + 1], _blocked(1, p, shift=False))
                     for p in range(T)], dim=1)}, dims=("batch", "position", "channel"), **TOL)

    check.clause("gradients")
    layer.train()
    layer.zero_grad()
    out, _ = pair(check, check.call(layer, x), "forward(x) in training mode", "(out, cache)")
    check.expect(out.requires_grad, "out carries a gradient back to the layer",
                 expected="an output that depends on the parameters", got="a detached output",
                 likely=GRADIENT_CUT)
    check.backward(out, "forward(x) in training mode")
    _expect_grads(check, layer)
    _, first = pair(check, check.call(layer, x[:, :t]), f"forward(x[:, :{t}]) in training mode",
                    "(out, cache)")
    K1, V1 = cache_pair(check, first, f"the cache of forward(x[:, :{t}]) in training mode")
    check.expect(K1.requires_grad and V1.requires_grad, "in training mode the returned cache "
                 "carries a gradient back to to_keys and to_values",
                 expected="K and V that depend on the parameters", got="a detached cache",
                 likely=DETACHED_CACHE)
    check.passed()


# ---- Exercise 2: Block -----------------------------------------------------------------------

def set_norm(norm: nn.LayerNorm, generator: torch.Generator) -> None:
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=generator))
        norm.bias.copy_(0.2 * torch.randn(norm.bias.shape, generator=generator))


def set_block(block: nn.Module, generator: torch.Generator) -> None:
    set_norm(block.ln_1, generator)
    set_norm(block.ln_2, generator)
    set_linear(block.mlp[0], generator)
    set_linear(block.mlp[2], generator)
    set_attention(block.attn, generator)


RELU = "ReLU instead of GELU between the MLP's two linear layers"
def _expect_block_members(check: SelfCheck, block: nn.Module, d: int, path: str = "") -> None:
    for name in ("ln_1", "ln_2"):
        norm = getattr(block, name, None)
        check.expect(isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (d,),
                     f"{path}{name} is nn.LayerNorm({d})", expected=f"nn.LayerNorm({d})",
                     got=describe(norm))
        expect_default_eps(check, norm, f"{path}{name}")
        check.expect(norm.weight is not None and norm.bias is not None,
                     f"{path}{name} has its own weight and bias", expected=f"nn.LayerNorm({d})",
                     got="a LayerNorm without weight or bias",
                     likely=None if path else "elementwise_affine=False (or bias=False) "
                     "left out the norm's learned scale and shift: keep nn.LayerNorm's defaults")
    mlp = getattr(block, "mlp", None)
    parts = list(mlp) if isinstance(mlp, nn.Sequential) else []
    check.expect(len(parts) == 3, f"{path}mlp is an nn.Sequential of three layers",
                 expected="nn.Sequential(nn.Linear, nn.GELU, nn.Linear)", got=describe(mlp))
    middle = parts[1]
    check.expect(isinstance(middle, nn.GELU) and middle.approximate == "none",
                 f"{path}mlp[1] is nn.GELU()", expected="nn.GELU()", got=repr(middle),
                 diagnoses=None if path else {RELU: isinstance(middle, nn.ReLU)})
    expect_linear(check, mlp, "0", d, 4 * d, True, f"{path}mlp.")
    expect_linear(check, mlp, "2", 4 * d, d, True, f"{path}mlp.")
    attn = getattr(block, "attn", None)
    check.expect(isinstance(attn, nn.Module), f"{path}attn is your CausalSelfAttention",
                 expected="CausalSelfAttention(d_model, n_heads)", got=describe(attn))
    expect_attention_members(check, attn, d, f"{path}attn.")


def _load_layer(twin: nn.TransformerEncoderLayer, block: nn.Module) -> nn.TransformerEncoderLayer:
    _load_attention(twin.self_attn, block.attn)
    with torch.no_grad():
        for mine, theirs in ((twin.linear1, block.mlp[0]), (twin.linear2, block.mlp[2]),
                             (twin.norm1, block.ln_1), (twin.norm2, block.ln_2)):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    return twin


def _block_twin(block: nn.Module, d: int, H: int, **changes: Any) -> nn.TransformerEncoderLayer:
    """An ``nn.TransformerEncoderLayer`` (pre-norm, GELU, MLP 4x) with your block's weights."""
    options = {"norm_first": True, "activation": "gelu", **changes}
    with torch.random.fork_rng(devices=[]):
        twin = nn.TransformerEncoderLayer(d, H, dim_feedforward=4 * d, dropout=0.0,
                                          batch_first=True, **options)
    return _load_layer(twin, block).eval()


def _run_layer(twin: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return twin(x, src_mask=_blocked(x.shape[1]))


def _parallel(twin: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """A block whose MLP reads x, not x + attention (a likely mistake)."""
    with torch.no_grad():
        n = twin.norm1(x)
        a = twin.self_attn(n, n, n, attn_mask=_blocked(x.shape[1]), need_weights=False)[0]
        return x + a + twin.linear2(F.gelu(twin.linear1(twin.norm2(x))))


DETACHED_RESIDUAL = ("every value is right but the gradient reaching x is not: x was detached "
                     "on the residual path, so the gradient reaches the input only through "
                     "the branches; the residual stream must carry it back unchanged")


NO_ATTENTION_RESIDUAL = ("the attention's residual is missing: h = x + attn(ln_1(x)), not "
                         "attn(ln_1(x))")
NO_MLP_RESIDUAL = "the MLP's residual is missing: return h + mlp(ln_2(h)), not mlp(ln_2(h))"
LN_1_TWICE = "ln_1 normalised the MLP's input too: the MLP reads ln_2(h)"


def _pre_norm(twin: nn.TransformerEncoderLayer, x: torch.Tensor,
              cut_residual: bool = False, wrong: str = "") -> torch.Tensor:
    """The pre-norm block computed from the twin's layers, with gradients; with
    ``cut_residual`` the input detached on the residual path, with ``wrong`` another likely
    mistake."""
    n = twin.norm1(x)
    a = twin.self_attn(n, n, n, attn_mask=_blocked(x.shape[1]), need_weights=False)[0]
    h = a if wrong == "no_attention_residual" else (x.detach() if cut_residual else x) + a
    m = twin.linear2(F.gelu(twin.linear1((twin.norm1 if wrong == "ln_1_twice"
                                          else twin.norm2)(h))))
    return m if wrong == "no_mlp_residual" else h + m


def _without_grad(fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad():
        return fn(*args, **kwargs)


def _input_gradient(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (fn(x) * weights).sum().backward()
    return x.grad if x.grad is not None else torch.zeros_like(x)


def _block_call(check: SelfCheck, block: nn.Module, x: torch.Tensor, cache: Cache | None,
                what: str) -> tuple[torch.Tensor, Cache]:
    with torch.no_grad():
        result = check.call(block, x) if cache is None else check.call(block, x, cache=cache)
    out, new = pair(check, result, what, "(x, cache)")
    check.tensor(out, f"the x of {what}")
    return out, cache_pair(check, new, f"the cache of {what}")


@single_thread()
def check_Block(block_cls: type[nn.Module]) -> None:
    """Members, agreement with a pre-norm nn.TransformerEncoderLayer, the cache, gradients."""
    check = SelfCheck("Block")
    d, H, B, T, t = 12, 3, 2, 7, 4
    check.clause("members")
    block = check.call_seeded(0, block_cls, d, H)
    check.expect(isinstance(block, nn.Module), "Block(12, 3) builds an nn.Module",
                 expected="an nn.Module", got=describe(block))
    _expect_block_members(check, block, d)
    set_block(block, _generator(5))
    block.eval()
    x = torch.randn(B, T, d, generator=_generator(6))

    check.clause("returns")
    out, cache = _block_call(check, block, x, None, f"forward(x of {(B, T, d)})")
    check.shape(out, (B, T, d), f"x out of forward(x of {(B, T, d)})")

    check.clause("values")
    twin = _block_twin(block, d, H)
    check.close(out, _run_layer(twin, x), "x out matches nn.TransformerEncoderLayer(norm_first="
                "True, activation='gelu') with a causal mask", mistakes={
                    "post-norm: the norms came after the residual additions; this block "
                    "normalises first: x + attn(ln_1(x)), then h + mlp(ln_2(h))":
                        _run_layer(_block_twin(block, d, H, norm_first=False), x),
                    "the MLP read x instead of h = x + attn(ln_1(x)): apply it after the "
                    "attention's residual": _parallel(twin, x),
                    RELU: _run_layer(_block_twin(block, d, H, activation="relu"), x),
                    **{words: _without_grad(_pre_norm, twin, x, wrong=flag) for words, flag in (
                        (NO_ATTENTION_RESIDUAL, "no_attention_residual"),
                        (NO_MLP_RESIDUAL, "no_mlp_residual"), (LN_1_TWICE, "ln_1_twice"))},
                }, dims=("batch", "position", "channel"), **TOL)
    expect_same_in_training(check, block, (x,), _run_layer(twin, x), "x out",
                            ("batch", "position", "channel"))

    check.clause("cache")
    with torch.no_grad():
        attn_cache = block.attn(block.ln_1(x))[1]
    for name, got, wanted in zip("KV", cache, attn_cache, strict=True):
        check.close(got, wanted, f"{name} of the returned cache is what attn returns for "
                    "ln_1(x)", **TOL)
    _, first = _block_call(check, block, x[:, :t], None, f"forward(x[:, :{t}])")
    piece, second = _block_call(check, block, x[:, t:], first,
                                f"forward(x[:, {t}:], cache=<the cache of x[:, :{t}]>)")
    alone, _ = _block_call(check, block, x[:, t:], None, f"forward(x[:, {t}:])")
    check.close(piece, out[:, t:], f"x[:, {t}:] with the cache of the first {t} positions gives "
                "x out of the whole x there", mistakes={
                    "the cache was not passed on to attn: hand attn the cache the block was given":
                        alone}, dims=("batch", "position", "channel"), **TOL)
    for name, got, wanted, given in zip("KV", second, cache, first, strict=True):
        check.expect(tuple(got.shape) == tuple(wanted.shape),
                     f"{name} of the returned cache covers all {T} positions",
                     expected=f"shape {tuple(wanted.shape)}", got=f"shape {tuple(got.shape)}",
                     diagnoses={"the cache it was given came back: return the one attn returns":
                                tuple(got.shape) == tuple(given.shape)})
        check.close(got, wanted, f"{name} of the returned cache continues the cache", **TOL)

    check.clause("gradients")
    block.train()
    block.zero_grad()
    out, _ = pair(check, check.call(block, x), "forward(x) in training mode", "(x, cache)")
    check.expect(out.requires_grad, "x out carries a gradient back to the block",
                 expected="an output that depends on the parameters", got="a detached output",
                 likely=GRADIENT_CUT)
    check.backward(out, "forward(x) in training mode")
    _expect_grads(check, block)
    weights = torch.randn(x.shape, generator=_generator(16))
    wanted = _input_gradient(lambda v: _pre_norm(twin, v), x, weights)
    seen = x.detach().clone().requires_grad_(True)
    out, _ = pair(check, check.call(block, seen), "forward(x) in training mode", "(x, cache)")
    if out.requires_grad:
        (out * weights).sum().backward()
    got = seen.grad if seen.grad is not None else torch.zeros_like(x)
    check.close(got, wanted, "the gradient reaching x is the pre-norm block's: the residual "
                "stream carries it back as well as the branches", mistakes={
                    DETACHED_RESIDUAL: _input_gradient(lambda v: _pre_norm(twin, v, True), x,
                                                       weights)},
                dims=("batch", "position", "channel"), **TOL)
    check.passed()


# ---- Exercise 3: GPT -------------------------------------------------------------------------

POSITIONS_NOT_OFFSET = ("the positions were not offset by the cache: the new tokens sit at "
                        "positions t..t+T-1, where t is the number of positions the caches "
                        "hold (a cached K's length along its positions axis)")
WRONG_OFFSET = ("the positions were offset by the wrong number: t must be the number of "
                "positions the caches hold (a cached K's length along its positions axis), "
                "not the number of blocks, of heads or of channels per head")
RESIDUAL_CUT = ("the logits are right but the gradient reaching the embeddings is not: "
                "something on the residual stream is detached (in Block or in GPT), so the "
                "gradient reaches the embeddings only through the branches")


def set_gpt(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        model.token_embedding.weight.copy_(torch.randn(model.token_embedding.weight.shape,
                                                       generator=generator))
        model.position_embedding.weight.copy_(
            0.7 * torch.randn(model.position_embedding.weight.shape, generator=generator))
    for block in model.blocks:
        set_block(block, generator)
    set_norm(model.ln_f, generator)
    set_linear(model.head, generator, gain=2.0)


def _gpt_twin(model: nn.Module, V: int, block_size: int, d: int, H: int, n_layers: int, *,
              final_norm: bool = True, positions: bool = True) -> TinyLM:
    """Tutorial 7's TinyLM (PyTorch's pre-norm layers) holding your model's weights."""
    with torch.random.fork_rng(devices=[]):
        twin = TinyLM(V, block_size=block_size, n_embd=d, n_head=H, n_layer=n_layers)
    with torch.no_grad():
        twin.token_embedding.weight.copy_(model.token_embedding.weight)
        twin.position_embedding.weight.copy_(model.position_embedding.weight
                                             if positions else torch.zeros(block_size, d))
        for layer, block in zip(twin.blocks.layers, model.blocks, strict=True):
            _load_layer(layer, block)
        twin.norm.weight.copy_(model.ln_f.weight)
        twin.norm.bias.copy_(model.ln_f.bias)
        if not final_norm:
            twin.norm = nn.Identity()
        twin.lm_head.weight.copy_(model.head.weight)
        twin.lm_head.bias.copy_(model.head.bias)
    return twin.eval()


def _expect_gpt_members(check: SelfCheck, model: nn.Module, V: int, block_size: int, d: int,
                        n_layers: int) -> None:
    check.expect(isinstance(model, nn.Module), "GPT builds an nn.Module",
                 expected="an nn.Module", got=describe(model))
    for name, rows in (("token_embedding", V), ("position_embedding", block_size)):
        table = getattr(model, name, None)
        check.expect(isinstance(table, nn.Embedding) and tuple(table.weight.shape) == (rows, d),
                     f"{name} is nn.Embedding({rows}, {d})",
                     expected=f"nn.Embedding({rows}, {d})", got=describe(table))
        expect_no_padding_idx(check, table, f"{name}, nn.Embedding({rows}, {d}),")
    blocks = getattr(model, "blocks", None)
    check.expect(isinstance(blocks, nn.ModuleList) and len(blocks) == n_layers,
                 f"blocks is an nn.ModuleList of {n_layers} Blocks",
                 expected=f"nn.ModuleList of {n_layers} Blocks", got=describe(blocks))
    check.expect(len({id(block) for block in blocks}) == len(blocks),
                 f"blocks holds {n_layers} different Blocks", expected=f"{n_layers} Blocks, "
                 "each with weights of its own", got="the same Block more than once",
                 likely="[Block(...)] * n_layers repeats one Block (one set of weights, used "
                        "n_layers times): build a new Block for every layer")
    for i, block in enumerate(blocks):
        _expect_block_members(check, block, d, f"blocks[{i}].")
    norm = getattr(model, "ln_f", None)
    check.expect(isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (d,),
                 f"ln_f is nn.LayerNorm({d})", expected=f"nn.LayerNorm({d})", got=describe(norm),
                 diagnoses={"there is no final LayerNorm ln_f before the head": norm is None})
    expect_default_eps(check, norm, "ln_f")
    expect_linear(check, model, "head", d, V, True, wrong_bias=HEAD_BIAS)
    check.expect(model.head.weight.data_ptr() != model.token_embedding.weight.data_ptr(),
                 "head has its own weights", expected="a head of its own",
                 got="head.weight is token_embedding.weight",
                 likely="the head is tied to the token embedding: this GPT keeps them apart")


def _gpt_call(check: SelfCheck, model: nn.Module, tokens: torch.Tensor, caches: list | None,
              what: str, n_layers: int) -> tuple[torch.Tensor, list[Cache]]:
    with torch.no_grad():
        result = check.call(model, tokens) if caches is None else check.call(model, tokens,
                                                                             caches=caches)
    logits, new = pair(check, result, what, "(logits, caches)")
    check.tensor(logits, f"the logits of {what}")
    check.expect(isinstance(new, tuple | list) and len(new) == n_layers,
                 f"{what} returns one cache per block", expected=f"a list of {n_layers} caches",
                 got=describe(new))
    return logits, [cache_pair(check, c, f"cache {i} of {what}") for i, c in enumerate(new)]


def _offset_used(model: nn.Module, tokens: torch.Tensor, t: int) -> int | None:
    """The first position the model gave the second piece, when the positions are its only
    fault: fed tokens[:, t:] with the caches of tokens[:, :t], a copy whose position table
    holds rows t.. from o on gives the logits of the whole text for that o (a probe for the
    diagnosis; the check proper runs through SelfCheck); None when no o does."""
    table = model.position_embedding.weight.detach()
    n = tokens.shape[1] - t
    with torch.no_grad():
        whole, _ = model(tokens)
        _, caches = model(tokens[:, :t])
        for o in range(table.shape[0] - n + 1):
            probe = copy.deepcopy(model)
            probe.position_embedding.weight[o:o + n] = table[t:t + n]
            piece, _ = probe(tokens[:, t:], caches)
            if torch.allclose(piece, whole[:, t:], **TOL):
                return o
    return None


@single_thread()
def check_GPT(gpt_cls: type[nn.Module]) -> None:
    """Members, the caches, agreement with TinyLM holding the same weights, pieces,
    gradients."""
    check = SelfCheck("GPT")
    V, block_size, d, H, n_layers, B, T, t = 11, 10, 8, 2, 2, 2, 9, 5  # t: no other size
    check.clause("members")
    model = check.call_seeded(0, gpt_cls, V, block_size, d, H, n_layers)
    _expect_gpt_members(check, model, V, block_size, d, n_layers)
    set_gpt(model, _generator(7))
    model.eval()
    tokens = torch.randint(V, (B, T), generator=_generator(8))

    check.clause("returns")
    logits, caches = _gpt_call(check, model, tokens, None, f"forward(tokens of {(B, T)})",
                               n_layers)
    check.shape(logits, (B, T, V), f"logits of forward(tokens of {(B, T)})")
    for i, cache in enumerate(caches):
        check.shape(cache[0], (B, H, T, d // H), f"K of caches[{i}]")
    changed = copy.deepcopy(model)  # the last block alone changed: only its cache may move
    with torch.no_grad():
        changed.blocks[-1].attn.to_keys.weight.mul_(2.0)
        moved = changed(tokens)[1]
    check.expect(torch.allclose(moved[0][0], caches[0][0], **TOL)
                 and not torch.allclose(moved[-1][0], caches[-1][0], **TOL),
                 "caches[i] is block i's: changing the last block changes only the last cache",
                 expected="caches in the order of the blocks", got="another order",
                 diagnoses={"the caches came back in reverse order: block i's at index i":
                            not torch.allclose(moved[0][0], caches[0][0], **TOL)})

    check.clause("values")
    twin = _gpt_twin(model, V, block_size, d, H, n_layers)
    with torch.no_grad():
        reference = twin(tokens)
        mistakes = {
            "there is no final LayerNorm: the logits are head(ln_f(x))":
                _gpt_twin(model, V, block_size, d, H, n_layers, final_norm=False)(tokens),
            "the position embedding was not added to the token embedding":
                _gpt_twin(model, V, block_size, d, H, n_layers, positions=False)(tokens)}
    check.close(logits, reference, "the logits match TinyLM (PyTorch's pre-norm layers) "
                "holding your weights", mistakes=mistakes, dims=("batch", "position", "token"),
                **TOL)
    expect_same_in_training(check, model, (tokens,), reference, "the logits",
                            ("batch", "position", "token"))

    check.clause("pieces")
    _, first = _gpt_call(check, model, tokens[:, :t], None, f"forward(tokens[:, :{t}])",
                         n_layers)
    piece, second = _gpt_call(check, model, tokens[:, t:], first,
                              f"forward(tokens[:, {t}:], caches)", n_layers)
    offset: list[int | None] = []

    def used() -> int | None:
        if not offset:
            offset.append(_offset_used(model, tokens, t))
        return offset[0]

    check.close(piece, logits[:, t:], f"the logits of tokens[:, {t}:] with the caches of the "
                f"first {t} equal those of the whole text there", diagnoses={
                    POSITIONS_NOT_OFFSET: lambda: used() == 0,
                    WRONG_OFFSET: lambda: used() not in (None, 0, t)},
                dims=("batch", "position", "token"), **TOL)
    for i, (mine, whole) in enumerate(zip(second, caches, strict=True)):
        check.close(mine[0], whole[0], f"caches[{i}] after both pieces holds all {T} positions",
                    **TOL)
    steps, running = [], None
    for p in range(T):
        step, running = _gpt_call(check, model, tokens[:, p:p + 1], running,
                                  f"forward(tokens[:, {p}:{p + 1}], caches)", n_layers)
        steps.append(step)
    check.close(torch.cat(steps, dim=1), logits, "one token at a time with the caches gives "
                "the logits of the whole text", dims=("batch", "position", "token"), **TOL)

    check.clause("gradients")
    model.train()
    model.zero_grad()
    logits, _ = pair(check, check.call(model, tokens), "forward(tokens) in training mode",
                      "(logits, caches)")
    check.expect(logits.requires_grad, "the logits carry a gradient back to the model",
                 expected="logits that depend on the parameters", got="detached logits",
                 likely=GRADIENT_CUT)
    check.backward(logits, "forward(tokens) in training mode")
    _expect_grads(check, model)
    weights = torch.randn(logits.shape, generator=_generator(18))
    twin.zero_grad()
    (twin(tokens) * weights).sum().backward()
    model.zero_grad()
    logits, _ = pair(check, check.call(model, tokens), "forward(tokens) in training mode",
                      "(logits, caches)")
    check.backward(logits * weights, "forward(tokens) in training mode")
    for name, mine, theirs in (
            ("token_embedding", model.token_embedding, twin.token_embedding),
            ("position_embedding", model.position_embedding, twin.position_embedding)):
        got = mine.weight.grad if mine.weight.grad is not None else torch.zeros_like(mine.weight)
        check.close(got, theirs.weight.grad, f"the gradient reaching {name} is TinyLM's: the "
                    "residual stream carries it back from every block", likely=RESIDUAL_CUT,
                    **TOL)
    check.passed()


# ---- Exercise 4: train_gpt -------------------------------------------------------------------

class _TableLM(nn.Module):
    """A stand-in language model with your GPT's interface: the logits after a token are a
    row of a table, plus a bias (a bigram model), in float64."""

    def __init__(self, vocab_size: int, seed: int) -> None:
        super().__init__()
        generator = _generator(seed)
        self.table = nn.Parameter(0.5 * torch.randn(vocab_size, vocab_size, generator=generator,
                                                    dtype=torch.float64))
        self.bias = nn.Parameter(0.1 * torch.randn(vocab_size, generator=generator,
                                                   dtype=torch.float64))

    def forward(self, tokens: torch.Tensor, caches: Any = None) -> tuple[torch.Tensor, list]:
        return self.table[tokens] + self.bias, []


class _Batches:
    """``get_batch()`` returning the given batches in turn (the last one again after that)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches, self.calls = batches, 0

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batches[min(self.calls, len(self.batches) - 1)]
        self.calls += 1
        return batch


def _text_batches(V: int, count: int, B: int = 4, T: int = 6, seed: int = 9
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of a text where each token mostly follows from the one before."""
    generator = _generator(seed)
    successor = torch.randperm(V, generator=generator)
    batches = []
    for _ in range(count):
        text = torch.empty(B, T + 1, dtype=torch.long)
        text[:, 0] = torch.randint(V, (B,), generator=generator)
        for p in range(T):
            jump = torch.rand(B, generator=generator) < 0.1
            text[:, p + 1] = torch.where(jump, torch.randint(V, (B,), generator=generator),
                                         successor[text[:, p]])
        batches.append((text[:, :-1].contiguous(), text[:, 1:].contiguous()))
    return batches


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    logits, _ = model(batch[0])
    return F.cross_entropy(logits.flatten(0, 1), batch[1].flatten())


def _gradients(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    parameters = list(model.parameters())
    return list(torch.autograd.grad(_loss(model, batch), parameters))


def _adamw_step(p: torch.Tensor, m: torch.Tensor, v: torch.Tensor, g: torch.Tensor, step: int,
                lr: float, decay: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of AdamW (PyTorch's defaults: betas 0.9, 0.999, eps 1e-8): the parameter and
    the two running averages after it."""
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
    return p * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + 1e-8), m, v


def _after_one_step(p: torch.Tensor, g: torch.Tensor, lr: float, rule: str) -> torch.Tensor:
    zero = torch.zeros_like(p)
    if rule == "SGD":
        return p - lr * g
    return _adamw_step(p, zero, zero, g, 1, lr, decay=1e-2 if rule == "AdamW" else 0.0)[0]


def _parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _close_all(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, atol=1e-10, rtol=1e-8) for x, y in zip(a, b, strict=True))


GET_BATCH_TWICE = ("get_batch() was called more than once in a step, so the inputs and the "
                   "targets came from different batches: call it once per step and take both "
                   "from that one batch")
NO_STEP = ("the loss never moved: the parameters were never updated (call optimizer.step() "
           "after loss.backward())")
ZERO_BETWEEN = ("the loss never moved: zero_grad() ran between backward() and step(), so "
                "step() found no gradients (clear them before backward)")


@single_thread()
def check_train_gpt(train_gpt: Callable[..., list[float]]) -> None:
    """The losses, learning, AdamW's first two steps in closed form, cleared gradients."""
    check = SelfCheck("train_gpt")
    V, lr, steps = 7, 0.05, 8
    batches = _text_batches(V, 3)
    start = _TableLM(V, seed=10)

    check.clause("returns")
    model = copy.deepcopy(start)
    same = _Batches(batches[:1])  # one batch, every step
    losses = check.call(train_gpt, model, same, steps, lr=lr)
    check.expect(isinstance(losses, list | tuple) and len(losses) == steps,
                 f"train_gpt(model, get_batch, steps={steps}, lr={lr}) returns {steps} losses",
                 expected=f"a list of {steps} numbers", got=describe(losses))
    check.expect(all(isinstance(v, float) for v in losses), "each loss is a Python float",
                 expected="floats (loss.item())", got=describe(losses), diagnoses={
                     "the losses are tensors: append loss.item(), a plain number (a tensor "
                     "would also keep the whole graph of its step alive)":
                         any(isinstance(v, torch.Tensor) for v in losses)})

    check.clause("loss")
    with torch.no_grad():
        logits, _ = start(batches[0][0])
        targets = batches[0][1]
        first = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    check.close(torch.tensor(losses[0], dtype=torch.float64), first, "the first loss is the "
                "cross-entropy of the untrained model over every position of the batch",
                mistakes={
                    "the loss covers only the last position of each sequence: score every "
                    "position (flatten (B, T, V) to (B * T, V))":
                        F.cross_entropy(logits[:, -1], targets[:, -1]),
                    "the loss is summed over the positions instead of averaged":
                        F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                        reduction="sum")}, atol=1e-10, rtol=1e-8)

    check.clause("learns")
    unmoved = max(losses) - min(losses) < 1e-12
    check.expect(sum(losses[-3:]) / 3 < losses[0] - 1e-3, f"the loss falls over {steps} steps "
                 "on one batch", expected=f"the last losses below the first ({losses[0]:.4f})",
                 got=", ".join(f"{v:.4f}" for v in losses), diagnoses={
                     NO_STEP: unmoved and model.table.grad is not None,
                     ZERO_BETWEEN: unmoved and model.table.grad is None})

    check.clause("optimizer")
    one = copy.deepcopy(start)
    fed = _Batches(batches)
    check.call(train_gpt, one, fed, 1, lr=lr)
    g1 = _gradients(start, batches[0])
    p0 = _parameters(start)
    after = _parameters(one)
    expected = [_after_one_step(p, g, lr, "AdamW") for p, g in zip(p0, g1, strict=True)]
    wrong = {
        "the optimizer is SGD: use torch.optim.AdamW":
            [_after_one_step(p, g, lr, "SGD") for p, g in zip(p0, g1, strict=True)],
        "the optimizer is Adam, or AdamW with weight_decay=0 (the same thing): keep AdamW's "
        "own weight decay (0.01)":
            [_after_one_step(p, g, lr, "Adam") for p, g in zip(p0, g1, strict=True)],
        "the learning rate lr was not used (the default 3e-3 came instead)":
            [_after_one_step(p, g, 3e-3, "AdamW") for p, g in zip(p0, g1, strict=True)],
    }
    check.expect(_close_all(after, expected), "one step moves the parameters as AdamW does "
                 f"(lr={lr}, weight decay 0.01)", expected="AdamW's first step",
                 got="another change of the parameters", diagnoses={
                     GET_BATCH_TWICE: fed.calls > 1,
                     **{words: _close_all(after, values) for words, values in wrong.items()}})

    check.clause("steps")
    clean: list[bool] = []
    watched = copy.deepcopy(start)
    for parameter in watched.parameters():
        parameter.register_hook(lambda g, p=parameter: clean.append(
            p.grad is None or not bool(p.grad.any())))
    check.call(train_gpt, watched, _Batches(batches), 3, lr=lr)
    check.expect(len(clean) > 0 and all(clean), "every backward starts from cleared gradients",
                 expected="optimizer.zero_grad() every step",
                 got="gradients left over from the step before",
                 likely="the gradients were never cleared, so they added up from step to step: "
                        "call optimizer.zero_grad() every step")
    two = copy.deepcopy(start)
    check.call(train_gpt, two, _Batches(batches), 2, lr=lr)
    g2 = _gradients(one, batches[1])
    state = [_adamw_step(p, torch.zeros_like(p), torch.zeros_like(p), g, 1, lr)
             for p, g in zip(p0, g1, strict=True)]
    expected = [_adamw_step(p, m, v, g, 2, lr)[0]
                for (p, m, v), g in zip(state, g2, strict=True)]
    check.expect(_close_all(_parameters(two), expected), "the second step continues AdamW's "
                 "running averages", expected="AdamW's second step",
                 got="another change of the parameters", diagnoses={
                     "a new AdamW was made at every step, which forgets its running averages: "
                     "make it once, before the loop": _close_all(_parameters(two), [
                         _after_one_step(p, g, lr, "AdamW")
                         for p, g in zip(after, g2, strict=True)]),
                     "get_batch() was called once, before the loop, so every step saw the "
                     "first batch: draw a new batch at every step":
                         lambda: _close_all(_parameters(two), [
                             _adamw_step(p, m, v, g, 2, lr)[0] for (p, m, v), g in zip(
                                 state, _gradients(one, batches[0]), strict=True)])})
    check.clause("randomness")
    check.no_reseed(train_gpt, copy.deepcopy(start), _Batches(batches), 2, lr=lr,
                    what=f"train_gpt(model, get_batch, 2, lr={lr})")
    check.passed()


# ---- Exercise 5: generate --------------------------------------------------------------------

class _ScriptedLM(nn.Module):
    """A stand-in language model with your GPT's interface. The logits at a position depend
    only on that position and the token there (a table), so the right continuation is known;
    it notes every call as (new positions, cached positions) and keeps a fake cache that only
    counts positions."""

    def __init__(self, vocab_size: int, seed: int, flat: torch.Tensor | None = None,
                 positions: int = 128) -> None:
        super().__init__()
        table = 3.0 * torch.randn(positions, vocab_size, vocab_size, generator=_generator(seed),
                                  dtype=torch.float64)
        if flat is not None:  # the same logits everywhere
            table = flat.double().expand(positions, vocab_size, -1).clone()
        self.table = nn.Parameter(table, requires_grad=False)
        self.block_size = positions  # for code that asks, as nanoGPT's generate does
        self.calls: list[tuple[int, int | None]] = []

    def logits_at(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        positions = torch.arange(start, start + tokens.shape[1]) % self.table.shape[0]
        return self.table[positions[None, :], tokens]

    def forward(self, tokens: torch.Tensor, caches: Any = None) -> tuple[torch.Tensor, list]:
        t = None if caches is None else caches[0][0].shape[2]
        self.calls.append((tokens.shape[1], t))
        K = torch.zeros(tokens.shape[0], 1, tokens.shape[1] + (t or 0), 1)
        return self.logits_at(tokens, t or 0), [(K, K)]


def _expect_tokens(check: SelfCheck, out: Any, shape: tuple[int, int], prompt: torch.Tensor,
                   what: str) -> torch.Tensor:
    check.tensor(out, what)
    check.expect(out.dtype == torch.int64, f"{what} is int64 token ids",
                 expected="dtype torch.int64", got=f"dtype {out.dtype}")
    check.expect(tuple(out.shape) == shape, f"{what} has shape {shape}",
                 expected=f"(B, T0 + n_tokens) = {shape}", got=f"shape {tuple(out.shape)}",
                 diagnoses={"only the new tokens came back: return the prompt followed by them":
                            tuple(out.shape) == (shape[0], shape[1] - prompt.shape[1])})
    check.expect(torch.equal(out[:, :prompt.shape[1]], prompt), f"{what} starts with the prompt",
                 expected=describe(prompt), got=describe(out[:, :prompt.shape[1]]))
    return out


def frequency_slack(probabilities: torch.Tensor, n: int) -> torch.Tensor:
    """How far a frequency of n independent draws may stray from its probability p before a
    right answer would fail by chance (Bernstein's inequality, odds 1 in 1e13)."""
    log_odds = math.log(2e13)
    linear = 2 * log_odds / 3
    variance = probabilities * (1 - probabilities)
    return (linear + torch.sqrt(linear**2 + 8 * n * log_odds * variance)) / (2 * n)


def _expect_frequencies(check: SelfCheck, draws: torch.Tensor, probabilities: torch.Tensor,
                        what: str, mistakes: dict[str, torch.Tensor]) -> None:
    n = draws.numel()
    frequencies = torch.bincount(draws, minlength=probabilities.numel()).double() / n
    check.expect(bool(((frequencies - probabilities).abs() <= frequency_slack(probabilities, n)).all()),
                 what, expected=describe(probabilities.float()), got=describe(frequencies.float()),
                 diagnoses={words: bool(((frequencies - wrong).abs() <= frequency_slack(wrong, n)).all())
                            for words, wrong in mistakes.items()})


def _cropped(model: _ScriptedLM, tokens: torch.Tensor, T0: int) -> bool:
    """Whether the greedy tokens are those of a model that read only the last w tokens."""
    for w in range(1, tokens.shape[1] - 1):
        right = True
        for end in range(T0, tokens.shape[1]):
            start = max(0, end - w)
            row = model.logits_at(tokens[:, start:end], 0)[:, -1]
            if not torch.equal(row.argmax(dim=-1), tokens[:, end]):
                right = False
                break
        if right:
            return True
    return False


def _describe_calls(calls: list[tuple[int, int | None]]) -> str:
    shown = ", ".join(f"{T} new" + ("" if t is None else f" + {t} cached") for T, t in calls[:6])
    return f"{len(calls)} calls: {shown}" + (", ..." if len(calls) > 6 else "")


GENERATOR_IGNORED = ("the same generator state gave different tokens under two global seeds: "
                     "pass generator=generator on to sample_next_token")
RESEEDS = ("two different generators gave the same tokens: generate (or the sampler) reseeds "
           "the random generator itself; draw only with the generator passed in")
GLOBAL_RESEEDED = ("with generator=None, two different global seeds gave the same tokens: "
                   "generate calls torch.manual_seed itself or draws from a generator of its "
                   "own; pass generator=None on to sample_next_token as it is")
GREEDY_AT_RANDOM = ("with top_k=1 the tokens changed with the global seed, so they were drawn "
                    "from every token: hand top_k on to sample_next_token")
CROPPED = ("the text was cut to its last tokens before the model read it (a window such as "
           "tokens[:, -block_size:]): without the cache, give the model the whole text so far; "
           "the caller keeps it within the model's block_size")


GENERATOR_KEPT = ("the generator you were given never moved on: the draws came from a copy "
                  "of its state (or a generator made from it), so the next call writes the "
                  "same text again; draw from the caller's generator itself")


@single_thread()
def check_generate(generate: Callable[..., torch.Tensor]) -> None:
    """Greedy continuation, the cache, temperature and top-k, the generator, and (a rule)
    one new token per call with the cache; with stand-in models, so your GPT is not needed."""
    check = SelfCheck("generate")
    V, B, T0, n = 9, 3, 3, 10
    model = _ScriptedLM(V, seed=11)
    prompt = torch.randint(V, (B, T0), generator=_generator(12))

    check.clause("returns")
    shape = (B, T0 + n)
    model.calls.clear()
    greedy = _expect_tokens(check, check.call(generate, model, prompt, n, top_k=1,
                                              use_cache=False), shape, prompt,
                            f"generate(model, prompt of {(B, T0)}, {n}, top_k=1, "
                            "use_cache=False)")
    uncached_calls = list(model.calls)

    check.clause("next_token")
    best = model.logits_at(greedy, 0).argmax(dim=-1)  # the most likely token after each one
    first_row = model.logits_at(greedy[:, :1], 0).argmax(dim=-1)
    check.expect(torch.equal(greedy[:, T0:], best[:, T0 - 1:-1]), "greedy (top_k=1) without the "
                 "cache: each new token is the most likely one after the text so far",
                 expected=describe(best[:, T0 - 1:-1]), got=describe(greedy[:, T0:]), diagnoses={
                     "the logits of the first position were used: the next token follows the "
                     "last position, logits[:, -1]":
                         bool((greedy[:, T0:] == first_row).all()),
                     CROPPED: lambda: _cropped(model, greedy, T0),
                     GREEDY_AT_RANDOM: lambda: not torch.equal(*(
                         check.call_seeded(seed, generate, model, prompt, n, top_k=1,
                                           use_cache=False) for seed in (1, 2)))})
    one = _expect_tokens(check, check.call(generate, model, prompt[:1], n, top_k=1,
                                           use_cache=False), (1, T0 + n), prompt[:1],
                         "generate with a prompt of one sequence")
    check.expect(torch.equal(one, greedy[:1]), "the same for a batch of one sequence",
                 expected=describe(greedy[:1]), got=describe(one))
    long = 70  # past any window of 64 tokens: the model reads the whole text
    whole = _expect_tokens(check, check.call(generate, model, prompt[:1], long, top_k=1,
                                             use_cache=False), (1, T0 + long), prompt[:1],
                           f"generate(model, a prompt of one sequence, {long}, top_k=1, "
                           "use_cache=False)")
    best = model.logits_at(whole, 0).argmax(dim=-1)
    check.expect(torch.equal(whole[:, T0:], best[:, T0 - 1:-1]), f"{long} tokens greedy "
                 "without the cache: each one follows the whole text so far",
                 expected=describe(best[:, T0 - 1:-1]), got=describe(whole[:, T0:]),
                 diagnoses={CROPPED: lambda: _cropped(model, whole, T0)})

    check.clause("cache")
    model.calls.clear()
    cached = _expect_tokens(check, check.call(generate, model, prompt, n, top_k=1), shape,
                            prompt, f"generate(model, prompt of {(B, T0)}, {n}, top_k=1)")
    calls = list(model.calls)
    later = calls[1:]
    check.expect(torch.equal(cached, greedy), "greedy with the cache: the same tokens as "
                 "without it", expected=describe(greedy), got=describe(cached), diagnoses={
                     "with the cache, the whole text was fed again at every step: after the "
                     "first call, feed only the newest token with the caches":
                         any(T > 1 and t is not None for T, t in later),
                     "the newest token was fed without the caches, so the model saw a text of "
                     "one token: pass the caches it returned":
                         any(T == 1 and t is None for T, t in later),
                     "the caches of the first call were passed every time: pass the caches the "
                     "model returned at the step before":
                         len(later) > 1 and len({t for _, t in later}) == 1
                         and later[0][1] is not None})
    sampled = [check.call(generate, model, prompt, n, use_cache=use,
                          generator=_generator(13)) for use in (True, False)]
    check.expect(torch.equal(*sampled), "sampled (temperature 1) with the same generator: the "
                 "same tokens with and without the cache", expected=describe(sampled[1]),
                 got=describe(sampled[0]))

    check.clause("sampling")
    row = torch.tensor([1.5, -1.0, 0.5, 2.0, -0.5, 0.0, 1.0, -2.0, 0.2], dtype=torch.float64)
    flat = _ScriptedLM(V, seed=14, flat=row)
    many = torch.randint(V, (2000, 1), generator=_generator(15))
    hot = _expect_tokens(check, check.call(generate, flat, many, 1, temperature=0.5,
                                           generator=_generator(16)), (2000, 2), many,
                         "generate(..., temperature=0.5)")
    _expect_frequencies(check, hot[:, 1], torch.softmax(row / 0.5, dim=-1),
                        "with temperature=0.5, the tokens follow softmax(logits / 0.5)",
                        {"the temperature was not passed on to sample_next_token":
                         torch.softmax(row, dim=-1)})
    kept = _expect_tokens(check, check.call(generate, flat, many, 1, top_k=3,
                                            generator=_generator(17)), (2000, 2), many,
                          "generate(..., top_k=3)")
    top = row.masked_fill(row < row.topk(3).values[-1], float("-inf"))
    _expect_frequencies(check, kept[:, 1], torch.softmax(top, dim=-1),
                        "with top_k=3, only the 3 most likely tokens are drawn",
                        {"top_k was not passed on to sample_next_token":
                         torch.softmax(row, dim=-1)})

    check.clause("randomness")
    a = check.call_seeded(1, generate, model, prompt, n, generator=_generator(18))
    b = check.call_seeded(2, generate, model, prompt, n, generator=_generator(18))
    check.expect(torch.equal(a, b), "the same generator state gives the same tokens under any "
                 "global seed", expected=describe(a), got=describe(b), likely=GENERATOR_IGNORED)
    others = [check.call(generate, model, prompt, n, generator=_generator(19 + i))
              for i in range(2)]
    check.expect(not all(torch.equal(o, a) for o in others), "other generator states give "
                 "other tokens", expected="different tokens", got="the same tokens for three "
                 "generator states", likely=RESEEDS)
    shared = _generator(23)
    once, twice = (check.call(generate, model, prompt, n, temperature=2.0, generator=shared)
                   for _ in range(2))
    check.expect(not torch.equal(once, twice), "two calls with one generator write different "
                 "tokens (the generator moves on with every draw)", expected="different tokens",
                 got="the same tokens twice", likely=GENERATOR_KEPT)
    free = [check.call_seeded(seed, generate, model, prompt, n, temperature=2.0)
            for seed in (3, 3, 4)]
    check.expect(torch.equal(free[0], free[1]), "with generator=None, the same global seed "
                 "gives the same tokens", expected=describe(free[0]), got=describe(free[1]),
                 likely=GLOBAL_RESEEDED)
    check.expect(not torch.equal(free[0], free[2]), "with generator=None, another global seed "
                 "gives other tokens", expected="different tokens",
                 got="the same tokens under torch.manual_seed(3) and torch.manual_seed(4)",
                 likely=GLOBAL_RESEEDED)

    check.rule("one_position")
    wanted = [(T0, None)] + [(1, T0 + i) for i in range(n - 1)]
    check.expect(calls == wanted, f"with the cache, {n} calls: the prompt, then the newest "
                 "token with the caches each time", expected=_describe_calls(wanted),
                 got=_describe_calls(calls), likely="with use_cache=True, call the model once "
                 "on the prompt, then once per new token with only that token and the caches "
                 "it returned")
    whole_text = [(T0 + i, None) for i in range(n)]
    check.expect(uncached_calls == whole_text, f"with use_cache=False, {n} calls: the whole "
                 "text so far each time, without caches", expected=_describe_calls(whole_text),
                 got=_describe_calls(uncached_calls), likely="use_cache=False was ignored: "
                 "without the cache, call the model on the whole text so far at every step and "
                 "pass no caches")
    check.passed()


# ---- tutorial 7's sampler, pasted -------------------------------------------------------------

def check_pasted_sampler(sample_next_token: Callable[..., torch.Tensor]) -> None:
    """Tutorial 7's self-check of ``sample_next_token``, on the copy pasted here."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its own line of success
            check_sample_next_token(sample_next_token)
    except NotImplementedError:
        raise ExerciseNotFinished(
            "`sample_next_token` is not pasted yet: copy your answer to Exercise 1 of "
            "tutorial 7 into the cell above, run it, then this cell.") from None
    print("✅ sample_next_token (pasted): tutorial 7's self-check passes.")
