"""Self-checks for tutorial 05 (sparse functions and the inductive bias of attention).

References come from PyTorch's own ``nn.MultiheadAttention`` loaded with the model's maps,
never from a copy of an answer. A likely mistake is named only when the result has its
signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from helpers.checks.calls import CallReport
from helpers.checks.framework import SelfCheck, describe

MIN_INDICES = ("the labels are positions, not bits: x.min(dim=...)[1] (or .indices) is where "
               "the minimum sits; take the values, x.min(dim=...)[0] or .values, or use "
               ".amin(dim=...) / .all(dim=...)")


HARD_CODED_S = ("the count of ones at idx is compared with 2, not with len(idx) (`== 2` "
                "hard-coded): for any other number of positions the label is wrong; use "
                "len(idx), or .all(dim=1, keepdim=True)")


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
        MIN_INDICES: relevant.min(dim=1, keepdim=True).indices.double(),
        **({HARD_CODED_S: (relevant.sum(dim=1, keepdim=True) == 2).double()} if s != 2 else {}),
    }


UNBALANCED_HALF = ("p = 0.5 was used as the default: then only 1/2 ** len(idx) of the labels are "
                   "1; the balanced default is p = 0.5 ** (1 / len(idx))")
IGNORES_LEN = ("the default p ignores len(idx) (it suits another number of positions): "
               "p = 0.5 ** (1 / len(idx))")
EXPLICIT_P_IGNORED = "an explicit p is ignored: only p=None means the balanced default"
RESEEDED = ("the same data for two different seeds: the function reseeds the generator "
            "(torch.manual_seed inside it, even with torch.initial_seed()) or draws from a "
            "generator of its own with a fixed seed; draw from the global generator and seed once, outside, with set_seed")
OTHER_GENERATOR = ("different data for the same seed: the bits come from a generator "
                   "torch.manual_seed does not reach (numpy, Python's random, a "
                   "torch.Generator of its own); draw them with torch.rand")
NO_COLUMN_AXIS = ("the labels have no column axis: keep it (keepdim=True) or reshape to "
                  "(m, 1)")
NEVER_USES_P = ("p is never used: the bits are fair coins whatever p is (torch.randint(0, 2, "
                "...) draws each bit with probability 1/2); compare torch.rand(m, T) with p")
FLIPPED_COMPARISON = ("the bits are 1 with probability 1 - p: torch.rand(...) > p is true "
                      "when the number lies above p; compare torch.rand(m, T) < p")
ZERO_IS_NONE = ("p=0 was replaced by the default: `p or ...` (or `if not p`) treats 0 like "
                "None; test `if p is None`")
CLOCK_SEED = ("different data for the same seed, and PyTorch's generator ends in a different "
              "state after each call: the function reseeds it from the clock (torch.seed() "
              "inside it); leave the seeding to the caller (set_seed) and just draw")
SAME_IN_A_ROW = ("two calls in a row returned the same data: the function puts PyTorch's "
                 "generator back where it found it (torch.random.fork_rng, or "
                 "get_rng_state/set_rng_state around the draw), so the next call draws the "
                 "same numbers; draw from the global generator and let it move on")
SORTED_IN_PLACE = ("idx was reordered in place (idx.sort(), idx[:] = sorted(...), "
                   "idx.append(idx.pop(...)) change the caller's list, and a tuple has no "
                   ".sort()): use sorted(idx), a new list, or no sorting at all")
SQUEEZED_SAMPLE = ("for m = 1 the sample axis was squeezed away (.squeeze() without a dim "
                   "removes every axis of size 1): keep the column with keepdim=True, or "
                   "reshape to (m, 1)")
ROWS_NOT_COLUMNS = ("the positions in idx were taken as rows (samples), X[idx], not as columns: "
                    "X[:, idx] picks the columns")
BITS_NOT_INTEGERS = ("the bits were left as booleans or floats: convert them with .long()")
BITS_NARROW = ("the bits are integers of another width (dtype=torch.int32, .int(), ...): "
               "int64 is PyTorch's default integer and what nn.Embedding expects, .long()")
LABELS_DOUBLE = ("the labels are float64: they must be float32, as the model's probabilities "
                 "are (BCELoss refuses to mix float64 with float32): .float()")
LABELS_NOT_FLOAT = ("the labels were left as integers or booleans (the result of a comparison "
                    "or .all()): BCELoss needs float32 targets, .float()")
VALUES_AND_INDICES = ("x.min(dim=...) and x.max(dim=...) return a pair (values, indices): take "
                      ".values, or use .amin(dim=...) / .all(dim=...)")


def dataset_pair(check: SelfCheck, result: object, m: int, T: int, *,
                 name_pairs: bool = False, s: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) from a result, checked to be a pair of tensors of shapes (m, T) and (m, 1).

    ``name_pairs``: say so when y is the (values, indices) pair of ``.min(dim=...)`` (only
    in the student's own process: that pair does not travel to the grader as such). ``s``:
    the number of positions in idx, whose rows ``X[idx]`` would give a y of s rows."""
    check.expect(isinstance(result, tuple | list) and len(result) == 2, "returns a pair (X, y)",
                 expected="a tuple (X, y)", got=describe(result))
    for value, name in zip(result, ("X", "y"), strict=True):
        check.expect(isinstance(value, torch.Tensor), f"{name} is a torch.Tensor",
                     expected="a torch.Tensor", got=describe(value), diagnoses={
                         VALUES_AND_INDICES: type(value).__module__ == "torch.return_types"}
                     if name_pairs else None)
    X, y = result
    check.shape(X, (m, T), f"X for m={m}, T={T}")
    check.expect(tuple(y.shape) == (m, 1), f"y has shape ({m}, 1)", expected=f"shape ({m}, 1)",
                 got=f"shape {tuple(y.shape)}", diagnoses={
                     SQUEEZED_SAMPLE: m == 1 and tuple(y.shape) in ((1,), ()),
                     NO_COLUMN_AXIS: tuple(y.shape) == (m,),
                     ROWS_NOT_COLUMNS: tuple(y.shape) in ((T, 1), (1, T), (T,)) or (
                         s is not None and s != m and tuple(y.shape) in ((s, 1), (1, s), (s,)))})
    return X, y


