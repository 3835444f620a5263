"""Self-checks for tutorial 03 (multi-head attention).

They test properties (shapes, where every number ends up, rows summing to one, masks
respected) and agreement with PyTorch's ``nn.MultiheadAttention``; they never split or
merge heads the right way themselves (only the known wrong ways, to name a mistake).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.framework import SelfCheck, describe
from helpers.checks.qkv_attention import FULLY_MASKED_NAN, FULLY_MASKED_UNIFORM, zero_filled

NO_TRANSPOSE_SPLIT = ("reshaped straight to (B, H, T, d_head) without a transpose, so a 'head' "
                      "holds numbers from several positions: view as (B, T, H, d_head) first, "
                      "then swap the time and head axes")
ROUND_ROBIN_SPLIT = ("the channels were dealt to the heads round-robin (viewed as (d_head, H) "
                     "instead of (H, d_head)): each head takes a block of consecutive channels")
NO_TRANSPOSE_MERGE = ("reshaped straight to (B, T, H * d_head) without moving the time axis back "
                      "first, which mixes positions")
INTERLEAVED_MERGE = ("the heads were interleaved channel by channel: each head's d_head numbers "
                     "must stay together, head 0 first")
WRONG_AXES_MERGE = ("the wrong axes were swapped (a transpose(1, 3)?): that exchanges the heads "
                    "with the channels; the time axis (2) must come back in front of the head "
                    "axis (1)")


def _coded(batch: int, T: int, d_model: int) -> torch.Tensor:
    """Entry [b, t, c] = 10000 b + 100 t + c: every number says where it lives."""
    b = torch.arange(batch).view(-1, 1, 1)
    t = torch.arange(T).view(1, -1, 1)
    c = torch.arange(d_model).view(1, 1, -1)
    return (10000 * b + 100 * t + c).float()


def _coded_heads(batch: int, n_heads: int, T: int, d_head: int) -> torch.Tensor:
    """Entry [b, h, t, j] = the code of batch b, position t, channel h * d_head + j: where
    that number lives before the split (and after the merge)."""
    b = torch.arange(batch).view(-1, 1, 1, 1)
    h = torch.arange(n_heads).view(1, -1, 1, 1)
    t = torch.arange(T).view(1, 1, -1, 1)
    j = torch.arange(d_head).view(1, 1, 1, -1)
    return (10000 * b + 100 * t + d_head * h + j).float()


def _where(value: float) -> str:
    value = int(round(float(value)))
    return f"batch {value // 10000}, position {value // 100 % 100}, channel {value % 100}"


SQUEEZED = ("an axis of size 1 was dropped (a .squeeze()?): with one head, heads one channel "
            "wide or a batch of one, the result still has four axes (B, H, T, d_head)")


MERGE_SQUEEZED = ("an axis of size 1 was dropped (a .squeeze()?): a batch of one still comes "
                  "back as (1, T, H * d_head)")


def count_calls(check: SelfCheck, fn: Callable[..., torch.Tensor], *args: object) -> int:
    """How many torch functions one call of ``fn`` used."""
    _, seen = check.call_observed(fn, *args)
    return sum(seen.calls.values())


def check_no_loop(check: SelfCheck, fn: Callable[..., torch.Tensor], small: tuple,
                  large: tuple, sizes: str) -> None:
    """The rule "no Python loop": as many torch calls for few heads and positions as for
    many (a loop makes one round of calls per head or position)."""
    check.rule("no_loop")
    few, many = count_calls(check, fn, *small), count_calls(check, fn, *large)
    check.expect(few == many, "the number of torch operations does not grow with the number "
                 "of heads or positions", expected=f"as many operations for {sizes}",
                 got=f"{few} and {many} operations",
                 likely="a Python loop (or comprehension) over heads or positions: one view "
                        "or reshape and one transpose do it for all of them at once")


CUT_OFF = ("the result was cut off from x: a .detach(), torch.no_grad() or a round trip "
           "through NumPy; view, reshape and transpose keep the link to x")


def check_differentiable(check: SelfCheck, fn: Callable[..., torch.Tensor], x: torch.Tensor,
                         *args: object, what: str) -> None:
    """The rule "differentiable": the result is connected to x, and each number's gradient
    goes back to the entry of x it came from."""
    check.rule("differentiable")
    leaf = x.detach().clone().requires_grad_()
    out = check.tensor(check.call(fn, leaf, *args), what)
    check.expect(out.requires_grad, f"{what} stays connected to x (a gradient can flow back "
                 "through it)", expected="a result with requires_grad=True for an x that "
                 "requires a gradient", got="a result cut off from x", likely=CUT_OFF)
    check.backward(out, what)
    check.expect(leaf.grad is not None and bool((leaf.grad == 1).all()), "the gradient of "
                 "out.sum() is 1 for every entry of x (every number only moved)",
                 expected="a gradient of ones", got="no gradient" if leaf.grad is None
                 else f"{int((leaf.grad != 1).sum())} entries other than 1",
                 diagnoses={CUT_OFF: leaf.grad is None or bool((leaf.grad == 0).all())})


def check_split_heads(split_heads: Callable[..., torch.Tensor]) -> None:
    """Shape, that head h at position t holds channels h*dh..(h+1)*dh-1 of position t, one
    head and heads one channel wide, no Python loop."""
    check = SelfCheck("split_heads")
    B, T, H, dh = 2, 5, 3, 4
    x = _coded(B, T, H * dh)

    check.clause("shape")
    out = check.tensor(check.call(split_heads, x, H), "split_heads(x, 3)")
    check.expect(tuple(out.shape) == (B, H, T, dh), f"split_heads of a (B={B}, T={T}, "
                 f"{H * dh}) tensor, 3 heads, has shape {(B, H, T, dh)}",
                 expected=f"shape {(B, H, T, dh)}", got=f"shape {tuple(out.shape)}",
                 diagnoses={"the channels were split into (n_heads, d_head) but the time and "
                            "head axes were not swapped": tuple(out.shape) == (B, T, H, dh)})

    check.clause("values")
    positions = (out // 100 % 100).round()
    wanted_positions = torch.arange(T).view(1, 1, T, 1).expand_as(out).float()
    bad = (positions != wanted_positions).nonzero()
    bad = bad[0].tolist() if len(bad) else [0, 0, 0, 0]
    check.expect(bool(torch.allclose(positions, wanted_positions)),
                 "every row of a head comes from a single position (the same t)",
                 expected=f"out[{bad[0]}, {bad[1]}, {bad[2]}] taken from position {bad[2]}",
                 got=f"out[{bad[0]}, {bad[1]}, {bad[2]}, {bad[3]}] = {_where(out[tuple(bad)])}",
                 diagnoses={NO_TRANSPOSE_SPLIT: lambda: torch.equal(out, x.reshape(B, H, T, dh))})
    channels = (out % 100).round()
    wanted_channels = (torch.arange(H).view(1, H, 1, 1) * dh
                       + torch.arange(dh).view(1, 1, 1, dh)).expand_as(out).float()
    bad = (channels != wanted_channels).nonzero()
    bad = bad[0].tolist() if len(bad) else [0, 0, 0, 0]
    check.expect(bool(torch.allclose(channels, wanted_channels)),
                 "head h holds the h-th block of d_head consecutive channels",
                 expected=f"out[{bad[0]}, {bad[1]}, {bad[2]}, {bad[3]}] = channel "
                          f"{bad[1] * dh + bad[3]}",
                 got=f"channel {int(channels[tuple(bad)])}",
                 diagnoses={ROUND_ROBIN_SPLIT: lambda: torch.equal(
                     out, x.reshape(B, T, dh, H).permute(0, 3, 1, 2))})
    check.close(out, _coded_heads(B, H, T, dh), "every number sits at its own batch, head, "
                "position and channel", dims=("batch", "head", "position", "channel"))

    check.clause("arguments")
    for batch, heads in ((B, 1), (B, H * dh), (1, H)):
        width = H * dh // heads
        out = check.tensor(check.call(split_heads, x[:batch], heads), f"split_heads(x, {heads})")
        check.expect(tuple(out.shape) == (batch, heads, T, width), f"split_heads(x, {heads}) of "
                     f"a (B={batch}, T={T}, {H * dh}) tensor has shape {(batch, heads, T, width)}",
                     expected=f"shape {(batch, heads, T, width)}",
                     got=f"shape {tuple(out.shape)}", diagnoses={SQUEEZED: out.dim() == 3})
        check.close(out, _coded_heads(batch, heads, T, width), f"split_heads(x, {heads}) of a "
                    f"batch of {batch}: every number at its own head, position and channel",
                    dims=("batch", "head", "position", "channel"))

    check.clause("dtype")
    check.dtype_follows(split_heads, x, H, what=f"split_heads(x, {H})")

    check.clause("device")
    check.device_follows(split_heads, x, H, what=f"split_heads(x, {H})")

    check_no_loop(check, split_heads, (torch.zeros(2, 3, 12), 2), (torch.zeros(2, 7, 12), 6),
                  "2 heads and 3 positions as for 6 heads and 7 positions")
    check_differentiable(check, split_heads, x, H, what=f"split_heads(x, {H})")
    check.passed()


def check_merge_heads(merge_heads: Callable[..., torch.Tensor]) -> None:
    """Shape, that head h's block of channels at position t lands at position t, no loop."""
    check = SelfCheck("merge_heads")
    B, H, T, dh = 2, 3, 5, 4
    # Head h, position t, channel j of the head carries the code of its destination.
    heads = _coded_heads(B, H, T, dh)

    check.clause("shape")
    out = check.tensor(check.call(merge_heads, heads), "merge_heads(x)")
    check.expect(tuple(out.shape) == (B, T, H * dh), f"merge_heads of a (B={B}, H={H}, T={T}, "
                 f"d_head={dh}) tensor has shape {(B, T, H * dh)}",
                 expected=f"shape {(B, T, H * dh)}", got=f"shape {tuple(out.shape)}",
                 diagnoses={"the time axis was moved back but the last two axes were not joined "
                            "into one": tuple(out.shape) == (B, T, H, dh)})
    for batch in (B, 1):
        single = check.tensor(check.call(merge_heads, heads[:batch, :1]), "merge_heads(x)")
        check.expect(tuple(single.shape) == (batch, T, dh), f"merge_heads of one head, a batch "
                     f"of {batch}, has shape {(batch, T, dh)}", expected=f"shape {(batch, T, dh)}",
                     got=f"shape {tuple(single.shape)}",
                     diagnoses={MERGE_SQUEEZED: single.dim() < 3})

    check.clause("values")
    wanted = _coded(B, T, H * dh)
    bad = (out != wanted).nonzero()
    bad = bad[0].tolist() if len(bad) else [0, 0, 0]
    check.expect(bool(torch.allclose(out, wanted)),
                 "every head's numbers land at their own position, heads in order",
                 expected=f"out[{bad[0]}, {bad[1]}, {bad[2]}] = {_where(wanted[tuple(bad)])}",
                 got=f"a number meant for {_where(out[tuple(bad)])}", diagnoses={
                     NO_TRANSPOSE_MERGE: lambda: torch.equal(out, heads.reshape(B, T, H * dh)),
                     INTERLEAVED_MERGE: lambda: torch.equal(
                         out, heads.permute(0, 2, 3, 1).reshape(B, T, H * dh)),
                     WRONG_AXES_MERGE: lambda: torch.equal(
                         out, heads.transpose(1, 3).reshape(B, T, H * dh))})
    # The same numbers laid out as attention can leave them: a transposed, strided view.
    strided = heads.transpose(1, 2).contiguous().transpose(1, 2)
    check.close(check.call(merge_heads, strided), wanted,
                "merge_heads of a non-contiguous tensor (a transposed view)",
                dims=("batch", "position", "channel"))

    check.clause("dtype")
    check.dtype_follows(merge_heads, heads, what="merge_heads(x)")

    check.clause("device")
    check.device_follows(merge_heads, heads, what="merge_heads(x)")

    check_no_loop(check, merge_heads, (torch.zeros(2, 2, 3, 6),), (torch.zeros(2, 6, 7, 2),),
                  "2 heads and 3 positions as for 6 heads and 7 positions")
    check_differentiable(check, merge_heads, heads, what="merge_heads(x)")
    check.passed()


