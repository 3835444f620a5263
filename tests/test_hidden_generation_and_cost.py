"""Hidden tests and self-checks of tutorial 07 against the solution, common mistakes and
other correct answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks
from notebook_code import as_cell as notebook_cell
from notebook_code import solution_namespace

from helpers.checks.generation_and_cost import (
    check_blockwise_attention,
    check_cached_attention_step,
    check_online_softmax,
    check_sample_next_token,
)
from hidden_tests.common import set_salt
from hidden_tests.generation_and_cost import (
    grade_blockwise_attention,
    grade_cached_attention_step,
    grade_online_softmax,
    grade_sample_next_token,
)
from sample_mistakes import sample_mistakes

SOLUTION = solution_namespace("07_generation_and_cost")
INF = float("-inf")


def not_implemented(*args, **kwargs):
    raise NotImplementedError


def as_cell(source: str, name: str):
    """``name`` defined from ``source`` as a notebook cell of this tutorial would define it."""
    return notebook_cell(source, name, {"torch": torch, "math": math, "INF": INF}, cell=7)


# ---- sampling -------------------------------------------------------------------------------

def _validated(temperature):
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def sample_with_replacement(logits, temperature=1.0, top_k=None, generator=None):
    _validated(temperature)
    z = logits / temperature
    if top_k is not None:
        z = torch.where(z >= z.topk(top_k, dim=-1).values[:, -1:], z, torch.tensor(INF))
    return torch.multinomial(z.softmax(-1), 1, replacement=True, generator=generator)[:, 0]


def sample_unnormalised(logits, temperature=1.0, top_k=None, generator=None):
    """multinomial accepts weights that do not sum to 1."""
    _validated(temperature)
    z = logits / temperature
    weights = torch.exp(z - z.amax(-1, keepdim=True))
    if top_k is not None:
        index = z.topk(top_k, dim=-1).indices
        weights = torch.zeros_like(weights).scatter(-1, index, weights.gather(-1, index))
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def sample_power(logits, temperature=1.0, top_k=None, generator=None):
    """p ** (1 / T), renormalised, is softmax(z / T)."""
    _validated(temperature)
    p = torch.softmax(logits.double(), -1) ** (1 / temperature)
    if top_k is not None:
        p = p * (p >= p.topk(top_k, -1).values[:, -1:])
    return torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=generator).view(-1)


def sample_argmax(logits, temperature=1.0, top_k=None, generator=None):
    _validated(temperature)
    return logits.argmax(-1)


def sample_over_batch(logits, temperature=1.0, top_k=None, generator=None):
    _validated(temperature)
    return torch.multinomial(torch.softmax(logits / temperature, dim=0), 1,
                             generator=generator).squeeze(-1)


def sample_multiplied(logits, temperature=1.0, top_k=None, generator=None):
    return SOLUTION["sample_next_token"](logits * temperature**2, temperature, top_k, generator)


def sample_after_softmax(logits, temperature=1.0, top_k=None, generator=None):
    _validated(temperature)
    p = torch.softmax(logits, -1) / temperature
    if top_k is not None:
        p = p * (p >= p.topk(top_k, -1).values[:, -1:])
    return torch.multinomial(p, 1, generator=generator).squeeze(-1)


def _with_mask(keep_fn, fill=INF, name="sample"):
    def sample(logits, temperature=1.0, top_k=None, generator=None):
        _validated(temperature)
        z = logits / temperature
        if top_k is not None:
            z = z.masked_fill(~keep_fn(z, top_k), fill)
        return torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(-1)
    sample.__name__ = name
    return sample


def _largest(z, k):
    return z >= z.topk(k, -1).values[:, -1:]


sample_k_plus_one = _with_mask(lambda z, k: z >= z.topk(k + 1, -1).values[:, -1:],
                               name="k_plus_one")
sample_smallest_k = _with_mask(lambda z, k: z <= z.topk(k, -1, largest=False).values[:, -1:],
                               name="smallest_k")
sample_zero_fill = _with_mask(_largest, fill=0.0, name="zero_fill")
sample_top_k_ignored = _with_mask(lambda z, k: torch.ones_like(z, dtype=torch.bool),
                                  name="top_k_ignored")


sample_k_minus_one = _with_mask(lambda z, k: z > z.topk(k, -1).values[:, -1:],
                                name="k_minus_one")
sample_first_row_threshold = _with_mask(lambda z, k: z >= z.topk(k, -1).values[0, -1],
                                        name="first_row_threshold")


def sample_temperature_only_without_top_k(logits, temperature=1.0, top_k=None, generator=None):
    if top_k is not None:
        return SOLUTION["sample_next_token"](logits, 1.0, top_k, generator)
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_position_in_top_k(logits, temperature=1.0, top_k=None, generator=None):
    if top_k is None:
        return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)
    _validated(temperature)
    values = (logits / temperature).topk(top_k, dim=-1).values
    return torch.multinomial(values.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_top_k_gather(logits, temperature=1.0, top_k=None, generator=None):
    """Correct: draw a position among the top k, then map it back to its token id."""
    _validated(temperature)
    z = logits / temperature
    if top_k is None:
        return torch.multinomial(z.softmax(-1), 1, generator=generator).squeeze(-1)
    values, index = z.topk(top_k, dim=-1)
    position = torch.multinomial(values.softmax(-1), 1, generator=generator)
    return index.gather(-1, position).squeeze(-1)


def sample_no_generator(logits, temperature=1.0, top_k=None, generator=None):
    return SOLUTION["sample_next_token"](logits, temperature, top_k, None)


def sample_keeps_axis(logits, temperature=1.0, top_k=None, generator=None):
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)[:, None]


def sample_in_place(logits, temperature=1.0, top_k=None, generator=None):
    _validated(temperature)
    logits /= temperature
    return SOLUTION["sample_next_token"](logits, 1.0, top_k, generator)


def sample_no_validation(logits, temperature=1.0, top_k=None, generator=None):
    z = logits / temperature if temperature else logits.clone()
    return _with_mask(_largest)(z, 1.0, top_k, generator)


def sample_vague_error(logits, temperature=1.0, top_k=None, generator=None):
    if temperature <= 0:
        raise ValueError("bad input")
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_off_a_little(logits, temperature=1.0, top_k=None, generator=None):
    """Wrong in a way no diagnosis describes: a token's logit is raised."""
    raised = logits + (torch.arange(logits.shape[-1]) == 2).to(logits.dtype)
    return SOLUTION["sample_next_token"](raised, temperature, top_k, generator)


def sample_gumbel_max(logits, temperature=1.0, top_k=None, generator=None):
    """Correct: the argmax of the logits plus Gumbel noise drawn from the generator."""
    _validated(temperature)
    z = logits.double() / temperature
    if top_k is not None:
        z = z.masked_fill(z < z.topk(top_k, -1).values[:, -1:], INF)
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64,
                   device=z.device).clamp_min(1e-300)
    return (z - torch.log(-torch.log(u))).argmax(-1)


def sample_inverse_cdf(logits, temperature=1.0, top_k=None, generator=None):
    """Correct: one uniform number per row from the generator, looked up in the cumulative
    probabilities."""
    _validated(temperature)
    z = logits.double() / temperature
    if top_k is not None:
        z = z.masked_fill(z < z.topk(top_k, -1).values[:, -1:], INF)
    cdf = torch.softmax(z, -1).cumsum(-1)
    u = torch.rand(len(z), 1, generator=generator, dtype=torch.float64,
                   device=z.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=z.shape[-1] - 1)


# ---- sampling: answers that match the frequencies without being random draws ----------------

