"""Self-checks for tutorial 05 (sparse functions and the inductive bias of attention)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.framework import SelfCheck, describe


def check_sparse_and_dataset(sparse_and_dataset: Callable[..., tuple]) -> None:
    """Shapes, dtypes, bits, labels consistent with the AND at ``idx``, and label balance."""
    check = SelfCheck("sparse_and_dataset")
    m, T, idx = 4000, 12, [2, 9]
    state = torch.get_rng_state()
    torch.manual_seed(5)
    try:
        result = check.call(sparse_and_dataset, m, T, idx)
    finally:
        torch.set_rng_state(state)
    check.expect(isinstance(result, tuple | list) and len(result) == 2, "returns a pair (X, y)",
                 expected="a tuple (X, y)", got=describe(result))
    X, y = result
    check.tensor(X, "X")
    check.tensor(y, "y")
    check.shape(X, (m, T), "X", likely="X has one row per sample and one column per position")
    check.expect(X.dtype == torch.int64, "X holds int64 bits", expected="dtype torch.int64",
                 got=f"dtype {X.dtype}", likely="convert the boolean comparison with .long()")
    check.expect(bool(((X == 0) | (X == 1)).all()), "X holds only 0s and 1s",
                 expected="bits", got=describe(X))
    check.shape(y, (m, 1), "y", likely="labels are a column: keep the dimension "
                "(keepdim=True) or reshape to (m, 1)")
    check.expect(y.dtype.is_floating_point, "y is a float tensor", expected="a float dtype",
                 got=f"dtype {y.dtype}", likely="convert the labels with .float()")
    relevant_all_one = X[:, idx].min(dim=1).values == 1
    positive = y[:, 0] > 0.5
    check.expect(bool((positive <= relevant_all_one).all()),
                 "every positive sample has 1s at all positions in idx",
                 expected="y = 1 only when every bit at idx is 1",
                 got=f"{int((positive & ~relevant_all_one).sum())} positive samples with a 0 "
                     "at idx", likely="use `all` (every bit), not `any`; and use the "
                     "positions in idx, not the first len(idx) columns")
    check.expect(bool((relevant_all_one <= positive).all()),
                 "every sample with 1s at all positions in idx is positive",
                 expected="y = 1 whenever every bit at idx is 1",
                 got=f"{int((relevant_all_one & ~positive).sum())} such samples labelled 0",
                 likely="the label must look at the columns listed in idx")
    balance = positive.float().mean().item()
    check.expect(0.45 <= balance <= 0.55, "the default p balances the labels",
                 expected="about half of the labels equal to 1 (0.45 to 0.55)",
                 got=f"fraction of positive labels {balance:.3f}",
                 likely="with p=None use p = 0.5 ** (1 / len(idx)), so that p ** s = 0.5")
    check.passed()
    print(f"   label balance with the default p: {balance:.2f} positive "
          f"(bit probability {X.float().mean().item():.3f}; 0.5 ** (1/2) = {0.5 ** 0.5:.3f})")


def _reference_via_builtin(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights and output from nn.MultiheadAttention loaded with the model's maps."""
    d = model.query.weight.shape[0]
    mha = nn.MultiheadAttention(d, num_heads=1, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([model.query.weight, model.key.weight,
                                            model.value.weight]))
        mha.out_proj.weight.copy_(torch.eye(d))
        e = model.token_embedding(x) + model.position_embedding
        out, weights = mha(e, e, e, need_weights=True, average_attn_weights=True)
        probability = torch.sigmoid(model.readout(out[:, -1, :]))
    return weights, probability


def check_SelfAttentionClassifier(model_class: Callable[..., nn.Module]) -> None:
    """Members, shapes, attention rows that are distributions, agreement with PyTorch's
    nn.MultiheadAttention, and that positions matter."""
    check = SelfCheck("SelfAttentionClassifier")
    torch.manual_seed(3)
    T, d, B = 6, 4, 5
    model = check.call(model_class, T, d)
    for name, kind in (("token_embedding", nn.Embedding), ("query", nn.Linear),
                       ("key", nn.Linear), ("value", nn.Linear), ("readout", nn.Linear)):
        member = getattr(model, name, None)
        check.expect(isinstance(member, kind), f"the model has a member `{name}`",
                     expected=f"an nn.{kind.__name__} called {name}", got=describe(member),
                     likely="use exactly the member names given in the exercise")
    position = getattr(model, "position_embedding", None)
    check.expect(isinstance(position, nn.Parameter), "`position_embedding` is an nn.Parameter",
                 expected="nn.Parameter of shape (T, d)", got=describe(position),
                 likely="wrap the tensor in nn.Parameter so that it is learned")
    check.shape(position, (T, d), "position_embedding", likely="one d-vector per position")
    check.expect(model.query.bias is None and model.key.bias is None and model.value.bias is None,
                 "query, key and value have no bias", expected="bias=False",
                 got="a bias in one of them", likely="nn.Linear(d, d, bias=False)")
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # larger weights than at initialisation, so attention is not uniform
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    x = torch.randint(0, 2, (B, T), generator=generator)
    weights = check.tensor(check.call(model.attention_weights, x), "attention_weights(x)")
    check.shape(weights, (B, T, T), "attention_weights(x)",
                likely="one row of T weights per query position: (B, T, T)")
    check.expect(bool((weights >= 0).all()), "attention weights are non-negative",
                 expected="weights >= 0", got=describe(weights),
                 likely="the scores must go through softmax")
    check.close(weights.sum(-1), torch.ones(B, T), "each row of attention weights sums to 1",
                likely="softmax over the last dimension (the keys), not over the queries")
    reference_weights, reference_probability = _reference_via_builtin(model, x)
    check.close(weights, reference_weights,
                "attention weights agree with nn.MultiheadAttention on the same maps",
                likely="check the embedding (token + position), the scale 1/sqrt(d) and which "
                       "side is the query and which the key", atol=1e-4)
    probability = check.tensor(check.call(model, x), "model(x)")
    check.shape(probability, (B, 1), "model(x)", likely="one probability per sample: (B, 1)")
    check.expect(bool(((probability >= 0) & (probability <= 1)).all()),
                 "outputs are probabilities", expected="values in [0, 1]",
                 got=describe(probability), likely="apply torch.sigmoid to the readout")
    check.close(probability, reference_probability,
                "output agrees with nn.MultiheadAttention read out at the last position",
                likely="read out at the last position: h = A[:, -1, :] @ V, then "
                       "sigmoid(readout(h))", atol=1e-4)
    shuffled = x.clone()
    shuffled[:, :-1] = x[:, :-1].flip(1)
    moved = check.call(model.attention_weights, shuffled)
    check.expect(not torch.allclose(moved[:, -1].sort(-1).values, weights[:, -1].sort(-1).values,
                                    atol=1e-6) or bool((x == shuffled).all()),
                 "attention depends on the positions, not just on the bits",
                 expected="different weights after reordering the bits",
                 got="the same set of weights", likely="add position_embedding to the tokens")
    check.passed()
