"""Hidden tests for tutorial 09 (your own GPT).

The student's modules come back rebuilt with the layers the text prescribes (``nn.Linear``,
``nn.LayerNorm``, ``nn.Embedding``, ``nn.Sequential`` of the MLP) as PyTorch's own, holding
weights set here; the references are computed here from those layers' weights, with the
configuration the text writes (LayerNorm's default eps, embeddings without padding_idx), never
with one the student's layer reports. Where a module holds another of the student's modules (a
Block's ``attn``, a GPT's ``blocks``) and the student's class of that inner module computes the
prescribed one on its own (built here alone, with a seed drawn afresh), the reference is the
prescribed module computed here from the weights alone. Otherwise the reference calls the
inner module as the student wrote it, so that the exercise is graded on its own wiring and not
on the exercise before it; that reference is computed before the module under test is called
with those inputs, so that an inner module cannot answer it to fit a call it has seen, and a
GPT's blocks must still compute what the student's Block computes on its own.

``train_gpt`` and ``generate`` are graded with the student's own ``GPT`` (the class their
function sees: in their kernel while grading), built with weights set here: the reference run
of ``train_gpt`` trains the same model with ``torch.optim.AdamW`` here (the model's forward and
backward run where the student's code lives), and ``generate`` is compared with greedy
decoding and with itself. Before it serves, their GPT is compared at exactly those sizes, in
both modes and by its gradients, with the prescribed GPT computed here from its weights
(blocks included), so that it cannot be another model where the loop and generate are graded.
When their GPT cannot serve (it fails, disagrees with itself fed in pieces, or is not the
prescribed GPT), the test says to pass Exercise 3 first.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers import syllabus
from helpers.checks.framework import CheckFailed, describe
from helpers.checks.qkv_attention import expect_no_padding_idx
from helpers.checks.transformer_block import DEFAULT_EPS, expect_default_eps
from helpers.checks.your_own_gpt import (
    CACHE_IGNORED,
    DETACHED_RESIDUAL,
    GENERATOR_IGNORED,
    GENERATOR_KEPT,
    GLOBAL_RESEEDED,
    GRADIENT_CUT,
    HEAD_BIAS,
    KEYS_TWICE,
    KV_SWAPPED,
    NEW_FIRST,
    NO_MASK_WITH_CACHE,
    OLD_CACHE,
    ONLY_NEW,
    POSITIONS_NOT_OFFSET,
    RELU,
    RESEEDS,
    RESIDUAL_CUT,
    TOL,
    TOP_LEFT,
    WRONG_OFFSET,
    Cache,
    cache_pair,
    expect_attention_members,
    expect_cache_shape,
    expect_linear,
    expect_same_in_training,
    frequency_slack,
    pair,
    set_attention,
    set_block,
    set_gpt,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test
from kernel_protocol.grader_side import (
    Batches,
    LocalChannel,
    StudentError,
    StudentFunction,
    global_seed,
    kernel_state,
)

EXACT = {"atol": 1e-8, "rtol": 1e-8}  # float64 runs of the same code
# What a student's code may raise when it is built or run outside the exercise under test.
RUN_ERRORS = (CheckFailed, StudentError, AttributeError, TypeError, ValueError, IndexError,
              RuntimeError, NotImplementedError)


class _Lazy(Mapping):
    """Mistake description -> wrong output, computed only when a comparison has failed."""

    def __init__(self, variants: dict[str, Callable[[], torch.Tensor]]) -> None:
        self._variants = variants

    def __getitem__(self, words: str) -> torch.Tensor:
        return self._variants[words]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._variants)

    def __len__(self) -> int:
        return len(self._variants)


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (1,), generator=generator))


def _number(value: Any) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


# ---- the attention ---------------------------------------------------------------------------

def _heads(t: torch.Tensor, H: int, transpose: bool = True) -> torch.Tensor:
    B, T, d = t.shape
    if not transpose:  # a view straight to (B, H, T, dh): positions and heads mixed
        return t.reshape(B, H, T, d // H)
    return t.reshape(B, T, H, d // H).transpose(1, 2)


def _attention(x: torch.Tensor, layer: nn.Module, H: int, cache: Cache | None = None, *,
               mask: str = "offset", scale: str = "head", transpose: bool = True,
               softmax_dim: int = -1, unify: bool = True, use_cache: bool = True
               ) -> tuple[torch.Tensor, Cache]:
    """Causal multi-head attention with the layer's maps, in float64; the flags make the
    usual mistakes."""
    x = x.double()
    B, T, d = x.shape
    q, k, v = (_heads(getattr(layer, name)(x.to(getattr(layer, name).weight.dtype)).double(),
                      H, transpose) for name in ("to_queries", "to_keys", "to_values"))
    keys, values = k, v
    if cache is not None:
        keys = torch.cat([cache[0].double(), k], dim=2)
        values = torch.cat([cache[1].double(), v], dim=2)
    attended_k, attended_v = (keys, values) if use_cache else (k, v)
    t = attended_k.shape[2] - T
    dh = d // H
    divisor = {"head": math.sqrt(dh), "model": math.sqrt(d), "none": 1.0}[scale]
    scores = q @ attended_k.transpose(-2, -1) / divisor
    rows = torch.arange(T)[:, None]
    columns = torch.arange(t + T)[None, :]
    allowed = {"offset": columns <= rows + t, "top_left": columns <= rows,
               "none": torch.ones(T, t + T, dtype=torch.bool),
               "upper": columns >= rows + t}[mask]
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim).nan_to_num(0.0)
    merged = (weights @ attended_v).transpose(1, 2).reshape(B, T, d)
    out = layer.unify_heads(merged.to(layer.unify_heads.weight.dtype)).double() if unify \
        else merged
    return out, (keys, values)


def _attention_mistakes(x: torch.Tensor, layer: nn.Module, H: int) -> _Lazy:
    def wrong(**flags: Any) -> Callable[[], torch.Tensor]:
        return lambda: _attention(x, layer, H, **flags)[0]

    variants = {
        "no causal mask: every position also read the positions after it": wrong(mask="none"),
        "the mask is the wrong triangle: each position read the positions after it instead "
        "of those before it": wrong(mask="upper"),
        "the scores were not scaled: divide them by sqrt(d_model // n_heads)":
            wrong(scale="none"),
        "the scores were scaled by sqrt(d_model) instead of sqrt(d_model // n_heads), the "
        "size of one head": wrong(scale="model"),
        "the softmax ran over the queries (dim=-2): each query's weights must sum to 1 over "
        "the keys (dim=-1)": wrong(softmax_dim=-2),
        "unify_heads was skipped: the merged heads must go through it": wrong(unify=False),
    }
    if H > 1:
        variants["the heads were split by a view straight to (B, n_heads, T, head size), "
                 "without the transpose: positions and heads got mixed"] = wrong(transpose=False)
    return _Lazy(variants)


def _attention_call(check: HiddenCheck, layer: nn.Module, x: torch.Tensor,
                    cache: Cache | None, what: str) -> tuple[torch.Tensor, Cache]:
    result = check.call(layer, x) if cache is None else check.call(layer, x, cache=cache)
    out, new_cache = pair(check, result, what, "(out, cache)")
    check.tensor(out, f"out of {what}")
    return out, cache_pair(check, new_cache, f"the cache of {what}")


@hidden_test
def grade_CausalSelfAttention(attention_cls: type[nn.Module]) -> None:
    check = HiddenCheck("CausalSelfAttention")
    generator = fresh_generator(901)
    seeds = torch.randperm(2**20, generator=generator)[:3].tolist()
    H = 2 * _randint(generator, 1, 3)
    d = H * _randint(generator, 3, 6)

    check.clause("members")
    layer = check.call_seeded(seeds[0], attention_cls, d, H)
    check.expect(isinstance(layer, nn.Module), "CausalSelfAttention builds an nn.Module",
                 expected="an nn.Module", got=describe(layer))
    expect_attention_members(check, layer, d)
    set_attention(layer, generator)
    layer.eval()
    B, T = _randint(generator, 2, 4), _randint(generator, 6, 10)
    x = torch.randn(B, T, d, generator=generator)

    check.clause("shape")
    others = []
    with torch.no_grad():
        out, cache = _attention_call(check, layer, x, None, f"forward(x of {(B, T, d)})")
        check.shape(out, (B, T, d), f"out for x of {(B, T, d)}")
        expect_cache_shape(check, cache, (B, H, T, d // H), f"forward(x of {(B, T, d)})")
        for width, heads in ((_randint(generator, 5, 9), 1), (_randint(generator, 3, 6), 0)):
            heads = heads or width  # 0: one channel per head
            other = check.call_seeded(seeds[1], attention_cls, width, heads)
            expect_attention_members(check, other, width)
            set_attention(other, generator)
            other.eval()
            x_other = torch.randn(1, T, width, generator=generator)
            what = f"forward(x of {(1, T, width)}) with n_heads={heads}"
            out_o, cache_o = _attention_call(check, other, x_other, None, what)
            check.shape(out_o, (1, T, width), f"out of {what}")
            expect_cache_shape(check, cache_o, (1, heads, T, 1 if heads == width else
                                                 width // heads), what)
            others.append((other, x_other, heads, out_o))

    check.clause("values")
    reference, (K, V) = _attention(x, layer, H)
    check.close(out, reference, f"out for x of {(B, T, d)}, {H} heads",
                mistakes=_attention_mistakes(x, layer, H),
                dims=("batch", "position", "channel"), **TOL)
    for other, x_other, heads, out_o in others:
        check.close(out_o, _attention(x_other, other, heads)[0],
                    f"out with {heads} head{'s' if heads > 1 else ''} of size "
                    f"{x_other.shape[-1] // heads}", mistakes=_attention_mistakes(
                        x_other, other, heads), dims=("batch", "position", "channel"), **TOL)
    expect_same_in_training(check, layer, (x,), reference, "out",
                            ("batch", "position", "channel"))

    check.clause("cache")
    swapped = cache[1].shape == K.shape and torch.allclose(cache[1].to(K.dtype), K, **TOL)
    check.close(cache[0], K, "K: the keys of every position, split into heads",
                mistakes={KV_SWAPPED: V} if swapped else None,
                dims=("batch", "head", "position", "channel"), **TOL)
    check.close(cache[1], V, "V: the values of every position, split into heads",
                mistakes={KEYS_TWICE: K}, dims=("batch", "head", "position", "channel"), **TOL)
    t = _randint(generator, 2, T - 2)
    with torch.no_grad():
        _, first = _attention_call(check, layer, x[:, :t], None, f"forward(x[:, :{t}])")
        piece, second = _attention_call(check, layer, x[:, t:], first,
                                        f"forward(x[:, {t}:], cache=<the cache of x[:, :{t}]>)")
    for name, got, full, given in (("K", second[0], K, first[0]), ("V", second[1], V, first[1])):
        check.expect(tuple(got.shape) == tuple(full.shape), f"{name} after x[:, :{t}] and then "
                     f"x[:, {t}:] covers all {T} positions", expected=f"shape {tuple(full.shape)}",
                     got=f"shape {tuple(got.shape)}", diagnoses={
                         OLD_CACHE: got.shape == given.shape and torch.equal(got, given),
                         ONLY_NEW: got.dim() == 4 and got.shape[2] == T - t})
        check.close(got, full, f"{name} after feeding x[:, :{t}] and then x[:, {t}:] holds all "
                    f"{T} positions in order", mistakes={
                        NEW_FIRST: torch.cat([full[:, :, t:], full[:, :, :t]], dim=2)},
                    dims=("batch", "head", "position", "channel"), **TOL)

    check.clause("pieces")
    check.close(piece, reference[:, t:], f"out of x[:, {t}:] with the cache of the first {t} "
                f"positions equals out of the whole x at those positions", mistakes=_Lazy({
                    TOP_LEFT: lambda: _attention(x[:, t:], layer, H, first, mask="top_left")[0],
                    NO_MASK_WITH_CACHE: lambda: _attention(x[:, t:], layer, H, first,
                                                           mask="none")[0],
                    CACHE_IGNORED: lambda: _attention(x[:, t:], layer, H, first,
                                                      use_cache=False)[0]}),
                dims=("batch", "position", "channel"), **TOL)
    steps, running = [], None
    with torch.no_grad():
        for position in range(T):
            step, running = _attention_call(check, layer, x[:, position:position + 1], running,
                                            f"forward(x[:, {position}:{position + 1}], cache)")
            steps.append(step)
    check.close(torch.cat(steps, dim=1), reference, "feeding x one position at a time, with "
                "the cache, gives out of the whole x", mistakes=_Lazy({
                    TOP_LEFT: lambda: torch.cat([_attention(
                        x[:, p:p + 1], layer, H, None if p == 0 else (K[:, :, :p], V[:, :, :p]),
                        mask="top_left")[0] for p in range(T)], dim=1)}),
                dims=("batch", "position", "channel"), **TOL)

    check.clause("gradients")
    layer.train()
    layer.zero_grad()
    out, _ = check.call(layer, x)
    check.expect(out.requires_grad, "out carries a gradient back to the layer",
                 expected="an output that depends on the parameters", got="a detached output",
                 likely=GRADIENT_CUT)
    check.backward(out, "forward(x) in training mode")
    for name in ("to_queries", "to_keys", "to_values", "unify_heads"):
        grad = getattr(layer, name).weight.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the output's gradient reaches {name}.weight",
                     expected="a non-zero gradient", got="None" if grad is None else "zeros",
                     likely=GRADIENT_CUT)
    # the gradient that reaches x: through the queries, the keys and the values alike
    layer.eval()
    _expect_input_gradient(check, layer, x, lambda v: _attention(v, layer, H)[0],
                           "the prescribed attention's", INPUT_CUT, generator)
    check.passed()


def _expect_input_gradient(check: HiddenCheck, module: nn.Module, x: torch.Tensor,
                           reference: Callable[[torch.Tensor], torch.Tensor], whose: str,
                           likely: str, generator: torch.Generator) -> None:
    """The gradient that reaches x from ``module(x)`` (a random weighting of its output) is
    the one ``reference`` (computed here, differentiable) gives."""
    weights = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    mine = x.detach().clone().requires_grad_()
    out, _ = check.call(module, mine)
    check.backward(out.double() * weights, "forward(x)")
    theirs = x.detach().clone().requires_grad_()
    (reference(theirs) * weights).sum().backward()
    check.close(mine.grad if mine.grad is not None else torch.zeros_like(x), theirs.grad,
                f"the gradient that reaches x is {whose}", likely=likely, **TOL)


INPUT_CUT = ("every value is right but the gradient reaching x is not: x was detached on its "
             "way into the queries, the keys or the values, so part of the gradient never "
             "gets back to it (and to every layer below, in a GPT)")


# ---- the block ------------------------------------------------------------------------------


def _mlp(block: nn.Module, h: torch.Tensor, activation: str = "gelu") -> torch.Tensor:
    """The MLP with the block's two linear maps and the stated non-linearity."""
    hidden = block.mlp[0](h)
    hidden = F.relu(hidden) if activation == "relu" else F.gelu(hidden)
    return block.mlp[2](hidden)


