"""Self-checks for tutorial 01 (gain multiplication).

A likely mistake is named only when the result has its signature; otherwise the message
says what differs and where.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from helpers.checks.framework import SelfCheck, describe


def _softmax_mistakes(x: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
    """What the usual wrong softmaxes return for ``x`` along ``dim``."""
    x = x.double()
    mistakes = {}
    own = dim % x.dim()
    for other in range(x.dim()):
        if other != own:
            mistakes[f"the softmax runs along dim={other}, not along the `dim` argument"] = \
                torch.softmax(x, dim=other)
    for other in range(x.dim()):
        if other != own:
            e = torch.exp(x - x.amax(dim=dim, keepdim=True))
            mistakes[f"the maximum was taken along `dim`, but the exponentials were summed "
                     f"along dim={other}: the sum that normalises runs along `dim` too"] = \
                e / e.sum(dim=other, keepdim=True)
            e = torch.exp(x - x.amax(dim=other, keepdim=True))
            mistakes[f"the maximum was taken along dim={other} (a fixed dim), not along `dim`: "
                     "each slice along `dim` needs its own maximum"] = \
                e / e.sum(dim=dim, keepdim=True)
    shifted = torch.exp(x - x.amax(dim=dim, keepdim=True))
    mistakes["the exponentials were divided by their sum over the whole tensor, not by their "
             "sum along `dim`"] = shifted / shifted.sum()
    mistakes.update({
        "the exponentials were not normalised: divide them by their sum along `dim`":
            torch.exp(x - x.amax(dim=dim, keepdim=True)),
        "the scores were normalised without the exponential":
            x / x.sum(dim=dim, keepdim=True),
        "normalised over every element of the tensor instead of along `dim`":
            torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),
        "the numerator was shifted by the maximum but the denominator was not: divide by the "
        "sum of the shifted exponentials":
            torch.exp(x - x.amax(dim=dim, keepdim=True)) / torch.exp(x).sum(dim=dim, keepdim=True),
    })
    return mistakes


def huge_mistakes(huge: torch.Tensor) -> dict[str, torch.Tensor]:
    """Wrong shifts on logits in the hundreds and thousands: each leaves its own nan pattern
    (computed in float32, the input's dtype, where exp(89) is already inf; the plain softmax
    also in float64, where exp(710) is)."""
    huge = huge.double().float()

    def normalise(e: torch.Tensor) -> torch.Tensor:
        return e / e.sum(dim=-1, keepdim=True)

    first = huge.narrow(-1, 0, 1)
    last = huge.narrow(-1, huge.shape[-1] - 1, 1)
    naive = normalise(torch.exp(huge))
    return {
        "no maximum was subtracted: exp of a logit near 1000 overflows to inf, and inf/inf "
        "is nan": naive,
        "no maximum was subtracted, and float64 does not save it: exp overflows there too "
        "once a logit passes 709, so logits near 1000 still give inf/inf = nan":
            normalise(torch.exp(huge.double())).float(),
        "nan was replaced (nan_to_num) instead of avoided: a row that overflowed comes out as "
        "zeros that do not sum to 1; subtract the maximum before exponentiating":
            torch.nan_to_num(naive, nan=0.0),
        "the first logit of each row was subtracted, not the largest: in a row that rises by "
        "hundreds, exp(last - first) still overflows": normalise(torch.exp(huge - first)),
        "the last logit of each row was subtracted, not the largest: in a row that falls by "
        "hundreds, exp(first - last) still overflows": normalise(torch.exp(huge - last)),
        "the shift was undone (the unshifted sum, or a factor exp(max) put back): e^max "
        "overflows for logits in the thousands, and 0 × inf is nan; the shifted exponentials "
        "divided by their own sum are already the softmax":
            torch.exp(huge - huge.amax(dim=-1, keepdim=True))
            / torch.exp(huge).sum(dim=-1, keepdim=True)
            * torch.exp(huge.amax(dim=-1, keepdim=True)),
        "the maximum was taken over the whole tensor, not along `dim`: a row whose logits all "
        "lie far below that maximum underflows to 0/0 = nan; subtract each row's own maximum":
            normalise(torch.exp(huge - huge.max())),
        "the smallest logit was subtracted instead of the largest: exp(largest - smallest) "
        "still overflows": normalise(torch.exp(huge - huge.amin(dim=-1, keepdim=True))),
        "the mean was subtracted instead of the largest logit: a logit hundreds above its "
        "row's mean still overflows": normalise(torch.exp(huge - huge.mean(dim=-1, keepdim=True))),
    }


CAPPED = ("the logits were capped (clamp, or a minimum) before the exponential: every logit "
          "above the cap gets the same weight; subtract each row's maximum instead, which "
          "changes no weight")

CAPPED_SCORES = ("the scores were capped (clamp, or a minimum) before the exponential: every "
                 "score above the cap gets the same weight; subtract the largest score "
                 "instead (your stable_softmax does), which changes no weight")


def tied_top(actual: torch.Tensor, reference: torch.Tensor) -> bool:
    """The signature of capped logits: in some row (along the last dim) several entries share
    the largest weight exactly, where the reference has a single largest weight."""
    actual = torch.nan_to_num(torch.as_tensor(actual).detach().double().cpu(), nan=-1.0)
    reference = torch.as_tensor(reference).detach().double().cpu()
    if actual.shape != reference.shape or actual.dim() == 0:
        return False
    tied = ((actual == actual.amax(dim=-1, keepdim=True)) & (actual > 0)).sum(dim=-1)
    single = (reference == reference.amax(dim=-1, keepdim=True)).sum(dim=-1) == 1
    return bool(((tied > 1) & single).any())


FLOORED = ("the exponentials (or the weights) were given a floor (`clamp(min=...)`, or an "
           "epsilon added): a weight that should be e^-500, about 0, comes out as the floor; "
           "subtracting the maximum already keeps every number finite")


def floored(actual: torch.Tensor, reference: torch.Tensor) -> bool:
    """The signature of a floor: several entries share the smallest value exactly, and the
    exact softmax has entries far below it."""
    actual = torch.as_tensor(actual).detach().double().cpu()
    reference = torch.as_tensor(reference).detach().double().cpu()
    if actual.shape != reference.shape or not bool(torch.isfinite(actual).all()):
        return False
    low = float(actual.min())
    return low > 0 and int((actual == low).sum()) >= 2 and bool((reference < low / 2).any())


TRANSPOSED = ("`dim` was moved to the end (transpose or movedim) and never moved back: the "
              "result must have the shape of x; move the axis back, or work along `dim` "
              "directly")
SQUEEZED = ("an axis of size 1 was dropped (`x.squeeze()`, or a reshape): the result keeps "
            "every axis of `x`, a batch of one included")
# In a softmax, a shape clash between x and a reduction of it means the reduced axis came
# back in the wrong place (a missing keepdim, or unsqueeze(-1) for a `dim` that is not last).
MISALIGNED = (r"must match the size of tensor b", None,
              "a reduction along `dim` lost that axis (no keepdim=True), or it was put back in "
              "the wrong place (unsqueeze(-1) adds it at the end, whatever `dim` is), so it no "
              "longer lines up with x: pass keepdim=True to the reduction")

SOFTMAX_BUILTINS = ("softmax", "_softmax", "log_softmax", "special_softmax")


EPSILON = ("a small number was added to the sum (or to the exponentials): every weight comes "
           "out slightly too small (or too large), so the result is no longer exact; with the "
           "maximum subtracted the sum is at least 1, so nothing needs guarding")


def scaled_rows(actual: torch.Tensor, reference: torch.Tensor) -> bool:
    """The signature of an epsilon: in each row the weights are the exact ones times one
    factor, and that factor is not 1."""
    actual = torch.as_tensor(actual).detach().double().cpu()
    reference = torch.as_tensor(reference).detach().double().cpu()
    if actual.shape != reference.shape or not bool(torch.isfinite(actual).all()):
        return False
    big = reference > 1e-3
    ratio = torch.where(big, actual / reference.where(big, torch.ones_like(reference)),
                        torch.nan)
    spread = (ratio.nan_to_num(nan=-1.0).amax(-1) - ratio.nan_to_num(nan=2.0).amin(-1)).abs()
    off = (ratio.nanmean(-1) - 1).abs()
    return bool((spread < 1e-9).all() and (off > 1e-12).any())


def exact_check(check: SelfCheck, stable_softmax: Callable[..., torch.Tensor],
                logits: torch.Tensor) -> None:
    """Float64 logits hundreds apart: every weight, the tiny ones included, must match the
    exact softmax to float64's precision (relative), so an epsilon or a floor shows."""
    out = check.tensor(check.call(stable_softmax, logits), "stable_softmax(x)")
    reference = torch.softmax(logits.double(), dim=-1)
    check.shape(out, tuple(reference.shape), "stable_softmax(x) of float64 logits")
    got = out.detach().double().cpu()
    error = ((got - reference).abs() / reference.clamp(min=1e-300)).nan_to_num(nan=float("inf"))
    row, column = divmod(int(error.argmax()), error.shape[-1])
    check.expect(float(error.max()) < 1e-10, "is exact in float64: every weight, the tiny ones "
                 "too, agrees with the exact softmax to 1 part in 10^10",
                 expected="a relative error below 1e-10 everywhere",
                 got=f"a relative error of {float(error.max()):.2g} at row {row}, column "
                     f"{column}: expected {float(reference[row, column]):.17g}, got "
                     f"{float(got[row, column]):.17g}",
                 diagnoses={EPSILON: lambda: scaled_rows(out, reference),
                            FLOORED: lambda: floored(out, reference)})


