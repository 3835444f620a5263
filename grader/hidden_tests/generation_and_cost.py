"""Hidden tests for tutorial 07 (generation and the cost of attention).

They run the checking engines of ``helpers.checks.generation_and_cost`` on inputs drawn
fresh for every grading run (a fresh order of the vocabulary, noise on the designed rows of
logits and fresh generator seeds for sampling, fresh random tensors and sizes elsewhere),
and add checks that only the trusted side can make: fresh temperatures, top-k and
vocabularies, and that the samples are independent random draws from the generator passed
in. (Half precision is the self-check's: the grader's transport carries it as float32.)
Both also check that the work of ``online_softmax`` and ``blockwise_attention`` grows
with the number of blocks. The memory rule of ``blockwise_attention`` stays in the
self-check: rules are not graded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from helpers.checks.generation_and_cost import (
    CASES,
    ROWS,
    check_bad_temperatures,
    check_block_shapes,
    check_block_values,
    check_block_work,
    check_cache,
    check_online,
    check_randomness,
    check_sample_device,
    check_shapes,
    expect_frequencies,
    expect_token_ids,
    frequency_slack,
    right_distribution,
    sampling_case,
    small_temperature_case,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

# ---- sampling -------------------------------------------------------------------------------

NOT_INDEPENDENT = ("the draws are not independent: which token comes next depends on the "
                   "tokens drawn before it (a pattern, or draws reused); draw every row at "
                   "random from its probabilities, with the generator passed in")
TOO_EVEN = ("the tokens are spread more evenly than random draws can be (a fixed pattern, "
            "or shares of the batch handed out in proportion to the probabilities): draw "
            "every row at random from its probabilities, with the generator passed in")
# a right answer's draws are this unlikely to be spread as evenly as the check demands
TOO_EVEN_P = 1e-12
Draws = list[tuple[torch.Tensor, torch.Tensor]]


def _fresh_case(check: HiddenCheck, sample: Callable[..., torch.Tensor],
                generator: torch.Generator, temperature: float, top_k: bool,
                n: int = 10_000) -> Draws:
    """Two random rows of logits over a random vocabulary, each repeated n times in a random
    order of the batch (with a random top_k): the frequencies of each row."""
    V = int(torch.randint(6, 11, (), generator=generator))
    rows = 1.5 * torch.randn(2, V, generator=generator)
    # never the top_k of the fixed cases (2, 3): code right for those only cannot pass
    k = int(torch.randint(4, V, (), generator=generator)) if top_k else None
    which = (torch.randperm(2 * n, generator=generator) < n).long()
    logits = rows[which]
    seed = int(torch.randint(0, 2**31, (), generator=generator))
    what = (f"sample_next_token(logits of shape {tuple(logits.shape)}, "
            f"temperature={temperature:.3f}, top_k={k})")
    got = check.call(sample, logits, temperature=temperature, top_k=k,
                     generator=torch.Generator().manual_seed(seed))
    got = expect_token_ids(check, got, 2 * n, V, what)
    probabilities = right_distribution(rows, temperature, k)
    draws = []
    for r in (0, 1):
        mine = got[which == r]
        expect_frequencies(check, torch.bincount(mine, minlength=V).double() / n,
                           probabilities[r], n, f"{what}: how often each token is drawn for "
                           f"random row {r} ({n} draws, in random places of the batch) matches "
                           "softmax(logits / temperature) over the kept tokens")
        draws.append((mine, probabilities[r]))
    return draws


def _expect_independent(check: HiddenCheck, draws: Draws) -> None:
    """Consecutive draws of the same row, taken in pairs, fall in each pair of tokens (a, b)
    as often as p_a p_b says."""
    for i, (tokens, p) in enumerate(draws):
        V = len(p)
        first, second = tokens[0:len(tokens) - 1:2], tokens[1::2]
        pairs = torch.bincount(first * V + second, minlength=V * V).double() / len(first)
        joint = (p[:, None] * p[None, :]).flatten()
        off = (pairs - joint).abs() > frequency_slack(joint, len(first))
        worst = int(((pairs - joint).abs() - frequency_slack(joint, len(first))).argmax())
        check.expect(not bool(off.any()), f"draws of the same row are independent (row group "
                     f"{i}: pairs of consecutive draws)",
                     expected=f"token {worst // V} then token {worst % V} in a share "
                     f"{joint[worst]:.4f} of the pairs",
                     got=f"a share of {pairs[worst]:.4f}", likely=NOT_INDEPENDENT)


def _expect_not_too_even(check: HiddenCheck, draws: Draws) -> None:
    """Pearson's statistic of all rows together is not implausibly small: the counts of
    random draws stray from their expectations by about their standard deviation."""
    statistic, dof = 0.0, 0
    for tokens, p in draws:
        n = len(tokens)
        counts = torch.bincount(tokens, minlength=len(p)).double()
        # only cells expected at least 10 times (a normal approximation holds); the sum over
        # some cells of a multinomial is a chi-square with (cells - 1) degrees of freedom plus
        # a non-negative term, so its lower tail bounds the chance of a right answer failing
        kept = p * n >= 10
        if int(kept.sum()) < 2:
            continue
        statistic += float((((counts - n * p) ** 2) / (n * p))[kept].sum())
        dof += int(kept.sum()) - 1
    chance = float(torch.special.gammainc(torch.tensor(dof / 2, dtype=torch.float64),
                                          torch.tensor(statistic / 2, dtype=torch.float64)))
    check.expect(chance > TOO_EVEN_P, "the counts of the tokens vary as those of random draws "
                 "do (Pearson's chi-square over every row of every case)",
                 expected=f"a statistic near {dof} (its degrees of freedom)",
                 got=f"{statistic:.3g}, which random draws reach with probability {chance:.2g}",
                 likely=TOO_EVEN)


@hidden_test
def grade_sample_next_token(sample_next_token: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("sample_next_token")
    generator = fresh_generator(707)
    permutation = torch.randperm(6, generator=generator)
    seeds = iter(torch.randint(0, 2**31, (12,), generator=generator).tolist())

    def rows(name: str) -> torch.Tensor:
        """A designed pair of rows, reordered and with a little fresh noise."""
        designed = torch.tensor(ROWS[name])[:, permutation]
        return designed + 0.03 * torch.randn(designed.shape, generator=generator)

    check.clause("shape")
    V = int(torch.randint(5, 12, (), generator=generator))
    check_shapes(check, sample_next_token, torch.randn(int(torch.randint(2, 9, (),
                 generator=generator)), V, generator=generator), torch.Generator().manual_seed(
                 next(seeds)))
    draws: Draws = []
    for clause in ("distribution", "top_k", "temperature"):
        check.clause(clause)
        for case, name, temperature, top_k, mistakes in CASES[clause]:
            draws += sampling_case(check, sample_next_token, rows(name), case, temperature,
                                   top_k, mistakes, next(seeds))
        # fresh logits, temperatures, top-k and vocabulary sizes, rows in random places
        fresh_temperature = float(torch.empty(()).uniform_(
            math.log(0.4), math.log(2.5), generator=generator).exp())
        if clause == "distribution":
            draws += _fresh_case(check, sample_next_token, generator, 1.0, top_k=False)
        elif clause == "top_k":
            draws += _fresh_case(check, sample_next_token, generator, 1.0, top_k=True)
        else:
            draws += _fresh_case(check, sample_next_token, generator, fresh_temperature,
                                 top_k=False)
            draws += _fresh_case(check, sample_next_token, generator, fresh_temperature,
                                 top_k=True)
            # logits / temperature in the thousands: e^z overflows unless the max is taken out
            offset = float(torch.empty(()).uniform_(50.0, 150.0, generator=generator))
            small = float(torch.empty(()).uniform_(0.02, 0.08, generator=generator))
            draws += small_temperature_case(check, sample_next_token, rows("plain"), offset,
                                            small, next(seeds))
    bad = -float(torch.empty(()).uniform_(0.05, 3.0, generator=generator))
    check_bad_temperatures(check, sample_next_token, torch.randn(3, 5, generator=generator),
                           (0.0, bad))
    check.clause("distribution")
    _expect_independent(check, draws)
    _expect_not_too_even(check, draws)
    check.clause("randomness")
    logits = 0.8 * torch.randn(2, 7, generator=generator).repeat(50, 1)
    check_randomness(check, sample_next_token, logits, [next(seeds) for _ in range(4)])
    check.clause("device")
    check_sample_device(check, sample_next_token, torch.randn(
        int(torch.randint(2, 6, (), generator=generator)), 7, generator=generator))
    check.passed()


@hidden_test
def grade_cached_attention_step(cached_attention_step: Callable[..., Any]) -> None:
    check = HiddenCheck("cached_attention_step")
    generator = fresh_generator(717)
    # never t + 1 = dh: a scale of 1/sqrt(t + 1) must not pass by coincidence
    for B, H, t, dh, T in ((2, 3, 4, 4, 5), (1, 2, 6, 8, 7), (3, 1, 2, 5, 4)):
        check_cache(check, cached_attention_step, generator, B=B, H=H, t=t, dh=dh, T=T,
                    half=False)
    # fresh sizes, and a long cache: code that keeps only the last few entries cannot pass
    B, H, dh = (int(n) for n in torch.randint(1, 4, (3,), generator=generator) + 1)
    t, T = int(torch.randint(40, 80, (), generator=generator)), 12
    check_cache(check, cached_attention_step, generator, B=B, H=H, t=t, dh=dh, T=T, half=False)
    check.passed()


@hidden_test
def grade_online_softmax(online_softmax: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("online_softmax")
    generator = fresh_generator(727)

    def size(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=generator))

    # x of any shape: one row alone (1-D) and three leading axes too; fresh sizes last, and
    # long rows in small blocks (code that uses a block size of its own cannot pass)
    block = size(2, 5)
    lead = tuple(size(2, 4) for _ in range(2))
    T = size(9, 30)
    check_online(check, online_softmax, generator,
                 values=(((3, 12), 4), ((2, 2, 15), 5), ((3, 6), 1), ((2, 8), 8),
                         ((4 * block,), block), ((2, 1, 3, 3 * block), block)),
                 blocks=(((4, 9), 2), ((2, 5), 7), ((1, 17), 6), ((13,), 4),
                         ((*lead, T), size(2, T - 1)), ((2, size(120, 240)), size(2, 7))),
                 falling_rows=((size(2, 4), size(3, 6)), (size(2, 4), size(3, 6))),
                 large_offsets=((1000.0 + size(0, 500),) * 3,
                                (1000.0 + size(0, 500), -1000.0 - size(0, 500), 0.0)),
                 rising_rows=((size(2, 4), size(6, 12), size(1, 3)),
                              (size(2, 4), size(8, 14), size(3, 5))),
                 work_length=size(20, 40), work_block=size(1, 3), half=False)
    check.passed()


@hidden_test
def grade_blockwise_attention(blockwise_attention: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("blockwise_attention")
    generator = fresh_generator(737)

    def size(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=generator))

    d = size(3, 9)
    check.clause("shape")
    # Q of shape (..., Tq, d) with any leading axes (none, one, three), fresh sizes
    check_block_shapes(check, blockwise_attention, generator,
                       ((), (size(1, 3),), (2, 1, size(1, 3))), d=d,
                       case=(size(2, 9), size(2, 12), d + 1, size(2, 4), False))
    bs = size(2, 4)
    check.clause("values")
    check_block_values(check, blockwise_attention, generator, (
        (9, 3 * bs, 4, bs, False), (5, 12, 3, 4, False)), batch=(2, 2), d=d)
    # a second query size: code with a scale fixed for one d cannot pass both
    check_block_values(check, blockwise_attention, generator, (
        (3, 6, 5, 6, False), (size(2, 10), 2 * bs, size(2, 7), bs, False)), batch=(2, 2),
        d=d + size(1, 3))
    # scores in the hundreds: e^score overflows unless the running maximum is subtracted
    check_block_values(check, blockwise_attention, generator, (
        (size(3, 8), 3 * bs, size(2, 5), bs, False),), batch=(2,), d=d, gain=10.0)
    # every score in the negative hundreds: a running maximum started at 0 underflows
    check_block_values(check, blockwise_attention, generator, (
        (size(3, 8), 3 * bs, size(2, 5), bs, False),), batch=(2,), d=d, negative=True)
    check.clause("causal")
    check_block_values(check, blockwise_attention, generator, (
        (12, 12, 4, 4, True), (8, 8, 3, 2, True), (5, 10, 3, 5, True), (10, 6, 3, 3, True),
        (3 * bs, 3 * bs, size(2, 7), bs, True)), batch=(2, 2), d=d)
    check.clause("blocks")
    Tk = size(5, 14)
    check_block_values(check, blockwise_attention, generator, (
        (9, 7, 4, 3, False), (5, 11, 3, 4, False), (4, 4, 2, 1, False), (3, 6, 5, 8, False),
        (7, 7, 3, 2, True), (10, 5, 3, 3, True),
        (size(2, 14), Tk, size(2, 7), size(2, Tk - 1), False),
        (Tk, Tk, size(2, 7), size(2, Tk - 1), True)), batch=(2, 2), d=d)
    # many blocks of keys: code that uses a block size of its own cannot pass
    long = size(130, 260)
    check_block_values(check, blockwise_attention, generator, (
        (size(3, 8), long, size(2, 5), size(3, 9), False),
        (40, long, size(2, 5), size(3, 9), True)), batch=(2,), d=d)
    # the work grows with the number of blocks: F.scaled_dot_product_attention, or a block
    # size of the answer's own, does the same work whatever block_size is
    check_block_work(check, blockwise_attention, generator, Tq=size(3, 8), Tk=size(20, 40),
                     few=size(2, 3), d=d)
    Q, K, V = (torch.randn(2, 5, d, generator=generator) for _ in range(3))
    check.clause("dtype")
    check.dtype_follows(blockwise_attention, Q, K, V, 2, causal=True,
                        what="blockwise_attention(Q, K, V, 2, causal=True)")
    check.clause("device")
    check.device_follows(blockwise_attention, Q, K, V, 2, causal=True,
                         what="blockwise_attention(Q, K, V, 2, causal=True)")
    check.passed()
