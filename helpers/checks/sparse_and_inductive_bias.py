"""Self-checks for tutorial 05 (sparse functions and the inductive bias of attention)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.framework import SelfCheck, describe


def label_mistakes(X: torch.Tensor, idx: list[int]) -> dict[str, torch.Tensor]:
    """What the usual wrong labels are for bits ``X`` and positions ``idx``."""
    Xd = X.double()
    relevant = Xd[:, list(idx)]
    s = len(idx)
    return {
        "`any` instead of `all`: the label must be 1 only when EVERY bit at idx is 1":
            relevant.amax(dim=1, keepdim=True),
        "idx ignored: the first len(idx) bits were used instead of the positions in idx":
            Xd[:, :s].amin(dim=1, keepdim=True),
        "the label uses every position, not only those in idx": Xd.amin(dim=1, keepdim=True),
        "the labels are inverted (1 where some bit at idx is 0)":
            1 - relevant.amin(dim=1, keepdim=True),
        "the label is the sum (count of ones) at idx, not their AND":
            relevant.sum(dim=1, keepdim=True),
        "the label is the mean of the bits at idx, not their AND":
            relevant.mean(dim=1, keepdim=True),
    }


UNBALANCED_HALF = ("p = 0.5 was used as the default: then only 1/2 ** len(idx) of the labels are "
                   "1; the balanced default is p = 0.5 ** (1 / len(idx))")


def check_sparse_and_dataset(sparse_and_dataset: Callable[..., tuple]) -> None:
    """Shapes, dtypes, bits, labels consistent with the AND at ``idx``, and label balance."""
    check = SelfCheck("sparse_and_dataset")
    m, T, idx = 4000, 12, [2, 9]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        result = check.call(sparse_and_dataset, m, T, idx)
    check.expect(isinstance(result, tuple | list) and len(result) == 2, "returns a pair (X, y)",
                 expected="a tuple (X, y)", got=describe(result))
    X, y = result
    check.tensor(X, "X")
    check.tensor(y, "y")
    check.shape(X, (m, T), "X")
    check.expect(X.dtype == torch.int64, "X holds int64 bits", expected="dtype torch.int64",
                 got=f"dtype {X.dtype}")
    check.expect(bool(((X == 0) | (X == 1)).all()), "X holds only 0s and 1s",
                 expected="bits", got=describe(X))
    check.expect(tuple(y.shape) == (m, 1), f"y has shape ({m}, 1)", expected=f"shape ({m}, 1)",
                 got=f"shape {tuple(y.shape)}", diagnoses={
                     "the labels have no column axis: keep it (keepdim=True) or reshape to "
                     "(m, 1)": tuple(y.shape) == (m,)})
    check.expect(y.dtype.is_floating_point, "y is a float tensor", expected="a float dtype",
                 got=f"dtype {y.dtype}")
    wanted = X[:, idx].double().amin(dim=1, keepdim=True)
    check.close(y.double(), wanted, "y is 1 exactly when every bit at idx = [2, 9] is 1",
                mistakes=label_mistakes(X, idx), atol=1e-6, rtol=0, dims=("sample", "label"))
    balance = (y > 0.5).float().mean().item()
    bit_rate = X.float().mean().item()
    check.expect(0.45 <= balance <= 0.55, "the default p balances the labels",
                 expected="about half of the labels equal to 1 (0.45 to 0.55)",
                 got=f"fraction of positive labels {balance:.3f} (bits are 1 with frequency "
                     f"{bit_rate:.3f})", diagnoses={UNBALANCED_HALF: abs(bit_rate - 0.5) < 0.02})
    check.passed()
    print(f"   label balance with the default p: {balance:.2f} positive "
          f"(bit probability {bit_rate:.3f}; 0.5 ** (1/2) = {0.5 ** 0.5:.3f})")


def _reference_via_builtin(model: nn.Module, x: torch.Tensor, *, positions: bool = True,
                           scale: float | None = None, swap: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights and output from nn.MultiheadAttention loaded with the model's maps
    (``positions``, ``scale`` and ``swap`` build in a typical mistake)."""
    d = model.query.weight.shape[0]
    mha = nn.MultiheadAttention(d, num_heads=1, bias=False, batch_first=True)
    query, key = (model.key, model.query) if swap else (model.query, model.key)
    factor = 1.0 if scale is None else scale * math.sqrt(d)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([query.weight * factor, key.weight,
                                            model.value.weight]))
        mha.out_proj.weight.copy_(torch.eye(d))
        e = model.token_embedding(x) + (model.position_embedding if positions else 0.0)
        out, weights = mha(e, e, e, need_weights=True, average_attn_weights=True)
        probability = torch.sigmoid(model.readout(out[:, -1, :]))
    return weights, probability