def _right_probabilities(logits, temperature, top_k):
    _validated(temperature)
    z = logits.double() / temperature
    if top_k is not None:
        z = z.masked_fill(z < z.topk(top_k, -1).values[:, -1:], INF)
    return torch.softmax(z, -1)


def _look_up(probabilities, u):
    cdf = probabilities.cumsum(-1)
    return torch.searchsorted(cdf, u[:, None] * cdf[:, -1:]).squeeze(-1).clamp(
        max=probabilities.shape[-1] - 1)


def sample_golden_ratio(logits, temperature=1.0, top_k=None, generator=None):
    """A low-discrepancy sequence (i·φ mod 1) shifted by one random number: the right
    frequencies and a different result for every seed, but no independent draws."""
    p = _right_probabilities(logits, temperature, top_k)
    start = torch.rand((), generator=generator, dtype=torch.float64)
    return _look_up(p, (start + torch.arange(len(p)) * 0.6180339887498949) % 1.0)


def sample_shuffled_quota(logits, temperature=1.0, top_k=None, generator=None):
    """Each distinct row hands out its tokens in proportion to the probabilities (n·p_i of
    token i), in an order shuffled by the generator: the frequencies are exact."""
    p = _right_probabilities(logits, temperature, top_k)
    _, group = torch.unique(p, dim=0, return_inverse=True)
    out = torch.empty(len(p), dtype=torch.long)
    for g in group.unique():
        where = (group == g).nonzero().flatten()
        u = (torch.arange(len(where), dtype=torch.float64) + 0.5) / len(where)
        order = torch.randperm(len(where), generator=generator)
        out[where[order]] = _look_up(p[where], u)
    return out


def sample_own_seed(logits, temperature=1.0, top_k=None, generator=None):
    """Draws from a generator of its own, seeded the same way every time."""
    p = _right_probabilities(logits, temperature, top_k)
    return torch.multinomial(p, 1, generator=torch.Generator().manual_seed(0)).squeeze(-1)


def sample_initial_seed(logits, temperature=1.0, top_k=None, generator=None):
    """Re-seeds from the generator's initial seed: every step of a generation loop would
    draw the same random numbers."""
    p = _right_probabilities(logits, temperature, top_k)
    if generator is not None:
        generator = torch.Generator().manual_seed(generator.initial_seed())
    return torch.multinomial(p, 1, generator=generator).squeeze(-1)


def sample_only_fixed_knobs(logits, temperature=1.0, top_k=None, generator=None):
    """Right for the temperatures 0.5 and 1 only (any other temperature is 0.5 or 1)."""
    _validated(temperature)
    return SOLUTION["sample_next_token"](logits, 0.5 if temperature < 1 else 1.0, top_k,
                                         generator)


def sample_small_leak(logits, temperature=1.0, top_k=None, generator=None):
    """A 3% mixture of the uniform distribution: every frequency within 0.04 of the right
    one, but tokens outside the top k are drawn."""
    p = 0.97 * _right_probabilities(logits, temperature, top_k) + 0.03 / logits.shape[-1]
    return torch.multinomial(p, 1, generator=generator).squeeze(-1)


def sample_squeezed(logits, temperature=1.0, top_k=None, generator=None):
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)[:, None].squeeze()


def sample_rejects_fixed_temperatures(logits, temperature=1.0, top_k=None, generator=None):
    if temperature in (0.0, -1.0):
        raise ValueError(f"bad temperature {temperature}")
    return SOLUTION["sample_next_token"](logits, abs(temperature) or 1.0, top_k, generator)


def sample_reseeds(logits, temperature=1.0, top_k=None, generator=None):
    """Seeds the global generator "for reproducibility" when no generator is given."""
    if generator is None:
        torch.manual_seed(0)
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_reseeds_with_initial_seed(logits, temperature=1.0, top_k=None, generator=None):
    """Reseeds with the seed already set, "to stay reproducible": every call without a
    generator draws the same numbers."""
    if generator is None:
        torch.manual_seed(torch.initial_seed())
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_torch_seed(logits, temperature=1.0, top_k=None, generator=None):
    """Calls torch.seed() when no generator is given: the global generator is reseeded
    from the clock."""
    if generator is None:
        torch.seed()
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_fixed_generator(logits, temperature=1.0, top_k=None, generator=None):
    """Replaces a given generator by one of its own, always seeded alike."""
    if generator is not None:
        generator = torch.Generator().manual_seed(1234)
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_reseeds_generator(logits, temperature=1.0, top_k=None, generator=None):
    """A student's mistake: reseeds the generator passed in "for reproducibility"."""
    if generator is not None:
        generator.manual_seed(0)
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_copying_generator(logits, temperature=1.0, top_k=None, generator=None):
    """Draws from a copy of the generator's state "so that the caller's generator is left
    as it was": the next call draws the same numbers again."""
    if generator is not None:
        copy = torch.Generator()
        copy.set_state(generator.get_state())
        generator = copy
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator)


def sample_int32(logits, temperature=1.0, top_k=None, generator=None):
    return SOLUTION["sample_next_token"](logits, temperature, top_k, generator).int()


