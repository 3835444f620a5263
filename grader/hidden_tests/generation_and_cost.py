"""Hidden tests for tutorial 07 (generation and the cost of attention).

They run the checking engines of ``helpers.checks.generation_and_cost`` on inputs drawn
fresh for every grading run (a fresh order of the vocabulary and fresh generator seeds
for sampling, fresh random tensors and shapes elsewhere). The memory check of
``blockwise_attention`` stays in the self-check: it has to watch the student's code run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from helpers.checks.generation_and_cost import (
    check_blocks,
    check_cache,
    check_online,
    check_sampling,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test


@hidden_test
def grade_sample_next_token(sample_next_token: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("sample_next_token")
    generator = fresh_generator(707)
    permutation = torch.randperm(6, generator=generator)
    seeds = torch.randint(0, 2**31, (6,), generator=generator).tolist()
    check_sampling(check, sample_next_token, permutation, seeds)
    check.passed()


@hidden_test
def grade_cached_attention_step(cached_attention_step: Callable[..., Any]) -> None:
    check = HiddenCheck("cached_attention_step")
    generator = fresh_generator(717)
    for B, H, t, dh, T in ((2, 3, 3, 4, 5), (1, 2, 6, 8, 7), (3, 1, 2, 5, 4)):
        check_cache(check, cached_attention_step, generator, B=B, H=H, t=t, dh=dh, T=T)
    check.passed()


@hidden_test
def grade_online_softmax(online_softmax: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("online_softmax")
    generator = fresh_generator(727)
    check_online(check, online_softmax, generator, cases=(
        ((3, 11), 4), ((2, 2, 12), 5), ((3, 6), 1), ((4, 9), 3), ((2, 8), 8), ((2, 5), 7),
        ((1, 17), 6)))
    check.passed()


@hidden_test
def grade_blockwise_attention(blockwise_attention: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("blockwise_attention")
    generator = fresh_generator(737)
    check_blocks(check, blockwise_attention, generator, batch=(2, 2), d=6, cases=(
        (9, 7, 4, 3, False), (5, 11, 3, 4, False), (4, 4, 2, 1, False), (3, 6, 5, 8, False),
        (12, 12, 4, 5, True), (7, 7, 3, 2, True), (6, 6, 4, 6, True), (5, 10, 3, 4, True),
        (10, 5, 3, 3, True)))
    check.passed()
