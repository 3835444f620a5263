"""Self-checks for tutorial 04 (the transformer block).

References come from PyTorch's own layers (``nn.TransformerEncoderLayer`` holding the
block's weights), never from a copy of an answer. A likely mistake is named only when the
result has its signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from helpers.checks.framework import SelfCheck, describe

BATCH_AXIS = ("the table has shape (T, 1, d_model): added to a (B, T, d_model) batch it gives "
              "each *sentence* its own vector instead of each position; return one row per "
              "position, (T, d_model)")
CAPPED = ("the table stops short of T rows: it was built for a fixed maximum length (a "
          "precomputed `max_len` table, or `min(T, max_len)` positions); compute all T rows "
          "for whatever T is asked")
TRANSPOSED = "the table is transposed: one row per position, one column per feature, (T, d_model)"
SQUEEZED = ("the table was squeezed: for T = 1 it lost its position axis; return "
            "(T, d_model) for every T")
INTEGERS = ("the table holds integers: it was made with an integer dtype (`torch.zeros(T, "
            "d_model, dtype=torch.long)`, or `torch.zeros_like` of an integer tensor such as "
            "an arange of positions), so the sines written into it were cut to whole numbers; "
            "make the table a float tensor")
HALF = ("the table was computed in half precision (float16 or bfloat16), which keeps only "
        "about three significant digits: sin² + cos² misses 1 and nearby positions blur; "
        "compute it in float32 (PyTorch's default)")
INTEGER_DIVISION = ("every pair turns at ω = 1 (row 1 repeats sin 1, cos 1): the exponent 2i/d "
                    "came out 0, as integer division (`2 * i // d_model`) makes it; divide with /")
REVERSED = ("the frequencies run the wrong way: ω_i = 10000^(-2i/d) falls from 1 for the "
            "first pair (columns 0, 1) to about 1/10000 for the last, yours rise (the exponents "
            "were reversed)")
FREQUENCY_MISTAKES = {
    "the frequency exponent is twice too large: the column index was used where the pair "
    "index i belongs (ω_i = 10000^(-2i/d) with i = column // 2)": lambda i, d: 4 * i / d,
    "the frequency exponent lacks the factor 2: ω_i = 10000^(-2i/d)": lambda i, d: i / d,
    "the frequency exponent has the wrong sign: your ω_i = 10000^(+2i/d) grows with i, so the "
    "later pairs turn ever faster; ω_i = 1 / 10000^(2i/d) falls from 1 for i = 0 to about "
    "1/10000": lambda i, d: -2 * i / d,
    INTEGER_DIVISION: lambda i, d: 0 * i,
    REVERSED: lambda i, d: 2 * (d // 2 - 1 - i) / d,
    "the base is 1000, not 10000: ω_i = 10000^(-2i/d)":
        lambda i, d: 0.75 * 2 * i / d,
    "the frequencies ignore d_model: a fixed number (32?) stands where d_model belongs in "
    "ω_i = 10000^(-2i/d_model)": lambda i, d: 2 * i / 32,
    "the exponents run from 0 to exactly 1 (as dividing by d_model - 2, or torch.linspace(0, "
    "1, d_model // 2), spaces them): they are 2i/d for i = 0, 1, …, d/2 - 1, so the last one "
    "is (d - 2)/d, short of 1":
        lambda i, d: 2 * i / (d - 2),
}
HALF_DTYPES = (torch.float16, torch.bfloat16)


def is_capped(shape: tuple[int, ...], T: int, d: int) -> bool:
    """Fewer rows than positions, each of the right width: a table cut at a maximum length."""
    return len(shape) == 2 and shape[1] == d and 0 < shape[0] < T


def _pairs_at_zero(d: int, first: float, second: float) -> torch.Tensor:
    return torch.tensor([first, second] * (d // 2), dtype=torch.float64)


def _table(check: SelfCheck, encoding: Callable[[int, int], torch.Tensor], T: int,
           d: int) -> torch.Tensor:
    """The student's table for (T, d), checked to be a (T, d) float32 (or float64) tensor."""
    what = f"sinusoidal_positional_encoding({T}, {d})"
    pe = check.tensor(check.call(encoding, T, d), what)
    shape = tuple(pe.shape)
    check.expect(shape == (T, d), f"{what} has shape ({T}, {d})", expected=f"shape ({T}, {d})",
                 got=f"shape {shape}", diagnoses={BATCH_AXIS: shape == (T, 1, d),
                                                 SQUEEZED: T == 1 and shape == (d,),
                                                 TRANSPOSED: shape == (d, T) and T != d,
                                                 CAPPED: is_capped(shape, T, d)})
    check.expect(pe.is_floating_point(), f"{what} is a float tensor", expected="a float dtype",
                 got=str(pe.dtype), likely=INTEGERS)
    check.expect(pe.dtype not in HALF_DTYPES, f"{what} is float32 (or float64)",
                 expected="torch.float32", got=str(pe.dtype), likely=HALF)
    return pe.detach().cpu().double()