# ---- MultiHeadSelfAttention --------------------------------------------------------------

WIDE_HEADS = ("every head got the full width d_model ('wide heads'): here the heads share "
              "d_model, d_head = d_model // n_heads, so each map is nn.Linear(d_model, d_model)")


HARD_CODED_WIDTH = ("the layer sizes are fixed instead of following d_model: build every map "
                    "with nn.Linear(d_model, d_model)")
FIXED_HEADS = ("the number of heads does not follow n_heads: store n_heads and split into that "
               "many heads")
GRADIENT_CUT = ("the result is right but the gradient is cut on its way: a .detach(), "
                "torch.no_grad() or a NumPy round trip inside forward")
NAN_GRADIENT = ("the nan of a query that may attend to nothing was replaced too late (after "
                "`@ v`, or on the output): the forward looks right, but autograd still runs "
                "back through the nan weights and every gradient becomes nan; replace the nan "
                "in the weights themselves, right after the softmax")
WEIGHTS_DETACHED = ("the returned weights were detached (or computed apart under "
                    "torch.no_grad()): return the very weights that multiply the values")
FLOAT_D_HEAD = ("d_head was computed with / (a float such as 8.0): use // for a whole number, "
                "the kind of size view and reshape take")
DROPOUT = ("dropout inside the layer: some entries are exactly 0 and the others are scaled up "
           "by one common factor, 1 / (1 - p); this layer has no dropout (the model around it "
           "adds its own)")