def dataset_dtypes(check: SelfCheck, X: torch.Tensor, y: torch.Tensor) -> None:
    """X int64 bits, y float32."""
    check.expect(X.dtype == torch.int64, "X holds int64 bits", expected="dtype torch.int64",
                 got=f"dtype {X.dtype}", diagnoses={
                     BITS_NOT_INTEGERS: X.dtype == torch.bool or X.is_floating_point(),
                     BITS_NARROW: X.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8)})
    check.expect(bool(((X == 0) | (X == 1)).all()), "X holds only 0s and 1s",
                 expected="bits", got=describe(X))
    check.expect(y.dtype == torch.float32, "y is a float32 tensor", expected="dtype torch.float32",
                 got=f"dtype {y.dtype}", diagnoses={
                     LABELS_DOUBLE: y.dtype == torch.float64,
                     LABELS_NOT_FLOAT: not y.is_floating_point()})


ROOT_OR_BRACKETS = ("p = 0.25 for two positions is 0.5 ** 2 or 0.5 / 2: either the root is "
                    "missing (0.5 ** len(idx)) or the exponent lost its brackets (0.5 ** 1 / "
                    "len(idx) is 0.5 / len(idx), as ** binds more tightly than /); the balanced "
                    "value is 0.5 ** (1 / len(idx))")


def suits_other_length(rate: float, s: int) -> bool:
    """Is ``rate`` the balanced bit probability of some other number of positions than s?"""
    return any(abs(rate - 0.5 ** (1 / k)) < 0.01 for k in range(2, 9) if k != s)


def explicit_p_rate(check: SelfCheck, sparse_and_dataset: Callable[..., tuple], p: float,
                    m: int, T: int, idx: list[int], seed: int) -> None:
    """The bits of one call with an explicit ``p`` are 1 with frequency ``p`` (p=0: never)."""
    check.clause("shape")
    X, _ = dataset_pair(check, check.call_seeded(seed, sparse_and_dataset, m, T, idx, p=p), m, T)
    check.clause("arguments")
    rate = X.double().mean().item()
    default = 0.5 ** (1 / len(idx))
    check.expect(abs(rate - p) < 0.02 if p > 0 else rate == 0, f"an explicit p={p} is used",
                 expected=f"bits 1 with frequency {p}" if p > 0 else "no bit 1 at all",
                 got=f"bit frequency {rate:.3f}", diagnoses={
                     ZERO_IS_NONE: p == 0 and abs(rate - default) < 0.02,
                     NEVER_USES_P: abs(p - 0.5) > 0.1 and abs(rate - 0.5) < 0.02,
                     FLIPPED_COMPARISON: abs(rate - (1 - p)) < 0.02,
                     EXPLICIT_P_IGNORED: p > 0 and abs(rate - default) < 0.02
                     and abs(rate - (1 - p)) >= 0.02})


def seeded_three(check: SelfCheck, fn: Callable[..., object], seeds: tuple[int, int],
                 *args: object) -> list[tuple[object, CallReport]]:
    """``fn(*args)`` after ``seeds[0]`` twice and after ``seeds[1]`` once: (value, what the
    call did) each, for the "randomness" clause."""
    return [check._checked_call(fn, args, {}, seed=seed)
            for seed in (seeds[0], seeds[0], seeds[1])]


def same_seed_diagnoses(one: CallReport, two: CallReport) -> dict[str, bool]:
    """Why one seed gave two different results: reseeded from the clock when the global
    generator ended in two different states, another generator otherwise."""
    clock = bool(one.rng_after) and bool(two.rng_after) and one.rng_after != two.rng_after
    return {CLOCK_SEED: clock, OTHER_GENERATOR: not clock}


