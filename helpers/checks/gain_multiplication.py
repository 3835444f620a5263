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
    for other in range(x.dim()):
        if other != dim % x.dim():
            mistakes[f"the softmax runs along dim={other}, not along the `dim` argument"] = \
                torch.softmax(x, dim=other)
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
    """Wrong shifts on logits in the hundreds and thousands: each leaves its own nan pattern."""
    huge = huge.double().float()  # float32 arithmetic, where exp(89) is already inf

    def normalise(e: torch.Tensor) -> torch.Tensor:
        return e / e.sum(dim=-1, keepdim=True)

    first = huge.narrow(-1, 0, 1)
    return {
        "no maximum was subtracted: exp of a logit near 1000 overflows to inf, and inf/inf "
        "is nan": normalise(torch.exp(huge)),
        "the first logit of each row was subtracted, not the largest: in a row that rises by "
        "hundreds, exp(last - first) still overflows": normalise(torch.exp(huge - first)),
        "the maximum was taken over the whole tensor, not along `dim`: a row whose logits all "
        "lie far below that maximum underflows to 0/0 = nan; subtract each row's own maximum":
            normalise(torch.exp(huge - huge.max())),
        "the smallest logit was subtracted instead of the largest: exp(largest - smallest) "
        "still overflows": normalise(torch.exp(huge - huge.amin(dim=-1, keepdim=True))),
    }


SOFTMAX_BUILTINS = ("softmax", "_softmax", "log_softmax", "special_softmax")


def check_stable_softmax(stable_softmax: Callable[..., torch.Tensor]) -> None:
    """Agreement with ``torch.softmax`` on ordinary and on huge logits, along any dim."""
    check = SelfCheck("stable_softmax")
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
        check.close(out, torch.softmax(x, dim=dim), f"agrees with torch.softmax(x, dim={dim})",
                    mistakes=_softmax_mistakes(x, dim))
    default = check.call(stable_softmax, x)
    check.close(default, torch.softmax(x, dim=-1), "without `dim`, it works along the last one",
                mistakes={"the default of `dim` is not -1": torch.softmax(x, dim=0)})

    check.clause("large")
    huge = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0],
                         [500.0, 0.0, -500.0], [0.0, 500.0, 1000.0]])
    out = check.call(stable_softmax, huge)
    check.close(out, torch.softmax(huge, dim=-1),
                "agrees with torch.softmax for logits in the hundreds and thousands",
                mistakes=huge_mistakes(huge), dims=("row", "column"))

    check.clause("dtype")
    check.dtype_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")
    check.clause("device")
    check.device_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")

    check.rule("no_builtin")
    _, seen = check.call_observed(stable_softmax, x, dim=1)
    used = sorted(set(SOFTMAX_BUILTINS) & set(seen.calls))
    check.expect(not used, "builds the softmax from exp, a maximum and a sum",
                 expected="no call of PyTorch's own softmax",
                 got=f"calls {', '.join(used)}",
                 likely="PyTorch's softmax does the work this exercise asks you to do: "
                        "subtract the maximum, exponentiate and normalise yourself")
    check.passed()


def _attention_weights(attention: Callable[..., tuple], check: SelfCheck, x: torch.Tensor,
                       q_1: torch.Tensor, q_2: torch.Tensor, z_1: float, z_2: float
                       ) -> torch.Tensor:
    return torch.as_tensor(check.call(attention, x, q_1, q_2, z_1, z_2)[0]).reshape(-1)