SCALED_BY_D_HEAD = ("the scores were divided by d_head instead of sqrt(d_head) (or q and k were "
                    "each divided by sqrt(d_head), which divides their product by d_head)")
SCORES_TRANSPOSED = ("the scores were computed as k @ q^T: row t must hold query t's scores "
                     "against every key, q @ k^T")
NO_TRANSPOSE_FORWARD = ("inside forward, the queries and keys were reshaped straight to "
                        "(B, H, T, d_head) without a transpose, so a 'head' mixes positions: "
                        "use your split_heads")
# A crash whose message and line identify the mistake (see SelfCheck.error_causes).
MASK_CAUSES = [
    (r"must match the size of tensor b", r"mask",
     "the mask and the (B, H, T, T) scores do not line up: the mask comes as (T, T) or "
     "(B, 1, 1, T), shapes that already broadcast against the scores; use it as it is (an "
     "extra unsqueeze or view shifts its axes)"),
    (r"too many values to unpack \(expected 4\)", r"merge_heads",
     "merge_heads got a tensor with more than four axes: something broadcast the scores to "
     "five, most often a mask given an extra axis; the mask comes as (T, T), (B, 1, 1, T) or "
     "(B, H, T, T), shapes that already broadcast against the scores: use it as it is"),
]


def dropped_out(got: torch.Tensor, wanted: torch.Tensor) -> bool:
    """Dropout's signature: entries exactly 0 where ``wanted`` is not, the others equal to
    ``wanted`` times one common factor above 1."""
    if got.shape != wanted.shape or not got.is_floating_point():
        return False
    got, wanted = got.detach().double(), wanted.detach().double().to(got.device)
    live = wanted.abs() > 1e-6
    zeroed, kept = live & (got == 0), live & (got != 0)
    if not bool(zeroed.any()) or not bool(kept.any()):
        return False
    ratio = got[kept] / wanted[kept]
    mean = ratio.mean()
    return bool(mean > 1.0) and bool(((ratio - mean).abs() < 1e-3 * mean).all())


