"""Self-checks for tutorial 01 (gain multiplication)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from helpers.checks.framework import SelfCheck, describe


def check_stable_softmax(stable_softmax: Callable[..., torch.Tensor]) -> None:
    """Agreement with ``torch.softmax`` on ordinary and on huge logits, along any dim."""
    check = SelfCheck("stable_softmax")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, generator=generator)
    for dim in (-1, 0, 1):
        out = check.tensor(check.call(stable_softmax, x, dim=dim), f"stable_softmax(x, dim={dim})")
        check.shape(out, x.shape, f"stable_softmax(x, dim={dim})",
                    likely="softmax keeps the input's shape: do not reduce a dimension away")
        check.close(out.sum(dim=dim), torch.ones(1).expand_as(out.sum(dim=dim)),
                    f"values sum to 1 along dim={dim}",
                    likely="normalise along the `dim` you were given (keepdim=True helps)")
        check.close(out, torch.softmax(x, dim=dim), f"agrees with torch.softmax(x, dim={dim})")
    default = check.call(stable_softmax, x)
    check.close(default, torch.softmax(x, dim=-1), "the default is dim=-1")
    huge = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]])
    out = check.call(stable_softmax, huge.clone())
    check.finite(out, "stable_softmax of logits near ±1000",
                 likely="exp(1000) overflows to inf: subtract the largest logit first")
    check.close(out, torch.softmax(huge, dim=-1), "agrees with torch.softmax for logits near ±1000")
    check.passed()


def check_gained_dot_product_attention(attention: Callable[..., tuple]) -> None:
    """Properties of w = softmax(z_1 q_1 + z_2 q_2) and y = w·x, without the formula."""
    check = SelfCheck("gained_dot_product_attention")
    generator = torch.Generator().manual_seed(2)
    T = 12
    x, q_1, q_2 = (torch.randn(T, generator=generator) for _ in range(3))
    result = check.call(attention, x, q_1, q_2, 1.5, -0.5)
    check.expect(isinstance(result, tuple) and len(result) == 2, "returns a pair (w, y)",
                 expected="a tuple (w, y)", got=describe(result))
    w, y = result
    check.tensor(w, "w")
    check.shape(w, (T,), "w", likely="w has one weight per position; did you return (y, w)?")
    check.expect(bool((w >= 0).all()), "weights are non-negative", expected="w >= 0 everywhere",
                 got=describe(w), likely="the weights must go through softmax")
    check.close(w.sum(), torch.tensor(1.0), "weights sum to 1",
                likely="softmax normalises: divide the exponentials by their sum")
    y = torch.as_tensor(y)
    check.expect(y.numel() == 1, "y is a single number", expected="a scalar tensor",
                 got=describe(y), likely="y = w·x is a dot product, one number")
    check.close(y.reshape(()), (w * x).sum(), "y equals the weighted sum of x with weights w",
                likely="y should combine the inputs x with the weights w")
    w0, y0 = check.call(attention, x, q_1, q_2, 0.0, 0.0)
    check.close(w0, torch.full((T,), 1.0 / T), "zero gains give uniform weights",
                likely="with z_1 = z_2 = 0 every position gets the same score")
    # Doubling z_1 must change the log-weights by exactly z_1 * q_1 (up to a constant).
    w_a, _ = check.call(attention, x, q_1, q_2, 1.0, 0.0)
    w_b, _ = check.call(attention, x, q_1, q_2, 3.0, 0.0)
    shift = torch.log(w_b) - torch.log(w_a) - 2.0 * q_1
    check.close(shift - shift.mean(), torch.zeros(T), "the gain z_1 multiplies the pattern q_1",
                likely="scores are z_1 * q_1 + z_2 * q_2 (products, not sums)")
    check.passed()
