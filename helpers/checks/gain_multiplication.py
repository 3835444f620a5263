"""Self-checks for tutorial 01 (gain multiplication).

A likely mistake is named only when the result has its signature; otherwise the message
says what differs and where.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from helpers.checks.framework import SelfCheck, describe

IN_PLACE = ("x was changed in place (e.g. `x -= ...`): the caller's tensor must come back "
            "untouched, so compute `x - ...` into a new tensor")


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
    })
    return mistakes


def _huge_mistakes(huge: torch.Tensor) -> dict[str, torch.Tensor]:
    """Wrong shifts on logits in the hundreds and thousands: each leaves its own nan pattern."""
    huge = huge.double().float()  # float32 arithmetic, where exp(89) is already inf

    def normalise(e: torch.Tensor) -> torch.Tensor:
        return e / e.sum(dim=-1, keepdim=True)

    return {
        "no maximum was subtracted: exp of a logit near 1000 overflows to inf, and inf/inf "
        "is nan": normalise(torch.exp(huge)),
        "the maximum was taken over the whole tensor, not along `dim`: a row whose logits all "
        "lie far below that maximum underflows to 0/0 = nan; subtract each row's own maximum":
            normalise(torch.exp(huge - huge.max())),
        "the smallest logit was subtracted instead of the largest: exp(largest - smallest) "
        "still overflows": normalise(torch.exp(huge - huge.amin(dim=-1, keepdim=True))),
    }


def check_stable_softmax(stable_softmax: Callable[..., torch.Tensor]) -> None:
    """Agreement with ``torch.softmax`` on ordinary and on huge logits, along any dim."""
    check = SelfCheck("stable_softmax")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, generator=generator)
    original = x.clone()
    for dim in (-1, 0, 1):
        out = check.tensor(check.call(stable_softmax, x, dim=dim), f"stable_softmax(x, dim={dim})")
        check.close(x, original, f"stable_softmax(x, dim={dim}) leaves x unchanged",
                    likely=IN_PLACE)
        check.shape(out, x.shape, f"stable_softmax(x, dim={dim})")
        check.close(out, torch.softmax(x, dim=dim), f"agrees with torch.softmax(x, dim={dim})",
                    mistakes=_softmax_mistakes(x, dim))
    default = check.call(stable_softmax, x)
    check.close(default, torch.softmax(x, dim=-1), "without `dim`, it works along the last one",
                mistakes={"the default of `dim` is not -1": torch.softmax(x, dim=0)})
    huge = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0],
                         [500.0, 0.0, -500.0]])
    out = check.call(stable_softmax, huge.clone())
    check.close(out, torch.softmax(huge, dim=-1),
                "agrees with torch.softmax for logits in the hundreds and thousands",
                mistakes=_huge_mistakes(huge), dims=("row", "column"))
    check.passed()


def check_gained_dot_product_attention(attention: Callable[..., tuple]) -> None:
    """Properties of w = softmax(z_1 q_1 + z_2 q_2) and y = w·x, without the formula."""
    check = SelfCheck("gained_dot_product_attention")
    generator = torch.Generator().manual_seed(2)
    T = 12
    x, q_1, q_2 = (torch.randn(T, generator=generator) for _ in range(3))
    x = x + 1.0  # a nonzero mean: a plain sum, a mean and a weighted sum all differ
    result = check.call(attention, x, q_1, q_2, 1.5, -0.5)
    check.expect(isinstance(result, tuple | list) and len(result) == 2, "returns a pair (w, y)",
                 expected="a tuple (w, y)", got=describe(result))
    w, y = (torch.as_tensor(v) for v in result)
    check.expect(tuple(w.shape) == (T,), f"w has one weight per position, shape ({T},)",
                 expected=f"w of shape ({T},), then y", got=f"first value of shape "
                 f"{tuple(w.shape)}, second of shape {tuple(y.shape)}",
                 diagnoses={"the pair is returned the wrong way round: (w, y), not (y, w)":
                            y.numel() == T and w.numel() == 1})
    same = [torch.as_tensor(check.call(attention, x, q_1, q_2, z_1, z_2)[0])
            for z_1, z_2 in ((3.0, 0.0), (0.0, 3.0))]
    zero_w, _ = (torch.as_tensor(v) for v in check.call(attention, x, q_1, q_2, 0.0, 0.0))
    mistakes = {"the scores were used as weights without a softmax": torch.zeros(T),
                "the exponentials were not normalised (divide by their sum)": torch.ones(T)}
    if torch.allclose(same[0], same[1], atol=1e-6):  # the gains change nothing
        mistakes["the weights do not depend on the gains: they must multiply the patterns "
                 "(a gain added to every score changes nothing after the softmax)"] = same[0]
    check.close(zero_w, torch.full((T,), 1.0 / T),
                "zero gains give uniform weights 1/T (all scores are 0)", mistakes=mistakes)
    check.expect(not torch.allclose(same[1], zero_w, atol=1e-6),
                 "z_2 changes the weights", expected="(z_1, z_2) = (0, 3) differs from (0, 0)",
                 got="the same weights", likely="the second gain and pattern are left out "
                 "of the scores: they are z_1 * q_1 + z_2 * q_2")
    check.expect(bool((w >= 0).all()), "weights are non-negative", expected="w >= 0 everywhere",
                 got=describe(w))
    check.close(w.sum(), torch.tensor(1.0), "weights sum to 1")
    # Raising z_1 from 1 to 3 must change the log-weights by exactly 2 q_1 (up to a constant).
    w_a = torch.as_tensor(check.call(attention, x, q_1, q_2, 1.0, 0.0)[0])
    w_b = torch.as_tensor(check.call(attention, x, q_1, q_2, 3.0, 0.0)[0])
    shift = torch.log(w_b) - torch.log(w_a) - 2.0 * q_1
    check.close(shift - shift.mean(), torch.zeros(T),
                "the gain z_1 multiplies the pattern q_1 (log w changes by 2 q_1 from z_1=1 to 3)")
    y = torch.as_tensor(y)
    check.expect(y.numel() == 1, "y is a single number", expected="a 0-d tensor",
                 got=describe(y))
    check.close(y.reshape(()), (w * x).sum(), "y equals the weighted sum of x with weights w",
                mistakes={"y ignores the weights: it is the plain sum of x": x.sum(),
                          "y ignores the weights: it is the mean of x": x.mean(),
                          "y is the sum of the weights, not of the weighted inputs": w.sum(),
                          "y is the mean of the weighted inputs, not their sum (the weights "
                          "already sum to 1)": (w * x).mean()})
    big_w = torch.as_tensor(check.call(attention, x, q_1, q_2, 0.0, 300.0)[0])
    check.finite(big_w, "the weights for a gain of 300",
                 likely="the softmax overflows for large gains (exp(300) is inf in float32): "
                        "use your stable_softmax")
    check.passed()
