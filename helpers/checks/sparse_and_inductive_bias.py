"""Self-checks for tutorial 05 (sparse functions and the inductive bias of attention).

References come from PyTorch's own ``nn.MultiheadAttention`` loaded with the model's maps,
never from a copy of an answer. A likely mistake is named only when the result has its
signature.
"""

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
IGNORES_LEN = ("the default p ignores len(idx) (it suits another number of positions): "
               "p = 0.5 ** (1 / len(idx))")
EXPLICIT_P_IGNORED = "an explicit p is ignored: only p=None means the balanced default"
RESEEDED = ("the same data for two different seeds: the function reseeds the generator "
            "(torch.manual_seed inside it) or draws from a generator of its own with a fixed "
            "seed; draw from the global generator and seed once, outside, with set_seed")
OTHER_GENERATOR = ("different data for the same seed: the bits come from a generator "
                   "torch.manual_seed does not reach (numpy, Python's random, a "
                   "torch.Generator of its own); draw them with torch.rand")
NO_COLUMN_AXIS = ("the labels have no column axis: keep it (keepdim=True) or reshape to "
                  "(m, 1)")


def dataset_pair(check: SelfCheck, result: object, m: int, T: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) from a result, checked to be a pair of tensors of shapes (m, T) and (m, 1)."""
    check.expect(isinstance(result, tuple | list) and len(result) == 2, "returns a pair (X, y)",
                 expected="a tuple (X, y)", got=describe(result))
    X, y = (check.tensor(v, name) for v, name in zip(result, ("X", "y"), strict=True))
    check.shape(X, (m, T), f"X for m={m}, T={T}")
    check.expect(tuple(y.shape) == (m, 1), f"y has shape ({m}, 1)", expected=f"shape ({m}, 1)",
                 got=f"shape {tuple(y.shape)}", diagnoses={NO_COLUMN_AXIS: tuple(y.shape) == (m,)})
    return X, y


def dataset_dtypes(check: SelfCheck, X: torch.Tensor, y: torch.Tensor) -> None:
    """X int64 bits, y float32."""
    check.expect(X.dtype == torch.int64, "X holds int64 bits", expected="dtype torch.int64",
                 got=f"dtype {X.dtype}", likely="the bits were left as booleans or floats: "
                 "convert them with .long()")
    check.expect(bool(((X == 0) | (X == 1)).all()), "X holds only 0s and 1s",
                 expected="bits", got=describe(X))
    check.expect(y.dtype == torch.float32, "y is a float32 tensor", expected="dtype torch.float32",
                 got=f"dtype {y.dtype}", likely="the labels must be float32, as the model's "
                 "probabilities are (BCELoss refuses to mix float64 with float32): .float()")


def suits_other_length(rate: float, s: int) -> bool:
    """Is ``rate`` the balanced bit probability of some other number of positions than s?"""
    return any(abs(rate - 0.5 ** (1 / k)) < 0.01 for k in range(2, 9) if k != s)


def check_sparse_and_dataset(sparse_and_dataset: Callable[..., tuple]) -> None:
    """Shapes, dtypes, labels consistent with the AND at ``idx``, the bit probability (default
    and explicit) and where the randomness comes from."""
    check = SelfCheck("sparse_and_dataset")
    m, T, idx = 4000, 12, [2, 9]
    check.clause("shape")
    X, y = dataset_pair(check, check.call_seeded(5, sparse_and_dataset, m, T, idx), m, T)
    check.clause("dtype")
    dataset_dtypes(check, X, y)

    check.clause("values")
    wanted = X[:, idx].double().amin(dim=1, keepdim=True)
    check.close(y.double(), wanted, "y is 1 exactly when every bit at idx = [2, 9] is 1",
                mistakes=label_mistakes(X, idx), atol=1e-6, rtol=0, dims=("sample", "label"))

    check.clause("arguments")
    balance = (y > 0.5).double().mean().item()
    bit_rate = X.double().mean().item()
    check.expect(abs(bit_rate - 0.5 ** 0.5) < 0.02 and abs(balance - 0.5) < 0.05,
                 "the default p = 0.5 ** (1 / len(idx)) balances the labels",
                 expected=f"bits 1 with frequency {0.5 ** 0.5:.3f}, about half of the labels 1",
                 got=f"bit frequency {bit_rate:.3f}, fraction of positive labels {balance:.3f}",
                 diagnoses={UNBALANCED_HALF: abs(bit_rate - 0.5) < 0.02,
                            IGNORES_LEN: suits_other_length(bit_rate, 2)})
    X3, _ = dataset_pair(check, check.call_seeded(6, sparse_and_dataset, m, T, (1, 4, 7)), m, T)
    rate = X3.double().mean().item()
    check.expect(abs(rate - 0.5 ** (1 / 3)) < 0.02, "for idx = (1, 4, 7) (a tuple of three), "
                 "the default p is 0.5 ** (1/3)", expected=f"bit frequency {0.5 ** (1 / 3):.3f}",
                 got=f"bit frequency {rate:.3f}",
                 diagnoses={IGNORES_LEN: suits_other_length(rate, 3)})
    for p in (0.3, 0.9):
        Xp, yp = dataset_pair(check, check.call_seeded(7, sparse_and_dataset, m, T, idx, p=p),
                              m, T)
        rate = Xp.double().mean().item()
        check.expect(abs(rate - p) < 0.02, f"an explicit p={p} is used",
                     expected=f"bits 1 with frequency {p}", got=f"bit frequency {rate:.3f}",
                     likely=EXPLICIT_P_IGNORED if abs(rate - 0.5 ** 0.5) < 0.02 else None)

    check.clause("randomness")
    first = check.call_seeded(11, sparse_and_dataset, 50, T, idx)
    again = check.call_seeded(11, sparse_and_dataset, 50, T, idx)
    other = check.call_seeded(12, sparse_and_dataset, 50, T, idx)
    same = lambda a, b: torch.equal(torch.as_tensor(a[0]), torch.as_tensor(b[0]))  # noqa: E731
    check.expect(same(first, again), "the same seed gives the same data",
                 expected="torch.manual_seed(11) twice: the same X", got="different X",
                 likely=OTHER_GENERATOR)
    check.expect(not same(first, other), "two seeds give different data",
                 expected="torch.manual_seed(11) and (12): different X", got="the same X",
                 likely=RESEEDED)
    check.passed()
    print(f"   label balance with the default p: {balance:.2f} positive "
          f"(bit probability {bit_rate:.3f}; 0.5 ** (1/2) = {0.5 ** 0.5:.3f})")


# ---- SelfAttentionClassifier -------------------------------------------------------------------

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


MEMBERS = (("token_embedding", nn.Embedding), ("query", nn.Linear), ("key", nn.Linear),
           ("value", nn.Linear), ("readout", nn.Linear))
POSITIONS_NOT_PARAMETER = ("position_embedding is a plain tensor, so training never changes "
                           "it: wrap it, nn.Parameter(...)")


def classifier_members(check: SelfCheck, model: nn.Module, T: int, d: int) -> None:
    """The members of the table, with their shapes."""
    for name, kind in MEMBERS:
        member = getattr(model, name, None)
        check.expect(isinstance(member, kind), f"the model has a member `{name}`",
                     expected=f"an nn.{kind.__name__} called {name}", got=describe(member))
    check.shape(model.token_embedding.weight, (2, d), "token_embedding.weight")
    position = getattr(model, "position_embedding", None)
    check.expect(isinstance(position, nn.Parameter), "`position_embedding` is an nn.Parameter",
                 expected="nn.Parameter of shape (T, d)", got=describe(position),
                 likely=POSITIONS_NOT_PARAMETER if isinstance(position, torch.Tensor) else None)
    check.shape(position, (T, d), "position_embedding")
    for name, shape in (("query", (d, d)), ("key", (d, d)), ("value", (d, d)),
                        ("readout", (1, d))):
        check.shape(getattr(model, name).weight, shape, f"{name}.weight")
    check.expect(all(getattr(model, n).bias is None for n in ("query", "key", "value")),
                 "query, key and value have no bias", expected="bias=False",
                 got="a bias in one of them")
    check.expect(model.readout.bias is not None, "readout has a bias", expected="a bias",
                 got="none")


INIT_BAND = (0.07, 0.14)  # a std of 0.1, measured on a few hundred draws
NORMAL_01 = ("initialise it with nn.init.normal_(..., std=0.1): PyTorch's default (std 1 for an "
             "embedding, uniform for a linear map) starts attention far from uniform")


def classifier_init(check: SelfCheck, models: list[nn.Module], d: int) -> None:
    """Each of the first five members drawn with std 0.1 (pooled over ``models``), the readout
    left as PyTorch made it (uniform in ±1/sqrt(d))."""
    for name in ("token_embedding", "position_embedding", "query", "key", "value"):
        values = torch.cat([_weight(model, name).detach().double().flatten()
                            for model in models])
        std, mean = values.std().item(), values.mean().item()
        low, high = INIT_BAND
        check.expect(low <= std <= high and abs(mean) < 0.05,
                     f"{name} starts with mean 0 and std 0.1",
                     expected=f"mean about 0, std between {low} and {high}",
                     got=f"mean {mean:.3f}, std {std:.3f}", likely=NORMAL_01)
    weights = torch.cat([model.readout.weight.detach().double().flatten() for model in models])
    bound = 1 / math.sqrt(d)
    std = weights.std().item()
    check.expect(bool(weights.abs().max() <= bound + 1e-6) and std > 0.75 * bound / math.sqrt(3),
                 "readout keeps PyTorch's default initialisation (uniform in ±1/sqrt(d))",
                 expected=f"weights spread evenly over ±{bound:.3f} (std about "
                          f"{bound / math.sqrt(3):.3f})",
                 got=f"largest |weight| {weights.abs().max().item():.3f}, std {std:.3f}",
                 likely="the readout was initialised too: only the first five members get "
                        "std 0.1; leave nn.Linear(d, 1) as PyTorch builds it")


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    member = getattr(model, name)
    return member if name == "position_embedding" else member.weight


def _randomise(model: nn.Module, generator: torch.Generator, scale: float = 1.0) -> None:
    """Weights larger than at initialisation, so attention is far from uniform."""
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))


def _bits(generator: torch.Generator, B: int, T: int) -> torch.Tensor:
    return torch.randint(0, 2, (B, T), generator=generator)


def check_SelfAttentionClassifier(model_class: Callable[..., nn.Module]) -> None:  # noqa: N802
    """Members, initialisation, shapes, attention rows that are distributions, agreement with
    PyTorch's nn.MultiheadAttention, other sizes, and gradients."""
    check = SelfCheck("SelfAttentionClassifier")
    T, d, B = 6, 8, 5
    check.clause("members")
    model = check.call_seeded(3, model_class, T, d)
    classifier_members(check, model, T, d)

    check.clause("init")
    classifier_init(check, [check.call_seeded(seed, model_class, 64) for seed in range(4)], 8)

    generator = torch.Generator().manual_seed(4)
    _randomise(model, generator)
    x = _bits(generator, B, T)
    check.clause("embed")
    with torch.no_grad():
        e = check.tensor(check.call(model.embed, x), "embed(x)")
        check.close(e, model.token_embedding(x) + model.position_embedding,
                    "embed(x) = token_embedding(x) + position_embedding", mistakes={
                        "embed leaves out the position embedding": model.token_embedding(x)})

        check.clause("attention")
        weights = check.tensor(check.call(model.attention_weights, x), "attention_weights(x)")
        check.shape(weights, (B, T, T), "attention_weights(x)")
        reference_weights, reference_probability = _reference_via_builtin(model, x)
        check.close(weights, reference_weights,
                    "attention weights agree with nn.MultiheadAttention on the same maps",
                    mistakes={
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

        check.clause("forward")
        probability = check.tensor(check.call(model, x), "model(x)")
        check.shape(probability, (B, 1), "model(x)")
        values = model.value(model.token_embedding(x) + model.position_embedding)
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
        one = check.tensor(check.call(model, x[:1]), "model(x) for a batch of one")
        check.shape(one, (1, 1), "model(x) for a batch of one",
                    likely="an axis was squeezed away: for B = 1 the result must still be (1, 1)"
                    if one.numel() == 1 else None)

        check.clause("arguments")
        small = check.call_seeded(5, model_class, 5, 4)
        classifier_members(check, small, 5, 4)
        _randomise(small, generator)
        x_small = _bits(generator, 4, 5)
        check.close(check.call(small.attention_weights, x_small),
                    _reference_via_builtin(small, x_small)[0],
                    "for T = 5, d = 4, attention weights agree with nn.MultiheadAttention",
                    atol=1e-4, mistakes={"the scale is fixed at 1/sqrt(8): use 1/sqrt(d)":
                                         _reference_via_builtin(small, x_small,
                                                                scale=1 / math.sqrt(8))[0]})
        check.close(check.call(small, x_small), _reference_via_builtin(small, x_small)[1],
                    "for T = 5, d = 4, the output agrees with nn.MultiheadAttention", atol=1e-4)

    check.clause("gradients")
    model.train()
    model.zero_grad()
    (check.call(model, x) * torch.randn(B, 1, generator=generator)).sum().backward()
    missing = [name for name, parameter in model.named_parameters()
               if parameter.grad is None or not bool(parameter.grad.abs().sum() > 0)]
    check.expect(not missing, "in training mode, every parameter gets a gradient",
                 expected="a nonzero gradient for every parameter",
                 got=f"none for {', '.join(missing[:4])}",
                 likely="part of the model is cut off from the gradient (.detach(), "
                        "torch.no_grad() or .data in a method): training would never change it")
    check.passed()
