"""Hidden tests for tutorial 01 (gain multiplication)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from helpers.checks.gain_multiplication import (
    CAPPED,
    CAPPED_SCORES,
    FLOORED,
    MISALIGNED,
    PATTERN_SHIFT,
    RENORMALISED,
    SMALLEST_SHIFT,
    SQUEEZED,
    exact_check,
    floored,
    huge_mistakes,
    scaled_scores,
    scaled_text,
    tied_top,
    wrong_models,
)
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
    peak = base / 2 * torch.tensor([1.0, 0.0, -1.0, -0.5])  # one logit far above the rest
    return torch.stack([rising, falling, -falling, spread, wide, wide.flip(0), peak])


@hidden_test
def grade_stable_softmax(stable_softmax: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("stable_softmax")
    check.error_causes.append(MISALIGNED)
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
    n = int(torch.randint(3, 8, (1,), generator=generator))
    column = 2 * torch.randn(n, 1, generator=generator)
    for single, dim in ((column, 0), (column.reshape(1, n), 1)):  # a batch of one
        what = f"stable_softmax(x of shape {tuple(single.shape)}, dim={dim})"
        out = check.tensor(check.call(stable_softmax, single, dim=dim), what)
        check.shape(out, tuple(single.shape), what, likely=SQUEEZED
                    if tuple(out.shape) == tuple(single.squeeze().shape) else None)
        check.close(out, _reference_softmax(single, dim), f"{what} matches softmax")

    check.clause("large")
    huge = _huge_logits(generator)
    out = check.tensor(check.call(stable_softmax, huge), "stable_softmax(huge)")
    reference = _reference_softmax(huge)
    check.close(out, reference, "correct for logits in the hundreds and thousands", atol=1e-9,
                mistakes=huge_mistakes(huge), dims=("row", "column"),
                diagnoses={CAPPED: lambda: tied_top(out, reference),
                           FLOORED: lambda: floored(out, reference)})

    check.clause("dtype")
    check.dtype_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")
    check.clause("large")  # after the dtype: an answer computed in float32 fails there first
    # Float64 rows hundreds apart (no subnormal weights): an epsilon or a floor shows.
    spread = 100 + 100 * torch.rand(2, 1, generator=generator, dtype=torch.float64)
    exact_check(check, stable_softmax,
                spread * torch.tensor([[1.0, 0.0, -1.0, -2.0], [-2.0, 0.0, 1.0, -1.0]],
                                      dtype=torch.float64))
    check.clause("device")
    check.device_follows(stable_softmax, x, dim=1, what="stable_softmax(x, dim=1)")
    check.passed()


def _softmax_of(scores: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.double(), dim=0)


def _any_close(actual: torch.Tensor, candidates: list[torch.Tensor]) -> bool:
    actual = torch.as_tensor(actual).detach().double().reshape(-1)
    return any(c.shape == actual.shape and torch.allclose(actual, c, atol=1e-5, rtol=1e-4)
               for c in candidates)


def _reference_attention(x, q_1, q_2, z_1, z_2):
    w = torch.softmax((z_1 * q_1 + z_2 * q_2).double(), dim=0)
    return w, (w * x.double()).sum()


@hidden_test
def grade_gained_dot_product_attention(attention: Callable[..., tuple]) -> None:
    check = HiddenCheck("gained_dot_product_attention")
    generator = fresh_generator(102)
    # Both signs for both gains: both positive first (a sign mistake cannot show there), then
    # z_1 negative alone (there a lost sign and a cut gain each leave their own weights),
    # then the other two in either order.
    signs = [(1.0, 1.0), (-1.0, 1.0), *[(1.0, -1.0), (-1.0, -1.0)][::int(
        torch.randint(2, (1,), generator=generator)) * 2 - 1]]
    cases = [(int(T), float(s_1 * z_1), float(s_2 * z_2)) for T, z_1, z_2, (s_1, s_2) in zip(
        torch.randint(4, 20, (4,), generator=generator),
        2 * torch.rand(4, generator=generator) + 0.5, 4 * torch.rand(4, generator=generator) + 0.5,
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
        after = z_1 * torch.softmax(q_1, dim=0) + z_2 * torch.softmax(q_2, dim=0)
        readings = {description: model(z_1, z_2)
                    for description, model in wrong_models(x, q_1, q_2).items()}
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

            "the gains scale the weights after the softmax instead of the patterns before it":
                after,
            RENORMALISED: after / after.sum(),
            **readings,
            "the scores were normalised without the exponential": scores / scores.sum(),
            "the weights were not normalised (softmax divides by the sum)": torch.exp(scores),
            "the scores were used as weights without softmax": scores,
        }, diagnoses={
            # One gain or both: the sign is lost, or a negative gain becomes 0 (cheap enough
            # to work out for every case, passed or not).
            "a negative gain lost its sign (abs)": _any_close(w, [
                _softmax_of(abs(z_1) * q_1 + abs(z_2) * q_2),
                _softmax_of(abs(z_1) * q_1 + z_2 * q_2), _softmax_of(z_1 * q_1 + abs(z_2) * q_2)]),
            "gains below zero were cut to zero": _any_close(w, [
                _softmax_of(max(z_1, 0.0) * q_1 + max(z_2, 0.0) * q_2),
                _softmax_of(max(z_1, 0.0) * q_1 + z_2 * q_2),
                _softmax_of(z_1 * q_1 + max(z_2, 0.0) * q_2)]),
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
    # Gains of 800 to 1200 times patterns near ±1 and beyond: exp overflows even in float64.
    T = int(torch.randint(5, 12, (1,), generator=generator))
    x = torch.randn(T, generator=generator) + 1.0
    q_1, q_2 = torch.randn(T, generator=generator), torch.randn(T, generator=generator)
    gains = (800 + 400 * torch.rand(4, generator=generator)).tolist()
    # Both gains large and of opposite signs first: there a shift of each pattern by its
    # own maximum, before its gain, is not a shift of the scores.
    for z_1, z_2 in ((-gains[1], gains[2]), (gains[0], 0.0), (-gains[1], 0.0), (0.0, gains[2]),
                     (0.0, -gains[3])):
        scores = z_1 * q_1.double() + z_2 * q_2.double()
        shifted = z_1 * (q_1 - q_1.max()) + z_2 * (q_2 - q_2.max())
        reference = torch.softmax(scores, dim=0)
        w, y = check.call(attention, x, q_1, q_2, z_1, z_2)
        w = torch.as_tensor(w).reshape(-1)
        k = scaled_scores(w, scores)
        shown = reference.to(w.dtype) if w.is_floating_point() else reference
        check.close(w, shown, f"weights for gains ({z_1:.0f}, {z_2:.0f})", mistakes={
            "large gains overflow exp: use a stable softmax":
                torch.exp(scores.float()) / torch.exp(scores.float()).sum(),
            "large gains overflow exp, in float64 too: use a stable softmax":
                torch.exp(scores) / torch.exp(scores).sum(),
            SMALLEST_SHIFT:
                torch.exp(scores.float() - scores.float().min())
                / torch.exp(scores.float() - scores.float().min()).sum(),
            **({} if z_1 == 0 or z_2 == 0 else {
                PATTERN_SHIFT: torch.exp(shifted) / torch.exp(shifted).sum()}),
        }, diagnoses={CAPPED_SCORES: tied_top(w, reference), scaled_text(k): k is not None})
        y = torch.as_tensor(y).reshape(())
        expected_y = (reference * x.double()).sum()
        check.close(y, expected_y.to(y.dtype) if y.is_floating_point() else expected_y,
                    f"y for gains ({z_1:.0f}, {z_2:.0f})")
    x, q_1, q_2 = (torch.randn(6, generator=generator) for _ in range(3))
    # Ordinary, zero and large gains: a shortcut for uniform or one-hot weights must keep
    # the inputs' dtype and device too.
    big = 800 + 400 * torch.rand(2, generator=generator)
    gains = ((1.0 + float(torch.rand(1, generator=generator)), 2.0), (0.0, 0.0),
             (-float(big[0]), float(big[1])))
    check.clause("dtype")
    for z_1, z_2 in gains:
        check.dtype_follows(attention, x, q_1, q_2, z_1, z_2,
                            what=f"gained_dot_product_attention for gains ({z_1:.3g}, {z_2:.3g})")
    check.clause("device")
    for z_1, z_2 in gains:
        check.device_follows(attention, x, q_1, q_2, z_1, z_2,
                             what=f"gained_dot_product_attention(x, q_1, q_2, {z_1:.3g}, "
                                  f"{z_2:.3g})")
    check.passed()