def check_gained_dot_product_attention(attention: Callable[..., tuple]) -> None:
    """Properties of w = softmax(z_1 q_1 + z_2 q_2) and y = w·x, without the formula."""
    check = SelfCheck("gained_dot_product_attention")
    generator = torch.Generator().manual_seed(2)
    T = 12
    x, q_1, q_2 = (torch.randn(T, generator=generator) for _ in range(3))
    x = x + 1.0  # a nonzero mean: a plain sum, a mean and a weighted sum all differ

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
    alike = lambda a, b: torch.allclose(a, b, atol=1e-6)  # noqa: E731
    soft = lambda v: torch.softmax(v.double(), dim=0).float()  # noqa: E731
    check.close(zero_w, torch.full((T,), 1.0 / T),
                "zero gains give uniform weights 1/T (all scores are 0)", mistakes={
                    "the exponentials were not normalised (divide by their sum)": torch.ones(T)},
                diagnoses={
                    "a gain was added to the scores instead of multiplying its pattern (an "
                    "added constant cancels in the softmax)": lambda: alike(zero_w, both),
                    "the gains scale the weights after the softmax; they multiply the "
                    "patterns before it, inside the scores": lambda: torch.allclose(
                        both, 1.5 * soft(q_1) + 3.0 * soft(q_2), atol=1e-5),
                    "the scores were normalised without the exponential (0/0 = nan at zero "
                    "gains)": lambda: bool(torch.isnan(zero_w).all()),
                    "the scores were used as weights without a softmax": lambda: torch.allclose(
                        both, 1.5 * q_1 + 3.0 * q_2, atol=1e-5)})
    check.expect(bool((w >= 0).all()), "weights are non-negative", expected="w >= 0 everywhere",
                 got=describe(w))
    check.close(w.sum(), torch.tensor(1.0), "weights sum to 1")
    check.close(y.reshape(()), (w * x).sum(), "y equals the weighted sum of x with weights w",
                mistakes={"y ignores the weights: it is the plain sum of x": x.sum(),
                          "y ignores the weights: it is the mean of x": x.mean(),
                          "y is the sum of the weights, not of the weighted inputs": w.sum(),
                          "y is the mean of the weighted inputs, not their sum (the weights "
                          "already sum to 1)": (w * x).mean()})

    check.clause("gains")
    only_2 = _attention_weights(attention, check, x, q_1, q_2, 0.0, 3.0)
    first = _attention_weights(attention, check, x, q_1, q_2, 1.5, 0.0)
    check.expect(not alike(only_2, zero_w), "z_2 alone changes the weights",
                 expected="(z_1, z_2) = (0, 3) differs from (0, 0)", got="the same weights",
                 diagnoses={
                     "the weights ignore the gains and the patterns altogether":
                         lambda: alike(both, zero_w),
                     "the two gained patterns were multiplied, (z_1 q_1)(z_2 q_2), so either "
                     "gain at 0 silences both: add them": lambda: not alike(both, first),
                     "the second gain and pattern are left out of the scores: they are "
                     "z_1 * q_1 + z_2 * q_2": lambda: alike(both, first)})
    # Raising a gain by 2 must change the log-weights by exactly 2 x its pattern (up to a
    # constant), the sign included, for negative gains too.
    for name, pattern, low, high in (("z_1", q_1, (1.0, 0.0), (3.0, 0.0)),
                                     ("z_2", q_2, (0.0, 1.0), (0.0, 3.0)),
                                     ("z_2", q_2, (0.0, -3.0), (0.0, -1.0))):
        other = q_2 if pattern is q_1 else q_1
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
        shift = (torch.log(_attention_weights(attention, check, x, q_1, q_2, *high))
                 - torch.log(_attention_weights(attention, check, x, q_1, q_2, *low)))
        check.close(shift - shift.mean(), centred,
                    f"raising {name} from {low[0] + low[1]:g} to {high[0] + high[1]:g} "
                    "changes log w by 2 x its pattern (weight moves to where the pattern is "
                    "large)", mistakes=mistakes)

    check.clause("large")
    big_w = _attention_weights(attention, check, x, q_1, q_2, 0.0, 300.0)
    check.finite(big_w, "the weights for a gain of 300",
                 likely="the softmax overflows for large gains (exp(300) is inf in float32): "
                        "use your stable_softmax")

    check.clause("dtype")
    check.dtype_follows(attention, x, q_1, q_2, 1.5, -0.5,
                        what="gained_dot_product_attention(x, q_1, q_2, 1.5, -0.5)")
    check.passed()
