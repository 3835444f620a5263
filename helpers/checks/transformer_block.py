"""Self-checks for tutorial 04 (the transformer block)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.framework import SelfCheck, describe

_BATCH_AXIS = ("one row per position: return shape (T, d_model). A table of shape (T, 1, d_model) "
               "added to a (B, T, d_model) batch gives each *sentence* its own vector instead of "
               "each position (the position index ends up on the batch axis)")


def check_sinusoidal_positional_encoding(encoding: Callable[[int, int], torch.Tensor]) -> None:
    """Shape, broadcasting over a batch, sin/cos layout and the frequencies, by properties."""
    check = SelfCheck("sinusoidal_positional_encoding")
    T, d = 10, 8
    pe = check.tensor(check.call(encoding, T, d), f"sinusoidal_positional_encoding({T}, {d})")
    check.shape(pe, (T, d), f"sinusoidal_positional_encoding({T}, {d})", likely=_BATCH_AXIS)
    check.expect(pe.is_floating_point(), "the encoding is a float tensor",
                 expected="a float dtype", got=str(pe.dtype),
                 likely="build the table from float tensors (torch.arange(T, dtype=torch.float32))")
    pe = pe.detach().cpu().double()
    batch = torch.zeros(3, T, d, dtype=torch.float64) + pe
    check.close(batch[1] - batch[0], torch.zeros(T, d),
                "added to a (B, T, d) batch, every sentence gets the same encoding",
                likely=_BATCH_AXIS)
    first = torch.tensor([0.0, 1.0] * (d // 2), dtype=torch.float64)
    check.close(pe[0], first, "position 0 is [0, 1, 0, 1, ...] (sin 0 = 0 on even, cos 0 = 1 on odd)",
                likely="sine belongs in the even columns (0, 2, ...) and cosine in the odd ones; "
                       "positions start at t = 0")
    radius = pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2
    check.close(radius, torch.ones_like(radius),
                "each column pair (2i, 2i+1) is a sin/cos pair of one angle (sin² + cos² = 1)",
                likely="interleave: column 2i = sin(t·ω_i), column 2i+1 = cos(t·ω_i) with the SAME "
                       "ω_i (not sines in the first half and cosines in the second)")
    check.close(pe[:, 0], torch.sin(torch.arange(T, dtype=torch.float64)),
                "column 0 is sin(t) (the first frequency is ω_0 = 1)",
                likely="the first pair has exponent 0, so ω_0 = 1")
    # The angle of pair i advances by ω_i per position: read it off position 1.
    omega = torch.atan2(pe[1, 0::2], pe[1, 1::2])
    expected = torch.tensor([10000.0 ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    check.close(omega, expected, f"the frequencies of the {d // 2} pairs are 10000^(-2i/d)",
                likely="ω_i = 1 / 10000^(2i / d_model) with i = 0, 1, ... the PAIR index: check "
                       "the factor 2 and divide by d_model")
    wide = torch.as_tensor(check.call(encoding, 40, 32)).detach().cpu().double()
    check.shape(wide, (40, 32), "sinusoidal_positional_encoding(40, 32)", likely=_BATCH_AXIS)
    similarity = wide @ wide.T
    check.close(torch.diagonal(similarity, offset=3)[:-1], torch.diagonal(similarity, offset=3)[1:],
                "PE_t · PE_(t+3) is the same for every t (similarity depends on the offset only)",
                likely="every column pair must use one angle t·ω_i, sine then cosine")
    check.passed()


def _describe_block_members(block: nn.Module) -> str:
    names = ", ".join(name for name, _ in block.named_children())
    return f"members: {names or 'none'}"


def _check_block_members(check: SelfCheck, block: nn.Module, d_model: int, n_heads: int,
                         d_ff: int) -> None:
    check.expect(isinstance(block, nn.Module), "TransformerBlock(...) is an nn.Module",
                 expected="an nn.Module", got=describe(block),
                 likely="subclass nn.Module and call super().__init__() first")
    attention = getattr(block, "attention", None)
    check.expect(isinstance(attention, nn.MultiheadAttention),
                 "block.attention is an nn.MultiheadAttention", expected="nn.MultiheadAttention",
                 got=f"{type(attention).__name__} ({_describe_block_members(block)})",
                 likely="self.attention = nn.MultiheadAttention(d_model, n_heads, "
                        "dropout=dropout, batch_first=True)")
    check.expect(attention.embed_dim == d_model and attention.num_heads == n_heads,
                 f"attention has embed_dim={d_model} and num_heads={n_heads}",
                 expected=f"({d_model}, {n_heads})",
                 got=f"({attention.embed_dim}, {attention.num_heads})",
                 likely="pass d_model and n_heads, in that order")
    check.expect(bool(attention.batch_first), "attention was built with batch_first=True",
                 expected="batch_first=True", got="batch_first=False",
                 likely="our tensors are (B, T, d): without batch_first=True PyTorch reads them "
                        "as (T, B, d) and attends across the batch")
    for name in ("norm_1", "norm_2"):
        norm = getattr(block, name, None)
        check.expect(isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (d_model,),
                     f"block.{name} is nn.LayerNorm(d_model)", expected=f"nn.LayerNorm({d_model})",
                     got=repr(norm), likely=f"self.{name} = nn.LayerNorm(d_model)")
    mlp = getattr(block, "mlp", None)
    layout = (isinstance(mlp, nn.Sequential) and len(mlp) == 3
              and isinstance(mlp[0], nn.Linear) and isinstance(mlp[1], nn.ReLU)
              and isinstance(mlp[2], nn.Linear))
    check.expect(layout, "block.mlp is Sequential(Linear, ReLU, Linear)",
                 expected="nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), "
                          "nn.Linear(d_ff, d_model))",
                 got=repr(mlp), likely="build self.mlp with exactly these three layers")
    sizes = (mlp[0].in_features, mlp[0].out_features, mlp[2].in_features, mlp[2].out_features)
    check.expect(sizes == (d_model, d_ff, d_ff, d_model),
                 f"the MLP maps {d_model} -> {d_ff} -> {d_model}",
                 expected=f"Linear({d_model}, {d_ff}) then Linear({d_ff}, {d_model})",
                 got=f"Linear({sizes[0]}, {sizes[1]}) then Linear({sizes[2]}, {sizes[3]})",
                 likely="the MLP widens d_model to d_ff and narrows it back")


def pytorch_twin(block: nn.Module, d_model: int, n_heads: int, d_ff: int
                  ) -> nn.TransformerEncoderLayer:
    """PyTorch's post-norm encoder layer holding a copy of the block's weights."""
    twin = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, activation="relu",
                                      batch_first=True, norm_first=False)
    twin.self_attn.load_state_dict(block.attention.state_dict())
    twin.linear1.load_state_dict(block.mlp[0].state_dict())
    twin.linear2.load_state_dict(block.mlp[2].state_dict())
    twin.norm1.load_state_dict(block.norm_1.state_dict())
    twin.norm2.load_state_dict(block.norm_2.state_dict())
    return twin.eval()


_ORDER = ("post-norm order: h = norm_1(x + attention(x)), then "
          "out = norm_2(h + mlp(h)); add first, normalise second, attention before the MLP")


def check_transformer_block(block_class: type[nn.Module]) -> None:
    """Members as specified; agreement with nn.TransformerEncoderLayer, with and without padding."""
    check = SelfCheck("TransformerBlock")
    d_model, n_heads, d_ff = 16, 4, 32
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
        torch.manual_seed(0)
        block = check.call(block_class, d_model, n_heads, d_ff)
    _check_block_members(check, block, d_model, n_heads, d_ff)
    block.eval()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 7, d_model, generator=generator)
    with torch.no_grad():
        out = check.call(block, x)
        check.expect(not isinstance(out, tuple | list), "block(x) returns one tensor",
                     expected="a (B, T, d_model) tensor", got=type(out).__name__,
                     likely="nn.MultiheadAttention returns a pair (output, weights): unpack it "
                            "and keep the output")
        out = check.tensor(out, "block(x)")
        check.shape(out, tuple(x.shape), "block(x)",
                    likely="a block maps (B, T, d_model) to (B, T, d_model); nn.MultiheadAttention "
                           "returns a pair (output, weights): keep the output")
        mean, std = out.mean(dim=-1), out.std(dim=-1, unbiased=False)
        check.close(torch.stack([mean, std]), torch.stack([torch.zeros_like(mean),
                                                           torch.ones_like(std)]),
                    "with fresh LayerNorms, every output token has mean 0 and std 1",
                    likely="post-norm: the block's last step is norm_2(...)", atol=1e-3, rtol=1e-3)
        # Make the two norms different, so that using one in place of the other shows.
        for norm, scale in ((block.norm_1, 0.5), (block.norm_2, 1.5)):
            norm.weight.copy_(scale + 0.3 * torch.randn(d_model, generator=generator))
            norm.bias.copy_(0.3 * torch.randn(d_model, generator=generator))
        twin = pytorch_twin(block, d_model, n_heads, d_ff)
        check.close(check.call(block, x), twin(x),
                    "agrees with nn.TransformerEncoderLayer(norm_first=False) holding the same "
                    "weights", likely=_ORDER, atol=1e-4)
        lengths = torch.tensor([7, 4, 2])
        padding_mask = torch.arange(7)[None, :] >= lengths[:, None]
        real = ~padding_mask
        out = check.call(block, x, padding_mask=padding_mask)
        check.shape(out, tuple(x.shape), "block(x, padding_mask)")
        reference = twin(x, src_key_padding_mask=padding_mask)
        check.close(out[real], reference[real],
                    "with a padding mask, agrees with nn.TransformerEncoderLayer at the real tokens",
                    likely="pass the mask to the attention as key_padding_mask=padding_mask "
                           "(True = padding, already PyTorch's convention: do not invert it)",
                    atol=1e-4)
        noisy = x.clone()
        noisy[padding_mask] = 100.0
        check.close(check.call(block, noisy, padding_mask=padding_mask)[real], out[real],
                    "changing the padded inputs does not change the real tokens' outputs",
                    likely="the padding mask is not reaching the attention (key_padding_mask)",
                    atol=1e-4)
    check.passed()


def check_mean_pool(mean_pool: Callable[..., torch.Tensor]) -> None:
    """Agreement with a plain mean without a mask; padding ignored and true lengths used."""
    check = SelfCheck("mean_pool")
    generator = torch.Generator().manual_seed(5)
    h = torch.randn(3, 6, 4, generator=generator)
    out = check.tensor(check.call(mean_pool, h.clone()), "mean_pool(h)")
    check.shape(out, (3, 4), "mean_pool(h)",
                likely="average over the time axis (dim=1), keeping batch and features")
    check.close(out, h.mean(dim=1), "without a mask, agrees with h.mean(dim=1)")
    lengths = torch.tensor([6, 3, 1])
    padding_mask = torch.arange(6)[None, :] >= lengths[:, None]
    out = check.tensor(check.call(mean_pool, h.clone(), padding_mask), "mean_pool(h, padding_mask)")
    check.shape(out, (3, 4), "mean_pool(h, padding_mask)")
    check.close(out[0], h[0].mean(dim=0), "a sequence without padding gets its plain mean")
    check.close(out[2], h[2, 0], "a sequence of length 1 gets its only real vector",
                likely="leave padded positions out and divide by the number of real tokens")
    ones = torch.ones(3, 6, 4)
    check.close(check.call(mean_pool, ones, padding_mask), torch.ones(3, 4),
                "the mean of vectors that are all ones is all ones, whatever the padding",
                likely="divide by each sequence's true length (the number of False entries in "
                       "its mask), not by T")
    noisy = h.clone()
    noisy[padding_mask] = 1000.0
    check.close(check.call(mean_pool, noisy, padding_mask), out,
                "changing the padded vectors does not change the result",
                likely="padded positions leak into the mean: zero them (or select the real ones) "
                       "before summing; remember True in the mask = padding")
    check.close(check.call(mean_pool, h.clone(), torch.zeros(3, 6, dtype=torch.bool)), h.mean(dim=1),
                "a mask without any padding gives the plain mean")
    check.passed()