def check_sparse_and_dataset(sparse_and_dataset: Callable[..., tuple]) -> None:
    """Shapes, dtypes, labels consistent with the AND at ``idx``, idx left alone, the bit
    probability (explicit and default) and where the randomness comes from."""
    check = SelfCheck("sparse_and_dataset")
    m, T, idx = 4000, 12, [2, 9]
    check.clause("shape")
    X, y = dataset_pair(check, check.call_seeded(5, sparse_and_dataset, m, T, idx), m, T,
                        name_pairs=True, s=len(idx))
    check.clause("dtype")
    dataset_dtypes(check, X, y)

    check.clause("values")
    wanted = X[:, idx].double().amin(dim=1, keepdim=True)
    check.close(y, wanted.to(y.dtype), "y is 1 exactly when every bit at idx = [2, 9] is 1",
                mistakes=label_mistakes(X, idx), atol=1e-6, rtol=0, dims=("sample", "label"))

    X3, y3 = dataset_pair(check, check.call_seeded(6, sparse_and_dataset, m, T, [1, 4, 7]),
                          m, T)
    check.close(y3, X3[:, [1, 4, 7]].double().amin(dim=1, keepdim=True).to(y3.dtype),
                "with idx = [1, 4, 7], three positions, y is the AND of those bits",
                mistakes=label_mistakes(X3, [1, 4, 7]), atol=1e-6, rtol=0,
                dims=("sample", "label"))

    check.clause("shape")
    dataset_pair(check, check.call_seeded(10, sparse_and_dataset, 1, T, idx), 1, T)

    check.clause("unchanged")
    given = [9, 2, 5]
    check.call_seeded(8, sparse_and_dataset, 50, T, given)
    check.expect(given == [9, 2, 5], "idx is left as it was given",
                 expected="idx = [9, 2, 5] after the call", got=f"idx = {given}",
                 diagnoses={SORTED_IN_PLACE: sorted(given) == [2, 5, 9]})
    Xt, yt = dataset_pair(check, check.call_seeded(6, sparse_and_dataset, m, T, (1, 4, 7)),
                          m, T)
    check.close(yt, Xt[:, [1, 4, 7]].double().amin(dim=1, keepdim=True).to(yt.dtype),
                "with idx = (1, 4, 7), a tuple, y is the AND of those bits", atol=1e-6, rtol=0,
                dims=("sample", "label"))

    for p, seed in ((0.2, 7), (0.9, 8), (0.0, 9)):
        explicit_p_rate(check, sparse_and_dataset, p, m, T, idx, seed)
    balance = (y > 0.5).double().mean().item()
    bit_rate = X.double().mean().item()
    check.expect(abs(bit_rate - 0.5 ** 0.5) < 0.02 and abs(balance - 0.5) < 0.05,
                 "the default p = 0.5 ** (1 / len(idx)) balances the labels",
                 expected=f"bits 1 with frequency {0.5 ** 0.5:.3f}, about half of the labels 1",
                 got=f"bit frequency {bit_rate:.3f}, fraction of positive labels {balance:.3f}",
                 diagnoses={UNBALANCED_HALF: abs(bit_rate - 0.5) < 0.02,
                            IGNORES_LEN: suits_other_length(bit_rate, 2),
                            ROOT_OR_BRACKETS: abs(bit_rate - 0.25) < 0.02})
    rate = X3.double().mean().item()
    check.expect(abs(rate - 0.5 ** (1 / 3)) < 0.02, "for idx = [1, 4, 7] (three positions), "
                 "the default p is 0.5 ** (1/3)", expected=f"bit frequency {0.5 ** (1 / 3):.3f}",
                 got=f"bit frequency {rate:.3f}",
                 diagnoses={IGNORES_LEN: suits_other_length(rate, 3)})

    check.clause("randomness")
    first, again, other = seeded_three(check, sparse_and_dataset, (11, 12), 50, T, idx)
    same = lambda a, b: torch.equal(torch.as_tensor(a[0]), torch.as_tensor(b[0]))  # noqa: E731
    check.expect(same(first[0], again[0]), "the same seed gives the same data",
                 expected="torch.manual_seed(11) twice: the same X", got="different X",
                 diagnoses=same_seed_diagnoses(first[1], again[1]))
    check.expect(not same(first[0], other[0]), "two seeds give different data",
                 expected="torch.manual_seed(11) and (12): different X", got="the same X",
                 likely=RESEEDED)

    def sparse_and_dataset_twice() -> tuple[tuple, tuple]:
        return sparse_and_dataset(50, T, idx), sparse_and_dataset(50, T, idx)

    one, two = check.call_seeded(13, sparse_and_dataset_twice)
    check.expect(not same(one, two), "two calls in a row give different data",
                 expected="after torch.manual_seed(13), two calls: two different X",
                 got="the same X twice", likely=SAME_IN_A_ROW)
    # A reseed after the bits are drawn passes the checks above.
    check.no_reseed(sparse_and_dataset, 50, T, idx, what="sparse_and_dataset(50, T, idx)")
    check.passed()
    print(f"   label balance with the default p: {balance:.2f} positive "
          f"(bit probability {bit_rate:.3f}; 0.5 ** (1/2) = {0.5 ** 0.5:.3f})")


# ---- SelfAttentionClassifier -------------------------------------------------------------------