def half_follows(check: SelfCheck, fn: Callable[..., torch.Tensor], *args: object,
                 what: str, **kwargs: object) -> None:
    """With bfloat16 tensor arguments, every floating-point result is bfloat16 too."""
    half = [a.to(torch.bfloat16) if isinstance(a, torch.Tensor) else a for a in args]
    out = check.call(fn, *half, **kwargs)
    results = out if isinstance(out, tuple | list) else (out,)
    wrong = [str(t.dtype).removeprefix("torch.") for t in results
             if isinstance(t, torch.Tensor) and t.is_floating_point()
             and t.dtype != torch.bfloat16]
    check.expect(not wrong, f"{what} with bfloat16 inputs returns bfloat16",
                 expected="bfloat16 results", got=", ".join(wrong) or "bfloat16",
                 likely="a float32 tensor (`torch.zeros(n)`, `torch.full(...)` and "
                        "`torch.tensor(...)` make float32 unless told otherwise) was combined "
                        "with the result and promoted it to float32: make new tensors with "
                        "`torch.*_like(x)` or `x.new_zeros(...)`")


def check_stable_softmax(stable_softmax: Callable[..., torch.Tensor]) -> None:
    """Agreement with ``torch.softmax`` on ordinary and on huge logits, along any dim."""
    check = SelfCheck("stable_softmax")
    check.error_causes.append(MISALIGNED)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, generator=generator)

    check.clause("values")
    out = check.tensor(check.call(stable_softmax, x, dim=-1), "stable_softmax(x, dim=-1)")
    check.shape(out, x.shape, "stable_softmax(x, dim=-1)")
    check.close(out, torch.softmax(x, dim=-1), "agrees with torch.softmax(x, dim=-1)",
                mistakes=_softmax_mistakes(x, -1))

    check.clause("dim")
    for dim in (0, 1):
        out = check.tensor(check.call(stable_softmax, x, dim=dim), f"stable_softmax(x, dim={dim})")
        check.shape(out, x.shape, f"stable_softmax(x, dim={dim})", likely=TRANSPOSED if tuple(
            out.shape) == tuple(x.transpose(dim, -1).shape) else None)
        check.close(out, torch.softmax(x, dim=dim), f"agrees with torch.softmax(x, dim={dim})",
                    mistakes=_softmax_mistakes(x, dim))
    default = check.call(stable_softmax, x)
    check.close(default, torch.softmax(x, dim=-1), "without `dim`, it works along the last one",
                mistakes={"the default of `dim` is not -1": torch.softmax(x, dim=0)})
    column = torch.randn(5, 1, generator=generator)
    for single, dim in ((column, 0), (column.reshape(1, 5), 1)):  # a batch of one
        what = f"stable_softmax(x of shape {tuple(single.shape)}, dim={dim})"
        out = check.tensor(check.call(stable_softmax, single, dim=dim), what)
        check.shape(out, tuple(single.shape), what, likely=SQUEEZED
                    if tuple(out.shape) == tuple(single.squeeze().shape) else None)
        check.close(out, torch.softmax(single, dim=dim), f"{what} agrees with torch.softmax")

    check.clause("large")
    huge = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0],
                         [500.0, 0.0, -500.0], [0.0, 500.0, 1000.0]])
    out = check.call(stable_softmax, huge)
    reference = torch.softmax(huge, dim=-1)
    check.close(out, reference,
                "agrees with torch.softmax for logits in the hundreds and thousands", atol=1e-9,
                mistakes=huge_mistakes(huge), dims=("row", "column"),
                diagnoses={CAPPED: lambda: tied_top(out, reference),
                           FLOORED: lambda: floored(out, reference)})

    check.clause("dtype")
    check.dtype_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")
    check.clause("large")  # after the dtype: an answer computed in float32 fails there first
    exact_check(check, stable_softmax, huge[2:].double() / 2)
    check.clause("device")
    check.device_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")
    check.clause("dtype")  # half precision last: a CPU-only answer fails the device first
    half_follows(check, stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")

    check.rule("no_builtin")
    _, seen = check.call_observed(stable_softmax, x, dim=1)
    used = sorted(set(SOFTMAX_BUILTINS) & set(seen.calls))
    check.expect(not used, "builds the softmax from exp, a maximum and a sum",
                 expected="no call of PyTorch's softmax functions (softmax, log_softmax)",
                 got=f"calls {', '.join(used)}",
                 likely="PyTorch's softmax does the work this exercise asks you to do: "
                        "subtract the maximum, exponentiate and normalise yourself")

    check.rule("gradients")
    leaf = x.detach().clone().requires_grad_(True)
    out = check.tensor(check.call(stable_softmax, leaf, dim=1), "stable_softmax(x, dim=1)")
    check.expect(out.requires_grad, "stable_softmax(x, dim=1) stays connected to x for autograd",
                 expected="a result that requires grad", got="a result cut off from x",
                 likely=DETACHED)
    mix = torch.randn(x.shape, generator=generator)
    check.backward(out * mix, "stable_softmax(x, dim=1)")
    reference = x.detach().clone().requires_grad_(True)
    (torch.softmax(reference, dim=1) * mix).sum().backward()
    check.close(leaf.grad if leaf.grad is not None else torch.zeros_like(x), reference.grad,
                "the gradient reaching x is the softmax's")
    check.passed()


DETACHED = ("the result was cut off from the inputs (torch.no_grad(), .detach(), or a trip "
            "through NumPy or .tolist()): compute with torch operations on the tensors "
            "themselves, so that a model trained through it gets gradients")


def _plain_softmax(scores: torch.Tensor) -> torch.Tensor:
    """exp(s) / sum exp(s) with no shift, in the dtype of ``scores``."""
    return torch.exp(scores) / torch.exp(scores).sum()


def _attention_weights(attention: Callable[..., tuple], check: SelfCheck, x: torch.Tensor,
                       q_1: torch.Tensor, q_2: torch.Tensor, z_1: float, z_2: float
                       ) -> torch.Tensor:
    return torch.as_tensor(check.call(attention, x, q_1, q_2, z_1, z_2)[0]).reshape(-1)


STACKED = ("the softmax ran across the 2 patterns (dim=0 of a (2, T) stack), not over the T "
           "positions: add the two gained patterns into one score per position first, then "
           "take the softmax of those T scores")
AVERAGED = ("two separate softmaxes, one per pattern, were averaged: the gains go inside one "
            "softmax, of the scores z_1 q_1 + z_2 q_2")
RENORMALISED = ("the softmaxed patterns were scaled by the gains, then renormalised (0/0 = "
                "nan at zero gains): the gains multiply the patterns before the softmax, "
                "inside the scores")
SQRT_T = ("the scores were divided by √T (or another constant): that scaling belongs to "
          "queries and keys later on; here the scores are z_1 q_1 + z_2 q_2 as they are")
UNIT_GAINS = ("the gains were normalised (divided by their length), which removes their size: "
              "a larger gain must make the weights sharper; use z_1 and z_2 as given")
X_IN_SCORES = ("the scores were multiplied by x: x is what the weights average, it does not "
               "enter the scores z_1 q_1 + z_2 q_2")
ONE_GAIN = ("one shared gain, (z_1 + z_2) / 2, multiplies both patterns: each gain "
            "multiplies its own pattern, z_1 q_1 + z_2 q_2")
OTHER_SPOTLIGHT = ("a negative gain was read as 'look at the other spotlight': a negative z_1 "
                   "pushes weight away from where q_1 is large and leaves z_2 as it is; the "
                   "scores are z_1 q_1 + z_2 q_2 for any signs")


SMALLEST_SHIFT = ("the scores were shifted by their smallest value, not their largest, so "
                  "exp(largest - smallest) is still inf; this also happens when each pattern "
                  "is shifted by its own maximum before the gain multiplies it, since a "
                  "negative gain turns that maximum into the smallest score: subtract the "
                  "maximum of the scores z_1 q_1 + z_2 q_2 themselves")
PATTERN_SHIFT = ("each pattern was shifted by its own maximum before its gain scaled it: a "
                 "negative gain turns that maximum into the smallest score, so "
                 "exp(largest - smallest) is still inf; subtract the maximum of the scores "
                 "z_1 q_1 + z_2 q_2 (your stable_softmax does)")
PRODUCT = ("the softmaxes of the two gained patterns were multiplied and renormalised: "
           "right on paper, but for large gains of opposite signs every product underflows to "
           "0, and 0/0 is nan; take one softmax of the summed scores z_1 q_1 + z_2 q_2")
DETACHED_W = ("w was cut off (`.detach()`, `torch.no_grad()`) before y was computed from it: "
              "gradients reach x through y but never reach q_1 and q_2, so a model could not "
              "learn its patterns; compute y from the w that is still connected")
DETACHED_LARGE = ("for large gains the weights were replaced by a shortcut (one-hot at the "
                  "largest score, or a copy without gradients): w must still come from the "
                  "softmax of the scores, which your stable_softmax computes for any gain")


def scaled_scores(weights: torch.Tensor, scores: torch.Tensor) -> float | None:
    """The factor k when ``weights`` are the softmax of k × ``scores`` for some 0 < k < 0.99
    (gains capped, normalised or divided by a constant), else None."""
    w = torch.as_tensor(weights).detach().double().reshape(-1).cpu()
    s = torch.as_tensor(scores).detach().double().reshape(-1).cpu()
    if w.shape != s.shape or not bool(torch.isfinite(w).all()):
        return None
    keep = w > 1e-30  # where the log of the weight is still a number
    if int(keep.sum()) < 3:
        return None
    lw, ks = w[keep].log(), s[keep]
    ks_c = ks - ks.mean()
    spread = float((ks_c * ks_c).sum())
    if spread == 0.0:
        return None
    k = float(((lw - lw.mean()) * ks_c).sum()) / spread
    residual = float((lw - lw.mean() - k * ks_c).abs().max())
    return k if 0.0 < k < 0.99 and residual < 1e-3 * max(1.0, float(ks_c.abs().max()) * k) \
        else None


def scaled_text(k: float | None) -> str:
    """The diagnosis of weights that are the softmax of k × the right scores."""
    return (f"the weights are the softmax of {k if k is not None else 0.0:.3g} × the right "
            "scores: the gains or the scores were made smaller on the way (a cap, or a "
            "division); use z_1 q_1 + z_2 q_2 as it is, your stable_softmax handles any size")


def _near(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    """Whether two tensors hold the same numbers (any dtype; nan where both have nan)."""
    a = torch.as_tensor(a).detach().double().reshape(-1).cpu()
    b = torch.as_tensor(b).detach().double().reshape(-1).cpu()
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=1e-4, equal_nan=True)


def wrong_models(x: torch.Tensor, q_1: torch.Tensor, q_2: torch.Tensor
                 ) -> dict[str, Callable[[float, float], torch.Tensor]]:
    """Likely wrong readings of w = softmax(z_1 q_1 + z_2 q_2): mistake -> the weights it
    gives for gains (z_1, z_2), in float64."""
    x, q_1, q_2 = x.double(), q_1.double(), q_2.double()
    soft = lambda v: torch.softmax(v, dim=0)  # noqa: E731

    def stacked(z_1: float, z_2: float) -> torch.Tensor:
        return torch.softmax(torch.stack([z_1 * q_1, z_2 * q_2]), dim=0).mean(0)

    def other(z_1: float, z_2: float) -> torch.Tensor:
        a, b = (0.0, z_2 - z_1) if z_1 < 0 else (z_1 - min(z_2, 0.0), max(z_2, 0.0))
        return soft(a * q_1 + b * q_2)

    return {
        STACKED: stacked,
        AVERAGED: lambda z_1, z_2: (soft(z_1 * q_1) + soft(z_2 * q_2)) / 2,
        SQRT_T: lambda z_1, z_2: soft((z_1 * q_1 + z_2 * q_2) / len(x) ** 0.5),
        UNIT_GAINS: lambda z_1, z_2: soft((z_1 * q_1 + z_2 * q_2)
                                          / (max((z_1 ** 2 + z_2 ** 2) ** 0.5, 1e-12))),
        X_IN_SCORES: lambda z_1, z_2: soft((z_1 * q_1 + z_2 * q_2) * x),
        OTHER_SPOTLIGHT: other,
        ONE_GAIN: lambda z_1, z_2: soft((z_1 + z_2) / 2 * (q_1 + q_2)),
    }


def _moved(shift: torch.Tensor, pattern: torch.Tensor) -> str:
    """In plain words, how a change of log-weights relates to the pattern it should follow."""
    s = torch.as_tensor(shift).detach().double().reshape(-1).cpu()
    p = pattern.detach().double().reshape(-1).cpu()
    if s.shape != p.shape or not bool(torch.isfinite(s).all()):
        return "yours are not finite numbers"
    s, p = s - s.mean(), p - p.mean()
    if float(s.abs().max()) < 1e-6:
        return "yours did not move at all"
    slope = float((s * p).sum() / (p * p).sum())
    cosine = float((s * p).sum() / (s.norm() * p.norm()))
    if cosine > 0.99:
        return f"yours moved towards it, but by {slope:.3g} x the pattern instead of 2 x"
    if cosine < -0.99:
        return "yours moved away from where it is large"
    return "yours moved in a way that does not follow that pattern"


def check_gained_dot_product_attention(attention: Callable[..., tuple]) -> None:
    """Properties of w = softmax(z_1 q_1 + z_2 q_2) and y = w·x, without the formula."""
    check = SelfCheck("gained_dot_product_attention")
    generator = torch.Generator().manual_seed(2)
    T = 12
    x, q_1, q_2 = (torch.randn(T, generator=generator) for _ in range(3))
    x = x + 1.0  # a nonzero mean: a plain sum, a mean and a weighted sum all differ
    models = wrong_models(x, q_1, q_2)

    check.clause("returns")
    result = check.call(attention, x, q_1, q_2, 1.5, -0.5)
    check.expect(isinstance(result, tuple | list) and len(result) == 2, "returns a pair (w, y)",
                 expected="a tuple (w, y)", got=describe(result))
    check.expect(all(isinstance(v, torch.Tensor) for v in result), "w and y are tensors",
                 expected="two torch.Tensors", got=", ".join(type(v).__name__ for v in result),
                 diagnoses={"y was turned into a Python number (.item() or float(...)): keep "
                            "it a tensor": not isinstance(result[1], torch.Tensor)
                            and isinstance(result[1], int | float)})
    w, y = result
    check.expect(tuple(w.shape) == (T,), f"w has one weight per position, shape ({T},)",
                 expected=f"w of shape ({T},), then y", got=f"first value of shape "
                 f"{tuple(w.shape)}, second of shape {tuple(y.shape)}",
                 diagnoses={"the pair is returned the wrong way round: (w, y), not (y, w)":
                            y.numel() == T and w.numel() == 1})
    check.expect(tuple(y.shape) == (), "y is a 0-d tensor (one number, no axes)",
                 expected="shape ()", got=f"shape {tuple(y.shape)}",
                 diagnoses={"y kept an axis: a product of shapes (1, T) and (T, 1), or "
                            "keepdim=True, leaves one; sum the weighted inputs to a 0-d "
                            "tensor (or use a dot product of the two vectors)":
                            y.numel() == 1})

    check.clause("values")
    zero_w = _attention_weights(attention, check, x, q_1, q_2, 0.0, 0.0)
    both = _attention_weights(attention, check, x, q_1, q_2, 1.5, 3.0)
    soft = lambda v: torch.softmax(v.double(), dim=0)  # noqa: E731
    scores = 1.5 * q_1.double() + 3.0 * q_2.double()
    after = 1.5 * soft(q_1) + 3.0 * soft(q_2)
    # Each names its mistake only when the weights for gains (1.5, 3) are what it computes.
    weight_mistakes = {
        STACKED: lambda: _near(both, models[STACKED](1.5, 3.0)) or _near(
            both, 2 * models[STACKED](1.5, 3.0)),
        "a gain was added to the scores instead of multiplying its pattern (an added constant "
        "cancels in the softmax)": lambda: _near(both, soft(q_1 + q_2)),
        "the gains scale the weights after the softmax; they multiply the patterns before "
        "it, inside the scores": lambda: _near(both, after),
        RENORMALISED: lambda: _near(both, after / after.sum()),
        "the scores were normalised without the exponential": lambda: _near(
            both, scores / scores.sum()),
        "the scores were used as weights without a softmax": lambda: _near(both, scores),
        "the exponentials were not normalised (divide them by their sum)": lambda: _near(
            both, torch.exp(scores)),
    }
    # Non-negativity first: a w with negative entries names its cause here, before the
    # checks below would fail for it without one; then the sum, which a softmax over the
    # wrong axis breaks, before the uniform weights at zero gains.
    check.expect(bool((w >= 0).all()), "weights are non-negative", expected="w >= 0 everywhere",
                 got=describe(w), diagnoses={
                     "w was multiplied by x: return the softmax weights themselves as w; the "
                     "weighted inputs only go into y": lambda: _near(
                         w, soft(1.5 * q_1 - 0.5 * q_2) * x),
                     **weight_mistakes})
    check.close(w.sum(), torch.tensor(1.0), "weights sum to 1 over the T positions",
                diagnoses=weight_mistakes)
    check.close(zero_w, torch.full((T,), 1.0 / T),
                "zero gains give uniform weights 1/T (all scores are 0)",
                diagnoses=weight_mistakes)
    check.close(y.reshape(()), (w * x).sum(), "y equals the weighted sum of x with weights w",
                mistakes={"y ignores the weights: it is the plain sum of x": x.sum(),
                          "y ignores the weights: it is the mean of x": x.mean(),
                          "y is the sum of the weights, not of the weighted inputs": w.sum(),
                          "y is the mean of the weighted inputs, not their sum (the weights "
                          "already sum to 1)": (w * x).mean(),
                          "y averages the patterns, not the context: y = w · x": (
                              w * (q_1 + q_2)).sum()})

    check.clause("gains")
    only_2 = _attention_weights(attention, check, x, q_1, q_2, 0.0, 3.0)
    first = _attention_weights(attention, check, x, q_1, q_2, 1.5, 0.0)
    alike = lambda a, b: _near(a, b, atol=1e-6)  # noqa: E731
    check.expect(not alike(only_2, zero_w), "z_2 alone changes the weights",
                 expected="(z_1, z_2) = (0, 3) differs from (0, 0)", got="the same weights",
                 diagnoses={
                     "the weights ignore the gains and the patterns altogether":
                         lambda: alike(both, zero_w),
                     "the two gained patterns were multiplied, (z_1 q_1)(z_2 q_2), so either "
                     "gain at 0 silences both: add them": lambda: not alike(both, first),
                     "z_2 never enters the scores: z_1 multiplies both patterns (z_1 typed "
                     "where z_2 belongs); the scores are z_1 * q_1 + z_2 * q_2":
                         lambda: alike(both, soft(1.5 * (q_1 + q_2))),
                     "the second gain and pattern are left out of the scores: they are "
                     "z_1 * q_1 + z_2 * q_2": lambda: alike(both, soft(1.5 * q_1))})
    # Raising a gain by 2 must change the log-weights by exactly 2 x its pattern (up to a
    # constant), the sign included, for negative gains too.
    for name, pattern, low, high in (("z_1", q_1, (1.0, 0.0), (3.0, 0.0)),
                                     ("z_2", q_2, (0.0, 1.0), (0.0, 3.0)),
                                     ("z_2", q_2, (0.0, -3.0), (0.0, -1.0)),
                                     ("z_1", q_1, (-3.0, 0.0), (-1.0, 0.0))):
        other = q_2 if pattern is q_1 else q_1
        own = "q_1" if pattern is q_1 else "q_2"
        centred = 2.0 * (pattern - pattern.mean())
        if low[0] + low[1] < 0:
            mistakes = {"a negative gain lost its sign (abs or a clamp): a gain below zero "
                        "moves weight away from where its pattern is large": -centred,
                        "gains below zero were cut to zero: a negative gain is allowed and "
                        "pushes weight away from its pattern": torch.zeros(T)}
        else:
            mistakes = {f"{name}'s term is subtracted: raising {name} must move weight "
                        "towards where its pattern is large, so the scores are "
                        "z_1 q_1 + z_2 q_2": -centred,
                        f"{name} scales the other pattern": 2.0 * (other - other.mean())}
        for description, model in models.items():
            if description == STACKED:
                continue  # its weights never move (each is 1/2); the sum check names it
            moved = torch.log(model(*high)) - torch.log(model(*low))
            mistakes.setdefault(description, (moved - moved.mean()).float())
        shift = (torch.log(_attention_weights(attention, check, x, q_1, q_2, *high))
                 - torch.log(_attention_weights(attention, check, x, q_1, q_2, *low)))
        check.close(shift - shift.mean(), centred,
                    f"raising {name} from {low[0] + low[1]:g} to {high[0] + high[1]:g} moves "
                    f"the weight towards where {own} is large: log w changes by 2 x {own} "
                    f"(up to a constant); {_moved(shift, pattern)}", mistakes=mistakes)

    check.clause("large")
    # Gains times patterns far beyond 709, where exp overflows even in float64.
    for z_1, z_2 in ((800.0, 0.0), (0.0, -800.0), (-900.0, 600.0)):
        scores = z_1 * q_1.double() + z_2 * q_2.double()
        reference = torch.softmax(scores, dim=0)
        big_w, big_y = check.call(attention, x, q_1, q_2, z_1, z_2)
        big_w = torch.as_tensor(big_w).reshape(-1)
        k = scaled_scores(big_w, scores)
        shown = reference.to(big_w.dtype) if big_w.is_floating_point() else reference
        product = torch.softmax(z_1 * q_1, dim=0) * torch.softmax(z_2 * q_2, dim=0)
        # (A shift of each pattern by its own maximum fails at (0, -800) already, where
        # SMALLEST_SHIFT names it.)
        pattern_shift = {} if z_1 == 0 or z_2 == 0 else {PRODUCT: product / product.sum()}
        check.close(big_w, shown, f"the weights for gains ({z_1:g}, {z_2:g}) agree with an "
                    "exact softmax", mistakes={
                        "the softmax overflows for large gains (exp(89) is already inf in "
                        "float32): use your stable_softmax": _plain_softmax(scores.float()),
                        "the softmax overflows for large gains, and float64 does not save it "
                        "(exp(710) is inf there): use your stable_softmax":
                            _plain_softmax(scores),
                        SMALLEST_SHIFT:
                            _plain_softmax(scores.float() - scores.float().min()),
                        **pattern_shift},
                    diagnoses={CAPPED_SCORES: tied_top(big_w, reference),
                               scaled_text(k): k is not None})
        big_y = torch.as_tensor(big_y).reshape(())
        expected_y = (reference * x.double()).sum()
        check.close(big_y, expected_y.to(big_y.dtype) if big_y.is_floating_point() else expected_y,
                    f"y for gains ({z_1:g}, {z_2:g}) is the weighted sum of x")

    # Zero and large gains too: a shortcut for uniform or one-hot weights must keep the
    # inputs' dtype and device as well.
    gains = ((1.5, -0.5), (0.0, 0.0), (-900.0, 600.0))
    what = "gained_dot_product_attention(x, q_1, q_2, {:g}, {:g})".format
    check.clause("dtype")
    for z_1, z_2 in gains:
        check.dtype_follows(attention, x, q_1, q_2, z_1, z_2, what=what(z_1, z_2))
    check.clause("device")
    for z_1, z_2 in gains:
        check.device_follows(attention, x, q_1, q_2, z_1, z_2, what=what(z_1, z_2))
    check.clause("dtype")  # half precision last: a CPU-only answer fails the device first
    for z_1, z_2 in gains:
        half_follows(check, attention, x, q_1, q_2, z_1, z_2, what=what(z_1, z_2))

    check.rule("gradients")
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, q_1, q_2)]
    w, y = check.call(attention, *leaves, 1.5, -0.5)
    cut = [n for n, v in (("w", w), ("y", y)) if not getattr(v, "requires_grad", False)]
    check.expect(not cut, "w and y stay connected to x, q_1 and q_2 for autograd",
                 expected="results that require grad", got=f"{' and '.join(cut)} cut off",
                 likely=DETACHED)
    mix = torch.randn(T, generator=generator)
    check.backward((torch.as_tensor(w).reshape(-1) * mix).sum() + torch.as_tensor(y).sum(),
                   "w and y")
    reference = [t.detach().clone().requires_grad_(True) for t in (x, q_1, q_2)]
    ref_w = torch.softmax(1.5 * reference[1] - 0.5 * reference[2], dim=0)
    ((ref_w * mix).sum() + (ref_w * reference[0]).sum()).backward()
    for name, leaf, ref in zip(("x", "q_1", "q_2"), leaves, reference, strict=True):
        check.close(leaf.grad if leaf.grad is not None else torch.zeros(T), ref.grad,
                    f"the gradient flowing back to {name} through w and y is the exact one",
                    diagnoses={DETACHED_W: lambda: _near(leaves[0].grad if leaves[0].grad
                                                         is not None else torch.zeros(T),
                                                         ref_w.detach())
                               and not _near(leaves[1].grad if leaves[1].grad is not None
                                             else torch.zeros(T), reference[1].grad)})
    # Large gains too: a shortcut to one-hot weights there cuts w off from the patterns.
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, q_1, q_2)]
    w, y = check.call(attention, *leaves, -900.0, 600.0)
    cut = [n for n, v in (("w", w), ("y", y)) if not getattr(v, "requires_grad", False)]
    check.expect(not cut, "for gains (-900, 600) too, w and y stay connected to x, q_1 and "
                 "q_2 for autograd", expected="results that require grad",
                 got=f"{' and '.join(cut)} cut off", likely=DETACHED_LARGE)
    check.passed()