def check_sinusoidal_positional_encoding(encoding: Callable[[int, int], torch.Tensor]) -> None:
    """Shape, sin/cos layout and the frequencies, by properties."""
    check = SelfCheck("sinusoidal_positional_encoding")
    T, d = 10, 8
    check.clause("shape")
    pe = _table(check, encoding, T, d)

    check.clause("values")
    half = torch.cat([torch.zeros(d // 2), torch.ones(d // 2)]).double()
    check.close(pe[0], _pairs_at_zero(d, 0.0, 1.0),
                "row 0 (position t = 0) is [0, 1, 0, 1, ...]: sin 0 = 0 on even columns, "
                "cos 0 = 1 on odd ones", mistakes={
                    "sine and cosine are swapped: sine goes in the even columns, cosine in the "
                    "odd ones": _pairs_at_zero(d, 1.0, 0.0),
                    "sines fill the first half of the columns and cosines the second half; they "
                    "must alternate (sin on even columns, cos on odd columns)": half,
                }, dims=("column",), diagnoses={"the positions start at 1: row 0 is position t = 0":
                              lambda: abs(float(pe[0, 0]) - math.sin(1.0)) < 1e-4})
    radius = pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2
    check.close(radius, torch.ones_like(radius),
                "each column pair (2i, 2i+1) is a sine and a cosine of one angle "
                "(sin² + cos² = 1)", dims=("position", "pair"), diagnoses={
                    "each odd column used its own index in the exponent; both columns of a pair "
                    "(2i, 2i+1) share the frequency ω_i": lambda: bool(torch.allclose(
                        pe[:, 1::2], torch.cos(torch.arange(T, dtype=torch.float64)[:, None]
                                               * 10000.0 ** (-(2 * torch.arange(d // 2) + 1)
                                                             / d)), atol=1e-4))})
    positions = torch.arange(T, dtype=torch.float64)
    check.close(pe[:, 0], torch.sin(positions),
                "column 0 is sin(t) (the first frequency is ω_0 = 1)",
                mistakes={REVERSED: torch.sin(positions * 10000.0 ** (-(d - 2) / d))})
    # Row 1 (t = 1) holds sin ω_i and cos ω_i: the frequencies themselves.
    i = torch.arange(d // 2, dtype=torch.float64)

    def row_one(exponent: torch.Tensor) -> torch.Tensor:
        omega = 10000.0 ** (-exponent)
        return torch.stack([torch.sin(omega), torch.cos(omega)], dim=1).flatten()

    check.close(pe[1], row_one(2 * i / d),
                "row 1 (t = 1) is [sin ω_0, cos ω_0, sin ω_1, ...] with ω_i = 10000^(-2i/d)",
                dims=("column",), mistakes={words: row_one(exponent(i, d))
                                            for words, exponent in FREQUENCY_MISTAKES.items()})

    check.clause("arguments")
    wide = _table(check, encoding, 40, 32)
    similarity = wide @ wide.T
    check.close(torch.diagonal(similarity, offset=3)[:-1], torch.diagonal(similarity, offset=3)[1:],
                "for T = 40, d_model = 32, PE_t · PE_(t+3) is the same for every t (the "
                "similarity depends on the offset only)")
    check.close(wide[39, -2:], torch.tensor([math.sin(39 * 10000.0 ** (-30 / 32)),
                                             math.cos(39 * 10000.0 ** (-30 / 32))],
                                            dtype=torch.float64),
                "for d_model = 32, the last pair turns at ω_15 = 10000^(-30/32)")
    long = _table(check, encoding, 300, 16)
    last = 299 * 10000.0 ** (-2 * torch.arange(8, dtype=torch.float64) / 16)
    check.close(long[-1], torch.stack([torch.sin(last), torch.cos(last)], dim=1).flatten(),
                "for T = 300 (far more positions than a review has), the last row is PE_299",
                dims=("column",))
    single = _table(check, encoding, 1, 6)
    check.close(single[0], _pairs_at_zero(6, 0.0, 1.0), "a single position (T = 1) is row 0")
    check.passed()


# ---- TransformerBlock -------------------------------------------------------------------------

NORM_EPS = ("nn.LayerNorm was given another eps (`nn.LayerNorm(d_model, eps=...)`, as some "
            "codebases write it): the text's nn.LayerNorm(d_model) keeps PyTorch's default, "
            "1e-5")

DEFAULT_EPS = 1e-5  # nn.LayerNorm(d_model), as the text writes it


def expect_default_eps(check: SelfCheck, norm: Any, what: str) -> None:
    """A LayerNorm the text writes as nn.LayerNorm(d_model) keeps PyTorch's eps: another eps
    is another norm (a large one flattens what the norm passes on)."""
    eps = getattr(norm, "eps", None)
    check.expect(isinstance(eps, float) and math.isclose(eps, DEFAULT_EPS),
                 f"{what} keeps LayerNorm's default eps = 1e-5",
                 expected=f"nn.LayerNorm(d_model) (eps={DEFAULT_EPS})", got=f"eps={eps}",
                 likely=NORM_EPS)


def _describe_block_members(block: nn.Module) -> str:
    names = ", ".join(name for name, _ in block.named_children())
    return f"members: {names or 'none'}"


def check_block_members(check: SelfCheck, block: nn.Module, d_model: int, n_heads: int,
                        d_ff: int, dropout: float) -> None:
    """The members the text prescribes, with the sizes and the dropout passed in."""
    check.expect(isinstance(block, nn.Module), "TransformerBlock(...) is an nn.Module",
                 expected="an nn.Module", got=describe(block))
    attention = getattr(block, "attention", None)
    check.expect(isinstance(attention, nn.MultiheadAttention),
                 "block.attention is an nn.MultiheadAttention", expected="nn.MultiheadAttention",
                 got=f"{type(attention).__name__} ({_describe_block_members(block)})")
    check.expect(attention.embed_dim == d_model and attention.num_heads == n_heads,
                 f"attention has embed_dim={d_model} and num_heads={n_heads}",
                 expected=f"({d_model}, {n_heads})",
                 got=f"({attention.embed_dim}, {attention.num_heads})")
    check.expect(bool(attention.batch_first), "attention was built with batch_first=True",
                 expected="batch_first=True", got="batch_first=False",
                 likely="without batch_first=True, PyTorch reads our (B, T, d) tensors as "
                        "(T, B, d) and attends across the sentences of the batch")
    check.expect(math.isclose(attention.dropout, dropout),
                 f"attention was built with dropout={dropout}",
                 expected=f"nn.MultiheadAttention(..., dropout={dropout})",
                 got=f"dropout={attention.dropout}",
                 likely="the dropout argument was not passed on to nn.MultiheadAttention")
    for name in ("norm_1", "norm_2"):
        norm = getattr(block, name, None)
        check.expect(isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (d_model,)
                     and norm.elementwise_affine, f"block.{name} is nn.LayerNorm(d_model)",
                     expected=f"nn.LayerNorm({d_model})", got=repr(norm))
        expect_default_eps(check, norm, f"block.{name}")
    mlp = getattr(block, "mlp", None)
    layout = (isinstance(mlp, nn.Sequential) and len(mlp) == 3
              and isinstance(mlp[0], nn.Linear) and isinstance(mlp[1], nn.ReLU)
              and isinstance(mlp[2], nn.Linear))
    check.expect(layout, "block.mlp is Sequential(Linear, ReLU, Linear)",
                 expected="nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), "
                          "nn.Linear(d_ff, d_model))", got=repr(mlp))
    sizes = (mlp[0].in_features, mlp[0].out_features, mlp[2].in_features, mlp[2].out_features)
    check.expect(sizes == (d_model, d_ff, d_ff, d_model),
                 f"the MLP maps {d_model} -> {d_ff} -> {d_model}",
                 expected=f"Linear({d_model}, {d_ff}) then Linear({d_ff}, {d_model})",
                 got=f"Linear({sizes[0]}, {sizes[1]}) then Linear({sizes[2]}, {sizes[3]})")
    layer = getattr(block, "dropout", None)
    check.expect(isinstance(layer, nn.Dropout) and math.isclose(layer.p, dropout),
                 f"block.dropout is nn.Dropout({dropout})", expected=f"nn.Dropout({dropout})",
                 got=repr(layer), diagnoses={
                     "block.dropout ignores the dropout argument: nn.Dropout(dropout)":
                         isinstance(layer, nn.Dropout)})


def pytorch_twin(block: nn.Module, d_model: int, n_heads: int, d_ff: int,
                 dropout: float = 0.0) -> nn.TransformerEncoderLayer:
    """PyTorch's post-norm encoder layer holding a copy of the block's weights (in eval mode)."""
    twin = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=dropout, activation="relu",
                                      batch_first=True, norm_first=False)
    twin = twin.to(next(block.parameters()).dtype)
    twin.self_attn.load_state_dict(block.attention.state_dict())
    twin.linear1.load_state_dict(block.mlp[0].state_dict())
    twin.linear2.load_state_dict(block.mlp[2].state_dict())
    twin.norm1.load_state_dict(block.norm_1.state_dict())
    twin.norm2.load_state_dict(block.norm_2.state_dict())
    return twin.eval()


CUT_PATH = ("the gradient that reaches x is not the block's, though its values are: part of "
            "the way back from the output to x is cut (a `.detach()` on x in a residual "
            "connection, or on the input of a sub-layer); in a stack of blocks, the layers "
            "below would learn from a wrong gradient")


def expect_input_gradient(check: SelfCheck, block: nn.Module, x: torch.Tensor,
                          padding_mask: torch.Tensor, weights: torch.Tensor, d_model: int,
                          n_heads: int, d_ff: int) -> None:
    """In eval mode, the gradient that reaches x (the real positions' outputs weighted by
    ``weights``) is the prescribed block's: PyTorch's post-norm layer with its weights."""
    block.eval()
    weights = weights * (~padding_mask).unsqueeze(-1)  # padded outputs are not compared
    mine = x.detach().clone().requires_grad_()
    out = check.tensor(check.call(block, mine, padding_mask=padding_mask), "block(x)")
    if out.requires_grad:  # (no gradient at all is the parameters' check's to tell)
        check.backward(out * weights, "the block")
    theirs = x.detach().clone().requires_grad_()
    twin = pytorch_twin(block, d_model, n_heads, d_ff)
    (twin(theirs, src_key_padding_mask=padding_mask) * weights).sum().backward()
    got = mine.grad if mine.grad is not None else torch.zeros_like(theirs)
    check.close(got, theirs.grad, "in eval mode, the gradient that reaches x is the block's",
                likely=CUT_PATH, atol=1e-4)


RETURNS_PAIR = ("the block returns nn.MultiheadAttention's pair (output, weights): unpack "
                "that pair and carry on with the output only")
SHARED_NORM = ("norm_1 and norm_2 are one and the same layer (`self.norm_1 = self.norm_2 = "
               "nn.LayerNorm(d_model)`, or `self.norm_2 = self.norm_1`), so both add & norm "
               "steps share one set of weights: create two nn.LayerNorm(d_model)")
SQUEEZED_OUT = ("the output was squeezed (`.squeeze()`): for a batch of one it lost its batch "
                "axis; return (B, T, d_model) for every B")
FLOAT_MASK = ("the padding mask was turned into numbers (`.float()`): nn.MultiheadAttention "
              "*adds* a float key_padding_mask to the scores (True becomes +1), so the padding "
              "is not left out; pass the boolean mask itself")
DROPOUT_ON_THE_SUM = ("with dropout=1 every token came out the same: dropout acted on the "
                      "residual sum, on the input or on norm_1's output, which drops the input "
                      "too; apply it to each sub-layer's output, before the add")
DROPOUT_AFTER_NORM = ("with dropout=1 the block returned zeros: dropout acted on the "
                      "normalised output (`self.dropout(self.norm_2(...))`), after the add & "
                      "norm, so it drops everything; apply it to each sub-layer's output, "
                      "before the add")
DROPOUT_UNUSED = ("self.dropout never acted, only nn.MultiheadAttention's own dropout (on its "
                  "weights) did: apply self.dropout to the attention's output and to the "
                  "MLP's output")
DROPOUT_IN_EVAL = ("dropout also acts in eval mode: use the nn.Dropout layer (or "
                   "F.dropout(..., training=self.training)), which does nothing in eval mode")
DROPOUT_RESEEDED = ("the same dropout draws for every seed: the block reseeds the generator "
                    "(torch.manual_seed in forward); nn.Dropout draws afresh on every call")
DROPOUT_DRAWN_ONCE = ("self.dropout's mask is the same on every call: it was drawn once and "
                      "kept; apply nn.Dropout inside forward, which draws a fresh mask each call")
# What typical mistakes in forward compute, in words and as changes to PyTorch's own layer.
NORM_BEFORE_ADD = ("each sub-layer's output was normalised before the add, x + norm_1(attention"
                   "(x)): add first, then normalise the sum, norm_1(x + attention(x))")
NORM_1_TWICE = "norm_1 normalises both sums: the MLP's add & norm uses norm_2"
NORM_2_TWICE = "norm_2 normalises both sums: the attention's add & norm uses norm_1"
NO_MLP_RESIDUAL = ("the MLP sub-layer has no residual connection: add its input h back before "
                   "norm_2, norm_2(h + mlp(h))")
MLP_ON_X = ("the MLP reads the block's input x instead of h, the output of the first add & "
            "norm: mlp(h)")
RESIDUAL_FROM_X = ("the second residual adds the block's input x instead of h, the MLP's own "
                   "input: norm_2(h + mlp(h))")
GELU = "the MLP's activation is GELU; the text's MLP uses ReLU (block.mlp[1])"
MLP_FIRST = ("the MLP comes first and the attention second: attention first, h = norm_1(x + "
             "attention(x)), then the MLP, norm_2(h + mlp(h))")
CAUSAL = ("a causal mask was added (attn_mask or is_causal, as in GPT code): here every token "
          "reads every real token, before and after it; only the padding is masked")
MASK_KEYWORD_LOST = ("the mask passed by keyword, block(x, padding_mask=mask), never reaches "
                     "the attention, though passed by position it does: name forward's second "
                     "parameter padding_mask (a `**kwargs` takes the keyword and drops it)")
MASK_ONLY_IN_TRAINING = ("in eval mode (block.eval(), where this comparison runs) the mask "
                         "is left out of the attention; in training mode it is not: padding is "
                         "about the data, so pass key_padding_mask in both modes")
MASK_ONLY_IN_EVAL = ("in training mode (block.train(), the mode the classifier learns in) the "
                     "mask is left out of the attention, though block.eval() uses it: padding "
                     "is about the data, not the mode, so pass key_padding_mask in both modes")
DROPOUT_ATTENTION_ONLY = ("self.dropout acts on the attention's output only: the MLP's output "
                          "needs it too, norm_2(h + dropout(mlp(h)))")
DROPOUT_MLP_ONLY = ("self.dropout acts on the MLP's output only: the attention's output needs "
                    "it too, norm_1(x + dropout(attention(x)))")
DROPOUT_ON_INPUTS = ("self.dropout acts on the sub-layers' inputs (attention(dropout(x)), "
                     "mlp(dropout(h))): apply it to their outputs, before the add")
DROPOUT_FIXED_P = ("with dropout=1 the output still changes from seed to seed, so some "
                   "sub-layer outputs survive: the dropout probability used in forward is not "
                   "the one passed in (an `nn.Dropout(0.1)` or `F.dropout(..., 0.1)` written "
                   "in forward?); use self.dropout")
DROPOUT_NOT_NN = ("the dropout in training mode does not match nn.Dropout(p) at the prescribed "
                  "places: another rate than p (2p?), the kept values not rescaled by 1/(1-p) "
                  "(or rescaled twice), or one mask shared by the whole batch; call "
                  "self.dropout, nn.Dropout(p), on each sub-layer's output before the add")
DROPOUT_SHARED_MASK = ("both sub-layer outputs are multiplied by one and the same dropout mask "
                       "(made once per call and reused, e.g. `keep = self.dropout(torch."
                       "ones_like(x))`): call self.dropout on each output, so that each draws "
                       "its own")


# Crashes whose message identifies the mistake (see SelfCheck.error_causes).
BLOCK_CAUSES: list[tuple[str, str | None, str]] = [
    (r"must be Tensor, not tuple|and 'tuple'|'tuple' and|'tuple' object has no attribute", None,
     "nn.MultiheadAttention returns a pair, its output and its weights, and the pair itself "
     "went on into dropout or the residual add: unpack it first, "
     "`a, _ = self.attention(...)`"),
    (r"shape '\[1, 1, (\d+), \1\]' is invalid for input of size", None,
     "a (B, T) padding mask was passed as attn_mask, which must be a (T, T) mask of which "
     "query may read which key: the padding mask goes in key_padding_mask (True = padding)"),
]


def _twin_variants(block: nn.Module, d_model: int, n_heads: int, d_ff: int,
                   x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What typical mistakes give for ``x``: PyTorch's layer holding the block's weights,
    with the mistake built in.

    The layers run in training mode (dropout is 0, so nothing changes but the code path):
    PyTorch's fused inference path would skip the parts a mistake changes."""
    base = pytorch_twin(block, d_model, n_heads, d_ff).train()
    other = pytorch_twin(block, d_model, n_heads, d_ff).train()

    def variant(**changes: object) -> torch.Tensor:
        layer = pytorch_twin(block, d_model, n_heads, d_ff).train()
        for name, value in changes.items():
            setattr(layer, name, value)
        return layer(x)

    def normalised_attention(z: torch.Tensor, attn_mask: torch.Tensor | None,
                             key_padding_mask: torch.Tensor | None,
                             is_causal: bool = False) -> torch.Tensor:
        return base.norm1(base._sa_block(z, attn_mask, key_padding_mask))

    T = x.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)

    def causal_attention(z: torch.Tensor, attn_mask: torch.Tensor | None,
                         key_padding_mask: torch.Tensor | None,
                         is_causal: bool = False) -> torch.Tensor:
        return base._sa_block(z, causal, key_padding_mask)

    h_first = base.norm1(x + base._ff_block(x))
    return {
        "pre-norm instead of post-norm: add first, then normalise, "
        "norm_1(x + attention(x))": variant(norm_first=True),
        MLP_FIRST: base.norm2(h_first + base._sa_block(h_first, None, None)),
        CAUSAL: variant(_sa_block=causal_attention),
        "the final norm_2 is missing: out = norm_2(h + mlp(h))": variant(norm2=nn.Identity()),
        "norm_1 and norm_2 are swapped: norm_1 follows the attention, norm_2 the MLP":
            variant(norm1=other.norm2, norm2=other.norm1),
        NORM_BEFORE_ADD: variant(norm1=nn.Identity(), norm2=nn.Identity(),
                                 _sa_block=normalised_attention,
                                 _ff_block=lambda h: base.norm2(base._ff_block(h))),
        NORM_1_TWICE: variant(norm2=base.norm1),
        NORM_2_TWICE: variant(norm1=base.norm2),
        NO_MLP_RESIDUAL: variant(_ff_block=lambda h: base._ff_block(h) - h),
        MLP_ON_X: variant(_ff_block=lambda h: base._ff_block(x)),
        RESIDUAL_FROM_X: variant(_ff_block=lambda h: base._ff_block(h) - h + x),
        GELU: variant(activation=nn.functional.gelu),
    }


def _fully_dropped_variants(twin: nn.TransformerEncoderLayer,
                            x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What misplaced dropout gives with dropout=1 in training mode, where
    nn.MultiheadAttention's own dropout drops all its weights (its output is then the bias
    of its output projection)."""
    bias = twin.self_attn.out_proj.bias

    def mlp(h: torch.Tensor) -> torch.Tensor:
        return twin.linear2(twin.activation(twin.linear1(h)))

    kept = twin.norm1(x + bias)  # the attention's output not dropped
    dropped = twin.norm1(x)
    return {
        DROPOUT_UNUSED: twin.norm2(kept + mlp(kept)),
        DROPOUT_ATTENTION_ONLY: twin.norm2(dropped + mlp(dropped)),
        DROPOUT_MLP_ONLY: twin.norm2(kept),
        DROPOUT_ON_INPUTS: twin.norm2(kept + mlp(torch.zeros_like(x))),
    }


def _mask_reader(block: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The block set up so that its output shows both dropout masks: constant sub-layer
    outputs (zero weights, constant biases), a small norm_1 (its two levels, kept and dropped,
    then sit inside each level of the MLP's mask). With independent masks a token's output
    takes up to four values; with one mask reused, two. Changes the block's weights."""
    with torch.no_grad():
        block.attention.out_proj.weight.zero_()
        block.attention.out_proj.bias.fill_(2.0)
        block.mlp[0].weight.zero_()
        block.mlp[0].bias.fill_(1.0)
        block.mlp[2].weight.zero_()
        block.mlp[2].bias.fill_(3.0)
        block.norm_1.weight.fill_(0.1)
        block.norm_1.bias.zero_()
        block.norm_2.weight.fill_(1.0)
        block.norm_2.bias.zero_()
    return block, x[..., :1].expand_as(x).clone()  # norm_1 then sees only the mask


def trained_reference(block: nn.Module | SimpleNamespace, x: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """``block(x)`` in training mode as the exercise prescribes it, with the draws that
    ``torch.manual_seed(seed)`` gives: the attention (with its own dropout on its weights),
    nn.Dropout(p) on its output, add & norm, the MLP, nn.Dropout(p) on its output, add & norm.
    ``block``'s members must be in training mode."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attended = block.attention(x, x, x, need_weights=False)[0]
        h = block.norm_1(x + nn.functional.dropout(attended, p))
        return block.norm_2(h + nn.functional.dropout(block.mlp(h), p))


def trained_references(block: nn.Module, x: torch.Tensor, seed: int, p: float
                       ) -> list[torch.Tensor]:
    """:func:`trained_reference`, and the same with the attention called one sequence at a
    time (its own dropout then draws in another order)."""
    def one_at_a_time(z: torch.Tensor, *_: Any, **__: Any) -> tuple[torch.Tensor, None]:
        return torch.cat([block.attention(s, s, s, need_weights=False)[0]
                          for s in z.split(1)]), None

    per_sequence = SimpleNamespace(attention=one_at_a_time, norm_1=block.norm_1,
                                   norm_2=block.norm_2, mlp=block.mlp)
    return [trained_reference(block, x, seed, p), trained_reference(per_sequence, x, seed, p)]


def expect_trained_dropout(check: SelfCheck, out: torch.Tensor,
                           references: list[torch.Tensor], p: float) -> None:
    """One training-mode output equals the prescribed dropout's, draw for draw (the
    attention called on the whole batch or one sequence at a time)."""
    out = torch.as_tensor(out)
    near = min(references, key=lambda r: float((out.detach() - r).abs().amax())
               if out.shape == r.shape else math.inf)
    check.close(out, near, f"in training mode with dropout={p}, the block's output is the one "
                f"nn.Dropout({p}) gives on each sub-layer's output before the add (the same "
                "seed, the same draws)", atol=1e-4, likely=DROPOUT_NOT_NN)


def masks_differ(out: torch.Tensor) -> bool:
    """Does some token's output take more than two values (gaps above 0.01)?"""
    values = torch.as_tensor(out).detach().double().flatten(0, -2).sort(dim=-1).values
    levels = (values.diff(dim=-1) > 0.01).sum(dim=-1) + 1
    return bool((levels > 2).any())


def _randomise(block: nn.Module, generator: torch.Generator) -> None:
    """Random weights and biases everywhere, and two clearly different layer norms."""
    with torch.no_grad():
        for _, parameter in sorted(block.named_parameters()):
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
        for norm, scale in ((block.norm_1, 0.5), (block.norm_2, 1.5)):
            norm.weight.copy_(scale + 0.3 * torch.randn(norm.weight.shape, generator=generator))


def check_separate_norms(check: SelfCheck, block: nn.Module) -> None:
    """After :func:`_randomise` gave them different weights, norm_1 and norm_2 still differ."""
    same_layer = block.norm_1 is block.norm_2
    check.expect(not same_layer and not torch.equal(block.norm_1.weight, block.norm_2.weight),
                 "norm_1 and norm_2 are two separate layers (given different weights, each "
                 "keeps its own)", expected="two nn.LayerNorm(d_model), each with its own weights",
                 got="norm_1 is norm_2: one layer under two names" if same_layer
                 else "norm_1 and norm_2 share their weight tensor", likely=SHARED_NORM)


def check_TransformerBlock(block_class: type[nn.Module]) -> None:
    """Members as specified; agreement with nn.TransformerEncoderLayer, with and without
    padding; dropout in training mode only; gradients everywhere."""
    check = SelfCheck("TransformerBlock")
    check.error_causes.extend(BLOCK_CAUSES)
    d_model, n_heads, d_ff, p = 16, 4, 24, 0.25
    check.clause("members")
    block = check.call_seeded(0, block_class, d_model, n_heads, d_ff)
    check_block_members(check, block, d_model, n_heads, d_ff, 0.0)
    generator = torch.Generator().manual_seed(4)
    _randomise(block, generator)
    check_separate_norms(check, block)
    block.eval()
    x = torch.randn(3, 7, d_model, generator=generator)
    twin = pytorch_twin(block, d_model, n_heads, d_ff)

    check.clause("values")
    with torch.no_grad():
        out = check.call(block, x)
        pair = isinstance(out, tuple | list)
        check.expect(not pair, "block(x) returns one tensor",
                     expected="a (B, T, d_model) tensor", got=type(out).__name__,
                     diagnoses={RETURNS_PAIR: pair and len(out) == 2
                                and isinstance(out[0], torch.Tensor)
                                and tuple(out[0].shape) == tuple(x.shape)})
        out = check.tensor(out, "block(x)")
        check.shape(out, tuple(x.shape), "block(x)")
        check.close(out, twin(x),
                    "in eval mode, agrees with nn.TransformerEncoderLayer(norm_first=False) "
                    "holding the same weights",
                    mistakes=_twin_variants(block, d_model, n_heads, d_ff, x), atol=1e-4,
                    dims=("sentence", "position", "channel"))
        one = check.tensor(check.call(block, x[:1]), "block(x) for a batch of one")
        check.shape(one, (1, 7, d_model), f"block(x) for a batch of one, x of shape (1, 7, "
                    f"{d_model})", likely=SQUEEZED_OUT if one.shape == (7, d_model) else None)
        check.close(one, twin(x[:1]), "for a batch of one, agrees with "
                    "nn.TransformerEncoderLayer", atol=1e-4)

        check.clause("padding")
        lengths = torch.tensor([7, 4, 2])
        padding_mask = torch.arange(7)[None, :] >= lengths[:, None]

        def real(t: torch.Tensor) -> torch.Tensor:
            """The outputs at the real tokens; those at padded positions set to 0 (not compared)."""
            return t.masked_fill(padding_mask[..., None], 0.0)

        dims = ("sentence", "position", "channel")
        out = check.call(block, x, padding_mask=padding_mask)
        check.shape(out, tuple(x.shape), "block(x, padding_mask=mask)")
        positional = check.call(block, x, padding_mask)
        block.train()  # dropout is 0: only the code path changes
        trained, other_seed = (check.call_seeded(seed, block, x, padding_mask=padding_mask)
                               for seed in (1, 2))
        block.eval()
        reference = twin(x, src_key_padding_mask=padding_mask)

        def agrees(t: object) -> bool:
            return (isinstance(t, torch.Tensor) and t.shape == reference.shape
                    and bool(torch.allclose(real(t), real(reference), atol=1e-4)))

        unmasked = real(twin(x))
        mistakes = ({MASK_KEYWORD_LOST: unmasked} if agrees(positional)
                    else {MASK_ONLY_IN_TRAINING: unmasked} if agrees(trained) else {})
        check.close(real(out), real(reference),
                    "with a padding mask, agrees with nn.TransformerEncoderLayer at the real "
                    "tokens (the outputs at padded positions are not compared)",
                    mistakes={
                        **mistakes,
                        "the padding mask does not reach the attention: pass it as "
                        "key_padding_mask": unmasked,
                        "the padding mask is inverted: True already means padding in "
                        "key_padding_mask": real(twin(x, src_key_padding_mask=~padding_mask)),
                        FLOAT_MASK: real(twin.train()(
                            x, src_key_padding_mask=padding_mask.to(x.dtype))),
                    }, atol=1e-4, dims=dims)
        twin.eval()
        check.close(real(positional), real(reference),
                    "the padding mask also works as the second positional argument", atol=1e-4,
                    dims=dims)
        trained = check.tensor(trained, "block(x, padding_mask=mask) in training mode")
        random = (isinstance(other_seed, torch.Tensor) and other_seed.shape == trained.shape
                  and not torch.allclose(other_seed, trained, atol=1e-6))
        if not random:  # random although dropout=0: the dropout checks below tell why
            check.close(real(trained), real(reference),
                        "in training mode (with dropout=0, so that nothing is random), the "
                        "padding mask works too: agrees with nn.TransformerEncoderLayer at the "
                        "real tokens", mistakes={MASK_ONLY_IN_EVAL: unmasked}, atol=1e-4,
                        dims=dims)
        noisy = x.clone()
        noisy[padding_mask] = 100.0
        check.close(real(check.call(block, noisy, padding_mask=padding_mask)), real(out),
                    "changing the padded inputs does not change the real tokens' outputs",
                    atol=1e-4, dims=dims)
        left = padding_mask.flip(1)  # the same lengths, padded at the start
        at_start = check.tensor(check.call(block, x, padding_mask=left),
                                "block(x, padding_mask=mask) with padding at the start")
        kept = ~left[..., None]
        check.close(at_start * kept, twin(x, src_key_padding_mask=left) * kept,
                    "padding at the start (left padding): agrees with "
                    "nn.TransformerEncoderLayer at the real tokens", atol=1e-4, dims=dims)

        check.clause("members")
        dropping = check.call_seeded(0, block_class, d_model, n_heads, d_ff, dropout=p)
        check_block_members(check, dropping, d_model, n_heads, d_ff, p)
        dropping.load_state_dict(block.state_dict())

        check.clause("dropout")
        dropping.eval()
        eval_1, eval_2 = (check.call_seeded(seed, dropping, x) for seed in (1, 2))
        check.close(eval_1, twin(x), f"with dropout={p}, in eval mode the block computes the "
                    "same output as without dropout", atol=1e-4,
                    diagnoses={DROPOUT_IN_EVAL: lambda: not torch.allclose(eval_1, eval_2)})
        dropping.train()
        train_1, again, train_2 = (check.call_seeded(seed, dropping, x) for seed in (1, 1, 2))
        prescribed = trained_references(dropping, x, 1, p)  # before the weights change below
        check.close(again, train_1, "in training mode, the same seed gives the same output")
        check.expect(not torch.allclose(train_1, train_2, atol=1e-5),
                     "in training mode, two seeds give different outputs (dropout draws afresh)",
                     expected="different outputs for seeds 1 and 2", got="the same output",
                     likely=DROPOUT_RESEEDED)

        check.clause("padding")
        # Dropout's draws depend on the seed and the shapes only: with one seed, the real
        # tokens' outputs cannot depend on what the padded positions hold.
        padded = check.tensor(check.call_seeded(7, dropping, x, padding_mask=padding_mask),
                              f"block(x, padding_mask=mask) with dropout={p}")
        check.close(real(check.tensor(check.call_seeded(7, dropping, noisy,
                                                        padding_mask=padding_mask),
                                      f"block(x, padding_mask=mask) with dropout={p}")),
                    real(padded), f"in training mode with dropout={p} (the same seed for both "
                    "calls), changing the padded inputs does not change the real tokens' "
                    "outputs", atol=1e-4, dims=dims, diagnoses={MASK_ONLY_IN_EVAL: lambda: bool(
                        torch.allclose(real(padded), real(check.call_seeded(
                            7, dropping, x)), atol=1e-5))})

        check.clause("dropout")
        full = check.call_seeded(0, block_class, d_model, n_heads, d_ff, dropout=1.0)
        full.load_state_dict(block.state_dict())
        full.train()
        dropped = check.call_seeded(3, full, x)
        check.close(dropped, twin.norm2(twin.norm1(x)),
                    "with dropout=1 in training mode both sub-layer outputs are dropped: the "
                    "block returns norm_2(norm_1(x))", atol=1e-4,
                    mistakes=_fully_dropped_variants(twin, x), diagnoses={
                        DROPOUT_AFTER_NORM: lambda: bool(dropped.abs().amax() < 1e-6),
                        DROPOUT_ON_THE_SUM: lambda: bool(
                            (dropped - dropped[:1, :1]).abs().amax() < 1e-4
                            and dropped.abs().amax() >= 1e-6),
                        DROPOUT_FIXED_P: lambda: not torch.allclose(
                            dropped, check.call_seeded(4, full, x), atol=1e-5)})
        # The attention's own dropout (on its weights) makes two seeds differ by itself; with
        # its output projection set to zero only self.dropout can.
        dropping.attention.out_proj.weight.zero_()
        silent_1, silent_2 = (check.call_seeded(seed, dropping, x) for seed in (4, 5))
        check.expect(not torch.allclose(silent_1, silent_2, atol=1e-5),
                     "in training mode, self.dropout draws a fresh mask on every call (two "
                     "seeds give different outputs even with the attention's output "
                     "projection set to zero, so that only self.dropout acts)",
                     expected="different outputs for seeds 4 and 5", got="the same output",
                     likely=DROPOUT_DRAWN_ONCE)
        check.expect(masks_differ(check.call_seeded(6, *_mask_reader(dropping, x))),
                     "in training mode, each sub-layer output gets its own dropout mask (with "
                     "constant sub-layer outputs, the output shows both masks)",
                     expected="two independent masks", got="the same mask on both outputs",
                     likely=DROPOUT_SHARED_MASK)
        expect_trained_dropout(check, train_1, prescribed, p)

    check.clause("device")
    on_meta = check.call_seeded(0, block_class, d_model, n_heads, d_ff).to("meta")
    check.device_follows(on_meta, x, padding_mask=padding_mask,
                         what="block(x, padding_mask=mask)")

    check.clause("gradients")
    block.train()
    weights = torch.randn(x.shape, generator=generator)
    output = check.tensor(check.call(block, x, padding_mask=padding_mask), "block(x)")
    if output.requires_grad:  # under torch.no_grad() nothing reaches the weights (told below)
        check.backward(output * weights, "the block")
    missing = [name for name, parameter in block.named_parameters()
               if parameter.grad is None or not bool(parameter.grad.abs().sum() > 0)]
    check.expect(not missing, "in training mode, every parameter gets a gradient",
                 expected="a nonzero gradient for every parameter",
                 got=f"none for {', '.join(missing[:4])}",
                 likely="part of the block is cut off from the gradient (.detach(), "
                        "torch.no_grad() or .data in forward): training would never change it")
    expect_input_gradient(check, block, x, padding_mask, weights, d_model, n_heads, d_ff)
    check.passed()


# ---- mean_pool --------------------------------------------------------------------------------

CUT_OFF = ("the result was cut off from h (torch.no_grad(), .detach(), .numpy() or .item() "
           "inside mean_pool): in the classifier no gradient would reach the blocks and the "
           "embedding below the pooling, so they would never learn")


POOL_PADDING_COUNT = ("the divisor counts the padding (`padding_mask.sum(...)`): divide by "
                      "the number of real tokens, (~padding_mask).sum(...)")
POOL_WHOLE_BATCH = ("one mean over the real tokens of the whole batch (`h[~padding_mask]` "
                    "flattens the batch): each sequence needs its own mean")
POOL_CAUSES: list[tuple[str, str | None, str]] = [
    (r"must match the size of tensor b \(\d+\) at non-singleton dimension 2", None,
     "the (B, T) mask met the (B, T, d) h without a trailing axis, so PyTorch lined up its "
     "T with h's d: give the mask a last axis of size 1, (B, T, 1)"),
]
POOL_SUM_ALL = ("the padded vectors were summed in (`h.sum(dim=1)` over all T positions), "
                "and only the count of real tokens left them out: the padded vectors are not "
                "zero, so leave them out of the sum too")
POOL_EVERYTHING = "averaged over every axis (`h.mean()` without dim): average over time, dim=1"
POOL_FIXED_DTYPE = ("the dtype was fixed to float32 for a bfloat16 h: something was made "
                    "float32 (the mask turned into numbers with `.float()`, or a tensor made "
                    "with the default dtype); convert with .to(h.dtype)")


def check_mean_pool(mean_pool: Callable[..., torch.Tensor]) -> None:
    """Agreement with a plain mean without a mask; padding ignored and true lengths used."""
    check = SelfCheck("mean_pool")
    check.error_causes.extend(POOL_CAUSES)
    generator = torch.Generator().manual_seed(5)
    h = torch.randn(3, 6, 4, generator=generator) + 0.5
    lengths = torch.tensor([6, 3, 1])
    padding_mask = torch.arange(6)[None, :] >= lengths[:, None]

    check.clause("shape")
    out = check.tensor(check.call(mean_pool, h), "mean_pool(h)")
    check.expect(tuple(out.shape) == (3, 4), "mean_pool(h) for h (3, 6, 4) has shape (3, 4)",
                 expected="shape (3, 4)", got=f"shape {tuple(out.shape)}", diagnoses={
                     "averaged over the features (the last axis) instead of time (dim=1)":
                         tuple(out.shape) == (3, 6),
                     "averaged over the batch (dim=0) instead of time (dim=1)":
                         tuple(out.shape) == (6, 4),
                     POOL_EVERYTHING: tuple(out.shape) == ()})
    one = check.tensor(check.call(mean_pool, h[1:2], padding_mask[1:2]),
                       "mean_pool(h, padding_mask) for a batch of one")
    check.shape(one, (1, 4), "mean_pool(h, padding_mask) for a batch of one, h (1, 6, 4)",
                likely="the batch axis was squeezed away: keep (B, d) even for B = 1"
                if tuple(one.shape) == (4,) else None)

    check.clause("values")
    check.close(out, h.mean(dim=1), "without a mask, agrees with h.mean(dim=1)",
                mistakes={"summed over time instead of averaging": h.sum(dim=1)})

    check.clause("padding")
    out = check.tensor(check.call(mean_pool, h, padding_mask), "mean_pool(h, padding_mask)")
    check.shape(out, (3, 4), "mean_pool(h, padding_mask)")
    check.close(out[2], h[2, 0], "a sequence of length 1 gets its only real vector",
                dims=("feature",), mistakes={
        "the mask was ignored: the padded positions were averaged too": h[2].mean(dim=0),
        "divided by T instead of the number of real tokens": h[2, 0] / 6,
        "the mask is inverted: True in padding_mask means padding, so those positions are "
        "the ones to leave out": h[2, 1:].mean(dim=0),
        POOL_PADDING_COUNT: h[2, 0] / 5,
        POOL_WHOLE_BATCH: h[~padding_mask].mean(dim=0),
        POOL_SUM_ALL: h[2].sum(dim=0),
    })
    check.close(out[1], h[1, :3].mean(dim=0), "a sequence of length 3 gets the mean of its "
                "first three vectors")
    check.close(out[0], h[0].mean(dim=0), "a sequence without padding gets its plain mean")
    left = padding_mask.flip(1)  # the same lengths, padded at the start
    check.close(check.call(mean_pool, h, left)[1], h[1, 3:].mean(dim=0),
                "padding at the start: a sequence of length 3 gets the mean of its last three",
                mistakes={"the first L positions were taken as the real ones; use the mask "
                          "itself, wherever the padding is": h[1, :3].mean(dim=0)})
    noisy = h.clone()
    noisy[padding_mask] = 1000.0
    check.close(check.call(mean_pool, noisy, padding_mask), out,
                "changing the padded vectors does not change the result")
    check.close(check.call(mean_pool, h, torch.zeros(3, 6, dtype=torch.bool)), h.mean(dim=1),
                "a mask without any padding gives the plain mean")

    check.rule("gradients")
    leaf = h.clone().requires_grad_()
    out = check.tensor(check.call(mean_pool, leaf, padding_mask), "mean_pool(h, padding_mask)")
    check.expect(out.requires_grad, "mean_pool(h, padding_mask) is connected to h (a gradient "
                 "can flow back through it)", expected="a result with requires_grad=True for "
                 "an h that requires a gradient", got="a result cut off from h",
                 likely=CUT_OFF)
    check.backward(out, "mean_pool")
    grad = leaf.grad
    reached = grad is not None and bool((grad[~padding_mask] != 0).all())
    check.expect(reached, "the gradient reaches every real position of h",
                 expected="a nonzero gradient at every real position",
                 got="None" if grad is None else "zeros at some real positions", likely=CUT_OFF)

    check.clause("dtype")
    check.dtype_follows(mean_pool, h, padding_mask, what="mean_pool(h, padding_mask)")
    half = check.tensor(check.call(mean_pool, h.to(torch.bfloat16), padding_mask),
                        "mean_pool(h, padding_mask) for a bfloat16 h")
    check.expect(half.dtype == torch.bfloat16, "mean_pool(h, padding_mask) with a bfloat16 h "
                 "returns bfloat16", expected="torch.bfloat16", got=str(half.dtype),
                 diagnoses={POOL_FIXED_DTYPE: half.dtype == torch.float32})
    check.clause("device")
    check.device_follows(mean_pool, h, what="mean_pool(h) (padding_mask=None)")
    check.device_follows(mean_pool, h, padding_mask, what="mean_pool(h, padding_mask)")
    check.passed()