def _expect_block_members(check: HiddenCheck, block: nn.Module, d: int, path: str = "") -> None:
    for name in ("ln_1", "ln_2"):
        norm = getattr(block, name, None)
        ok = isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (d,)
        check.expect(ok, f"{path}{name} is nn.LayerNorm({d})", expected=f"nn.LayerNorm({d})",
                     got=describe(norm) if not isinstance(norm, nn.LayerNorm)
                     else f"nn.LayerNorm({tuple(norm.normalized_shape)})")
        expect_default_eps(check, norm, f"{path}{name}")
        check.expect(norm.weight is not None and norm.bias is not None,
                     f"{path}{name} has its own weight and bias", expected=f"nn.LayerNorm({d})",
                     got="a LayerNorm without weight or bias",
                     likely=None if path else "elementwise_affine=False (or bias=False) "
                     "left out the norm's learned scale and shift: keep nn.LayerNorm's defaults")
    mlp = getattr(block, "mlp", None)
    parts = list(mlp) if isinstance(mlp, nn.Sequential) else []
    middle = parts[1] if len(parts) == 3 else None
    check.expect(isinstance(mlp, nn.Sequential) and len(parts) == 3,
                 f"{path}mlp is an nn.Sequential of three layers",
                 expected="nn.Sequential(nn.Linear, nn.GELU, nn.Linear)", got=describe(mlp))
    check.expect(isinstance(middle, nn.GELU), f"{path}mlp[1] is nn.GELU()",
                 expected="nn.GELU()", got=type(middle)._get_name(middle), diagnoses=None
                 if path else {RELU: "ReLU" in type(middle)._get_name(middle)})
    check.expect(middle.approximate == "none", f"{path}mlp[1] is the exact GELU",
                 expected="nn.GELU() (approximate='none')",
                 got=f"nn.GELU(approximate={middle.approximate!r})")
    expect_linear(check, mlp, "0", d, 4 * d, True, f"{path}mlp.")
    expect_linear(check, mlp, "2", 4 * d, d, True, f"{path}mlp.")
    attn = getattr(block, "attn", None)
    check.expect(isinstance(attn, nn.Module), f"{path}attn is your CausalSelfAttention",
                 expected="CausalSelfAttention(d_model, n_heads)", got=describe(attn))
    expect_attention_members(check, attn, d, f"{path}attn.")