def sample_cpu_mask(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: the -inf filler made with torch.full, on the CPU."""
    _validated(temperature)
    z = logits / temperature
    if top_k is not None:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = torch.where(z < kth, torch.full(z.shape, INF), z)
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(-1)


def sample_kth_axis_dropped(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: values[:, -1] drops the axis the comparison needs."""
    _validated(temperature)
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(z < torch.topk(z, top_k, dim=-1).values[:, -1], INF)
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(-1)


def sample_own_k(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: with top_k given, keeps the 5 largest whatever top_k says."""
    return SOLUTION["sample_next_token"](logits, temperature, None if top_k is None else 5,
                                         generator)


def sample_temperature_twice(logits, temperature=1.0, top_k=None, generator=None):
    return SOLUTION["sample_next_token"](logits / temperature, temperature, top_k, generator)


def sample_top_k_one_ignored(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: top_k=1 taken for "no top-k"."""
    return SOLUTION["sample_next_token"](logits, temperature, None if top_k == 1 else top_k,
                                         generator)


def sample_softmax_by_hand(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: the softmax written out, without the row's maximum subtracted."""
    _validated(temperature)
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(~_largest(z, top_k), INF)
    e = z.exp()
    return torch.multinomial(e / e.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)


sample_largest_only = _with_mask(lambda z, k: z >= z.topk(k, -1).values[:, :1],
                                 name="largest_only")
sample_top_k_down_batch = _with_mask(
    lambda z, k: z >= z.topk(min(k, z.shape[0]), 0).values[-1:, :], name="top_k_down_batch")


def sample_top_k_over_batch(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: the k-th largest of the whole batch as every row's threshold."""
    _validated(temperature)
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(z < torch.topk(z.flatten(), top_k).values[-1], INF)
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(-1)


def sample_sorted_ids(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: drawn from the sorted row, the position returned as the id."""
    _validated(temperature)
    z = (logits / temperature).sort(dim=-1, descending=True).values
    if top_k is not None:
        z = torch.cat([z[:, :top_k], torch.full_like(z[:, top_k:], INF)], dim=-1)
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(-1)


def sample_kthvalue(logits, temperature=1.0, top_k=None, generator=None):
    """A student's answer: torch.kthvalue, which counts from the smallest."""
    _validated(temperature)
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(z < torch.kthvalue(z, top_k, dim=-1, keepdim=True).values, INF)
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(-1)


SAMPLE_CORRECT = [sample_with_replacement, sample_unnormalised, sample_power,
                  sample_top_k_gather, sample_gumbel_max, sample_inverse_cdf]
SAMPLE_MISTAKES = [
    (sample_argmax, "argmax", "distribution"),
    (sample_over_batch, "over the batch", "distribution"),
    (sample_off_a_little, None, "distribution"),
    (sample_multiplied, "multiplied by the temperature", "temperature"),
    (sample_after_softmax, "temperature had no effect", "temperature"),
    (sample_temperature_only_without_top_k, "with top_k given, the temperature had no effect",
     "temperature"),
    (sample_no_validation, "no ValueError", "temperature"),
    (sample_vague_error, "does not say what was wrong", "temperature"),
    (sample_k_plus_one, "top_k + 1", "top_k"),
    (sample_k_minus_one, "top_k - 1", "top_k"),
    (sample_position_in_top_k, "position within the top k", "top_k"),
    (sample_first_row_threshold, "of the first row", "top_k"),
    (sample_smallest_k, "the k smallest logits were kept", "top_k"),
    (sample_zero_fill, "0 instead of -inf", "top_k"),
    (sample_top_k_ignored, "top_k had no effect", "top_k"),
    (sample_small_leak, None, "top_k"),
    (sample_no_generator, "generator was ignored", "randomness"),
    (sample_reseeds, "two global seeds gave the same samples", "randomness"),
    (sample_own_seed, "two global seeds gave the same samples", "randomness"),
    (sample_reseeds_with_initial_seed, "two global seeds gave the same samples", "randomness"),
    (sample_torch_seed, "the same global seed gave different samples", "randomness"),
    (sample_fixed_generator, "seeded differently gave the same samples", "randomness"),
    (sample_reseeds_generator, "seeded differently gave the same samples", "randomness"),
    (sample_initial_seed, "initial_seed", "randomness"),
    (sample_copying_generator, "a copy of the generator's state", "randomness"),
    (sample_keeps_axis, "remove that last axis", "shape"),
    (sample_squeezed, ".squeeze() removed the batch axis", "shape"),
    (sample_int32, "not int64", "shape"),
    (sample_in_place, "in place", "unchanged"),
    (sample_cpu_mask, "device=", "device"),
    (sample_kth_axis_dropped, "lost its axis", "top_k"),
    (sample_own_k, "other than top_k", "top_k"),
    (sample_temperature_twice, "divided by the temperature twice", "temperature"),
    (sample_top_k_one_ignored, "top_k had no effect", "top_k"),
    (sample_softmax_by_hand, "overflows once logit / temperature", "temperature"),
    (sample_largest_only, "only the largest logit of each row survived", "top_k"),
    (sample_top_k_down_batch, "down the batch (dim=0)", "top_k"),
    (sample_top_k_over_batch, "over the whole batch at once", "top_k"),
    (sample_sorted_ids, "positions in the row sorted by probability", "distribution"),
    (sample_kthvalue, "top_k had no effect", "top_k"),
]
SAMPLE_BANKS = ExerciseBanks(
    solution=SOLUTION["sample_next_token"],
    correct=SAMPLE_CORRECT,
    check=SAMPLE_MISTAKES,
    hidden=[
        *SAMPLE_MISTAKES,
        (sample_golden_ratio, "not independent", "distribution"),
        (sample_shuffled_quota, "more evenly than random draws", "distribution"),
        (sample_only_fixed_knobs, None, "temperature"),
        (sample_rejects_fixed_temperatures, "no ValueError", "temperature"),
    ],
)


@pytest.mark.parametrize("salt", [1, 2**40 + 17, 987654321987])
@pytest.mark.parametrize("candidate", [SOLUTION["sample_next_token"], sample_gumbel_max])
def test_right_samplers_pass_the_hidden_test_under_other_salts(candidate, salt):
    """The statistical checks leave a right answer a chance below 1e-9 to fail, whatever
    the inputs drawn while grading."""
    set_salt(salt)
    try:
        grade_sample_next_token(candidate)
    finally:
        set_salt(0)


@pytest.mark.parametrize("candidate", [sample_golden_ratio, sample_shuffled_quota,
                                       sample_own_seed, sample_initial_seed,
                                       sample_fixed_generator, sample_reseeds_generator,
                                       sample_only_fixed_knobs, sample_small_leak])
def test_samplers_that_only_look_right_fail_under_other_salts(candidate):
    set_salt(2**40 + 17)
    try:
        with pytest.raises(AssertionError):
            grade_sample_next_token(candidate)
    finally:
        set_salt(0)


# ---- the KV cache ---------------------------------------------------------------------------

def _step(order="last", dim=-2, scale="sqrt", softmax_dim=-1, attend="all", returned="new",
          swap=False):
    def cached_attention_step(q, k_new, v_new, cache=None):
        if cache is None:
            K, V = k_new, v_new
        elif order == "last":
            K, V = torch.cat([cache[0], k_new], dim=dim), torch.cat([cache[1], v_new], dim=dim)
        else:
            K, V = torch.cat([k_new, cache[0]], dim=dim), torch.cat([v_new, cache[1]], dim=dim)
        keys, values = {"all": (K, V), "old": cache or (K, V), "new": (k_new, v_new)}[attend]
        factor = {"sqrt": 1 / math.sqrt(q.shape[-1]), "none": 1.0, "dh": 1 / q.shape[-1]}[scale]
        out = torch.softmax(q @ keys.transpose(-2, -1) * factor, dim=softmax_dim) @ values
        new_cache = {"new": (K, V), "old": cache, "entry": (k_new, v_new), "none": None}[returned]
        if swap and new_cache is not None:
            new_cache = new_cache[::-1]
        return out, new_cache
    cached_attention_step.__name__ = f"step_{order}_{dim}_{scale}_{softmax_dim}_{attend}_{returned}_{swap}"
    return cached_attention_step


def step_einsum(q, k_new, v_new, cache=None):
    K = k_new if cache is None else torch.cat((cache[0], k_new), 2)
    V = v_new if cache is None else torch.cat((cache[1], v_new), 2)
    w = torch.einsum("bhqd,bhkd->bhqk", q, K).div(q.shape[-1] ** 0.5).softmax(-1)
    return torch.einsum("bhqk,bhkd->bhqd", w, V), (K, V)


def step_sdpa(q, k_new, v_new, cache=None):
    K, V = (k_new, v_new) if cache is None else (torch.cat([cache[0], k_new], -2),
                                                 torch.cat([cache[1], v_new], -2))
    return F.scaled_dot_product_attention(q, K, V), [K, V]


def step_none_unhandled(q, k_new, v_new, cache=None):
    K, V = torch.cat([cache[0], k_new], dim=-2), torch.cat([cache[1], v_new], dim=-2)
    return F.scaled_dot_product_attention(q, K, V), (K, V)


def step_sdpa_causal(q, k_new, v_new, cache=None):
    K, V = (k_new, v_new) if cache is None else (torch.cat([cache[0], k_new], -2),
                                                 torch.cat([cache[1], v_new], -2))
    return F.scaled_dot_product_attention(q, K, V, is_causal=True), (K, V)


def step_keys_as_values(q, k_new, v_new, cache=None):
    K, V = (k_new, v_new) if cache is None else (torch.cat([cache[0], k_new], -2),
                                                 torch.cat([cache[1], v_new], -2))
    return F.scaled_dot_product_attention(q, K, K), (K, V)


def step_in_place(q, k_new, v_new, cache=None):
    out, new = SOLUTION["cached_attention_step"](q, k_new, v_new, cache)
    q.mul_(2)
    return out, new


def step_shifted(q, k_new, v_new, cache=None):
    out, new = SOLUTION["cached_attention_step"](q, k_new, v_new, cache)
    return out + 0.1, new


def step_window(q, k_new, v_new, cache=None):
    """Keeps only the last 32 entries (a sliding window): right for short caches only."""
    out, (K, V) = SOLUTION["cached_attention_step"](q, k_new, v_new, cache)
    K, V = K[..., -32:, :], V[..., -32:, :]
    return F.scaled_dot_product_attention(q, K, V), (K, V)


def step_query_axis_dropped(q, k_new, v_new, cache=None):
    out, new = SOLUTION["cached_attention_step"](q, k_new, v_new, cache)
    return out.squeeze(-2), new


def step_float32(q, k_new, v_new, cache=None):
    """Attention in float32 "for stability", never converted back."""
    out, new = SOLUTION["cached_attention_step"](q.float(), k_new.float(), v_new.float(),
                                                 None if cache is None else
                                                 (cache[0].float(), cache[1].float()))
    return out, (new[0].to(k_new.dtype), new[1].to(v_new.dtype))


def step_grows_cache_in_place(q, k_new, v_new, cache=None):
    """Grows the caller's cache tensors in place (their .data replaced), so that the old
    cache is the new one too."""
    if cache is None:
        return SOLUTION["cached_attention_step"](q, k_new, v_new, None)
    K, V = cache
    K.data = torch.cat([K.data, k_new], dim=-2)
    V.data = torch.cat([V.data, v_new], dim=-2)
    weights = torch.softmax(q @ K.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ V, (K, V)


def step_empty_cache_on_cpu(q, k_new, v_new, cache=None):
    """A student's answer: an empty cache of zeros for the first step, made on the CPU (in
    the dtype of q)."""
    B, H, _, d = q.shape
    K, V = cache if cache is not None else (torch.zeros(B, H, 0, d, dtype=q.dtype),
                                            torch.zeros(B, H, 0, d, dtype=q.dtype))
    return SOLUTION["cached_attention_step"](q, k_new, v_new, (K, V))


def step_empty_cache_float32(q, k_new, v_new, cache=None):
    """A student's answer: an empty cache of zeros on q's device in the default float32:
    torch.cat promotes float32 to float64, but bfloat16 to float32."""
    B, H, _, d = q.shape
    K, V = cache if cache is not None else (torch.zeros(B, H, 0, d, device=q.device),
                                            torch.zeros(B, H, 0, d, device=q.device))
    return SOLUTION["cached_attention_step"](q, k_new, v_new, (K, V))


def step_scaled_by_length(q, k_new, v_new, cache=None):
    """A student's answer: scores scaled by 1/sqrt(number of keys)."""
    K = k_new if cache is None else torch.cat([cache[0], k_new], dim=-2)
    V = v_new if cache is None else torch.cat([cache[1], v_new], dim=-2)
    weights = torch.softmax(q @ K.transpose(-2, -1) / math.sqrt(K.shape[-2]), dim=-1)
    return weights @ V, (K, V)


def step_new_entries_crossed(q, k_new, v_new, cache=None):
    """A student's answer: the new value appended to the keys and the new key to the values."""
    if cache is None:
        return SOLUTION["cached_attention_step"](q, k_new, v_new, None)
    K, V = torch.cat([cache[0], v_new], dim=-2), torch.cat([cache[1], k_new], dim=-2)
    return F.scaled_dot_product_attention(q, K, V), (K, V)


# A student's answer: K.T on a tensor of four axes.
step_all_axes_reversed = as_cell("""
def step_all_axes_reversed(q, k_new, v_new, cache=None):
    K = k_new if cache is None else torch.cat([cache[0], k_new], dim=-2)
    V = v_new if cache is None else torch.cat([cache[1], v_new], dim=-2)
    scores = q @ K.T / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ V, (K, V)
""", "step_all_axes_reversed")


def step_scores_squeezed(q, k_new, v_new, cache=None):
    """A student's answer: the scores squeezed to (B, H, t + 1), the query axis put back at
    the end."""
    K, V = (k_new, v_new) if cache is None else (torch.cat([cache[0], k_new], -2),
                                                 torch.cat([cache[1], v_new], -2))
    w = torch.softmax((q @ K.transpose(-2, -1)).squeeze() / math.sqrt(q.shape[-1]), -1)
    return w.unsqueeze(-2) @ V, (K, V)


def step_times_sqrt(q, k_new, v_new, cache=None):
    K, V = (k_new, v_new) if cache is None else (torch.cat([cache[0], k_new], -2),
                                                 torch.cat([cache[1], v_new], -2))
    w = torch.softmax(q @ K.transpose(-2, -1) * math.sqrt(q.shape[-1]), -1)
    return w @ V, (K, V)


@torch.no_grad()
def step_no_grad(q, k_new, v_new, cache=None):
    """Right: the contract asks for no gradients (decoding runs without them)."""
    K, V = (k_new, v_new) if cache is None else (torch.cat([cache[0], k_new], -2),
                                                 torch.cat([cache[1], v_new], -2))
    return torch.softmax(q @ K.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ V, (K, V)


STEP_MISTAKES = [
    (_step(order="first"), "new entry was put first", "cache"),
    (_step(dim=-1), "wrong axis", "cache"),
    (_step(returned="old"), "came back unchanged", "cache"),
    (_step(returned="entry"), "holds only the new entry", "cache"),
    (_step(returned="none"), "was not returned", "cache"),
    (_step(swap=True), "swapped", "cache"),
    (step_none_unhandled, "cache=None", "cache"),
    (_step(scale="none"), "not scaled", "values"),
    (_step(scale="dh"), "divided by dh", "values"),
    (_step(softmax_dim=-2), "query axis (dim=-2", "values"),
    (_step(attend="old"), "left out of the attention", "values"),
    (_step(attend="new"), "only the new key was attended", "values"),
    (step_sdpa_causal, "is_causal=True", "values"),
    (step_keys_as_values, "keys were used as values", "values"),
    (step_shifted, None, "values"),
    (step_query_axis_dropped, "query axis of size 1 was removed", "shape"),
    (step_float32, "converted to another dtype", "dtype"),
    (step_in_place, "changed in place", "unchanged"),
    (step_grows_cache_in_place, "changed in place", "unchanged"),
    (step_empty_cache_on_cpu, "device=", "device"),
    (step_scaled_by_length, "1/sqrt(t + 1)", "values"),
    (step_new_entries_crossed, "new key was appended to the values", "cache"),
    (step_all_axes_reversed, "reverses all four axes", "values"),
    (step_scores_squeezed, "after an axis was removed", "values"),
    (step_times_sqrt, "multiplied by sqrt(dh)", "values"),
]
STEP_BANKS = ExerciseBanks(
    solution=SOLUTION["cached_attention_step"],
    correct=[_step(), step_einsum, step_sdpa, step_no_grad],
    check=[*STEP_MISTAKES, (step_empty_cache_float32, "different dtypes met", "dtype")],
    hidden=[*STEP_MISTAKES, (step_window, None, "cache")],
)


def test_a_cache_kept_short_passes_the_self_check_only():
    """The self-check's caches are short; the hidden test's long one catches a window."""
    check_cached_attention_step(step_window)


def test_a_cache_on_the_wrong_axis_is_named_even_when_it_crashes():
    for dim in (0, 1, -1):
        with pytest.raises(AssertionError, match="wrong axis"):
            grade_cached_attention_step(_step(dim=dim))


# ---- online softmax -------------------------------------------------------------------------

def _online(rescale=True, subtract=True, stop="all", overlap=0, each_block=False,
            inverted=False, start=INF, one_max=False, last_block_max=False,
            block_max_only=False):
    def online_softmax(x, block_size):
        if each_block:
            return torch.cat([b.softmax(-1) for b in x.split(block_size, -1)], -1)
        T = x.shape[-1]
        m = torch.full(x.shape[:-1] + (1,), start)
        s = torch.zeros(x.shape[:-1] + (1,))
        end = T if stop == "all" else T // block_size * block_size
        for i in range(0, end, block_size):
            b = x[..., i:i + block_size + overlap]
            block_max = b.amax() if one_max else b.amax(-1, keepdim=True)
            if block_max_only:
                new = block_max
            else:
                new = torch.maximum(m, block_max) if subtract else torch.zeros_like(m)
            if inverted:
                c = torch.exp(new - m).nan_to_num(0.0, 0.0, 0.0)
            else:
                c = torch.exp(m - new) if rescale and subtract else 1.0
            s = s * c + torch.exp(b - new).sum(-1, keepdim=True)
            m = new
        return torch.exp(x - (block_max if last_block_max else m)) / s
    online_softmax.__name__ = (f"online_{rescale}_{subtract}_{stop}_{overlap}_{each_block}_"
                               f"{inverted}_{start}_{one_max}_{last_block_max}_"
                               f"{block_max_only}")
    return online_softmax


def online_first_axis(x, block_size):
    m = torch.full(x.shape[:-1] + (1,), INF)
    s = torch.zeros_like(m)
    for i in range(0, x.shape[0], block_size):
        b = x[i:i + block_size]
        new = torch.maximum(m, b.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(b - new).sum(-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


def online_two_pass(x, block_size):
    """Correct, though not one pass."""
    m = torch.stack([b.amax(-1) for b in x.split(block_size, -1)], -1).amax(-1, keepdim=True)
    s = sum(torch.exp(b - m).sum(-1, keepdim=True) for b in x.split(block_size, -1))
    return torch.exp(x - m) / s


def online_logsumexp(x, block_size):
    lse = torch.full(x.shape[:-1], INF, dtype=x.dtype, device=x.device)
    for b in x.split(block_size, -1):
        lse = torch.logaddexp(lse, torch.logsumexp(b, -1))
    return torch.exp(x - lse.unsqueeze(-1))


def online_loop(x, block_size):
    """One element at a time, whatever block_size says: right values, but not in blocks."""
    m = torch.full(x.shape[:-1], INF, dtype=x.dtype, device=x.device)
    s = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block_size):
        for j in range(start, min(start + block_size, x.shape[-1])):
            new = torch.maximum(m, x[..., j])
            s = s * torch.exp(m - new) + torch.exp(x[..., j] - new)
            m = new
    return torch.exp(x - m[..., None]) / s[..., None]


def online_inverse_factor(x, block_size):
    """A student's mistake: the factor written the other way round, exp(m' - m)."""
    m = torch.full(x.shape[:-1] + (1,), INF, dtype=x.dtype, device=x.device)
    s = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]
        new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
        s = s * torch.exp(new - m) + torch.exp(block - new).sum(dim=-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


def online_inverse_factor_guarded(x, block_size):
    """A student's answer: the inverse factor, with the first block special-cased."""
    m = torch.full(x.shape[:-1] + (1,), INF, dtype=x.dtype, device=x.device)
    s = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]
        new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
        factor = torch.exp(new - m) if start else 0.0
        s = s * factor + torch.exp(block - new).sum(dim=-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


def online_one_number(x, block_size):
    """A student's answer: m and s as Python numbers, one for the whole tensor."""
    m, s = float("-inf"), 0.0
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]
        new = max(m, block.max().item())
        s = s * math.exp(m - new) + torch.exp(block - new).sum().item()
        m = new
    return torch.exp(x - m) / s


def online_blocks_of_rows(x, block_size):
    """A student's answer: blocks cut along the first axis, over the length of the rows."""
    m = torch.full(x.shape[:-1] + (1,), INF, dtype=x.dtype, device=x.device)
    s = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block_size):
        block = x[start:start + block_size]
        new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(block - new).sum(dim=-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


def online_float32(x, block_size):
    """Computes in float32 "to save memory", whatever the input."""
    return SOLUTION["online_softmax"](x.float(), block_size)


def online_cpu_statistics(x, block_size):
    """The running maximum and sum made on the CPU (x's dtype, not its device)."""
    m = torch.full(x.shape[:-1] + (1,), INF, dtype=x.dtype)
    s = torch.zeros(x.shape[:-1] + (1,), dtype=x.dtype)
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]
        new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(block - new).sum(dim=-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


def online_off_a_little(x, block_size):
    return SOLUTION["online_softmax"](x * 1.05, block_size)


def online_in_place(x, block_size):
    out = SOLUTION["online_softmax"](x, block_size)
    x.zero_()
    return out


def online_rows_only(x, block_size):
    """Right for x with at least one leading axis only (flatten(0, -2) needs two axes)."""
    return SOLUTION["online_softmax"](x.flatten(0, -2), block_size).view(x.shape)


def online_own_block_size(x, block_size):
    """A student's answer: right, in blocks of 16 whatever block_size says."""
    return SOLUTION["online_softmax"](x, 16)


def online_own_block_size_not_rescaled(x, block_size):
    """A student's answer: blocks of 16 whatever block_size says, the sum not rescaled; right
    for every row of at most 16."""
    return _online(rescale=False)(x, 16)


def online_builtin(x, block_size):
    return torch.softmax(x, dim=-1)


def online_stops_early(x, block_size):
    """A student's answer: range(0, T - block_size, block_size) misses the last block."""
    m = torch.full(x.shape[:-1] + (1,), INF, dtype=x.dtype, device=x.device)
    s = torch.zeros_like(m)
    for start in range(0, max(x.shape[-1] - block_size, 1), block_size):
        block = x[..., start:start + block_size]
        new = torch.maximum(m, block.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(block - new).sum(-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


def online_first_axis_softmax(x, block_size):
    """A student's answer: the right algorithm run down the first axis."""
    if x.dim() == 1:
        return SOLUTION["online_softmax"](x, block_size)
    return SOLUTION["online_softmax"](x.transpose(0, -1), block_size).transpose(0, -1)


def online_numerator_per_block(x, block_size):
    """A student's answer: each block's e^(x - m) taken with the running maximum of its time."""
    m = torch.full(x.shape[:-1] + (1,), INF, dtype=x.dtype, device=x.device)
    s = torch.zeros_like(m)
    parts = []
    for block in x.split(block_size, dim=-1):
        new = torch.maximum(m, block.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(block - new).sum(-1, keepdim=True)
        m = new
        parts.append(torch.exp(block - m))
    return torch.cat(parts, dim=-1) / s


def online_float32_statistics(x, block_size):
    """A student's answer: m and s made in float32 on x's device."""
    m = torch.full(x.shape[:-1] + (1,), INF, dtype=torch.float32, device=x.device)
    s = torch.zeros(x.shape[:-1] + (1,), dtype=torch.float32, device=x.device)
    for block in x.split(block_size, dim=-1):
        new = torch.maximum(m, block.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(block - new).sum(-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


def online_first_block_max_only(x, block_size):
    """A student's answer: the first block's maximum kept as the reference ("any constant
    cancels")."""
    m = x[..., :block_size].amax(-1, keepdim=True)
    s = torch.zeros_like(m)
    for i in range(0, x.shape[-1], block_size):
        s = s + torch.exp(x[..., i:i + block_size] - m).sum(-1, keepdim=True)
    return torch.exp(x - m) / s


def online_final_uses_first_m(x, block_size):
    """A student's answer: a right running sum, divided with the first block's maximum."""
    m = torch.full_like(x[..., :1], INF)
    s = torch.zeros_like(m)
    first = None
    for i in range(0, x.shape[-1], block_size):
        b = x[..., i:i + block_size]
        new = torch.maximum(m, b.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(b - new).sum(-1, keepdim=True)
        m = new
        first = m if first is None else first
    return torch.exp(x - first) / (s * torch.exp(m - first))


def online_skips_first_block(x, block_size):
    """A student's answer: the loop starts at the second block."""
    m = torch.full_like(x[..., :1], INF)
    s = torch.zeros_like(m)
    for i in range(block_size, x.shape[-1], block_size):
        b = x[..., i:i + block_size]
        new = torch.maximum(m, b.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(b - new).sum(-1, keepdim=True)
        m = new
    if x.shape[-1] <= block_size:
        m = x.amax(-1, keepdim=True)
        s = torch.exp(x - m).sum(-1, keepdim=True)
    return torch.exp(x - m) / s


def online_blocks_averaged(x, block_size):
    """A student's answer: each block's softmax, divided by the number of blocks."""
    blocks = x.split(block_size, -1)
    return torch.cat([b.softmax(-1) for b in blocks], -1) / len(blocks)


@torch.no_grad()
def online_no_grad(x, block_size):
    """Right: the contract asks for no gradients."""
    m = torch.full_like(x[..., :1], INF)
    s = torch.zeros_like(m)
    for b in x.split(block_size, -1):
        new = torch.maximum(m, b.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(b - new).sum(-1, keepdim=True)
        m = new
    return torch.exp(x - m) / s


ONLINE_MISTAKES = [
    (_online(rescale=False), "not rescaled", "values"),
    (_online(overlap=1), "counted again", "values"),
    (_online(each_block=True), "normalised on its own", "values"),
    (_online(inverted=True), "the sum comes out too large", "values"),
    (online_inverse_factor, "every entry is nan", "values"),
    (online_inverse_factor_guarded, "the sum comes out too large", "values"),
    (online_one_number, "a single maximum and a single sum", "values"),
    (online_blocks_of_rows, "came out empty", "values"),
    (_online(last_block_max=True), "maximum of the last block", "values"),
    (online_first_axis, "along the first axis", "values"),
    (online_rows_only, "a `dim` the tensor does not have", "values"),
    (online_off_a_little, None, "values"),
    (_online(stop="whole blocks"), "shorter block was left out", "blocks"),
    (online_own_block_size_not_rescaled, None, "blocks"),
    (_online(block_max_only=True), "each block's own maximum instead of the running",
     "falling"),
    (_online(subtract=False), "not subtracted", "large"),
    (_online(start=0.0), "started at 0", "large"),
    (_online(one_max=True), "over the whole tensor", "large"),
    (online_float32, "converted to another dtype", "dtype"),
    (online_cpu_statistics, "device=", "device"),
    (online_in_place, "in place", "unchanged"),
    (online_own_block_size, "made no difference", "blocks"),
    (online_loop, "made no difference", "blocks"),
    (online_builtin, "made no difference", "blocks"),
    (online_stops_early, "the loop stops before it", "values"),
    (online_first_axis_softmax, "along the first axis (dim=0)", "values"),
    (online_numerator_per_block, "running maximum of its own time", "values"),
    (online_first_block_max_only, "first block's maximum stayed the reference", "rising"),
    (online_final_uses_first_m, "first block's maximum stayed the reference", "rising"),
    (online_skips_first_block, "first block was left out", "values"),
    (online_blocks_averaged, "normalised on its own", "values"),
]
ONLINE_BANKS = ExerciseBanks(
    solution=SOLUTION["online_softmax"],
    correct=[online_two_pass, online_logsumexp, online_no_grad],
    check=[*ONLINE_MISTAKES, (online_float32_statistics, "promoted the bfloat16 result",
                                 "dtype")],
    hidden=ONLINE_MISTAKES,
)


def test_each_blocks_own_maximum_fails_on_a_falling_row():
    """[3, 1, -200] in blocks of 1: m drops to -200 and e^(m_old - m) overflows."""
    wrong = _online(block_max_only=True)
    assert torch.isnan(wrong(torch.tensor([[3.0, 1.0, -200.0]]), 1)).any()
    for grade in (check_online_softmax, grade_online_softmax):
        with pytest.raises(AssertionError, match="running maximum"):
            grade(wrong)


# ---- attention in blocks --------------------------------------------------------------------

def _blocks(scale="sqrt d", rescale_sum=True, rescale_output=True, fill=INF, shifted=True,
            diagonal=False, bottom_right=False, stop="all", divide_each_step=False,
            full=False, ignore_causal=False, on_device=False, inverted=False,
            divide_running=False, start=INF, always_causal=False, no_grad=False):
    """Attention in blocks, right or with one mistake; its running statistics are made on
    the CPU (in Q's dtype) unless ``on_device`` (then on Q's device)."""
    def blockwise_attention(Q, K, V, block_size, causal=False):
        causal = (causal or always_causal) and not ignore_causal
        Tq, Tk = Q.shape[-2], K.shape[-2]
        if full:
            (Q @ K.transpose(-2, -1)).sum()  # forms the whole score matrix, then ignores it
        factor = {"sqrt d": Q.shape[-1] ** -0.5, "none": 1.0, "d": 1 / Q.shape[-1],
                  "sqrt dv": V.shape[-1] ** -0.5, "times sqrt d": Q.shape[-1] ** 0.5}[scale]
        made = {"dtype": Q.dtype, "device": Q.device} if on_device else {"dtype": Q.dtype}
        m = torch.full(Q.shape[:-1] + (1,), start, **made)
        s = torch.zeros(Q.shape[:-1] + (1,), **made)
        o = torch.zeros(Q.shape[:-1] + (V.shape[-1],), **made)
        at = {"device": Q.device} if on_device else {}
        rows = torch.arange(Tq, **at)[:, None] + (Tk - Tq if bottom_right else 0)
        end = Tk if stop == "all" else Tk // block_size * block_size
        for i in range(0, end, block_size):
            k, v = K[..., i:i + block_size, :], V[..., i:i + block_size, :]
            x = Q @ k.transpose(-2, -1) * factor
            if causal:
                cols = torch.arange(k.shape[-2], **at) + (i if shifted else 0)
                x = x.masked_fill(cols < rows if inverted else cols >= rows if diagonal
                                  else cols > rows, fill)
            new = torch.maximum(m, x.amax(-1, keepdim=True))
            c = torch.exp(m - new)
            p = torch.exp(x - new)
            s = (s * c if rescale_sum else s) + p.sum(-1, keepdim=True)
            o = (o * c if rescale_output else o) + (p @ v / s if divide_each_step else p @ v)
            if divide_running:
                o = o / s
            m = new
        return o if divide_each_step or divide_running else o / s
    blockwise_attention.__name__ = (
        f"blocks_{scale}_{rescale_sum}_{rescale_output}_{fill}_{shifted}_{diagonal}_"
        f"{bottom_right}_{stop}_{divide_each_step}_{full}_{ignore_causal}_{on_device}_"
        f"{inverted}_{divide_running}_{start}_{always_causal}_{no_grad}")
    return torch.no_grad()(blockwise_attention) if no_grad else blockwise_attention


# A student's answer: K.T, right for K of two axes only.
blocks_all_axes_reversed = as_cell("""
def blocks_all_axes_reversed(Q, K, V, block_size, causal=False):
    m = torch.full(Q.shape[:-1] + (1,), INF, dtype=Q.dtype, device=Q.device)
    s = torch.zeros_like(m)
    o = torch.zeros(Q.shape[:-1] + (V.shape[-1],), dtype=Q.dtype, device=Q.device)
    rows = torch.arange(Q.shape[-2], device=Q.device)[:, None]
    for i in range(0, K.shape[-2], block_size):
        k, v = K[..., i:i + block_size, :], V[..., i:i + block_size, :]
        x = Q @ k.T / math.sqrt(Q.shape[-1])
        if causal:
            x = x.masked_fill(torch.arange(i, i + k.shape[-2], device=Q.device) > rows, INF)
        new = torch.maximum(m, x.amax(-1, keepdim=True))
        s = s * torch.exp(m - new) + torch.exp(x - new).sum(-1, keepdim=True)
        o = o * torch.exp(m - new) + torch.exp(x - new) @ v
        m = new
    return o / s
""", "blocks_all_axes_reversed")


def blocks_averaged(Q, K, V, block_size, causal=False):
    outs = [F.scaled_dot_product_attention(Q, K[..., i:i + block_size, :],
                                           V[..., i:i + block_size, :], is_causal=causal)
            for i in range(0, K.shape[-2], block_size)]
    return sum(outs) / len(outs)


def blocks_rescaled_each_step(Q, K, V, block_size, causal=False):
    """Correct: the output is kept normalised, rescaled by s_old e^(m - m') / s_new."""
    out = Q.new_zeros(Q.shape[:-1] + (V.shape[-1],))
    m = Q.new_full(Q.shape[:-1] + (1,), INF)
    s = Q.new_zeros(Q.shape[:-1] + (1,))
    rows = torch.arange(Q.shape[-2], device=Q.device)[:, None]
    for i in range(0, K.shape[-2], block_size):
        k, v = K[..., i:i + block_size, :], V[..., i:i + block_size, :]
        x = torch.einsum("...qd,...kd->...qk", Q, k) / math.sqrt(Q.shape[-1])
        if causal:
            x = x.masked_fill(torch.arange(i, i + k.shape[-2], device=Q.device) > rows, INF)
        new = torch.maximum(m, x.amax(-1, keepdim=True))
        p = torch.exp(x - new)
        new_s = s * torch.exp(m - new) + p.sum(-1, keepdim=True)
        out = out * (s * torch.exp(m - new) / new_s) + p @ v / new_s
        m, s = new, new_s
    return out


def blocks_logsumexp(Q, K, V, block_size, causal=False):
    """Correct: combine per-block attention outputs by their log-sum-exp."""
    outs, lses = [], []
    rows = torch.arange(Q.shape[-2], device=Q.device)[:, None]
    for i in range(0, K.shape[-2], block_size):
        k, v = K[..., i:i + block_size, :], V[..., i:i + block_size, :]
        x = Q @ k.transpose(-2, -1) / math.sqrt(Q.shape[-1])
        if causal:
            x = x.masked_fill(torch.arange(i, i + k.shape[-2], device=Q.device) > rows, INF)
        lse = torch.logsumexp(x, -1, keepdim=True)
        outs.append(torch.nan_to_num(torch.exp(x - lse)) @ v)
        lses.append(lse)
    weights = torch.softmax(torch.cat(lses, -1), -1)
    return sum(w.unsqueeze(-1) * o for w, o in zip(weights.unbind(-1), outs, strict=True))


def blocks_off_a_little(Q, K, V, block_size, causal=False):
    return SOLUTION["blockwise_attention"](Q, K, V * 1.1, block_size, causal)


def blocks_in_place(Q, K, V, block_size, causal=False):
    out = SOLUTION["blockwise_attention"](Q, K, V, block_size, causal)
    K.mul_(0)
    return out


def blocks_output_like_q(Q, K, V, block_size, causal=False):
    """The running output made with torch.zeros_like(Q): (..., Tq, d), not (..., Tq, dv)."""
    scale = Q.shape[-1] ** -0.5
    m = torch.full_like(Q[..., :1], INF)
    s = torch.zeros_like(Q[..., :1])
    out = torch.zeros_like(Q)
    for i in range(0, K.shape[-2], block_size):
        x = Q @ K[..., i:i + block_size, :].transpose(-2, -1) * scale
        new = torch.maximum(m, x.amax(-1, keepdim=True))
        p = torch.exp(x - new)
        s = s * torch.exp(m - new) + p.sum(-1, keepdim=True)
        out = out * torch.exp(m - new) + p @ V[..., i:i + block_size, :]
        m = new
    return out / s


def blocks_float32(Q, K, V, block_size, causal=False):
    """Converts its inputs to float32 "to be safe"."""
    return SOLUTION["blockwise_attention"](Q.float(), K.float(), V.float(), block_size, causal)


def blocks_four_axes(Q, K, V, block_size, causal=False):
    """Right for Q, K, V of four axes only (transpose(2, 3) is the last two of four)."""
    return SOLUTION["blockwise_attention"](Q, K.transpose(2, 3).transpose(2, 3), V,
                                           block_size, causal)


def blocks_fixed_scale(Q, K, V, block_size, causal=False):
    """The scale of d = 8, the size of the self-check's queries."""
    return SOLUTION["blockwise_attention"](Q * math.sqrt(Q.shape[-1] / 8), K, V, block_size,
                                           causal)


def blocks_own_block_size(Q, K, V, block_size, causal=False):
    """A student's answer: right, in blocks of 64 whatever block_size says."""
    return SOLUTION["blockwise_attention"](Q, K, V, 64, causal)


def blocks_own_block_size_not_rescaled(Q, K, V, block_size, causal=False):
    """A student's answer: blocks of 64, the sum and output not rescaled; right whenever
    Tk <= 64."""
    return _blocks(rescale_sum=False, rescale_output=False, on_device=True)(Q, K, V, 64, causal)


def blocks_over_queries(Q, K, V, block_size, causal=False):
    """A student's answer: blocks of queries, each against every key."""
    return torch.cat([F.scaled_dot_product_attention(
        Q[..., i:i + block_size, :], K, V,
        attn_mask=(torch.arange(K.shape[-2], device=Q.device)
                   <= torch.arange(i, min(i + block_size, Q.shape[-2]),
                                   device=Q.device)[:, None]) if causal else None)
        for i in range(0, Q.shape[-2], block_size)], dim=-2)


def blocks_max_not_subtracted(Q, K, V, block_size, causal=False):
    """A student's answer: e^score with no running maximum; right for small scores."""
    s = Q.new_zeros(Q.shape[:-1] + (1,))
    o = Q.new_zeros(Q.shape[:-1] + (V.shape[-1],))
    rows = torch.arange(Q.shape[-2], device=Q.device)[:, None]
    for i in range(0, K.shape[-2], block_size):
        x = Q @ K[..., i:i + block_size, :].transpose(-2, -1) / math.sqrt(Q.shape[-1])
        if causal:
            x = x.masked_fill(torch.arange(i, i + x.shape[-1], device=Q.device) > rows, INF)
        p = torch.exp(x)
        s = s + p.sum(-1, keepdim=True)
        o = o + p @ V[..., i:i + block_size, :]
    return o / s


def blocks_sdpa(Q, K, V, block_size, causal=False):
    """A student's answer: PyTorch's own attention, block_size unused (on a CPU its kernel
    makes no Tq x Tk tensor either)."""
    return F.scaled_dot_product_attention(Q, K, V, is_causal=causal)


def blocks_normalised_and_reset(Q, K, V, block_size, causal=False):
    """A student's answer: o divided by s after every block, and s reset to 1."""
    m = Q.new_full(Q.shape[:-1] + (1,), INF)
    s = Q.new_zeros(Q.shape[:-1] + (1,))
    o = Q.new_zeros(Q.shape[:-1] + (V.shape[-1],))
    rows = torch.arange(Q.shape[-2], device=Q.device)[:, None]
    for i in range(0, K.shape[-2], block_size):
        x = Q @ K[..., i:i + block_size, :].transpose(-2, -1) / math.sqrt(Q.shape[-1])
        if causal:
            x = x.masked_fill(torch.arange(i, i + x.shape[-1], device=Q.device) > rows, INF)
        new = torch.maximum(m, x.amax(-1, keepdim=True))
        p, c = torch.exp(x - new), torch.exp(m - new)
        s = s * c + p.sum(-1, keepdim=True)
        o = (o * c + p @ V[..., i:i + block_size, :]) / s
        s = torch.ones_like(s)
        m = new
    return o


def blocks_float32_output(Q, K, V, block_size, causal=False):
    """A student's answer: the running output made on Q's device in the default float32."""
    m = Q.new_full(Q.shape[:-1] + (1,), INF)
    s = Q.new_zeros(Q.shape[:-1] + (1,))
    o = torch.zeros(Q.shape[:-1] + (V.shape[-1],), device=Q.device)
    rows = torch.arange(Q.shape[-2], device=Q.device)[:, None]
    for i in range(0, K.shape[-2], block_size):
        x = Q @ K[..., i:i + block_size, :].transpose(-2, -1) / math.sqrt(Q.shape[-1])
        if causal:
            x = x.masked_fill(torch.arange(i, i + x.shape[-1], device=Q.device) > rows, INF)
        new = torch.maximum(m, x.amax(-1, keepdim=True))
        p, c = torch.exp(x - new), torch.exp(m - new)
        s = s * c + p.sum(-1, keepdim=True)
        o = o * c + p @ V[..., i:i + block_size, :]
        m = new
    return o / s


def blocks_one_query_at_a_time(Q, K, V, block_size, causal=False):
    """Right: a Python loop over the queries, the keys of each in blocks (causal by keeping
    the keys up to the query's position)."""
    outs = []
    for i in range(Q.shape[-2]):
        q = Q[..., i:i + 1, :]
        keys = K[..., :i + 1, :] if causal else K
        values = V[..., :i + 1, :] if causal else V
        m = q.new_full(q.shape[:-1] + (1,), INF)
        s = q.new_zeros(q.shape[:-1] + (1,))
        o = q.new_zeros(q.shape[:-1] + (V.shape[-1],))
        for j in range(0, keys.shape[-2], block_size):
            x = q @ keys[..., j:j + block_size, :].transpose(-2, -1) / math.sqrt(Q.shape[-1])
            new = torch.maximum(m, x.amax(-1, keepdim=True))
            p, c = torch.exp(x - new), torch.exp(m - new)
            s = s * c + p.sum(-1, keepdim=True)
            o = o * c + p @ values[..., j:j + block_size, :]
            m = new
        outs.append(o / s)
    return torch.cat(outs, dim=-2)


BLOCK_MISTAKES = [
    (_blocks(ignore_causal=True), "ignored", "causal"),
    (_blocks(diagonal=True), "diagonal was masked", "causal"),
    (_blocks(shifted=False), "positions inside the block", "causal"),
    (_blocks(bottom_right=True), "bottom-right", "causal"),
    (_blocks(fill=0.0), "masked with 0 instead of -inf", "causal"),
    (_blocks(rescale_sum=False, rescale_output=False), "sum and output were not rescaled",
     "values"),
    (_blocks(rescale_output=False), "running output o was not rescaled", "values"),
    (_blocks(rescale_sum=False), "running sum s was not rescaled", "values"),
    (_blocks(scale="none"), "not scaled by 1/sqrt(d)", "values"),
    (_blocks(scale="d"), "divided by d;", "values"),
    (_blocks(scale="sqrt dv"), "size of the values", "values"),
    (blocks_averaged, "results averaged", "values"),
    (_blocks(divide_each_step=True), "divided by the running sum at that step", "values"),
    (blocks_off_a_little, None, "values"),
    (_blocks(stop="whole blocks"), "shorter block of keys", "blocks"),
    (blocks_own_block_size_not_rescaled, None, "blocks"),
    (blocks_max_not_subtracted, "scores in the hundreds", "values"),
    (blocks_output_like_q, None, "shape"),
    (blocks_four_axes, "a `dim` the tensor does not have", "shape"),
    (blocks_float32, "converted to another dtype", "dtype"),
    (_blocks(), "device=", "device"),
    (blocks_in_place, "in place", "unchanged"),
    (_blocks(inverted=True), "mask was inverted", "causal"),
    (_blocks(divide_running=True), "divided by the running sum at every block", "values"),
    (blocks_all_axes_reversed, "reverses all the axes", "values"),
    (blocks_own_block_size, "made no difference", "blocks"),
    (blocks_sdpa, "made no difference", "blocks"),
    (blocks_normalised_and_reset, "the sum reset to 1", "values"),
    (_blocks(on_device=True, start=0.0), "started at 0 instead of -inf", "values"),
    (_blocks(on_device=True, always_causal=True), "causal=False still masked the future", "values"),
    (_blocks(on_device=True, scale="times sqrt d"), "multiplied by sqrt(d)", "values"),
]
BLOCK_BANKS = ExerciseBanks(
    solution=SOLUTION["blockwise_attention"],
    correct=[blocks_rescaled_each_step, blocks_logsumexp, _blocks(on_device=True, fill=-1e4),
             blocks_one_query_at_a_time, _blocks(on_device=True, no_grad=True)],
    check=[*BLOCK_MISTAKES, (_blocks(full=True, on_device=True), "full score matrix", "memory"),
           (blocks_float32_output, "promoted the bfloat16 result", "dtype"),
           (blocks_over_queries, "larger than a block of scores", "memory")],
    hidden=[*BLOCK_MISTAKES, (blocks_fixed_scale, None, "values")],
)

BANKS = {"sample_next_token": SAMPLE_BANKS, "cached_attention_step": STEP_BANKS,
         "online_softmax": ONLINE_BANKS, "blockwise_attention": BLOCK_BANKS}


def test_forming_the_full_matrix_passes_the_hidden_test_on_values():
    """The memory rule is the self-check's; the grade is for the numbers."""
    grade_blockwise_attention(_blocks(full=True, on_device=True))


# ---- blanks and the sample class ------------------------------------------------------------

@pytest.mark.parametrize("grade", [grade_sample_next_token, grade_cached_attention_step,
                                   grade_online_softmax, grade_blockwise_attention,
                                   check_sample_next_token, check_cached_attention_step,
                                   check_online_softmax, check_blockwise_attention])
def test_a_blank_answer_is_not_finished(grade):
    with pytest.raises(NotImplementedError):
        grade(not_implemented)


GRADES = {"sample_next_token": grade_sample_next_token,
          "cached_attention_step": grade_cached_attention_step,
          "online_softmax": grade_online_softmax,
          "blockwise_attention": grade_blockwise_attention}


@pytest.mark.parametrize("name", sorted(GRADES))
def test_the_sample_mistakes_fail_for_their_reason(name):
    wrong = sample_mistakes("generation_and_cost")[name]
    with pytest.raises(AssertionError, match=wrong.reason):
        GRADES[name](wrong.definition)


@pytest.mark.parametrize("salt", [1, 2**40 + 17, 987654321987])
@pytest.mark.parametrize("name", ["cached_attention_step", "online_softmax",
                                  "blockwise_attention"])
def test_right_answers_pass_the_hidden_tests_under_other_salts(name, salt):
    """While grading, the hidden tests draw fresh sizes (and block sizes): right answers pass
    any of them."""
    set_salt(salt)
    try:
        for candidate in (BANKS[name].solution, *BANKS[name].correct):
            GRADES[name](candidate)
    finally:
        set_salt(0)
