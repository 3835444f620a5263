"""Hidden tests for tutorial 01 (gain multiplication)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from helpers.checks.gain_multiplication import huge_mistakes
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test


def _reference_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    x = x.double()
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def _huge_logits(generator: torch.Generator) -> torch.Tensor:
    """Rows in the thousands, rising and falling, and a row far below the others (drawn
    afresh: a kernel that logs its inputs learns nothing for the next run)."""
    base = 1000 + 20 * torch.rand(1, generator=generator)
    steps = 1 + torch.rand(4, generator=generator)
    rising = base + steps.cumsum(0)
    falling = rising.flip(0)
    spread = torch.randn(4, generator=generator) * 400
    wide = (200 + 200 * torch.rand(4, generator=generator)).cumsum(0)  # rises by hundreds
    return torch.stack([rising, falling, -falling, spread, wide])


@hidden_test
def grade_stable_softmax(stable_softmax: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("stable_softmax")
    generator = fresh_generator(101)
    x = 3 * torch.randn(2, 3, 4, generator=generator)

    check.clause("values")
    out = check.tensor(check.call(stable_softmax, x, dim=-1), "stable_softmax(x, dim=-1)")
    check.shape(out, x.shape, "stable_softmax(x, dim=-1)")
    check.close(out, _reference_softmax(x, -1), "matches softmax along dim=-1", mistakes={
        "the exponentials were not normalised (divide by their sum along `dim`)":
            torch.exp(x - x.amax(dim=-1, keepdim=True)),
        "the scores were normalised without the exponential": x / x.sum(dim=-1, keepdim=True),
        "normalised over every element instead of along `dim`":
            torch.exp(x) / torch.exp(x).sum(),
        **{f"softmax over dim={other} instead of dim=-1": _reference_softmax(x, dim=other)
           for other in (0, 1)},
    })

    check.clause("dim")
    for dim in (0, 1, 2):
        out = check.tensor(check.call(stable_softmax, x, dim=dim), f"stable_softmax(x, dim={dim})")
        mistakes = {"softmax taken over the last dimension whatever `dim` says":
                    _reference_softmax(x, dim=-1)}
        for other in range(3):
            if other != dim:
                mistakes[f"softmax over dim={other} instead of dim={dim}"] = \
                    _reference_softmax(x, dim=other)
        check.close(out, _reference_softmax(x, dim), f"matches softmax along dim={dim}",
                    mistakes=mistakes)
    vector = torch.randn(5, generator=generator)
    check.close(check.call(stable_softmax, vector), _reference_softmax(vector),
                "works on a 1-D tensor with the default dim")

    check.clause("large")
    huge = _huge_logits(generator)
    out = check.tensor(check.call(stable_softmax, huge), "stable_softmax(huge)")
    check.close(out, _reference_softmax(huge), "correct for logits in the hundreds and thousands",
                mistakes=huge_mistakes(huge), dims=("row", "column"))

    check.clause("dtype")
    check.dtype_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")
    check.clause("device")
    check.device_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")
    check.passed()


def _reference_attention(x, q_1, q_2, z_1, z_2):
    w = torch.softmax((z_1 * q_1 + z_2 * q_2).double(), dim=0)
    return w, (w * x.double()).sum()


@hidden_test
def grade_gained_dot_product_attention(attention: Callable[..., tuple]) -> None:
    check = HiddenCheck("gained_dot_product_attention")
    generator = fresh_generator(102)
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0])[torch.randperm(4, generator=generator)]
    cases = [(int(T), float(z_1), float(sign * z_2)) for T, z_1, z_2, sign in zip(
        torch.randint(4, 20, (4,), generator=generator),
        4 * torch.rand(4, generator=generator) - 2, 4 * torch.rand(4, generator=generator) + 0.5,
        signs, strict=True)]
    for T, z_1, z_2 in cases:
        x = torch.randn(T, generator=generator) + 1.0  # nonzero mean: y ≠ a sum by accident
        q_1, q_2 = torch.randn(T, generator=generator), torch.rand(T, generator=generator)
        check.clause("returns")
        result = check.call(attention, x, q_1, q_2, z_1, z_2)
        check.expect(isinstance(result, tuple | list) and len(result) == 2,
                     "returns two values (w, y)", expected="(w, y)", got=str(type(result)))
        w, y = (torch.as_tensor(v) for v in result)
        check.expect(not (w.numel() == 1 and y.numel() == T),
                     "returns w first, then y", expected=f"w with {T} entries, then y",
                     got=f"first value has {w.numel()} entries, second {y.numel()}",
                     likely="the two results are swapped: return (w, y), not (y, w)")
        check.expect(all(isinstance(v, torch.Tensor) for v in result), "w and y are tensors",
                     expected="two torch.Tensors",
                     got=", ".join(type(v).__name__ for v in result),
                     diagnoses={"y was turned into a Python number (.item() or float(...))":
                                isinstance(result[1], int | float)})
        check.expect(tuple(w.shape) == (T,) and tuple(y.shape) == (),
                     f"w has shape ({T},), y is a 0-d tensor",
                     expected=f"w of shape ({T},), y of shape ()",
                     got=f"{tuple(w.shape)} and {tuple(y.shape)}",
                     diagnoses={"y kept an axis of size 1: it is one number, a 0-d tensor":
                                tuple(w.shape) == (T,) and y.numel() == 1})
        w_ref, y_ref = _reference_attention(x, q_1, q_2, z_1, z_2)
        scores = z_1 * q_1 + z_2 * q_2
        check.clause("gains")
        check.close(w.reshape(-1), w_ref, f"weights for T={T}, z_1={z_1:.3g}, z_2={z_2:.3g}",
                    mistakes={
            "the gains were added to the patterns instead of multiplying them":
                torch.softmax(q_1 + z_1 + q_2 + z_2, dim=0),
            "only the first gain and pattern were used": torch.softmax(z_1 * q_1, dim=0),
            "the second term is subtracted: the scores are z_1 q_1 + z_2 q_2":
                torch.softmax(z_1 * q_1 - z_2 * q_2, dim=0),
            "the two gained patterns were multiplied: the scores are their sum":
                torch.softmax(z_1 * q_1 * z_2 * q_2, dim=0),
            "each gain scaled the other pattern": torch.softmax(z_1 * q_2 + z_2 * q_1, dim=0),
            "a negative gain lost its sign (abs)":
                torch.softmax(abs(z_1) * q_1 + abs(z_2) * q_2, dim=0),
            "gains below zero were cut to zero":
                torch.softmax(max(z_1, 0.0) * q_1 + max(z_2, 0.0) * q_2, dim=0),
            "the gains scale the weights after the softmax instead of the patterns before it":
                z_1 * torch.softmax(q_1, dim=0) + z_2 * torch.softmax(q_2, dim=0),
            "the scores were normalised without the exponential": scores / scores.sum(),
            "the weights were not normalised (softmax divides by the sum)": torch.exp(scores),
            "the scores were used as weights without softmax": scores,
        })
        check.clause("values")
        check.close(y.reshape(()), y_ref, f"output y for T={T}, z_1={z_1:.3g}, z_2={z_2:.3g}",
                    mistakes={
            "y ignores the weights (it is a plain sum of x)": x.sum(),
            "y ignores the weights (it is the mean of x)": x.mean(),
            "y should be the dot product w·x, not the sum of the weights": w_ref.sum(),
            "y was computed with unnormalised weights": (torch.exp(scores) * x).sum(),
            "y is the mean of the weighted inputs, not their sum (the weights already sum to 1)":
                (w_ref * x.double()).mean(),
        })
    check.clause("large")
    T = int(torch.randint(5, 9, (1,), generator=generator))
    gain = float(500 + 500 * torch.rand(1, generator=generator))
    w, y = check.call(attention, torch.ones(T), torch.zeros(T), torch.randn(T, generator=generator),
                      0.0, gain)
    check.finite(torch.as_tensor(w), f"weights for a gain of {gain:.0f}",
                 likely="large gains overflow exp: use a stable softmax")
    check.close(torch.as_tensor(y).reshape(()), torch.tensor(1.0),
                f"y for a gain of {gain:.0f} with x = 1")
    check.clause("dtype")
    x, q_1, q_2 = (torch.randn(6, generator=generator) for _ in range(3))
    check.dtype_follows(attention, x, q_1, q_2, 1.0, 2.0,
                        what="gained_dot_product_attention on float64 inputs")
    check.passed()