def check_SelfAttentionClassifier(model_class: Callable[..., nn.Module]) -> None:  # noqa: N802
    """Members, shapes, attention rows that are distributions, agreement with PyTorch's
    nn.MultiheadAttention, and that positions matter."""
    check = SelfCheck("SelfAttentionClassifier")
    T, d, B = 6, 4, 5
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = check.call(model_class, T, d)
    for name, kind in (("token_embedding", nn.Embedding), ("query", nn.Linear),
                       ("key", nn.Linear), ("value", nn.Linear), ("readout", nn.Linear)):
        member = getattr(model, name, None)
        check.expect(isinstance(member, kind), f"the model has a member `{name}`",
                     expected=f"an nn.{kind.__name__} called {name}", got=describe(member))
    position = getattr(model, "position_embedding", None)
    check.expect(isinstance(position, nn.Parameter), "`position_embedding` is an nn.Parameter",
                 expected="nn.Parameter of shape (T, d)", got=describe(position),
                 likely="position_embedding is a plain tensor, so training never changes it: "
                        "wrap it, nn.Parameter(...)")
    check.shape(position, (T, d), "position_embedding")
    check.expect(model.query.bias is None and model.key.bias is None and model.value.bias is None,
                 "query, key and value have no bias", expected="bias=False",
                 got="a bias in one of them")
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # larger weights than at initialisation, so attention is not uniform
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    x = torch.randint(0, 2, (B, T), generator=generator)
    e = check.tensor(check.call(model.embed, x), "embed(x)")
    check.close(e, model.token_embedding(x) + model.position_embedding,
                "embed(x) = token_embedding(x) + position_embedding", mistakes={
                    "embed leaves out the position embedding": model.token_embedding(x)})
    weights = check.tensor(check.call(model.attention_weights, x), "attention_weights(x)")
    check.shape(weights, (B, T, T), "attention_weights(x)")
    reference_weights, reference_probability = _reference_via_builtin(model, x)
    check.close(weights, reference_weights,
                "attention weights agree with nn.MultiheadAttention on the same maps", mistakes={
                    "the position embedding is not used in the attention":
                        _reference_via_builtin(model, x, positions=False)[0],
                    "the scores were not divided by sqrt(d)":
                        _reference_via_builtin(model, x, scale=1.0)[0],
                    "queries and keys are swapped (softmax of K Qᵀ instead of Q Kᵀ)":
                        _reference_via_builtin(model, x, swap=True)[0],
                }, diagnoses={
                    "the softmax runs over the queries (dim=-2), not over the keys (dim=-1)":
                        lambda: bool(torch.allclose(weights.sum(-2), torch.ones(B, T),
                                                    atol=1e-5))},
                atol=1e-4, dims=("sample", "query", "key"))
    probability = check.tensor(check.call(model, x), "model(x)")
    check.shape(probability, (B, 1), "model(x)")
    values = model.value(model.token_embedding(x) + model.position_embedding)
    with torch.no_grad():
        first = torch.sigmoid(model.readout(reference_weights[:, 0].unsqueeze(1) @ values))
        mean = torch.sigmoid(model.readout((reference_weights @ values).mean(1)))
        logit = torch.logit(reference_probability.double().clamp(1e-12, 1 - 1e-12)).float()
    check.close(probability, reference_probability,
                "output agrees with nn.MultiheadAttention read out at the last position",
                atol=1e-4, mistakes={
                    "forward reads out at the first position instead of the last":
                        first.reshape(B, 1),
                    "forward averages the outputs of all positions instead of reading the "
                    "last one": mean,
                    "no sigmoid at the end: forward must return a probability": logit,
                })
    shuffled = x.clone()
    shuffled[:, :-1] = x[:, :-1].flip(1)
    moved = check.call(model.attention_weights, shuffled)
    check.expect(not torch.allclose(moved[:, -1].sort(-1).values, weights[:, -1].sort(-1).values,
                                    atol=1e-6) or bool((x == shuffled).all()),
                 "attention depends on the positions, not just on the bits",
                 expected="different weights after reordering the bits",
                 got="the same set of weights")
    check.passed()