def _reference_via_builtin(model: nn.Module, x: torch.Tensor, *, positions: bool = True,
                           scale: float | None = None, swap: bool = False,
                           causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights and output from nn.MultiheadAttention loaded with the model's maps
    (``positions``, ``scale``, ``swap`` and ``causal`` build in a typical mistake)."""
    d = model.query.weight.shape[0]
    mha = nn.MultiheadAttention(d, num_heads=1, bias=False, batch_first=True)
    query, key = (model.key, model.query) if swap else (model.query, model.key)
    factor = 1.0 if scale is None else scale * math.sqrt(d)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([query.weight * factor, key.weight,
                                            model.value.weight]))
        mha.out_proj.weight.copy_(torch.eye(d))
        e = model.token_embedding(x) + (model.position_embedding if positions else 0.0)
        T = x.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None
        out, weights = mha(e, e, e, need_weights=True, average_attn_weights=True,
                           attn_mask=mask)
        probability = torch.sigmoid(model.readout(out[:, -1, :]))
    return weights, probability


MEMBERS = (("token_embedding", nn.Embedding), ("query", nn.Linear), ("key", nn.Linear),
           ("value", nn.Linear), ("readout", nn.Linear))
POSITIONS_EMBEDDING = ("position_embedding is an nn.Embedding: the table asks for the (T, d) "
                       "tensor itself, nn.Parameter(torch.empty(T, d)), added to every "
                       "sample's token embeddings")
POSITIONS_NOT_PARAMETER = ("position_embedding is a plain tensor, so training never changes "
                           "it: wrap it, nn.Parameter(...)")


PADDING_IDX = ("padding_idx=0 keeps the vector of bit 0 at zero and never trains it: bit 0 is "
               "a token like bit 1 here, nn.Embedding(2, d)")
SHARED_MAPS = ("query, key and value are one and the same nn.Linear (self.query = self.key = "
               "self.value = nn.Linear(...) builds ONE layer and gives it three names): build "
               "three layers, one per line")


def shared_maps(names: Sequence[str]) -> str:
    """The diagnosis when only some of query, key and value are the same layer."""
    return (f"{' and '.join(names)} are one and the same nn.Linear (self.{names[1]} = "
            f"self.{names[0]} gives ONE layer two names): build a layer of its own for each")
PARAMETER_DTYPE = ("a parameter was made in __init__ with another dtype (dtype=torch.float64, "
                   ".double()): every parameter is float32, like nn.Linear's and "
                   "nn.Embedding's, so leave the dtype out")


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
                 likely=POSITIONS_NOT_PARAMETER if isinstance(position, torch.Tensor)
                 else POSITIONS_EMBEDDING if isinstance(position, nn.Embedding) else None)
    check.shape(position, (T, d), "position_embedding")
    for name, shape in (("query", (d, d)), ("key", (d, d)), ("value", (d, d)),
                        ("readout", (1, d))):
        check.shape(getattr(model, name).weight, shape, f"{name}.weight")
    check.expect(all(getattr(model, n).bias is None for n in ("query", "key", "value")),
                 "query, key and value have no bias", expected="bias=False",
                 got="a bias in one of them")
    check.expect(model.readout.bias is not None, "readout has a bias", expected="a bias",
                 got="none")
    padding = getattr(model.token_embedding, "padding_idx", None)
    check.expect(padding is None, "token_embedding is nn.Embedding(2, d), with no padding_idx",
                 expected="padding_idx None", got=f"padding_idx {padding}", likely=PADDING_IDX)
    wanted = 2 * d + T * d + 3 * d * d + d + 1
    count = sum(p.numel() for p in model.parameters())
    same = [(a, b) for a, b in (("query", "key"), ("query", "value"), ("key", "value"))
            if getattr(model, a).weight is getattr(model, b).weight]
    shared = [f"{a} and {b}" for a, b in same]
    check.expect(count == wanted and not shared, f"the model has {wanted} parameters for "
                 f"T = {T}, d = {d} (2d + Td + 3d² + d + 1)", expected=f"{wanted} parameters",
                 got=f"{count} parameters" + (f"; {', '.join(shared)} are the same layer"
                                              if shared else ""),
                 likely=shared_maps(same[0]) if len(same) == 1
                 else SHARED_MAPS if shared or count == wanted - 2 * d * d else None)
    wide = [name for name, p in model.named_parameters() if p.dtype != torch.float32]
    check.expect(not wide, "every parameter is float32, PyTorch's default",
                 expected="float32 parameters", got=", ".join(
                     f"{name} is {dict(model.named_parameters())[name].dtype}" for name in wide),
                 likely=PARAMETER_DTYPE)


MODEL_OTHER_GENERATOR = ("the same seed built two different models: the initial weights come "
                         "from a generator torch.manual_seed does not reach (numpy, a "
                         "torch.Generator of its own); draw them with nn.init.normal_")
MODEL_RESEEDED = ("two seeds built the same model: __init__ reseeds PyTorch's generator "
                  "(torch.manual_seed inside it, even with torch.initial_seed()) or draws "
                  "from a torch.Generator it seeds itself; leave the seeding to the caller (set_seed)")
MEMBER_OWN_GENERATOR = ("this member is the same for two seeds while the rest of the "
                        "model changes: it is drawn from a torch.Generator of its own seeded inside "
                        "(nn.init.normal_(..., generator=torch.Generator().manual_seed(...))) "
                        "or set to fixed values; draw it from the global generator, "
                        "nn.init.normal_(..., std=0.1) without generator=")
RESEEDS_AFTER = ("building a model reseeds PyTorch's generator: whatever is drawn after it "
                 "(data, the next model) repeats whatever the seed; remove torch.manual_seed "
                 "from __init__")
BUILDS_IN_A_ROW = ("two builds in a row built the same model: __init__ puts PyTorch's "
                   "generator back where it found it (torch.random.fork_rng, or "
                   "get_rng_state/set_rng_state around the draws), so the next build draws "
                   "the same weights; draw from the global generator and let it move on")


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    """Do two models hold the same parameters, name by name?"""
    first, second = dict(a.named_parameters()), dict(b.named_parameters())
    return first.keys() == second.keys() and all(
        first[k].shape == second[k].shape and torch.equal(first[k].detach(), second[k].detach())
        for k in first)


def classifier_seeds(check: SelfCheck, model_class: Callable[..., nn.Module], T: int,
                     seeds: tuple[int, int]) -> None:
    """The same seed builds the same model, two seeds two models (the "randomness" clause)."""
    first = check.call_seeded(seeds[0], model_class, T)
    again = check.call_seeded(seeds[0], model_class, T)
    other = check.call_seeded(seeds[1], model_class, T)
    check.expect(same_parameters(first, again), "the same seed builds the same model",
                 expected=f"two builds after torch.manual_seed({seeds[0]}): equal parameters",
                 got="different parameters", likely=MODEL_OTHER_GENERATOR)
    check.expect(not same_parameters(first, other), "two seeds build two different models",
                 expected="builds after two different seeds: different parameters",
                 got="the same parameters", likely=MODEL_RESEEDED)
    # Each member on its own: a member drawn from a generator of its own stays the same
    # while the others change. (A constant member is left to the "init" clause.)
    for name in INITIALISED:
        one, two = (_weight(model, name).detach() for model in (first, other))
        if one.shape != two.shape or float(one.double().std()) == 0:
            continue
        check.expect(not torch.equal(one, two), f"two seeds draw two different {name}",
                     expected=f"{name} after two different seeds: different values",
                     got=f"the same {name}", likely=MEMBER_OWN_GENERATOR)


INITIALISED = ("token_embedding", "position_embedding", "query", "key", "value")
INIT_BAND = (0.07, 0.14)  # a std of 0.1, measured on a hundred draws or more (one member)
MEAN_NOT_STD = ("0.1 was passed as the mean: the second positional argument of "
                "nn.init.normal_ is the mean, so nn.init.normal_(w, 0.1) keeps std 1; write "
                "nn.init.normal_(w, std=0.1)")
STD_ONE = ("std about 1 instead of 0.1: nn.init.normal_(w) without std=, torch.randn and "
           "nn.Embedding's own initialisation all draw with std 1; pass std=0.1")
ALL_EQUAL = ("every value is the same (torch.zeros, torch.ones, torch.empty filled with a "
             "constant?): draw them with nn.init.normal_(..., std=0.1)")
LINEAR_DEFAULT = ("nn.Linear's own initialisation was kept (uniform in ±1/sqrt(d)): draw "
                  "these weights with nn.init.normal_(..., std=0.1)")
UNIFORM_SMALL = ("drawn uniformly (every value within ±0.1): draw from a normal, "
                 "nn.init.normal_(..., std=0.1)")
OTHER_SCHEME = ("drawn with a scheme of its own (Xavier/Glorot: std sqrt(1/d), 0.35 for d = 8; "
                "Kaiming: std sqrt(2/d), 0.5 for d = 8): the text asks for "
                "nn.init.normal_(..., std=0.1)")
READOUT_TOO = ("the readout was initialised too: it looks drawn with std 0.1; only "
               "token_embedding, position_embedding, query, key and value get std 0.1, leave "
               "nn.Linear(d, 1) as PyTorch builds it")
STD_ONE_OVER_D = ("drawn with std 1/d (0.125 for d = 8, but 0.031 for d = 32): the std is 0.1 "
                  "for every d, nn.init.normal_(..., std=0.1)")
BIAS_CONSTANT = ("the readout's bias was set to one value (nn.init.zeros_, .fill_): the "
                 "readout, bias included, keeps the initialisation nn.Linear(d, 1) gives it")
STD_ONE_OVER_SQRT_D = ("drawn with std 1/sqrt(d) (0.35 for d = 8, 0.18 for d = 32): the std "
                       "is 0.1 for every d, nn.init.normal_(..., std=0.1)")
MEAN_SHIFTED = ("the values are not centred on 0 (nn.init.normal_(..., mean=...) or a constant "
                "added): leave the mean at 0, nn.init.normal_(..., std=0.1)")
UNIFORM_WIDE = ("uniform, not normal: every value lies within about 1.7 std of 0 and none in "
                "a normal's tails (a normal has about 4.6 % of its values beyond 2 std); draw "
                "from a normal, nn.init.normal_(..., std=0.1)")
POOLED_FOR_MEAN = 2000  # values of std-1 members needed to tell a mean of 0.1 from 0


D_IGNORED = ("d was ignored: the layers were built with d = 8 whatever d was passed; use the "
             "argument d for every size (nn.Embedding(2, d), torch.empty(T, d), "
             "nn.Linear(d, d, ...), nn.Linear(d, 1)) and in the scale 1/sqrt(d)")


def wrong_std(std: float) -> str:
    """The diagnosis of a normal drawn with another std."""
    return (f"drawn from a normal with std {std:.3f} instead of 0.1: pass std=0.1 to "
            f"nn.init.normal_, for every d")


def init_distribution(check: SelfCheck, values: torch.Tensor) -> None:
    """The values of the five members, pooled over many builds, look drawn from N(0, 0.1²):
    a normal's tails (about 4.6 % beyond 2 std, none for a uniform), mean 0 and std 0.1
    within a few percent."""
    mean, std = values.mean().item(), values.std().item()
    centred = values - mean
    tails = (centred.abs() > 2 * std).double().mean().item()
    largest = centred.abs().max().item()
    check.expect(0.03 <= tails <= 0.065, "the five members' values, pooled, are spread like a "
                 "normal's", expected="about 4.6 % of the values beyond 2 std (a normal's tails)",
                 got=f"{100 * tails:.1f} % beyond 2 std; largest {largest:.3f}, std {std:.3f}",
                 diagnoses={UNIFORM_WIDE: largest <= 1.8 * std})
    check.expect(abs(mean) < 0.01, "the five members' values, pooled, have mean 0",
                 expected=f"mean within ±0.01 of 0 ({values.numel()} values)",
                 got=f"mean {mean:.3f}", likely=MEAN_SHIFTED)
    check.expect(0.09 <= std <= 0.11, "the five members' values, pooled, have std 0.1",
                 expected=f"std within 10 % of 0.1 ({values.numel()} values)",
                 got=f"std {std:.3f}", likely=wrong_std(std))


def classifier_init(check: SelfCheck, models: list[nn.Module], d: int, *,
                    pooled_test: bool = False) -> None:
    """token_embedding, position_embedding, query, key and value drawn with mean 0 and std
    0.1 (pooled over ``models``), the readout left as PyTorch made it (uniform in
    ±1/sqrt(d)). A wrong start is named by its signature, measured on all members drawn with
    std about 1 together (their mean tells normal_(w, 0.1) from normal_(w)). With
    ``pooled_test`` (builds with thousands of values), the five members' values together
    must also look drawn from N(0, 0.1²) (:func:`init_distribution`)."""
    shapes = {tuple(_weight(model, name).shape) for model in models
              for name in ("query", "key", "value")}
    check.expect(shapes == {(d, d)}, f"built with d = {d}, query, key and value are {d} x {d}",
                 expected=f"weights of shape ({d}, {d})",
                 got=", ".join(f"shape {shape}" for shape in sorted(shapes)),
                 diagnoses={D_IGNORED: d != 8 and shapes == {(8, 8)}})
    values = {name: torch.cat([_weight(model, name).detach().double().flatten()
                               for model in models]) for name in INITIALISED}
    wide = [v for v in values.values() if 0.8 < v.std().item() < 1.25]
    pooled = torch.cat(wide) if wide else torch.zeros(1)
    pooled_mean = pooled.mean().item()
    bound = 1 / math.sqrt(d)
    low, high = INIT_BAND
    for name, these in values.items():
        std, mean = these.std().item(), these.mean().item()
        largest = these.abs().max().item()
        one = 0.8 < std < 1.25
        check.expect(low <= std <= high and abs(mean) < 0.08,
                     f"{name} starts with mean 0 and std 0.1",
                     expected=f"mean about 0, std between {low} and {high}",
                     got=f"mean {mean:.3f}, std {std:.3f}" + (
                         f" (every member drawn with std about 1, together: mean "
                         f"{pooled_mean:.3f} over {pooled.numel()} values)" if one else ""),
                     diagnoses={
                         ALL_EQUAL: std < 1e-6,
                         MEAN_NOT_STD: one and pooled.numel() >= POOLED_FOR_MEAN
                         and 0.05 <= pooled_mean <= 0.15,
                         STD_ONE: one and (abs(pooled_mean) < 0.05
                                           or pooled.numel() < POOLED_FOR_MEAN),
                         LINEAR_DEFAULT: name in ("query", "key", "value")
                         and largest <= bound + 1e-6 and 0.8 < std * math.sqrt(3) / bound < 1.2,
                         UNIFORM_SMALL: largest <= 0.1 + 1e-6 and 0.045 < std < 0.07,
                         OTHER_SCHEME: name in ("query", "key", "value") and any(
                             abs(std / math.sqrt(gain / d) - 1) < 0.15 for gain in (1, 2)),
                         # At d = 8, 1/d = 0.125 cannot be told from a std of 0.13.
                         STD_ONE_OVER_D: d >= 16 and abs(std * d - 1) < 0.15,
                         STD_ONE_OVER_SQRT_D: abs(std * math.sqrt(d) - 1) < 0.1,
                         MEAN_SHIFTED: abs(mean) >= 0.08 and low <= std <= high,
                         wrong_std(std): abs(mean) < 0.08 and largest > 2 * std > 0,
                     })
    if pooled_test:
        init_distribution(check, torch.cat(list(values.values())))
    weights = torch.cat([model.readout.weight.detach().double().flatten() for model in models])
    std = weights.std().item()
    check.expect(bool(weights.abs().max() <= bound + 1e-6) and std > 0.75 * bound / math.sqrt(3),
                 "readout keeps PyTorch's default initialisation (uniform in ±1/sqrt(d))",
                 expected=f"weights spread evenly over ±{bound:.3f} (std about "
                          f"{bound / math.sqrt(3):.3f})",
                 got=f"largest |weight| {weights.abs().max().item():.3f}, std {std:.3f}",
                 diagnoses={READOUT_TOO: low <= std <= high
                            and abs(weights.mean().item()) < 0.05})
    biases = torch.cat([model.readout.bias.detach().double().flatten() for model in models])
    spread = biases.std().item() if biases.numel() > 1 else 0.0
    check.expect(bool(biases.abs().max() <= bound + 1e-6) and spread > 0.2 * bound / math.sqrt(3),
                 "readout's bias keeps PyTorch's default too (uniform in ±1/sqrt(d))",
                 expected=f"{biases.numel()} biases (one per model) spread over ±{bound:.3f}",
                 got=f"largest |bias| {biases.abs().max().item():.3f}, std {spread:.3f}",
                 diagnoses={BIAS_CONSTANT: spread < 1e-6})


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


SOFTMAX_OVER_QUERIES = "the softmax runs over the queries (dim=-2), not over the keys (dim=-1)"
SOFTMAX_OVER_BATCH = ("the softmax runs over the batch (dim=0): F.softmax(scores) without dim= "
                      "picks dim 0 for a 3-D tensor; pass dim=-1")
SCALED_AFTER = ("the weights were divided by sqrt(d) after the softmax: divide the scores "
                "before it, so that each row still sums to 1")
BROADCAST = ("a (B, T) @ (B, T, d) product broadcasts to (B, B, d): every sample's weights "
             "met every sample's values; keep the query axis (A[:, -1:, :] is (B, 1, T)) or "
             "multiply and sum over the positions")
COLUMN = ("the last column of A was used (how much every position attends to the last one), "
          "not the last row: h = Σ_t A[T-1, t] V_t, A[:, -1, :]")
CAUSAL = ("a causal mask hides the later positions from each query: this classifier sees the "
          "whole context at once, every query attends to all T positions")
RELU = ("a ReLU (or another nonlinearity) sits between h and the readout: forward is "
        "sigmoid(readout(h)), nothing in between")
VALUES_WITHOUT_POSITIONS = ("the values were computed from the token embeddings alone: V = "
                            "value(e), with e = embed(x) including the positions")


DROPOUT = ("dropout on the attention weights: the checks run the model in training mode (a "
           "module starts in it), where dropout zeroes some weights and scales the others by "
           "1/(1 - p); the exercise has no dropout")
OVERFLOW = ("exp of a large score overflowed (torch.exp is inf above about 88 in float32, and "
            "inf / inf is nan): use torch.softmax(scores, dim=-1), which subtracts each row's "
            "largest score first")


DROPOUT_EMBED = ("dropout on the embeddings: in training mode (a module starts in it) dropout "
                 "zeroes some entries and scales the others by 1/(1 - p); the model has no "
                 "dropout")
DROPOUT_FORWARD = ("forward agrees with the reference in eval mode but not in training mode (a "
                   "module starts in it): dropout (or something else that depends on "
                   "self.training) acts in forward, on A, h or the values; the model has no "
                   "dropout")
INPUT_IN_PLACE = ("the input x was changed in place inside the model (x.clamp_(...), "
                  "x[...] = ..., x += ...): the embedding saved x for the backward pass, and "
                  "autograd refuses a changed one; leave x alone, or compute on a copy "
                  "(x.clamp(...) without the underscore)")


def input_in_place_cause(x: torch.Tensor) -> tuple[str, None, str]:
    """The cause of an autograd error naming the int64 input of ``x``'s shape (the bits
    the model was called with) as changed in place."""
    shape = ", ".join(str(n) for n in x.shape)
    return (rf"LongTensor \[{shape}\]\] is at version", None, INPUT_IN_PLACE)


DROPOUT_ALWAYS = ("forward gives other numbers for the same input from one call to the next, "
                  "in eval mode too: dropout that ignores the module's mode acts in it "
                  "(F.scaled_dot_product_attention(..., dropout_p=...) or F.dropout(...) "
                  "without training=self.training); the model has no dropout")


def varies_with_seed(check: SelfCheck, model: nn.Module, x: torch.Tensor) -> bool:
    """Does ``model(x)`` in eval mode give other numbers under two seeds (randomness that
    ignores the module's mode)? The model is put back in training mode."""
    model.eval()
    try:
        one, two = (torch.as_tensor(check.call_seeded(seed, model, x)).detach()
                    for seed in (11, 12))
        return one.shape == two.shape and not torch.equal(one, two)
    except Exception:  # noqa: BLE001 - a crash is no signature
        return False
    finally:
        model.train()


def agrees_in_eval(model: nn.Module, x: torch.Tensor, reference: torch.Tensor) -> bool:
    """Does ``model(x)`` agree with ``reference`` once the model is in eval mode (dropout
    off)? The model is put back in training mode."""
    model.eval()
    try:
        out = torch.as_tensor(model(x)).detach()
        return out.shape == reference.shape and bool(torch.allclose(
            out.double(), reference.double(), atol=1e-4))
    except Exception:  # noqa: BLE001 - a crash is no signature
        return False
    finally:
        model.train()


def dropout_signature(weights: torch.Tensor, reference: torch.Tensor) -> bool:
    """Do ``weights`` look like ``reference`` after dropout (some entries zeroed, the others
    scaled by one factor above 1)?"""
    visible = reference > 1e-3
    dropped = (weights == 0) & visible
    kept = (weights != 0) & visible
    if not bool(dropped.any()) or not bool(kept.any()):
        return False
    ratio = (weights[kept] / reference[kept]).double()
    return bool(ratio.min() > 1.0) and bool(ratio.max() - ratio.min() < 0.01 * ratio.mean())


def large_scores(check: SelfCheck, model: nn.Module, x: torch.Tensor,
                 generator: torch.Generator) -> None:
    """Attention weights when the scores reach the hundreds (a softmax written as
    exp / sum overflows there). ``model`` gets new, larger weights."""
    _randomise(model, generator, scale=2.5)
    reference = _reference_via_builtin(model, x)[0]
    e = model.token_embedding(x) + model.position_embedding
    top = (model.query(e) @ model.key(e).transpose(-2, -1)).abs().max().item() / math.sqrt(
        model.query.weight.shape[0])
    weights = check.tensor(check.call(model.attention_weights, x), "attention_weights(x)")
    what = f"with scores up to {top:.0f}, attention weights agree with nn.MultiheadAttention"
    check.finite(weights, what, likely=OVERFLOW)
    check.close(weights, reference, what, atol=1e-3, dims=("sample", "query", "key"))


GRADIENT_NAMES = ("token_embedding.weight", "position_embedding", "query.weight", "key.weight",
                  "value.weight", "readout.weight", "readout.bias")
CUT_OFF = ("part of the model is cut off from the gradient (.detach(), torch.no_grad() or .data "
           "in a method): training would never change it")
BRANCH_DETACHED = {
    "values": "the embeddings used for the values are detached (self.embed(x).detach() or "
              ".data in forward): the embeddings then learn only through the queries and "
              "keys; nothing may be detached",
    "attention": "the embeddings used for the queries and keys are detached (.detach() or "
                 "torch.no_grad() in attention_weights): the embeddings then learn only "
                 "through the values, never where to look; nothing may be detached",
}


def reference_gradients(model: nn.Module, x: torch.Tensor, upstream: torch.Tensor, *,
                        detach: str | None = None) -> dict[str, torch.Tensor]:
    """Gradients of ``(model(x) * upstream).sum()`` for every parameter of the table,
    computed in float64 from the model's own values (``detach`` cuts one branch, as a typical
    mistake does: "values", "attention")."""
    leaves = {name: getattr(model, name.split(".")[0]) if "." not in name else
              getattr(getattr(model, name.split(".")[0]), name.split(".")[1])
              for name in GRADIENT_NAMES}
    p = {name: t.detach().double().clone().requires_grad_() for name, t in leaves.items()}
    cut = lambda t, branch: t.detach() if detach == branch else t  # noqa: E731
    e = p["token_embedding.weight"][x] + p["position_embedding"]
    e_scores = cut(e, "attention")
    scores = (e_scores @ p["query.weight"].T) @ (e_scores @ p["key.weight"].T).transpose(-2, -1)
    weights = torch.softmax(scores / math.sqrt(e.shape[-1]), dim=-1)
    h = weights[:, -1].unsqueeze(1) @ (cut(e, "values") @ p["value.weight"].T)
    out = torch.sigmoid(h[:, 0] @ p["readout.weight"].T + p["readout.bias"])
    (out * upstream.double()).sum().backward()
    return {name: t.grad if t.grad is not None else torch.zeros_like(t)
            for name, t in p.items()}


def classifier_gradients(check: SelfCheck, model: nn.Module, x: torch.Tensor,
                         generator: torch.Generator) -> None:
    """In training mode, every parameter's gradient equals the reference's (weights of a
    moderate size: neither the sigmoid nor the softmax saturates)."""
    _randomise(model, generator, scale=0.4)
    model.train()
    model.zero_grad()
    upstream = torch.randn(x.shape[0], 1, generator=generator)
    check.error_causes.append(input_in_place_cause(x))
    check.backward(check.call(model, x) * upstream, "model(x)")
    parameters = dict(model.named_parameters())
    missing = [name for name in GRADIENT_NAMES if parameters.get(name) is None
               or parameters[name].grad is None or not bool(parameters[name].grad.abs().sum() > 0)]
    check.expect(not missing, "in training mode, every parameter gets a gradient",
                 expected="a nonzero gradient for every parameter",
                 got=f"none for {', '.join(missing[:4])}", likely=CUT_OFF)
    wanted = reference_gradients(model, x, upstream)
    cut = {branch: reference_gradients(model, x, upstream, detach=branch)
           for branch in BRANCH_DETACHED}
    for name in GRADIENT_NAMES:
        grad = parameters[name].grad
        scale = wanted[name].abs().max().item()
        check.close(grad, wanted[name].to(grad.dtype),
                    f"in training mode, the gradient of {name} is the reference's",
                    atol=1e-4 * max(scale, 1e-3), rtol=1e-3, mistakes={
                        BRANCH_DETACHED[branch]: gradients[name].to(grad.dtype)
                        for branch, gradients in cut.items()
                        if not torch.allclose(gradients[name], wanted[name])},
                    diagnoses={PADDING_IDX: name == "token_embedding.weight"
                               and not bool(grad[0].any()) and bool(wanted[name][0].any())})


def check_SelfAttentionClassifier(model_class: Callable[..., nn.Module]) -> None:  # noqa: N802
    """Members, seeding, initialisation, shapes, attention rows that are distributions,
    agreement with PyTorch's nn.MultiheadAttention, other sizes, and gradients."""
    check = SelfCheck("SelfAttentionClassifier")
    T, d, B = 6, 8, 5
    check.clause("members")
    model = check.call_seeded(3, model_class, T, d)
    classifier_members(check, model, T, d)

    check.clause("randomness")
    classifier_seeds(check, model_class, T, (21, 22))

    def build_then_draw() -> torch.Tensor:
        model_class(T, d)
        return torch.rand(8)

    after = [check.call_seeded(seed, build_then_draw) for seed in (21, 22)]
    check.expect(not torch.equal(*after), "what is drawn after a build still follows the seed",
                 expected="torch.rand(8) after a build: different numbers for seeds 21 and 22",
                 got="the same numbers", likely=RESEEDS_AFTER)

    def build_twice() -> tuple[nn.Module, nn.Module]:
        return model_class(T, d), model_class(T, d)

    one, two = check.call_seeded(23, build_twice)
    check.expect(not same_parameters(one, two), "two builds in a row build two different models",
                 expected="after torch.manual_seed(23), two builds: different parameters",
                 got="the same parameters twice", likely=BUILDS_IN_A_ROW)
    check.no_reseed(model_class, T, d, what=f"SelfAttentionClassifier({T}, {d})")

    check.clause("init")
    classifier_init(check, [check.call_seeded(seed, model_class, 64) for seed in range(8)], 8)
    classifier_init(check, [check.call_seeded(seed, model_class, 8, 32) for seed in range(8)],
                    32, pooled_test=True)

    generator = torch.Generator().manual_seed(4)
    _randomise(model, generator)
    x = _bits(generator, B, T)
    check.clause("embed")
    with torch.no_grad():
        e = check.tensor(check.call(model.embed, x), "embed(x)")
        wanted = model.token_embedding(x) + model.position_embedding
        check.close(e, wanted, "embed(x) = token_embedding(x) + position_embedding", mistakes={
                        "embed leaves out the position embedding": model.token_embedding(x)},
                    diagnoses={DROPOUT_EMBED: lambda: dropout_signature(e.abs(),
                                                                        wanted.abs())})

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
                        "the scores were divided by sqrt(T), the context length, instead of "
                        "sqrt(d)": _reference_via_builtin(model, x, scale=1 / math.sqrt(T))[0],
                        "the scores were divided by d instead of sqrt(d)":
                            _reference_via_builtin(model, x, scale=1 / d)[0],
                        "the scores were multiplied by sqrt(d) instead of divided":
                            _reference_via_builtin(model, x, scale=math.sqrt(d))[0],
                        "queries and keys are swapped (softmax of K Qᵀ instead of Q Kᵀ)":
                            _reference_via_builtin(model, x, swap=True)[0],
                        SCALED_AFTER:
                            _reference_via_builtin(model, x, scale=1.0)[0] / math.sqrt(d),
                        CAUSAL: _reference_via_builtin(model, x, causal=True)[0],
                    }, diagnoses={
                        SOFTMAX_OVER_QUERIES: lambda: bool(torch.allclose(
                            weights.sum(-2), torch.ones(B, T), atol=1e-5)),
                        SOFTMAX_OVER_BATCH: lambda: bool(torch.allclose(
                            weights.sum(0), torch.ones(T, T), atol=1e-5)),
                        DROPOUT: lambda: dropout_signature(weights, reference_weights)},
                    atol=1e-4, dims=("sample", "query", "key"))

        check.clause("forward")
        probability = check.tensor(check.call(model, x), "model(x)")
        check.shape(probability, (B, 1), "model(x)",
                    likely=BROADCAST if tuple(probability.shape) == (B, B, 1) else None)
        e = model.token_embedding(x) + model.position_embedding
        values = model.value(e)
        readout = lambda h: torch.sigmoid(model.readout(h))  # noqa: E731
        logit = torch.logit(reference_probability.double().clamp(1e-12, 1 - 1e-12)).float()
        check.close(probability, reference_probability,
                    "output agrees with nn.MultiheadAttention read out at the last position",
                    atol=1e-4, mistakes={
                        "forward reads out at the first position instead of the last":
                            readout(reference_weights[:, 0].unsqueeze(1) @ values).reshape(B, 1),
                        "forward averages the outputs of all positions instead of reading the "
                        "last one": readout((reference_weights @ values).mean(1)),
                        "no sigmoid at the end: forward must return a probability": logit,
                        COLUMN: readout(reference_weights[:, :, -1].unsqueeze(1)
                                        @ values).reshape(B, 1),
                        VALUES_WITHOUT_POSITIONS: readout(
                            reference_weights[:, -1].unsqueeze(1)
                            @ model.value(model.token_embedding(x))).reshape(B, 1),
                        RELU: readout(torch.relu(reference_weights[:, -1].unsqueeze(1)
                                                 @ values)).reshape(B, 1),
                    }, diagnoses={DROPOUT_FORWARD: lambda: agrees_in_eval(
                        model, x, reference_probability),
                        DROPOUT_ALWAYS: lambda: varies_with_seed(check, model, x)})
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

        check.clause("attention")
        large_scores(check, model, x, generator)

    check.clause("device")
    on_meta = check.call_seeded(7, model_class, T, d).to("meta")
    check.device_follows(on_meta, x, what="model(x)")

    check.clause("randomness")
    check.no_reseed(model, x, what="model(x)")

    check.clause("gradients")
    classifier_gradients(check, model, x, generator)
    check.passed()
