"""Hidden tests for tutorial 01 (gain multiplication)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from helpers.checks.gain_multiplication import IN_PLACE, _huge_mistakes
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test


def _reference_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    x = x.double()
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


@hidden_test
def grade_stable_softmax(stable_softmax: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("stable_softmax")
    generator = fresh_generator(101)
    x = 3 * torch.randn(2, 3, 4, generator=generator)
    for dim in (-1, 0, 1, 2):
        original = x.clone()
        out = check.tensor(check.call(stable_softmax, x, dim=dim), f"stable_softmax(x, dim={dim})")
        check.close(x, original, f"stable_softmax(x, dim={dim}) leaves x unchanged",
                    likely=IN_PLACE)
        mistakes = {
            "softmax taken over the last dimension whatever `dim` says":
                _reference_softmax(x, dim=-1),
            "the exponentials were not normalised (divide by their sum along `dim`)":
                torch.exp(x - x.amax(dim=dim, keepdim=True)),
            "the scores were normalised without the exponential":
                x / x.sum(dim=dim, keepdim=True),
            "normalised over every element instead of along `dim`":
                torch.exp(x) / torch.exp(x).sum(),
        }
        for other in range(3):
            if other != dim % 3:
                mistakes[f"softmax over dim={other} instead of dim={dim}"] = \
                    _reference_softmax(x, dim=other)
        check.close(out, _reference_softmax(x, dim), f"matches softmax along dim={dim}",
                    mistakes=mistakes)
    vector = torch.tensor([0.5, -1.0, 2.0, 0.0])
    check.close(check.call(stable_softmax, vector), _reference_softmax(vector),
                "works on a 1-D tensor with the default dim")
    huge = torch.tensor([[1000.0, 999.0, 998.0, 990.0], [-1000.0, -1002.0, -1001.0, -1100.0],
                         [500.0, 0.0, -500.0, 500.0]])
    out = check.tensor(check.call(stable_softmax, huge.clone()), "stable_softmax(huge)")
    check.close(out, _reference_softmax(huge), "correct for logits in the hundreds and thousands",
                mistakes=_huge_mistakes(huge), dims=("row", "column"))
    check.passed()


def _reference_attention(x, q_1, q_2, z_1, z_2):
    w = torch.softmax((z_1 * q_1 + z_2 * q_2).double(), dim=0)
    return w, (w * x.double()).sum()


@hidden_test
def grade_gained_dot_product_attention(attention: Callable[..., tuple]) -> None:
    check = HiddenCheck("gained_dot_product_attention")
    generator = fresh_generator(102)
    for T, z_1, z_2 in ((7, 2.0, 0.5), (16, -1.5, 3.0), (5, 0.0, 4.0)):
        x = torch.randn(T, generator=generator) + 1.0  # nonzero mean: y ≠ a sum by accident
        q_1, q_2 = torch.randn(T, generator=generator), torch.rand(T, generator=generator)
        result = check.call(attention, x, q_1, q_2, z_1, z_2)
        check.expect(isinstance(result, tuple | list) and len(result) == 2,
                     "returns two values (w, y)", expected="(w, y)", got=str(type(result)))
        w, y = (torch.as_tensor(v) for v in result)
        check.expect(not (w.numel() == 1 and y.numel() == T),
                     "returns w first, then y", expected=f"w with {T} entries, then y",
                     got=f"first value has {w.numel()} entries, second {y.numel()}",
                     likely="the two results are swapped: return (w, y), not (y, w)")
        w_ref, y_ref = _reference_attention(x, q_1, q_2, z_1, z_2)
        scores = z_1 * q_1 + z_2 * q_2
        check.close(w.reshape(-1), w_ref, f"weights for T={T}, z_1={z_1}, z_2={z_2}", mistakes={
            "the gains were added to the patterns instead of multiplying them":
                torch.softmax(q_1 + z_1 + q_2 + z_2, dim=0),
            "only the first gain and pattern were used": torch.softmax(z_1 * q_1, dim=0),
            "the weights were not normalised (softmax divides by the sum)": torch.exp(scores),
            "the scores were used as weights without softmax": scores,
            "the weights used q_1 * q_2 instead of a weighted sum of patterns":
                torch.softmax(z_1 * z_2 * q_1 * q_2, dim=0),
        })
        check.close(y.reshape(()), y_ref, f"output y for T={T}, z_1={z_1}, z_2={z_2}", mistakes={
            "y ignores the weights (it is a plain sum of x)": x.sum(),
            "y ignores the weights (it is the mean of x)": x.mean(),
            "y should be the dot product w·x, not the sum of the weights": w_ref.sum(),
            "y was computed with unnormalised weights": (torch.exp(scores) * x).sum(),
            "y is the mean of the weighted inputs, not their sum (the weights already sum to 1)":
                (w_ref * x.double()).mean(),
        })
    w, y = check.call(attention, torch.ones(6), torch.zeros(6), torch.arange(6.0), 0.0, 1000.0)
    check.finite(torch.as_tensor(w), "weights for a gain of 1000",
                 likely="large gains overflow exp: use a stable softmax")
    check.close(torch.as_tensor(y).reshape(()), torch.tensor(1.0), "y for a gain of 1000 with x = 1")
    check.passed()