def _norm(norm: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """nn.LayerNorm(d_model) with the norm's weight and bias and PyTorch's default eps,
    whatever eps the student's layer was built with (its members check holds it to that)."""
    return F.layer_norm(h, tuple(norm.normalized_shape), norm.weight, norm.bias, DEFAULT_EPS)


def _embed(table: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """nn.Embedding's lookup without padding_idx, whatever the student's layer says."""
    return F.embedding(ids, table.weight)


Attend = Callable[[torch.Tensor, "Cache | None"], "tuple[torch.Tensor, Cache]"]


def _students_attention(block: nn.Module) -> Attend:
    """The block's own attention, as the student wrote it."""
    return lambda h, cache: block.attn(h, cache)


def _prescribed_attention(block: nn.Module, H: int) -> Attend:
    """The prescribed attention computed here from the weights of the block's attention."""
    def attend(h: torch.Tensor, cache: Cache | None) -> tuple[torch.Tensor, Cache]:
        out, (keys, values) = _attention(h, block.attn, H, cache)
        return out.to(h.dtype), (keys.to(h.dtype), values.to(h.dtype))
    return attend


def _block_reference(block: nn.Module, x: torch.Tensor, cache: Cache | None = None, *,
                     attend: Attend, order: str = "pre", activation: str = "gelu"
                     ) -> tuple[torch.Tensor, Cache]:
    """The block's output with the attention ``attend`` and the prescribed layers; ``order``
    makes the usual mistakes."""
    with torch.no_grad():
        if order == "post":
            a, new = attend(x, cache)
            h = _norm(block.ln_1, x + a)
            return _norm(block.ln_2, h + _mlp(block, h, activation)), new
        a, new = attend(_norm(block.ln_1, x), cache)
        h = x + a
        if order == "parallel":
            return h + _mlp(block, _norm(block.ln_2, x), activation), new
        if order == "no_attention_residual":
            return a + _mlp(block, _norm(block.ln_2, a), activation), new
        if order == "no_mlp_residual":
            return _mlp(block, _norm(block.ln_2, h), activation), new
        if order == "ln_1_twice":
            return h + _mlp(block, _norm(block.ln_1, h), activation), new
        return h + _mlp(block, _norm(block.ln_2, h), activation), new


def _prescribed_block(block: nn.Module, x: torch.Tensor, H: int, cache: Cache | None = None
                      ) -> tuple[torch.Tensor, Cache]:
    """The pre-norm block computed here from the block's parameters alone (attention, norms
    and MLP as prescribed), never calling the student's forward: what a GPT's blocks must
    compute whatever their code does, so a block that behaves otherwise inside a GPT shows."""
    dtype = block.ln_1.weight.dtype
    a, new = _attention(_norm(block.ln_1, x.to(dtype)), block.attn, H, cache)
    h = x.double() + a
    return h + _mlp(block, _norm(block.ln_2, h.to(dtype))).double(), new


def _prescribed_gpt(model: nn.Module, tokens: torch.Tensor, H: int) -> torch.Tensor:
    """The logits of the whole text computed here, blocks included (``_prescribed_block``);
    with gradients, so that the student's backward pass can be compared with this one."""
    T = tokens.shape[1]
    x = _embed(model.token_embedding, tokens) + _embed(model.position_embedding, torch.arange(T))
    x = x.double()
    for block in model.blocks:
        x, _ = _prescribed_block(block, x, H)
    dtype = model.ln_f.weight.dtype
    return model.head(_norm(model.ln_f, x.to(dtype))).double()


def _block_mistakes(block: nn.Module, x: torch.Tensor, attend: Attend,
                    cache: Cache | None = None) -> _Lazy:
    def wrong(**flags: Any) -> Callable[[], torch.Tensor]:
        return lambda: _block_reference(block, x, cache, attend=attend, **flags)[0]

    return _Lazy({
        "post-norm: the norms came after the residual additions; this block normalises "
        "first: x + attn(ln_1(x)), then h + mlp(ln_2(h))": wrong(order="post"),
        "the MLP read x instead of h = x + attn(ln_1(x)): apply it after the attention's "
        "residual": wrong(order="parallel"),
        "the attention's residual is missing: h = x + attn(ln_1(x)), not attn(ln_1(x))":
            wrong(order="no_attention_residual"),
        "the MLP's residual is missing: return h + mlp(ln_2(h)), not mlp(ln_2(h))":
            wrong(order="no_mlp_residual"),
        "ln_1 normalised the MLP's input too: the MLP reads ln_2(h)": wrong(order="ln_1_twice"),
        RELU: wrong(activation="relu"),
    })


def _block_call(check: HiddenCheck, block: nn.Module, x: torch.Tensor, cache: Cache | None,
                what: str) -> tuple[torch.Tensor, Cache]:
    result = check.call(block, x) if cache is None else check.call(block, x, cache=cache)
    out, new_cache = pair(check, result, what, "(x, cache)")
    check.tensor(out, f"the x of {what}")
    return out, cache_pair(check, new_cache, f"the cache of {what}")


def _attention_right_alone(check: HiddenCheck, block_cls: StudentFunction, d: int, H: int,
                           generator: torch.Generator) -> bool:
    """Whether the student's CausalSelfAttention, built alone by name with a seed drawn here
    (as its own test builds it) and given weights drawn here, computes the prescribed
    attention, fed at once and in two pieces with its cache."""
    seed = int(torch.randint(2**20, (1,), generator=generator))
    T = _randint(generator, 4, 8)
    t = _randint(generator, 1, T - 1)
    x = torch.randn(2, T, d, generator=generator)
    try:
        layer = check.call_seeded(seed, _students_class(block_cls, "CausalSelfAttention"), d, H)
        set_attention(layer, generator)
        layer.eval()
        with torch.no_grad():
            out, _ = check.call(layer, x)
            _, first = check.call(layer, x[:, :t])
            piece, _ = check.call(layer, x[:, t:], cache=first)
        reference, _ = _attention(x, layer, H)
        return (torch.allclose(out.double(), reference, **TOL)
                and torch.allclose(piece.double(), reference[:, t:], **TOL))
    except RUN_ERRORS:
        return False


@hidden_test
def grade_Block(block_cls: type[nn.Module]) -> None:
    check = HiddenCheck("Block")
    generator = fresh_generator(902)
    seed = int(torch.randint(2**20, (1,), generator=generator))
    H = 2
    d = H * _randint(generator, 3, 6)

    check.clause("members")
    block = check.call_seeded(seed, block_cls, d, H)
    check.expect(isinstance(block, nn.Module), "Block builds an nn.Module",
                 expected="an nn.Module", got=describe(block))
    _expect_block_members(check, block, d)
    set_block(block, generator)
    block.eval()
    B, T = _randint(generator, 2, 4), _randint(generator, 5, 9)
    x = torch.randn(B, T, d, generator=generator)
    t = _randint(generator, 2, T - 1)
    # With an attention right on its own, the block is the prescribed one, computed here from
    # the weights; otherwise it is graded on its wiring around its own attention. Either way
    # every reference is computed before the block sees these inputs.
    prescribed = _attention_right_alone(check, block_cls, d, H, generator)
    if prescribed:
        attend = _prescribed_attention(block, H)

        def reference_of(xs: torch.Tensor, cache: Cache | None = None
                         ) -> tuple[torch.Tensor, Cache]:
            return _prescribed_block(block, xs, H, cache)
    else:
        attend = _students_attention(block)

        def reference_of(xs: torch.Tensor, cache: Cache | None = None
                         ) -> tuple[torch.Tensor, Cache]:
            return _block_reference(block, xs, cache, attend=attend)
    with torch.no_grad():
        reference, attn_cache = reference_of(x)
        expected, attn_second = reference_of(x[:, t:], reference_of(x[:, :t])[1])

    check.clause("returns")
    with torch.no_grad():
        out, cache = _block_call(check, block, x, None, f"forward(x of {(B, T, d)})")
    check.shape(out, (B, T, d), f"x out of forward(x of {(B, T, d)})")

    check.clause("values")
    check.close(out, reference, f"forward(x of {(B, T, d)}): x + attn(ln_1(x)), then "
                "h + mlp(ln_2(h))", mistakes=_block_mistakes(block, x, attend),
                dims=("batch", "position", "channel"), **TOL)
    expect_same_in_training(check, block, (x,), reference, "x out",
                            ("batch", "position", "channel"))

    check.clause("cache")
    for name, got, wanted in zip("KV", cache, attn_cache, strict=True):
        check.close(got, wanted, f"{name} of the returned cache is attn's", **TOL)
    with torch.no_grad():
        _, first = _block_call(check, block, x[:, :t], None, f"forward(x[:, :{t}])")
        piece, second = _block_call(check, block, x[:, t:], first,
                                    f"forward(x[:, {t}:], cache=<the cache of x[:, :{t}]>)")
    check.close(piece, expected, f"forward(x[:, {t}:], cache): attn got the cache",
                mistakes=_Lazy({"the cache was not passed on to attn: call "
                                "self.attn(self.ln_1(x), cache)":
                                lambda: _block_reference(block, x[:, t:], attend=attend)[0]}),
                dims=("batch", "position", "channel"), **TOL)
    for name, got, wanted, given in zip("KV", second, attn_second, first, strict=True):
        check.expect(tuple(got.shape) == tuple(wanted.shape),
                     f"{name} of the returned cache covers all {T} positions",
                     expected=f"shape {tuple(wanted.shape)}", got=f"shape {tuple(got.shape)}",
                     diagnoses={"the cache it was given came back: return the one attn returns":
                                tuple(got.shape) == tuple(given.shape)})
        check.close(got, wanted, f"{name} of the returned cache is attn's new cache", **TOL)

    check.clause("gradients")
    block.train()
    block.zero_grad()
    out, _ = check.call(block, x)
    check.expect(out.requires_grad, "x out carries a gradient back to the block",
                 expected="an output that depends on the parameters", got="a detached output",
                 likely=GRADIENT_CUT)
    check.backward(out, "forward(x) in training mode")
    for name, parameter in block.named_parameters():
        grad = parameter.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the output's gradient reaches {name}", expected="a non-zero gradient",
                     got="None" if grad is None else "zeros", likely=GRADIENT_CUT)
    if prescribed:  # the gradient that reaches x: the residual stream carries it back
        _expect_input_gradient(check, block, x, lambda v: _prescribed_block(block, v, H)[0],
                               "the prescribed block's", DETACHED_RESIDUAL, generator)
    check.passed()


# ---- the model ------------------------------------------------------------------------------


def _expect_gpt_members(check: HiddenCheck, model: nn.Module, V: int, block_size: int, d: int,
                        n_layers: int) -> None:
    check.expect(isinstance(model, nn.Module), "GPT builds an nn.Module",
                 expected="an nn.Module", got=describe(model))
    for name, rows in (("token_embedding", V), ("position_embedding", block_size)):
        table = getattr(model, name, None)
        ok = isinstance(table, nn.Embedding) and tuple(table.weight.shape) == (rows, d)
        check.expect(ok, f"{name} is nn.Embedding({rows}, {d})",
                     expected=f"nn.Embedding({rows}, {d})",
                     got=describe(table) if not isinstance(table, nn.Embedding)
                     else f"nn.Embedding{tuple(table.weight.shape)}")
        expect_no_padding_idx(check, table, f"{name}, nn.Embedding({rows}, {d}),")
    blocks = getattr(model, "blocks", None)
    check.expect(isinstance(blocks, nn.ModuleList) and len(blocks) == n_layers,
                 f"blocks is an nn.ModuleList of {n_layers} Blocks",
                 expected=f"nn.ModuleList of {n_layers} Blocks", got=describe(blocks)
                 if not isinstance(blocks, nn.ModuleList) else f"{len(blocks)} modules")
    for i, block in enumerate(blocks):
        _expect_block_members(check, block, d, f"blocks[{i}].")
    norm = getattr(model, "ln_f", None)
    check.expect(isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (d,),
                 f"ln_f is nn.LayerNorm({d})", expected=f"nn.LayerNorm({d})", got=describe(norm),
                 diagnoses={"there is no final LayerNorm ln_f before the head": norm is None})
    expect_default_eps(check, norm, "ln_f")
    expect_linear(check, model, "head", d, V, True, wrong_bias=HEAD_BIAS)
    check.expect(not torch.equal(model.head.weight, model.token_embedding.weight),
                 "head has its own weights", expected="a head of its own",
                 got="head.weight equal to token_embedding.weight",
                 likely="the head is tied to the token embedding: this GPT keeps them apart")


def _gpt_reference(model: nn.Module, tokens: torch.Tensor, caches: list | None = None, *,
                   H: int | None = None, offset: bool | int = True, final_norm: bool = True,
                   positions: bool = True, blocks: str = "own"
                   ) -> tuple[torch.Tensor, list[Cache]]:
    """Logits with the model's embeddings, norm and head and, with ``H``, the prescribed
    blocks computed here from their weights (no student code), without it the model's own
    (the student's) blocks; the flags make the usual mistakes."""
    T = tokens.shape[1]
    t = 0 if caches is None else caches[0][0].shape[2]
    start = offset if not isinstance(offset, bool) else t if offset else 0
    dtype = model.ln_f.weight.dtype
    with torch.no_grad():
        x = _embed(model.token_embedding, tokens)
        if positions:
            x = x + _embed(model.position_embedding, torch.arange(start, start + T))
        new = []
        for i, block in enumerate(model.blocks):
            given = None if caches is None or blocks == "none" else (
                caches[0] if blocks == "first" else caches[i])
            x, cache = block(x, given) if H is None else _prescribed_block(block, x, H, given)
            new.append(cache)
        x = x.to(dtype)
        return model.head(_norm(model.ln_f, x) if final_norm else x).double(), new


def _wrong_offset(model: nn.Module, tokens: torch.Tensor, caches: list, heads: int | None,
                  piece: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """The logits with the positions offset by whichever of the other sizes gives the
    student's logits (the first of them when none does)."""
    candidates = [_gpt_reference(model, tokens, caches, H=heads, offset=o)[0] for o in offsets]
    for candidate in candidates:
        if torch.allclose(piece.double(), candidate, **TOL):
            return candidate
    return candidates[0]


FIRST_CACHE_EVERYWHERE = "every block got caches[0]: block i continues from caches[i]"
CACHES_IGNORED = "the caches were not passed on to the blocks"


def _gpt_call(check: HiddenCheck, model: nn.Module, tokens: torch.Tensor, caches: list | None,
              what: str, n_layers: int) -> tuple[torch.Tensor, list[Cache]]:
    result = check.call(model, tokens) if caches is None else check.call(model, tokens,
                                                                         caches=caches)
    logits, new = pair(check, result, what, "(logits, caches)")
    check.tensor(logits, f"the logits of {what}")
    check.expect(isinstance(new, tuple | list) and len(new) == n_layers,
                 f"{what} returns one cache per block", expected=f"a list of {n_layers} caches",
                 got=describe(new))
    return logits, [cache_pair(check, c, f"cache {i} of {what}") for i, c in enumerate(new)]


BLOCKS_CHANGED = ("inside your GPT the blocks compute something else than your Block does on "
                  "its own: the GPT only chains them, x, cache = block(x, cache), and never "
                  "changes what a block does")


def _standalone_blocks(check: HiddenCheck, gpt_cls: StudentFunction, model: nn.Module,
                       tokens: torch.Tensor, H: int, generator: torch.Generator
                       ) -> torch.Tensor | str:
    """The logits with fresh Blocks of the student's class, each built alone with a seed
    drawn here and given the GPT's block weights; or why they cannot be built or run."""
    d = model.token_embedding.weight.shape[1]
    T = tokens.shape[1]
    x = _embed(model.token_embedding, tokens) + _embed(model.position_embedding, torch.arange(T))
    seeds = torch.randint(2**20, (len(model.blocks),), generator=generator).tolist()
    try:
        block_cls = _students_class(gpt_cls, "Block")
        h = x
        for seed, block in zip(seeds, model.blocks, strict=True):
            fresh = check.call_seeded(seed, block_cls, d, H)
            with torch.no_grad():
                for (_, mine), (_, theirs) in zip(fresh.named_parameters(),
                                                  block.named_parameters(), strict=True):
                    mine.copy_(theirs)
            fresh.eval()
            with torch.no_grad():
                h, _ = check.call(fresh, h)
        with torch.no_grad():
            return model.head(_norm(model.ln_f, h)).double()
    except RUN_ERRORS as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


@hidden_test
def grade_GPT(gpt_cls: type[nn.Module]) -> None:
    check = HiddenCheck("GPT")
    generator = fresh_generator(903)
    seed = int(torch.randint(2**20, (1,), generator=generator))
    V, block_size = _randint(generator, 7, 12), _randint(generator, 12, 16)
    H, n_layers = 2, 2
    d = H * _randint(generator, 3, 5)

    check.clause("members")
    model = check.call_seeded(seed, gpt_cls, V, block_size, d, H, n_layers)
    _expect_gpt_members(check, model, V, block_size, d, n_layers)
    set_gpt(model, generator)
    model.eval()
    B, T = _randint(generator, 2, 4), block_size - _randint(generator, 1, 3)
    tokens = torch.randint(V, (B, T), generator=generator)
    # t differs from every other size a wrong offset could read (blocks, heads, head size)
    sizes = [p for p in range(2, T - 2) if p not in (n_layers, H, d // H)]
    t = sizes[_randint(generator, 0, len(sizes))]
    # The student's Block, built alone, decides the reference: the prescribed GPT computed
    # here when it is the prescribed block, else the GPT's own blocks (each exercise graded
    # on its own wiring), which must then compute what the Block computes alone. Every
    # reference is computed before the GPT sees these tokens.
    alone = _standalone_blocks(check, gpt_cls, model, tokens, H, generator)
    prescribed = _prescribed_gpt(model, tokens, H).detach()
    blocks_right = isinstance(alone, torch.Tensor) and torch.allclose(alone, prescribed, **TOL)
    heads = H if blocks_right else None
    reference, reference_caches = _gpt_reference(model, tokens, H=heads)

    check.clause("returns")
    with torch.no_grad():
        logits, caches = _gpt_call(check, model, tokens, None, f"forward(tokens of {(B, T)})",
                                   n_layers)
    check.shape(logits, (B, T, V), f"logits of forward(tokens of {(B, T)})")
    for i, cache in enumerate(caches):
        check.shape(cache[0], (B, H, T, d // H), f"K of caches[{i}]")

    check.clause("values")
    own_blocks = {BLOCKS_CHANGED: lambda: _gpt_reference(model, tokens)[0]} if blocks_right \
        else {}
    check.close(logits, reference, "logits = head(ln_f(x)), x = token_embedding(tokens) + "
                "position_embedding(positions) through every block", mistakes=_Lazy({
                    "there is no final LayerNorm: the logits are head(ln_f(x))":
                        lambda: _gpt_reference(model, tokens, H=heads, final_norm=False)[0],
                    "the position embedding was not added to the token embedding":
                        lambda: _gpt_reference(model, tokens, H=heads, positions=False)[0],
                    **own_blocks}),
                dims=("batch", "position", "token"), **TOL)
    expect_same_in_training(check, model, (tokens,), reference, "the logits",
                            ("batch", "position", "token"))
    if not blocks_right:
        check.expect(isinstance(alone, torch.Tensor), "your Block runs on its own, built as "
                     f"Block({d}, {H}) and given the weights of the GPT's blocks",
                     expected="the blocks of your GPT, run one by one", got=str(alone),
                     likely="your Block cannot be built as Block(d_model, n_heads) or run "
                     "alone: pass the Block's own test first")
        check.close(logits.double(), alone, "the logits are those of the GPT's blocks as your "
                    "Block computes them on its own", likely=BLOCKS_CHANGED,
                    dims=("batch", "position", "token"), **TOL)

    check.clause("returns")  # now that the logits are right, the caches must be the blocks'
    for i, (mine, wanted) in enumerate(zip(caches, reference_caches, strict=True)):
        check.close(mine[0], wanted[0], f"caches[{i}] is block {i}'s cache (its K)",
                    mistakes={"the caches came back in reverse order: block i's at index i":
                              reference_caches[n_layers - 1 - i][0]}, **TOL)

    check.clause("pieces")
    with torch.no_grad():
        _, first = _gpt_call(check, model, tokens[:, :t], None, f"forward(tokens[:, :{t}])",
                             n_layers)
        piece, second = _gpt_call(check, model, tokens[:, t:], first,
                                  f"forward(tokens[:, {t}:], caches)", n_layers)
    check.close(piece, reference[:, t:], f"the logits of tokens[:, {t}:] with the caches of the "
                f"first {t} equal the logits of the whole text there", mistakes=_Lazy({
                    POSITIONS_NOT_OFFSET: lambda: _gpt_reference(
                        model, tokens[:, t:], first, H=heads, offset=False)[0],
                    WRONG_OFFSET: lambda: _wrong_offset(model, tokens[:, t:], first, heads,
                                                        piece, (n_layers, H, d // H)),
                    FIRST_CACHE_EVERYWHERE: lambda: _gpt_reference(
                        model, tokens[:, t:], first, H=heads, blocks="first")[0],
                    CACHES_IGNORED: lambda: _gpt_reference(
                        model, tokens[:, t:], first, H=heads, blocks="none")[0]}),
                dims=("batch", "position", "token"), **TOL)
    for i, (mine, wanted) in enumerate(zip(second, reference_caches, strict=True)):
        check.close(mine[0], wanted[0], f"caches[{i}] after both pieces holds all {T} positions",
                    **TOL)
    steps, running = [], None
    with torch.no_grad():
        for p in range(T):
            step, running = _gpt_call(check, model, tokens[:, p:p + 1], running,
                                      f"forward(tokens[:, {p}:{p + 1}], caches)", n_layers)
            steps.append(step)
    check.close(torch.cat(steps, dim=1), reference, "feeding one token at a time with the "
                "caches gives the logits of the whole text", dims=("batch", "position", "token"),
                **TOL)

    check.clause("gradients")
    model.train()
    model.zero_grad()
    logits, _ = check.call(model, tokens)
    check.expect(logits.requires_grad, "the logits carry a gradient back to the model",
                 expected="logits that depend on the parameters", got="detached logits",
                 likely=GRADIENT_CUT)
    check.backward(logits, "forward(tokens) in training mode")
    for name, parameter in model.named_parameters():
        grad = parameter.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the logits' gradient reaches {name}", expected="a non-zero gradient",
                     got="None" if grad is None else "zeros", likely=GRADIENT_CUT)
    if blocks_right:  # the prescribed GPT's gradients are known here: the embeddings' must agree
        weights = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
        model.zero_grad()
        logits, _ = check.call(model, tokens)
        check.backward(logits.double() * weights, "forward(tokens) in training mode")
        got = {name: p.grad for name, p in model.named_parameters()}
        model.zero_grad()
        (_prescribed_gpt(model, tokens, H) * weights).sum().backward()
        for name in ("token_embedding.weight", "position_embedding.weight"):
            parameter = dict(model.named_parameters())[name]
            mine = got[name] if got[name] is not None else torch.zeros_like(parameter)
            check.close(mine.double(), parameter.grad.double(), f"the gradient reaching {name} "
                        "is the prescribed GPT's: the residual stream carries it back from "
                        "every block", likely=RESIDUAL_CUT, **TOL)
        model.zero_grad()
    check.passed()


# ---- their GPT, for the loop and for generate ----------------------------------------------

def _students_class(candidate: StudentFunction, name: str) -> StudentFunction:
    """The class ``name`` as the student's code sees it: the name where their code lives
    (their kernel while grading; the candidate's own module when it runs in this process)."""
    channel = candidate._channel
    if isinstance(channel, LocalChannel) and name not in channel.namespace:
        found = inspect.unwrap(channel.namespace.get(candidate._target))
        scope = getattr(found, "__globals__", None)
        if scope is None:  # a class: the module its methods were written in
            scope = getattr(getattr(found, "__init__", None), "__globals__", {})
        if scope.get(name) is not None:
            channel.namespace[name] = scope[name]
    return StudentFunction(channel, name, layers=dict(syllabus.exercise(name).layers))


def _students_gpt(candidate: StudentFunction) -> StudentFunction:
    """The GPT class the student's function sees."""
    return _students_class(candidate, "GPT")


def _needs_gpt(exercise: str, problem: str) -> CheckFailed:
    return CheckFailed("\n".join([
        f"{exercise} (hidden test): {exercise} is graded with your own GPT (Exercise 3), which "
        "must work first",
        "  expected: your GPT builds, runs, gives the same logits fed in pieces with its "
        "caches as fed at once, and the logits and gradients of the GPT the text prescribes "
        "(computed here from its weights)",
        f"  got:      {problem}",
        "  likely mistake: your GPT does not pass its own test yet. Pass the test of "
        "Exercise 3 first, then run this cell again."]))


def _build_gpt(check: HiddenCheck, exercise: str, gpt: StudentFunction, seed: int,
               sizes: tuple[int, ...], generator: torch.Generator) -> nn.Module:
    """The student's GPT with weights drawn here, in float64, checked to run and to agree
    with itself fed in pieces (else the exercise cannot be graded with it)."""
    try:
        with global_seed(seed):
            model = gpt(*sizes)
        model.double()
        set_gpt(model, generator)
        model.eval()
        V, block_size = sizes[0], sizes[1]
        T = min(block_size, 6)
        tokens = torch.randint(V, (2, T), generator=generator)
        with torch.no_grad():
            whole, _ = model(tokens)
            _, caches = model(tokens[:, :2])
            piece, _ = model(tokens[:, 2:], caches)
        agree = torch.allclose(whole[:, 2:], piece, atol=1e-6)
    except (StudentError, NotImplementedError, AttributeError, TypeError, ValueError,
            IndexError, RuntimeError) as error:
        raise _needs_gpt(exercise, f"building or running it failed ({type(error).__name__}: "
                                   f"{error})") from None
    if not agree:
        raise _needs_gpt(exercise, "fed in two pieces with its caches, it gives other logits "
                                   "than fed at once")
    problem = _differs_from_prescribed(model, tokens, sizes[3], generator)
    if problem:
        raise _needs_gpt(exercise, problem)
    return model


def _differs_from_prescribed(model: nn.Module, tokens: torch.Tensor, H: int,
                             generator: torch.Generator) -> str:
    """Why the model is not the prescribed GPT at these sizes ("" when it is): its logits in
    both modes and its gradients are compared with the ones computed here from its weights,
    so a model cannot serve the loop and ``generate`` differently from what it is."""
    with torch.no_grad():
        prescribed = _prescribed_gpt(model, tokens, H)
        eval_logits, _ = model(tokens)
    if not torch.allclose(eval_logits.double(), prescribed, **TOL):
        return ("its logits differ from those of the prescribed GPT computed from its weights "
                "(at these sizes: one block)")
    weights = torch.randn(prescribed.shape, generator=generator, dtype=torch.float64)
    model.train()
    try:
        model.zero_grad()
        logits, _ = model(tokens)
        if not logits.requires_grad:
            return "in training mode its logits carry no gradient back to the model"
        (logits.double() * weights).sum().backward()
        got = {n: p.grad for n, p in model.named_parameters()}
        model.zero_grad()
        (_prescribed_gpt(model, tokens, H) * weights).sum().backward()
        for name, parameter in model.named_parameters():
            mine = got[name]
            if mine is None or not torch.allclose(mine.double(), parameter.grad.double(),
                                                  **TOL):
                return (f"in training mode the gradient reaching {name} differs from the "
                        "prescribed GPT's")
        with torch.no_grad():
            if not torch.allclose(logits.double(), prescribed, **TOL):
                return "in training mode its logits differ from those in evaluation mode"
    finally:
        model.zero_grad()
        model.eval()
    return ""


# ---- the training loop -----------------------------------------------------------------------

def _successor_batches(generator: torch.Generator, steps: int, B: int, T: int, V: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches of a text in which each token follows from the one before it (a fixed random
    successor, now and then another): something a model can learn in a few steps."""
    successor = torch.randperm(V, generator=generator)
    text = torch.empty(steps, B, T + 1, dtype=torch.long)
    text[:, :, 0] = torch.randint(V, (steps, B), generator=generator)
    for p in range(T):
        jump = torch.rand(steps, B, generator=generator) < 0.1
        text[:, :, p + 1] = torch.where(jump, torch.randint(V, (steps, B), generator=generator),
                                        successor[text[:, :, p]])
    return text[:, :, :-1], text[:, :, 1:]


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _run(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int, lr: float,
         *, optimizer: str = "AdamW", clear: bool = True, once: bool = True) -> list[float]:
    """The reference loop (and, with the flags, the usual mistakes), computed here: the
    prescribed GPT with the rebuilt model's weights, never the student's forward, so that
    no model can make the reference agree with a loop that does not train."""
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    make = {"AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD}
    parameters = list(model.parameters())
    opt = make[optimizer](parameters, lr=lr)
    losses = []
    model.train()
    try:
        for step in range(steps):
            if not once:
                opt = make[optimizer](parameters, lr=lr)
            logits = _prescribed_gpt(model, inputs[step], GRADED_HEADS)
            loss = _cross_entropy(logits, targets[step])
            if clear:
                opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(start[name])
                p.grad = None
    return losses


GRADED_HEADS = 2  # the heads of the GPTs the loop and generate are graded with


TRAINED_A_COPY = ("the losses fall, but the model you were given is unchanged: the loop "
                  "trained a copy of it (copy.deepcopy, or a new model); train the model "
                  "you are given, in place")
ONE_BATCH = ("get_batch() was called once, before the loop: every step trained on the same "
             "batch; call it at every step")
STEP_MISSING = ("the loss never moved, so the parameters never changed: call "
                "optimizer.step() after loss.backward(), and optimizer.zero_grad() before "
                "backward, not between backward and step")


@hidden_test
def grade_train_gpt(train_gpt: Callable[..., list[float]]) -> None:
    check = HiddenCheck("train_gpt")
    generator = fresh_generator(904)
    seed = int(torch.randint(2**20, (1,), generator=generator))
    V, T, B = _randint(generator, 5, 8), _randint(generator, 5, 8), _randint(generator, 3, 6)
    steps = 12
    lr = float(0.02 + 0.03 * torch.rand(1, generator=generator))
    model = _build_gpt(check, "train_gpt", _students_gpt(train_gpt), seed,
                       (V, T, 8, GRADED_HEADS, 1), generator)
    # A new batch for every step, all of one learnable text: any loop that learns lowers the
    # loss, and a loop that trains on one batch all along shows from its second loss.
    inputs, targets = _successor_batches(generator, steps, B, T, V)
    with torch.no_grad():  # each batch's loss if the model never changed
        untrained = [float(_cross_entropy(_prescribed_gpt(model, inputs[i], GRADED_HEADS),
                                          targets[i])) for i in range(steps)]

    check.clause("returns")
    losses = check.call(train_gpt, model, Batches(inputs, targets), steps, lr=lr)
    left = kernel_state(model)  # what the loop did to the model it was given (read at once:
    # every later call sends the model's values here first)
    check.expect(isinstance(losses, list | tuple) and len(losses) == steps,
                 f"train_gpt(model, get_batch, steps={steps}, lr={lr:.4f}) returns {steps} losses",
                 expected=f"a list of {steps} numbers", got=describe(losses))
    check.expect(all(isinstance(v, float) for v in losses), "each loss is a Python float",
                 expected="floats (loss.item())", got=describe(losses), diagnoses={
                     "the losses are tensors: append loss.item(), a plain number (a tensor "
                     "would also keep the whole graph of its step alive)":
                         any(isinstance(v, torch.Tensor) for v in losses)})
    losses = [float(v) for v in losses]

    check.clause("loss")
    with torch.no_grad():
        logits = _prescribed_gpt(model, inputs[0], GRADED_HEADS)
    first = _cross_entropy(logits, targets[0])
    check.close(_number(losses[0]), first, "the first loss is the cross-entropy of the "
                "untrained model over every position of the first batch", mistakes={
                    "the loss covers only the last position of each sequence: score every "
                    "position (flatten (B, T, V) to (B * T, V))":
                        F.cross_entropy(logits[:, -1], targets[0][:, -1]),
                    "the loss is summed over the positions instead of averaged":
                        F.cross_entropy(logits.flatten(0, 1), targets[0].flatten(),
                                        reduction="sum")}, **EXACT)

    check.clause("learns")
    check.expect(sum(losses[-3:]) / 3 < sum(untrained[-3:]) / 3 - 1e-3,
                 f"the loss falls over {steps} steps at lr={lr:.4f}",
                 expected="the last losses below the untrained model's on the same batches "
                          f"({', '.join(f'{v:.3f}' for v in untrained[-3:])})",
                 got=f"losses {', '.join(f'{v:.3f}' for v in losses)}", diagnoses={
                     STEP_MISSING: max(abs(a - b) for a, b in zip(losses, untrained,
                                                                   strict=True)) < 1e-6})

    check.clause("optimizer")
    reference = _run(model, inputs, targets, 4, lr)
    check.close(_number(losses[1]), _number(reference[1]),
                "the loss after one step of AdamW at the given lr", mistakes=_Lazy({
                    "the optimizer is SGD: use torch.optim.AdamW":
                        lambda: _number(_run(model, inputs, targets, 2, lr,
                                                  optimizer="SGD")[1]),
                    "the optimizer is Adam, or AdamW with weight_decay=0 (the same thing): "
                    "keep AdamW's own weight decay (0.01)":
                        lambda: _number(_run(model, inputs, targets, 2, lr,
                                                  optimizer="Adam")[1]),
                    "the learning rate lr was not used (the default 3e-3 came instead)":
                        lambda: _number(_run(model, inputs, targets, 2, 3e-3)[1]),
                    ONE_BATCH: lambda: _number(_run(model, inputs[:1].expand(2, -1, -1),
                                                    targets[:1].expand(2, -1, -1), 2, lr)[1])}),
                **EXACT)

    check.clause("steps")
    check.close(_number(losses[2:4]), _number(reference[2:4]),
                "the losses of steps 3 and 4 continue the reference run", mistakes=_Lazy({
                    "the gradients were never cleared, so they added up from step to step: "
                    "call optimizer.zero_grad() every step":
                        lambda: _number(_run(model, inputs, targets, 4, lr,
                                                  clear=False)[2:4]),
                    "a new AdamW was made at every step, which forgets its running averages: "
                    "make it once, before the loop":
                        lambda: _number(_run(model, inputs, targets, 4, lr,
                                                  once=False)[2:4])}), **EXACT)
    # The losses are the reference run's by now; the model it was given must have learned.
    check.clause("learns")
    moved = [name for name, parameter in model.named_parameters() if name in left
             and not torch.equal(left[name].to(parameter.dtype), parameter.detach())]
    check.expect(bool(moved), "the model given to train_gpt is the one that learns",
                 expected="its parameters changed by the steps",
                 got="the model's parameters exactly as they were before the call",
                 likely=TRAINED_A_COPY)
    check.clause("randomness")
    check.no_reseed(train_gpt, model, Batches(inputs[:2], targets[:2]), 2, lr=lr,
                    what=f"train_gpt(model, get_batch, 2, lr={lr:.4f})")
    check.passed()


# ---- generate -------------------------------------------------------------------------------

def _greedy(model: nn.Module, prompt: torch.Tensor, n_tokens: int, mode: str = "right"
            ) -> torch.Tensor:
    """Greedy decoding: right (and with the first position read) with the prescribed GPT
    computed here from the model's weights; ``mode`` makes the usual mistakes with the
    caches, which only name a likely mistake, with the student's GPT where it lives."""
    tokens, caches = prompt, None
    with torch.no_grad():
        for step in range(n_tokens):
            if mode in ("right", "first"):
                logits = _prescribed_gpt(model, tokens, GRADED_HEADS)
            elif mode == "whole_with_caches":  # the whole text again, with the caches
                logits, caches = model(tokens, caches)
            elif mode == "stale_caches":  # the caches of the first call, every time
                fed = tokens if step == 0 else tokens[:, -1:]
                logits, new = model(fed, caches)
                caches = new if caches is None else caches
            else:  # "newest_alone": the newest token without any caches
                logits, _ = model(tokens if step == 0 else tokens[:, -1:])
            row = logits[:, 0] if mode == "first" else logits[:, -1]
            tokens = torch.cat([tokens, row.argmax(dim=-1, keepdim=True)], dim=1)
    return tokens


def _tokens(check: HiddenCheck, out: Any, shape: tuple[int, int], prompt: torch.Tensor,
            what: str) -> torch.Tensor:
    check.tensor(out, what)
    check.expect(out.dtype == torch.int64, f"{what} is int64 token ids",
                 expected="dtype torch.int64", got=f"dtype {out.dtype}")
    check.expect(tuple(out.shape) == shape, f"{what} has shape {shape}",
                 expected=f"(B, T0 + n_tokens) = {shape}", got=f"shape {tuple(out.shape)}",
                 diagnoses={"only the new tokens came back: return the prompt followed by them":
                            tuple(out.shape) == (shape[0], shape[1] - prompt.shape[1])})
    check.expect(torch.equal(out[:, :prompt.shape[1]], prompt),
                 f"{what} starts with the prompt", expected=describe(prompt),
                 got=describe(out[:, :prompt.shape[1]]))
    return out


def _expect_frequencies(check: HiddenCheck, draws: torch.Tensor, probabilities: torch.Tensor,
                        what: str, mistakes: dict[str, torch.Tensor]) -> None:
    n = draws.numel()
    frequencies = torch.bincount(draws, minlength=probabilities.numel()).double() / n
    slack = frequency_slack(probabilities, n)
    ok = bool(((frequencies - probabilities).abs() <= slack).all())
    check.expect(ok, what, expected=describe(probabilities.float()),
                 got=describe(frequencies.float()), diagnoses={
                     words: bool(((frequencies - wrong).abs() <= frequency_slack(wrong, n)).all())
                     for words, wrong in mistakes.items()})


SAME_DRAWS = ("every step drew with the same random numbers: each new token came from a "
              "fresh copy of the generator's state (or a generator made anew) instead of the "
              "generator itself, which moves on with every draw; pass the caller's generator "
              "as it is, at every step")


def _expect_fresh_draws(check: HiddenCheck, generate: Callable[..., torch.Tensor],
                        model: nn.Module, row: torch.Tensor, many: torch.Tensor, seed: int
                        ) -> None:
    """With every position's logits ``row`` (a flat head), two new tokens in a row are the
    same in a share of the prompts near sum(p^2): the second draw is not the first again."""
    with torch.no_grad():
        saved = model.head.weight.clone(), model.head.bias.clone()
        model.head.weight.zero_()
        model.head.bias.copy_(row)
    try:
        two = check.call(generate, model, many, 2, generator=torch.Generator().manual_seed(seed))
        two = _tokens(check, two, (many.shape[0], many.shape[1] + 2), many,
                      "generate(..., n_tokens=2)")
    finally:
        with torch.no_grad():
            model.head.weight.copy_(saved[0])
            model.head.bias.copy_(saved[1])
    same = float((two[:, -1] == two[:, -2]).double().mean())
    chance = float((torch.softmax(row, dim=-1) ** 2).sum())
    slack = 5 * math.sqrt(chance * (1 - chance) / many.shape[0]) + 0.01
    check.expect(abs(same - chance) <= slack, "each new token is a fresh draw: two tokens in "
                 "a row are the same only as often as chance says",
                 expected=f"the same token twice for a share of about {chance:.3f} of the "
                          f"{many.shape[0]} prompts", got=f"a share of {same:.3f}",
                 likely=SAME_DRAWS if same > 0.9 else None)


@hidden_test
def grade_generate(generate: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("generate")
    generator = fresh_generator(905)
    seeds = torch.randperm(2**20, generator=generator)[:4].tolist()
    V, T0, n = _randint(generator, 6, 9), _randint(generator, 2, 4), _randint(generator, 8, 11)
    model = _build_gpt(check, "generate", _students_gpt(generate), seeds[0],
                       (V, 128, 8, GRADED_HEADS, 1), generator)
    B = _randint(generator, 2, 4)
    prompt = torch.randint(V, (B, T0), generator=generator)

    check.clause("returns")
    shape = (B, T0 + n)
    greedy = check.call(generate, model, prompt, n, top_k=1, use_cache=False)
    greedy = _tokens(check, greedy, shape, prompt,
                     f"generate(model, prompt of {(B, T0)}, {n}, top_k=1, use_cache=False)")

    check.clause("next_token")
    reference = _greedy(model, prompt, n)
    check.close(greedy, reference, "greedy (top_k=1) without the cache: each new token is the "
                "most likely one after the text so far", mistakes=_Lazy({
                    "the logits of the first position were used: the next token follows the "
                    "last position, logits[:, -1]": lambda: _greedy(model, prompt, n, "first")}),
                dims=("sequence", "position"), atol=0, rtol=0)
    single = prompt[:1]
    one = check.call(generate, model, single, n, top_k=1, use_cache=False)
    one = _tokens(check, one, (1, T0 + n), single, "generate(model, a prompt of one sequence, "
                  f"{n}, top_k=1, use_cache=False)")
    check.close(one, reference[:1], "the same for a batch of one sequence", atol=0, rtol=0)
    long = _randint(generator, 66, 80)  # past any window of 64 tokens
    whole = check.call(generate, model, single, long, top_k=1, use_cache=False)
    whole = _tokens(check, whole, (1, T0 + long), single, "generate(model, a prompt of one "
                    f"sequence, {long}, top_k=1, use_cache=False)")
    check.close(whole, _greedy(model, single, long), f"{long} tokens greedy without the cache: "
                "each one follows the whole text so far", dims=("sequence", "position"),
                atol=0, rtol=0)

    check.clause("cache")
    cached = check.call(generate, model, prompt, n, top_k=1)
    cached = _tokens(check, cached, shape, prompt,
                     f"generate(model, prompt of {(B, T0)}, {n}, top_k=1)")
    check.close(cached, reference, "greedy with the cache: the same tokens as without it",
                mistakes=_Lazy({
                    "with the cache, the whole text was fed again at every step: after the "
                    "first call, feed only the newest token with the caches":
                        lambda: _greedy(model, prompt, n, "whole_with_caches"),
                    "the caches of the first call were passed every time: pass the caches the "
                    "model returned at the step before":
                        lambda: _greedy(model, prompt, n, "stale_caches"),
                    "the newest token was fed without the caches, so the model saw a text of "
                    "one token: pass the caches it returned":
                        lambda: _greedy(model, prompt, n, "newest_alone")}),
                dims=("sequence", "position"), atol=0, rtol=0)
    state = seeds[1]  # the same generator state and the same global seed for both
    with_cache = check.call_seeded(seeds[2], generate, model, prompt, n,
                                   generator=torch.Generator().manual_seed(state))
    without = check.call_seeded(seeds[2], generate, model, prompt, n, use_cache=False,
                                generator=torch.Generator().manual_seed(state))
    check.close(_tokens(check, with_cache, shape, prompt, "sampled with the cache"),
                _tokens(check, without, shape, prompt, "sampled without the cache"),
                "sampled (temperature 1) with the same generator: the same tokens with and "
                "without the cache", dims=("sequence", "position"), atol=0, rtol=0)

    check.clause("sampling")
    spread = torch.linspace(-2.0, 2.0, V, dtype=torch.float64)  # temperature and top-k matter
    row = spread[torch.randperm(V, generator=generator)] + 0.2 * torch.randn(
        V, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        saved = model.head.weight.clone(), model.head.bias.clone()
        model.head.weight.zero_()  # every position's logits are now `row`
        model.head.bias.copy_(row)
    many = torch.randint(V, (3000, 1), generator=generator)
    temperature = float(0.4 + 0.2 * torch.rand(1, generator=generator))
    k = _randint(generator, 2, V - 2)
    try:
        hot = check.call(generate, model, many, 1, temperature=temperature,
                         generator=torch.Generator().manual_seed(seeds[2]))
        hot = _tokens(check, hot, (3000, 2), many, f"generate(..., temperature={temperature:.2f})")
        _expect_frequencies(check, hot[:, 1], torch.softmax(row / temperature, dim=-1),
                            f"with temperature={temperature:.2f}, the tokens follow "
                            "softmax(logits / temperature)", {
                                "the temperature was not passed on to sample_next_token":
                                    torch.softmax(row, dim=-1)})
        kept = check.call(generate, model, many, 1, top_k=k,
                          generator=torch.Generator().manual_seed(seeds[3]))
        kept = _tokens(check, kept, (3000, 2), many, f"generate(..., top_k={k})")
        allowed = row >= row.topk(k).values[-1]
        _expect_frequencies(check, kept[:, 1], torch.softmax(
            row.masked_fill(~allowed, float("-inf")), dim=-1),
            f"with top_k={k}, only the {k} most likely tokens are drawn", {
                "top_k was not passed on to sample_next_token": torch.softmax(row, dim=-1)})
    finally:
        with torch.no_grad():
            model.head.weight.copy_(saved[0])
            model.head.bias.copy_(saved[1])

    check.clause("randomness")
    _expect_fresh_draws(check, generate, model, row, many, seeds[2] + 3)
    state = seeds[2] + 1
    a = check.call_seeded(seeds[0], generate, model, prompt, n,
                          generator=torch.Generator().manual_seed(state))
    b = check.call_seeded(seeds[1], generate, model, prompt, n,
                          generator=torch.Generator().manual_seed(state))
    check.expect(torch.equal(torch.as_tensor(a), torch.as_tensor(b)),
                 "the same generator state gives the same tokens under any global seed",
                 expected=describe(a), got=describe(b), likely=GENERATOR_IGNORED)
    others = [check.call(generate, model, prompt, n,
                         generator=torch.Generator().manual_seed(state + i)) for i in (1, 2)]
    check.expect(not all(torch.equal(torch.as_tensor(o), torch.as_tensor(a)) for o in others),
                 "other generator states give other tokens", expected="different tokens",
                 got="the same tokens for three generator states", likely=RESEEDS)
    shared = torch.Generator().manual_seed(state + 3)
    once, twice = (torch.as_tensor(check.call(generate, model, prompt, n, temperature=2.0,
                                              generator=shared)) for _ in range(2))
    check.expect(not torch.equal(once, twice), "two calls with one generator write different "
                 "tokens (the generator moves on with every draw)", expected="different tokens",
                 got="the same tokens twice", likely=GENERATOR_KEPT)
    free = [check.call_seeded(seed, generate, model, prompt, n, temperature=2.0)
            for seed in (seeds[3], seeds[3], seeds[3] + 1)]
    check.expect(torch.equal(torch.as_tensor(free[0]), torch.as_tensor(free[1])),
                 "with generator=None, the same global seed gives the same tokens",
                 expected=describe(free[0]), got=describe(free[1]), likely=GLOBAL_RESEEDED)
    check.expect(not torch.equal(torch.as_tensor(free[0]), torch.as_tensor(free[2])),
                 "with generator=None, another global seed gives other tokens",
                 expected="different tokens", got="the same tokens under two global seeds",
                 likely=GLOBAL_RESEEDED)
    check.passed()