def _no_transpose_weights(layer: nn.Module, x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The weights of heads cut by a reshape without transpose (a known mistake)."""
    B, T, D = x.shape
    with torch.no_grad():
        q = (x @ layer.to_queries.weight.T).reshape(B, n_heads, T, D // n_heads)
        k = (x @ layer.to_keys.weight.T).reshape(B, n_heads, T, D // n_heads)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // n_heads), dim=-1)


def check_linear(check: SelfCheck, module: nn.Module, name: str, d_model: int, n_heads: int,
                 bias: bool) -> nn.Linear:
    """Member ``name`` is an nn.Linear(d_model, d_model) with or without bias."""
    layer = getattr(module, name, None)
    check.expect(isinstance(layer, nn.Linear), f"the layer has a member `{name}` (nn.Linear)",
                 expected=f"self.{name} = nn.Linear(...)", got=describe(layer))
    shape = tuple(layer.weight.shape)
    check.expect(shape == (d_model, d_model), f"`{name}` maps d_model -> d_model ({d_model})",
                 expected=f"weight of shape ({d_model}, {d_model})", got=f"weight of shape {shape}",
                 diagnoses={WIDE_HEADS: shape in ((d_model * n_heads, d_model),
                                                  (d_model, d_model * n_heads)),
                            HARD_CODED_WIDTH: shape[0] == shape[1] != d_model})
    has_bias = layer.bias is not None
    check.expect(has_bias == bias, f"`{name}` {'has' if bias else 'has no'} bias",
                 expected="a bias" if bias else "bias=False",
                 got="a bias" if has_bias else "no bias")
    return layer


def check_members(check: SelfCheck, layer: nn.Module, d_model: int, n_heads: int) -> None:
    """The four maps, with their sizes and biases."""
    check.expect(isinstance(layer, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=describe(layer))
    for name in ("to_queries", "to_keys", "to_values"):
        check_linear(check, layer, name, d_model, n_heads, bias=False)
    check_linear(check, layer, "unify_heads", d_model, n_heads, bias=True)


def set_weights(layer: nn.Module, generator: torch.Generator) -> None:
    """Weights larger than the default, so that the softmax is far from uniform."""
    d_model = layer.to_queries.weight.shape[0]
    with torch.no_grad():
        for name in ("to_queries", "to_keys", "to_values", "unify_heads"):
            getattr(layer, name).weight.copy_(torch.randn(d_model, d_model, generator=generator)
                                              / math.sqrt(d_model) * 1.5)
        layer.unify_heads.bias.copy_(0.1 * torch.randn(d_model, generator=generator))


def builtin_twin(layer: nn.Module, d_model: int, n_heads: int) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention`` holding the same weights as the student's layer.

    ``in_proj_weight`` packs W_Q, W_K, W_V on top of each other: shape (3 d_model, d_model).
    """
    with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten anyway
        twin = nn.MultiheadAttention(d_model, n_heads, bias=True, batch_first=True,
                                     dtype=layer.to_queries.weight.dtype)
    with torch.no_grad():
        twin.in_proj_weight.copy_(torch.cat([layer.to_queries.weight, layer.to_keys.weight,
                                             layer.to_values.weight], dim=0))
        twin.in_proj_bias.zero_()
        twin.out_proj.weight.copy_(layer.unify_heads.weight)
        twin.out_proj.bias.copy_(layer.unify_heads.bias)
    return twin.eval()


def run_builtin(twin: nn.MultiheadAttention, x: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head output and weights of the built-in; ``mask`` uses OUR convention.

    A query with nothing to attend to gets zero weights and, from the heads, zeros: its
    output is the output map's bias (the built-in returns nan there)."""
    B, T, _ = x.shape
    kwargs = {}
    if mask is not None:
        # Ours: True = may attend. nn.MultiheadAttention: True = NOT allowed. Invert, and
        # give it the (B * H, T, T) layout it wants for per-sequence masks.
        not_allowed = ~mask.expand(B, twin.num_heads, T, T)
        kwargs["attn_mask"] = not_allowed.reshape(B * twin.num_heads, T, T)
    with torch.no_grad():
        out, weights = twin(x, x, x, need_weights=True, average_attn_weights=False, **kwargs)
    empty = ~torch.isfinite(out).all(-1)  # (B, T): queries with nothing allowed in some head
    out = torch.where(empty[..., None], twin.out_proj(torch.zeros_like(x)), out)
    return out, weights.nan_to_num(0.0)


def forward_pair(check: SelfCheck, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
                 what: str, *, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer(x, mask=mask)`` through the check (without gradients unless ``grad``): the
    pair (out, weights)."""
    with torch.set_grad_enabled(grad):
        result = check.call(layer, x) if mask is None else check.call(layer, x, mask=mask)
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"forward({what}) returns a pair (out, weights)", expected="(out, weights)",
                 got=describe(result))
    out, weights = result
    check.tensor(out, "out")
    check.tensor(weights, "weights")
    return out, weights


HEAD_DIMS = ("batch", "head", "query", "key")


def _mask_mistakes(twin: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor,
                   weights: torch.Tensor, expected: torch.Tensor) -> tuple[dict, dict]:
    """(mistakes, diagnoses) for the weights of a masked forward."""
    unmasked = run_builtin(twin, x, None)[1]
    allowed = mask.expand_as(unmasked)
    mistakes = {
        "the mask was ignored: positions where it is False still get weight": unmasked,
        "the weights were zeroed after the softmax, so the rows no longer sum to 1 (mask the "
        "scores with -inf before the softmax)": unmasked * allowed,
    }
    diagnoses = {
        "the mask is inverted: True means 'may attend', so fill where the mask is False":
            lambda: bool((weights.nan_to_num(0.0).masked_select(allowed).abs() < 1e-6).all()),
        "forbidden scores were set to 0 instead of -inf: e^0 = 1 still gives them weight":
            lambda: zero_filled(weights, expected, mask.expand_as(weights)),
    }
    return mistakes, diagnoses


RESEEDED = ("the class reseeds PyTorch's generator (a torch.manual_seed inside __init__?): "
            "every layer would start the same; leave seeding to the caller")
ZEROED = ("the maps were set to zeros (or one constant): keep nn.Linear's own random start, "
          "or every head computes the same thing")
OVERFLOW = ("exp of scores in the hundreds overflows to inf (inf / inf = nan, which "
            "nan_to_num turns into a row of zeros): subtract each row's largest score before "
            "exp, or use torch.softmax")
MAX_OVER_MASKED = ("the softmax (or the row's largest score it subtracts) ran over the forbidden "
                   "keys too, the mask applied only afterwards: when a forbidden score is "
                   "hundreds above the allowed ones, exp underflows to 0 for every allowed key "
                   "and the row's weights vanish; fill the forbidden scores with -inf first, "
                   "then take the softmax")
BATCH_SQUEEZED = ("an axis of size 1 was dropped (a .squeeze()?): a batch of one still comes "
                  "back as out (1, T, d_model) and weights (1, H, T, T)")
INPUT_CUT = ("the maps get their gradients but x gets none: x (or something computed from it) "
             "was detached, or used under torch.no_grad(); the layers below (embeddings, "
             "earlier blocks) would never learn")
DEVICE_INSIDE = ("a tensor was created without device=..., in forward or in the split_heads / "
                 "merge_heads it calls (their own self-checks test this too): on a GPU it "
                 "would sit on the CPU; pass device=x.device, or use torch.*_like / x.new_*")
FLOAT32_INSIDE = ("part of the computation ran in float32 (a `.float()`, or a tensor made "
                  "with the default dtype): make new tensors with dtype=x.dtype, or torch.*_like")


def check_init(check: SelfCheck, attention_cls: type[nn.Module], seeds: tuple[int, int],
               d_model: int, n_heads: int) -> None:
    """nn.Linear's own start (uniform in ±1/sqrt(d_model)), drawn from the global generator:
    the same seed gives the same layer, two seeds two different layers."""
    first, again, other = (check.call_seeded(seed, attention_cls, d_model, n_heads)
                           for seed in (seeds[0], seeds[0], seeds[1]))
    check_members(check, other, d_model, n_heads)

    def flat(layer: nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().double().flatten() for p in layer.parameters()])

    check.expect(flat(first).shape == flat(again).shape
                 and torch.equal(flat(first), flat(again)), "the same seed gives the same "
                 "starting weights (drawn from PyTorch's global generator)",
                 expected="equal weights for torch.manual_seed(s) before each",
                 got="different weights")
    check.expect(not torch.equal(flat(first), flat(other)), "two seeds give two different "
                 "layers", expected="different weights for two seeds", got="the same weights",
                 likely=RESEEDED)
    bound = 1 / math.sqrt(d_model)
    for name, tensor in (("to_queries.weight", other.to_queries.weight),
                         ("to_keys.weight", other.to_keys.weight),
                         ("to_values.weight", other.to_values.weight),
                         ("unify_heads.weight", other.unify_heads.weight),
                         ("unify_heads.bias", other.unify_heads.bias)):
        w = tensor.detach().double()
        largest, std = w.abs().max().item(), w.std().item()
        check.expect(largest <= bound + 1e-6 and std > 0.75 * bound / math.sqrt(3),
                     f"`{name}` starts as nn.Linear makes it (uniform in ±1/sqrt(d_model))",
                     expected=f"numbers spread evenly over ±{bound:.3f} (std about "
                              f"{bound / math.sqrt(3):.3f})",
                     got=f"largest |entry| {largest:.3g}, std {std:.3g}",
                     diagnoses={ZEROED: std == 0.0})
    # A build that reseeds after drawing its weights passes the seed checks above.
    check.no_reseed(attention_cls, d_model, n_heads,
                    what=f"MultiHeadSelfAttention({d_model}, {n_heads})")


def check_gradients(check: SelfCheck, layer: nn.Module, x: torch.Tensor, causal: torch.Tensor,
                    nothing: torch.Tensor) -> None:
    """In training mode the loss reaches every map, and a query that may attend to nothing
    (a row of ``nothing`` all False) leaves every gradient finite."""
    layer.train()
    layer.zero_grad()
    out, _ = forward_pair(check, layer, x, causal, "x, mask=causal, in training mode", grad=True)
    if out.requires_grad:  # under torch.no_grad() nothing reaches the maps (told below)
        check.backward(out, "layer(x, mask=causal)")
    for name in ("to_queries", "to_keys", "to_values", "unify_heads"):
        grad = getattr(layer, name).weight.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the loss reaches {name}.weight (it gets a gradient)",
                     expected="a non-zero gradient", got="None" if grad is None else "all zeros",
                     likely=GRADIENT_CUT)
    # Its nan must stay out of the gradients: replaced in the weights, before `@ v`.
    layer.zero_grad()
    out, _ = forward_pair(check, layer, x, nothing, "x, a mask with a query that may attend to "
                          "nothing, in training mode", grad=True)
    if out.requires_grad:
        check.backward(out, "layer(x, mask) with a query that may attend to nothing")
    for name, parameter in layer.named_parameters():
        grad = parameter.grad
        bad = 0 if grad is None else int((~torch.isfinite(grad)).sum())
        check.expect(bad == 0, f"with a query that may attend to nothing, {name} gets a finite "
                     "gradient", expected="no nan in the gradient", got=f"{bad} nan entries",
                     likely=NAN_GRADIENT)


def set_large_weights(layer: nn.Module, generator: torch.Generator) -> None:
    """Random weights, with to_keys = -to_queries: a query's score for its own position is
    far below the others (for x of size about 10, the scores reach the hundreds)."""
    set_weights(layer, generator)
    with torch.no_grad():
        layer.to_keys.weight.copy_(-layer.to_queries.weight)


def check_large(check: SelfCheck, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
                reference: tuple[torch.Tensor, torch.Tensor], what: str) -> None:
    """Finite, and equal to ``reference`` (out, weights), for scores in the hundreds."""
    out, weights = forward_pair(check, layer, x, mask, what)
    ref_out, ref_weights = reference
    # Shown in the answer's dtype: the float64 reference is not a dtype the answer must have.
    if out.is_floating_point() and weights.is_floating_point():
        ref_out, ref_weights = ref_out.to(out.dtype), ref_weights.to(weights.dtype)
    allowed = torch.ones_like(ref_weights, dtype=torch.bool) if mask is None else \
        mask.expand_as(ref_weights)
    diagnoses = {
        OVERFLOW: lambda: not bool(torch.isfinite(weights).all()) or (mask is None and bool(
            (weights.sum(-1) < 0.5).any())),
        MAX_OVER_MASKED: lambda: mask is not None and bool(
            (weights.nan_to_num(0.0).sum(-1) < 0.5).logical_and(allowed.any(-1)).any()),
    }
    check.finite(weights, f"weights ({what})", diagnoses=diagnoses)
    check.close(weights, ref_weights, f"weights ({what}) match the exact ones",
                diagnoses=diagnoses, dims=HEAD_DIMS, atol=1e-3, rtol=1e-3)
    check.finite(out, f"out ({what})")
    check.close(out, ref_out, f"out ({what}) matches the exact one", atol=1e-3, rtol=1e-3,
                dims=("batch", "position", "channel"))


def check_dtype(check: SelfCheck, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor,
                reference: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A float64 layer (``layer`` already .double()) given float64 x: float64 out and
    weights, as exact as float64 allows."""
    out, weights = forward_pair(check, layer, x.double(), mask, "x in float64, mask, for a "
                                "layer turned float64 with .double()")
    for name, value in (("out", out), ("weights", weights)):
        check.expect(value.dtype == torch.float64, f"{name} of a float64 layer given float64 "
                     "x is float64", expected="torch.float64", got=str(value.dtype),
                     likely=FLOAT32_INSIDE)
    for name, value, wanted in (("weights", weights, reference[1]), ("out", out, reference[0])):
        check.shape(value, tuple(wanted.shape), f"{name} in float64")
        value = value.detach().double()
        wanted = wanted.detach().to(value.device, torch.float64)
        gap = float((value - wanted).abs().nan_to_num(float("inf")).max())
        check.expect(bool(torch.allclose(value, wanted, atol=1e-9, rtol=1e-9)),
                     f"{name} in float64 agree with the exact ones to float64 precision",
                     expected="differences below 1e-9 (float64 keeps about 16 digits)",
                     got=f"a largest difference of {gap:.1e} (float32 keeps about 7 digits)",
                     diagnoses={FLOAT32_INSIDE: 0 < gap < 1e-4})


def check_attributes(check: SelfCheck, layer: nn.Module, d_model: int, n_heads: int) -> None:
    """The rule "attributes": d_head stored as a whole number (the sizes themselves are
    tested by what the layer computes)."""
    check.rule("attributes")
    value = getattr(layer, "d_head", None)
    check.expect(type(value) is int, f"the layer stores d_head = d_model // n_heads as a whole "
                 f"number (d_model={d_model}, n_heads={n_heads})",
                 expected=f"self.d_head == {d_model // n_heads}, an int", got=repr(value),
                 diagnoses={FLOAT_D_HEAD: isinstance(value, float)})


def check_MultiHeadSelfAttention(attention_cls: type[nn.Module]) -> None:
    """Members, shapes, agreement with ``nn.MultiheadAttention`` (values, masks, one head and
    many), gradients."""
    check = SelfCheck("MultiHeadSelfAttention")
    check.error_causes.extend(MASK_CAUSES)
    B, T, d_model, H = 2, 6, 16, 2
    dh = d_model // H

    check.clause("members")
    layer = check.call_seeded(3, attention_cls, d_model, H)
    check_members(check, layer, d_model, H)
    check_attributes(check, layer, d_model, H)
    generator = torch.Generator().manual_seed(3)
    set_weights(layer, generator)
    x = torch.randn(B, T, d_model, generator=generator)

    check.clause("shape")
    out, weights = forward_pair(check, layer, x, None, "x")
    check.shape(out, (B, T, d_model), "out")
    check.expect(tuple(weights.shape) == (B, H, T, T), f"weights have shape {(B, H, T, T)}",
                 expected=f"shape {(B, H, T, T)}", got=f"shape {tuple(weights.shape)}",
                 diagnoses={"the weights were averaged over the heads (or only one head was "
                            "returned): return every head's weights, (B, H, T, T)":
                            tuple(weights.shape) == (B, T, T),
                            FIXED_HEADS: weights.dim() == 4 and weights.shape[1] != H})
    out_1, weights_1 = forward_pair(check, layer, x[:1], None, "x, a batch of one")
    for name, value, wanted in (("out", out_1, (1, T, d_model)),
                                ("weights", weights_1, (1, H, T, T))):
        check.expect(tuple(value.shape) == wanted, f"{name} for a batch of one has shape "
                     f"{wanted}", expected=f"shape {wanted}", got=f"shape {tuple(value.shape)}",
                     diagnoses={BATCH_SQUEEZED: value.dim() == len(wanted) - 1})

    check.clause("values")
    twin = builtin_twin(layer, d_model, H)
    ref_out, ref_weights = run_builtin(twin, x, None)
    scale_mistakes = {}
    for factor, words in ((math.sqrt(dh / d_model), "the scores were divided by sqrt(d_model); "
                           "each head's dot products have length d_head: divide by "
                           "sqrt(d_head)"),
                          (math.sqrt(dh), "the scores were not scaled: divide by sqrt(d_head)"),
                          (1 / math.sqrt(dh), SCALED_BY_D_HEAD)):
        scaled = builtin_twin(layer, d_model, H)
        with torch.no_grad():
            scaled.in_proj_weight[:d_model] *= factor
        scale_mistakes[words] = run_builtin(scaled, x, None)[1]
    swapped = builtin_twin(layer, d_model, H)
    with torch.no_grad():  # W_Q and W_K exchanged: the scores k @ q^T
        packed = swapped.in_proj_weight.clone()
        swapped.in_proj_weight[:d_model] = packed[d_model:2 * d_model]
        swapped.in_proj_weight[d_model:2 * d_model] = packed[:d_model]
    scale_mistakes[SCORES_TRANSPOSED] = run_builtin(swapped, x, None)[1]
    scale_mistakes[NO_TRANSPOSE_FORWARD] = _no_transpose_weights(layer, x, H)
    check.close(weights, ref_weights, "each head's weights match nn.MultiheadAttention's",
                mistakes=scale_mistakes, dims=HEAD_DIMS, diagnoses={
                    "the heads come out in a different order than their channel blocks":
                        lambda: bool(torch.allclose(weights.mean(1), ref_weights.mean(1),
                                                    atol=1e-5, rtol=1e-4)),
                    "the softmax runs over the queries (dim=-2), not over the keys (dim=-1)":
                        lambda: bool(torch.allclose(weights.sum(-2), torch.ones(B, H, T),
                                                    atol=1e-5)),
                    "the weights were returned before the softmax (the scores)":
                        lambda: bool(torch.allclose(torch.softmax(weights, -1), ref_weights,
                                                    atol=1e-5)),
                    DROPOUT: lambda: dropped_out(weights, ref_weights),
                })
    check.close(weights.mean(1), ref_weights.mean(1),
                "head-averaged weights match nn.MultiheadAttention's (its default output)")
    skipped = builtin_twin(layer, d_model, H)
    with torch.no_grad():
        skipped.out_proj.weight.copy_(torch.eye(d_model))
        skipped.out_proj.bias.zero_()
    check.close(out, ref_out, "out matches nn.MultiheadAttention's output (the weights already "
                "agree)", dims=("batch", "position", "channel"), mistakes={
                    "unify_heads was skipped: the merged heads must go through the output map":
                        run_builtin(skipped, x, None)[0]},
                diagnoses={DROPOUT: lambda: dropped_out(out, ref_out)})

    check.clause("mask")
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    out_c, weights_c = forward_pair(check, layer, x, causal, "x, mask=causal (T, T)")
    check.shape(weights_c, (B, H, T, T), "weights with a (T, T) mask")
    ref_out_c, ref_weights_c = run_builtin(twin, x, causal)
    mistakes, diagnoses = _mask_mistakes(twin, x, causal, weights_c, ref_weights_c)
    check.close(weights_c, ref_weights_c, "masked weights match nn.MultiheadAttention's "
                "(given ~mask, its True = NOT allowed)", mistakes=mistakes, diagnoses=diagnoses,
                dims=HEAD_DIMS)
    check.close(out_c, ref_out_c, "masked output matches nn.MultiheadAttention's")
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[0, -2:] = False  # the last two keys of sequence 0 are padding
    padding = keep.view(B, 1, 1, T)
    out_p, weights_p = forward_pair(check, layer, x, padding, "x, mask of shape (B, 1, 1, T)")
    ref_out_p, ref_weights_p = run_builtin(twin, x, padding)
    mistakes, diagnoses = _mask_mistakes(twin, x, padding, weights_p, ref_weights_p)
    check.close(weights_p, ref_weights_p, "a (B, 1, 1, T) padding mask hides those keys",
                mistakes=mistakes, diagnoses=diagnoses, dims=HEAD_DIMS)
    check.close(out_p, ref_out_p, "output with a padding mask matches nn.MultiheadAttention's")
    # A query that may attend to nothing: zero weights, zeros from the heads (tutorial 2's
    # convention), so its output is unify_heads' bias.
    nothing = causal.clone().expand(B, 1, T, T).clone()
    nothing[0, 0, 2] = False
    out_n, weights_n = forward_pair(check, layer, x, nothing, "x, a mask whose row 2 is all False")
    ref_out_n, ref_weights_n = run_builtin(twin, x, nothing)
    nan_row, uniform_row = ref_weights_n.clone(), ref_weights_n.clone()
    nan_row[0, :, 2] = float("nan")
    uniform_row[0, :, 2] = 1.0 / T
    check.close(weights_n, ref_weights_n, "a query that may attend to nothing gets all-zero "
                "weights", mistakes={FULLY_MASKED_NAN: nan_row, FULLY_MASKED_UNIFORM: uniform_row},
                dims=HEAD_DIMS)
    check.close(out_n, ref_out_n, "its output is the bias of unify_heads (the heads pass on "
                "zeros), the other outputs are unaffected", dims=("batch", "position", "channel"))

    check.clause("large")
    large = check.call_seeded(7, attention_cls, d_model, H)
    set_large_weights(large, generator)
    twin_large = builtin_twin(large, d_model, H).double()
    x_large = 10 * torch.randn(B, T, d_model, generator=generator)
    for mask, words in ((None, "no mask"), (causal, "a causal mask")):
        exact = run_builtin(twin_large, x_large.double(), mask)
        check_large(check, large, x_large, mask, exact,
                    f"x of size about 10, scores in the hundreds, {words}")

    check.clause("arguments")
    for width, heads in ((12, 3), (8, 1), (6, 6)):
        other = check.call_seeded(4, attention_cls, width, heads)
        check_members(check, other, width, heads)
        set_weights(other, generator)
        x_other = torch.randn(B, T, width, generator=generator)
        out_o, weights_o = forward_pair(check, other, x_other, causal,
                                        f"x, mask=causal for d_model={width}, n_heads={heads}")
        check.expect(tuple(weights_o.shape) == (B, heads, T, T), f"weights for d_model={width}, "
                     f"n_heads={heads} have shape {(B, heads, T, T)}",
                     expected=f"shape {(B, heads, T, T)}", got=f"shape {tuple(weights_o.shape)}",
                     diagnoses={FIXED_HEADS: weights_o.dim() == 4
                                and weights_o.shape[1] != heads})
        ref_out_o, ref_weights_o = run_builtin(builtin_twin(other, width, heads), x_other, causal)
        check.close(weights_o, ref_weights_o, f"weights for d_model={width}, n_heads={heads} "
                    "match nn.MultiheadAttention's", dims=HEAD_DIMS)
        check.close(out_o, ref_out_o, f"out for d_model={width}, n_heads={heads} matches "
                    "nn.MultiheadAttention's", dims=("batch", "position", "channel"))

    check.clause("init")
    check_init(check, attention_cls, (5, 6), 64, 4)

    check.clause("dtype")
    wide = check.call_seeded(8, attention_cls, d_model, H)
    set_weights(wide, generator)
    wide.double()
    check_dtype(check, wide, x, causal,
                run_builtin(builtin_twin(wide, d_model, H).double(), x.double(), causal))

    check.clause("device")
    on_meta = check.call_seeded(9, attention_cls, d_model, H).to("meta")
    check.device_follows(on_meta, x, what="layer(x)", likely=DEVICE_INSIDE)
    check.device_follows(on_meta, x, mask=causal, what="layer(x, mask=causal)",
                         likely=DEVICE_INSIDE)

    check.clause("gradients")
    check_gradients(check, layer, x, causal, nothing)

    check.rule("differentiable")
    leaf = x.detach().clone().requires_grad_()
    out_x, weights_x = forward_pair(check, layer, leaf, causal, "x requiring a gradient, "
                                    "mask=causal", grad=True)
    check.expect(weights_x.requires_grad, "the returned weights stay connected to the maps (a "
                 "loss on them, such as a penalty on attention, reaches the queries and keys)",
                 expected="weights with requires_grad=True", got="weights cut off from the "
                 "graph", likely=WEIGHTS_DETACHED)
    if out_x.requires_grad:
        check.backward(out_x, "layer(x, mask=causal)")
    check.expect(leaf.grad is not None and bool(leaf.grad.abs().sum() > 0), "the loss reaches "
                 "x, the layer's input (the layers below learn through it)",
                 expected="a non-zero gradient for x",
                 got="None" if leaf.grad is None else "all zeros",
                 likely=INPUT_CUT)  # the maps got theirs above: only x was cut off
    check.passed()
