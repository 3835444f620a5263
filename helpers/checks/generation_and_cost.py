"""Self-checks for tutorial 07 (generation and the cost of attention).

The checking engines here are shared with the grader's hidden tests, which run them on
fresh inputs (a fresh order of the vocabulary, fresh random tensors, fresh seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from helpers.checks.framework import SelfCheck, describe
from helpers.demos.generation_and_cost import largest_tensor

# ---- sampling --------------------------------------------------------------------------------

ARGMAX = ("the most likely token came back every time: draw from the probabilities with "
          "torch.multinomial instead of taking the argmax")
SOFTMAX_OVER_BATCH = ("the softmax ran over the batch (dim=0), not over the vocabulary "
                      "(dim=-1)")
MULTIPLIED = "the logits were multiplied by the temperature; divide them by it"
TEMPERATURE_IGNORED = ("the temperature had no effect: divide the logits by it before the "
                       "softmax (dividing the probabilities after it changes nothing once "
                       "they are normalised again)")
TEMPERATURE_IGNORED_WITH_TOP_K = ("with top_k given, the temperature had no effect: divide "
                                  "the logits by the temperature whether or not top_k is "
                                  "given")
K_PLUS_ONE = "top_k + 1 tokens were kept: keep exactly the k largest logits"
K_MINUS_ONE = ("only top_k - 1 tokens were kept: the k-th largest logit itself must survive "
               "(remove the logits strictly below it: < instead of <=)")
SMALLEST_K = "the k smallest logits were kept instead of the k largest"
ZERO_FILL = ("the logits outside the top k were set to 0 instead of -inf, so those tokens "
             "can still be drawn")
TOP_K_IGNORED = "top_k had no effect: tokens outside the k largest logits were drawn"
TOP_K_POSITION = ("the position within the top k (0..k-1) came back instead of the token's "
                  "id in the vocabulary: map it back with the indices that torch.topk returns")
FIRST_ROW_THRESHOLD = ("the k-th largest logit of the first row was used as the threshold "
                       "for every row: compare each row with its own k-th largest value, "
                       "kept as a column of shape (B, 1)")
GENERATOR_IGNORED = ("two generators in the same state gave different samples: the generator "
                     "was ignored (pass generator=generator to torch.multinomial)")
SAMPLE_AXIS_KEPT = ("torch.multinomial returns shape (B, 1): remove that last axis to return "
                    "shape (B,)")
LOGITS_IN_PLACE = ("the logits were changed in place (e.g. logits /= temperature); compute "
                   "new tensors instead")

# Two rows of logits per case, designed so that every listed mistake moves some token's
# probability by at least 0.1 from the right one (and from each other mistake's); a hidden
# test permutes the vocabulary, which changes none of these distances (except for
# TOP_K_POSITION, whose answer does not move with the vocabulary: it is named only when the
# frequencies match it).
_ROWS = {
    "plain": ((0.8, -0.4, 0.2, -3.0, -2.2, -3.6), (-2.5, 0.6, -3.2, 0.1, -0.5, -2.0)),
    "low tail": ((0.3, -6.0, -0.2, -6.5, 0.0, -5.5), (-6.2, 0.1, -5.8, 0.4, -6.0, -0.3)),
    "flat": ((0.5, 0.1, 0.4, 0.0, 0.3, 0.2), (0.0, 0.45, 0.1, 0.35, 0.2, 0.5)),
}
# (case, rows, temperature, top_k, the mistakes this case can tell apart)
_CASES = (
    ("temperature 1, no top-k", "plain", 1.0, None, (ARGMAX, SOFTMAX_OVER_BATCH)),
    ("temperature 0.5", "plain", 0.5, None, (ARGMAX, SOFTMAX_OVER_BATCH, MULTIPLIED,
                                             TEMPERATURE_IGNORED)),
    ("top_k=3", "low tail", 1.0, 3, (ARGMAX, SMALLEST_K, ZERO_FILL, K_MINUS_ONE,
                                     FIRST_ROW_THRESHOLD, TOP_K_POSITION)),
    ("top_k=2", "flat", 1.0, 2, (ARGMAX, SMALLEST_K, K_PLUS_ONE, TOP_K_IGNORED,
                                 TOP_K_POSITION)),
    ("temperature 0.5 with top_k=3", "plain", 0.5, 3, (TEMPERATURE_IGNORED_WITH_TOP_K,
                                                       TOP_K_POSITION)),
)
DRAWS_PER_ROW = 10_000
# A mistake is recognised when every frequency lies within TOLERANCE of its distribution.
TOLERANCE = 0.04
# ln(2 / 1e-13): a frequency of n independent draws passes its check (see `frequency_slack`)
# except with probability 1e-13 (Bernstein's inequality), so that a right answer cannot fail
# by chance, even over the hundreds of frequencies a hidden test compares.
_LOG_ODDS = math.log(2e13)
# Captured at import, before any student code runs (as in the framework).
_allclose = torch.allclose


def _keep_top(logits: torch.Tensor, k: int, largest: bool = True,
              fill: float = float("-inf")) -> torch.Tensor:
    index = torch.topk(logits, k, dim=-1, largest=largest).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, index, True)
    return logits.masked_fill(~keep, fill)


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).double()


def _distributions(rows: torch.Tensor, temperature: float, top_k: int | None
                   ) -> dict[str | None, torch.Tensor]:
    """The distribution each of the two rows is drawn from: right (key None) and per
    mistake."""
    rows = rows.double()
    scaled = rows / temperature
    kept = _keep_top(scaled, top_k) if top_k is not None else scaled
    over_batch = torch.softmax(kept, dim=0)  # equal numbers of each row in the batch
    result: dict[str | None, torch.Tensor] = {
        None: torch.softmax(kept, dim=-1),
        ARGMAX: _one_hot_argmax(rows),
        SOFTMAX_OVER_BATCH: over_batch / over_batch.sum(-1, keepdim=True),
        MULTIPLIED: torch.softmax(rows * temperature, dim=-1),
        TEMPERATURE_IGNORED: torch.softmax(rows, dim=-1),
    }
    if top_k is not None:
        ranked = result[None].sort(dim=-1, descending=True).values
        first_row = scaled.masked_fill(scaled < scaled[0].topk(top_k).values[-1], float("-inf"))
        result.update({
            TEMPERATURE_IGNORED_WITH_TOP_K: torch.softmax(_keep_top(rows, top_k), dim=-1),
            K_PLUS_ONE: torch.softmax(_keep_top(scaled, top_k + 1), dim=-1),
            SMALLEST_K: torch.softmax(_keep_top(scaled, top_k, largest=False), dim=-1),
            ZERO_FILL: torch.softmax(_keep_top(scaled, top_k, fill=0.0), dim=-1),
            TOP_K_IGNORED: torch.softmax(scaled, dim=-1),
            TOP_K_POSITION: torch.cat([ranked[:, :top_k],
                                       torch.zeros_like(ranked[:, top_k:])], dim=-1),
            FIRST_ROW_THRESHOLD: torch.softmax(first_row, dim=-1),
        })
        if top_k > 1:
            result[K_MINUS_ONE] = torch.softmax(_keep_top(scaled, top_k - 1), dim=-1)
    return result


def _matches(frequencies: torch.Tensor, distribution: torch.Tensor) -> bool:
    """Whether the frequencies of both rows are those of a (wrong) distribution."""
    return bool(distribution.isfinite().all()) and _allclose(
        frequencies, distribution, atol=TOLERANCE, rtol=0.0)


def frequency_slack(probabilities: torch.Tensor, n: int) -> torch.Tensor:
    """How far the frequency of each outcome of probability p, over n independent draws, may
    stray from p: t solving n t^2 = L (2 p (1 - p) + 2 t / 3) (Bernstein's inequality,
    P(|f - p| >= t) <= 2 exp(-L)). About 0.04 for p = 1/2 and 0.002 for p = 0 at n = 10,000,
    so a token that must never be drawn may be drawn at most a few times by rounding."""
    variance = probabilities.double() * (1 - probabilities.double())
    linear = 2 * _LOG_ODDS / 3
    return (linear + torch.sqrt(linear**2 + 8 * n * _LOG_ODDS * variance)) / (2 * n)


def expect_frequencies(check: SelfCheck, frequencies: torch.Tensor,
                       probabilities: torch.Tensor, n: int, what: str, *,
                       likely: str | None = None,
                       diagnoses: dict[str, Any] | None = None) -> None:
    """Each frequency of n draws lies within its :func:`frequency_slack` of its probability."""
    slack = frequency_slack(probabilities, n)
    off = (frequencies.double() - probabilities.double()).abs() > slack
    where = None
    if bool(off.any()):
        where = ", ".join(f"token {i}: expected {probabilities[i]:.4f} ± {slack[i]:.4f}, got "
                          f"{frequencies[i]:.4f}" for i in off.nonzero().flatten().tolist()[:4])
    check.expect(not bool(off.any()), what, expected=describe(probabilities.double()),
                 got=describe(frequencies.double()), where=where, likely=likely,
                 diagnoses=diagnoses)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _is_value_error(error: BaseException) -> bool:
    # through the grader's proxies a student's exception arrives with its name only
    return isinstance(error, ValueError) or type(error).__name__ == "ValueError"


def check_sampling(check: SelfCheck, sample: Callable[..., torch.Tensor],
                   permutation: torch.Tensor, seeds: Sequence[int]
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The checks of ``sample_next_token``; the vocabulary is reordered by ``permutation``,
    and the generators are seeded from ``seeds`` (one more than there are cases). Returns,
    for every row of every case, its draws in order and the probabilities they come from
    (for the hidden test's checks of randomness)."""
    seeds = iter(seeds)
    draws = []
    V = len(permutation)
    for case, rows_name, temperature, top_k, mistakes in _CASES:
        rows = torch.tensor(_ROWS[rows_name])[:, permutation]
        logits = rows.repeat(DRAWS_PER_ROW, 1)  # the batch alternates: row 0, row 1, row 0...
        original = logits.clone()
        kwargs: dict[str, Any] = {"temperature": temperature, "top_k": top_k}
        got = check.call(sample, logits, generator=_generator(next(seeds)), **kwargs)
        got = check.tensor(got, f"sample_next_token(logits of shape {tuple(logits.shape)})")
        check.close(logits, original, "the logits are left unchanged", likely=LOGITS_IN_PLACE)
        check.shape(got, (len(logits),), f"the tensor of samples for logits of shape "
                    f"{tuple(logits.shape)}", likely=SAMPLE_AXIS_KEPT
                    if tuple(got.shape) == (len(logits), 1) else None)
        check.expect(got.dtype == torch.int64, "the samples are token ids of dtype int64",
                     expected="torch.int64", got=str(got.dtype))
        check.expect(bool(((got >= 0) & (got < V)).all()), f"every sample is a token id in "
                     f"0..{V - 1}", expected=f"ids in 0..{V - 1}", got=describe(got))
        frequencies = torch.stack([
            torch.bincount(got[r::2], minlength=V).double() / DRAWS_PER_ROW for r in (0, 1)])
        expected = _distributions(rows, temperature, top_k)
        # One comparison per row, so that the message shows the whole row.
        for r in (0, 1):
            expect_frequencies(check, frequencies[r], expected[None][r], DRAWS_PER_ROW,
                               f"{case}: how often each token is drawn for row {r} of the two "
                               f"rows of logits ({DRAWS_PER_ROW} draws each) matches "
                               "softmax(logits / temperature) over the kept tokens",
                               diagnoses={m: (lambda w=expected[m], f=frequencies: _matches(f, w))
                                          for m in mistakes})
            draws.append((got[r::2], expected[None][r]))
    logits = torch.tensor(_ROWS["plain"]).repeat(100, 1)
    seed = next(seeds)
    first = check.call(sample, logits, generator=_generator(seed))
    second = check.call(sample, logits, generator=_generator(seed))
    check.expect(isinstance(second, torch.Tensor) and torch.equal(first, second),
                 "two generators seeded alike give the same samples",
                 expected="identical samples", got="different samples",
                 likely=GENERATOR_IGNORED)
    for bad in (0.0, -1.0):
        try:
            sample(logits, temperature=bad)
        except NotImplementedError as error:
            check.not_implemented(error)
        except Exception as error:  # noqa: BLE001 - which error came back is the check
            check.expect(_is_value_error(error) and "temperature" in str(error).lower(),
                         f"temperature={bad} raises a ValueError that mentions the temperature",
                         expected="ValueError: ... temperature ...",
                         got=f"{type(error).__name__}: {str(error)[:200]}")
            continue
        check.expect(False, f"temperature={bad} raises a ValueError",
                     expected="ValueError: ... temperature ...", got="no error")
    return draws


def check_sample_next_token(sample_next_token: Callable[..., torch.Tensor]) -> None:
    """Frequencies of many draws, temperature, top-k, the generator, and bad temperatures."""
    check = SelfCheck("sample_next_token")
    check_sampling(check, sample_next_token, torch.tensor([2, 0, 5, 1, 4, 3]),
                   seeds=(70, 71, 72, 73, 74, 75))
    check.passed()


# ---- the KV cache ------------------------------------------------------------------------------

NEW_FIRST = ("the new entry was put first: append it at the end, so that the cache stays "
             "in the order of the tokens")
CACHE_UNCHANGED = "the old cache came back unchanged: append the new key and value to it"
ONLY_NEW = "the cache returned holds only the new entry: it must hold all t + 1"
CACHE_WRONG_AXIS = ("the new entry was appended on the wrong axis: keys and values are "
                    "stacked along the time axis, dim=-2 of (B, H, t, dh)")
KEYS_VALUES_SWAPPED = "keys and values were swapped in the returned cache: return (K', V')"
NO_SCALE = "the scores were not scaled: divide q · k by sqrt(dh)"
SCALE_BY_DH = "the scores were divided by dh; divide by its square root"
STEP_SOFTMAX_AXIS = ("the softmax ran over the query axis (dim=-2, of size 1), so every "
                     "weight is 1: take it over the keys (dim=-1)")
NEW_KEY_LEFT_OUT = "the new key and value were left out of the attention: attend over all t + 1"
OLD_KEYS_LEFT_OUT = "only the new key was attended to: attend over the whole cache"
NO_CACHE_RETURNED = "the new cache was not returned: return (out, (K', V'))"
NONE_NOT_HANDLED = ("cache=None (the first step, with no cache yet) was not handled: then the "
                    "new cache is just (k_new, v_new)")
SDPA_CAUSAL = ("F.scaled_dot_product_attention(..., is_causal=True) with one query: its mask "
               "is aligned top-left, so the single query sees only key 0, the oldest token. "
               "No mask is needed here: every cached key is in the past")
KEYS_AS_VALUES = "the keys were used as values: the output averages the cached values V'"


def _attend(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, scale: float,
            dim: int = -1) -> torch.Tensor:
    weights = torch.softmax(q.double() @ K.double().transpose(-2, -1) * scale, dim=dim)
    return weights @ V.double()


def _call_step(check: SelfCheck, step: Callable[..., Any], what: str, *args: Any) -> Any:
    """Call the student's step; name the crashes that have one cause (torch.cat on the wrong
    axis, a cache of None indexed like a pair)."""
    try:
        return step(*args)
    except NotImplementedError as error:
        check.not_implemented(error)
    except Exception as error:  # noqa: BLE001 - reported to the student
        message = str(error)
        detail = what.removeprefix("cached_attention_step ")
        check.expect(False, f"cached_attention_step runs without an error ({detail})",
                     expected="(out, (K, V))", got=f"{type(error).__name__}: {message}"[:400],
                     diagnoses={
                         CACHE_WRONG_AXIS: "must match except in dimension" in message,
                         NONE_NOT_HANDLED: args[-1] is None and "NoneType" in message})


def _unpack(check: SelfCheck, result: Any, what: str) -> tuple[torch.Tensor, Any]:
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{what} returns a pair (out, cache)", expected="(out, (K, V))",
                 got=describe(result))
    out, cache = result
    check.expect(cache is not None, f"{what} returns the new cache", expected="(K', V')",
                 got="None", likely=NO_CACHE_RETURNED)
    check.expect(isinstance(cache, tuple | list) and len(cache) == 2
                 and all(isinstance(c, torch.Tensor) for c in cache),
                 f"the cache returned by {what} is a pair of tensors (K', V')",
                 expected="(K', V')", got=describe(cache))
    return check.tensor(out, f"out of {what}"), cache


def check_cache(check: SelfCheck, step: Callable[..., Any], generator: torch.Generator,
                B: int = 2, H: int = 3, t: int = 3, dh: int = 4, T: int = 5) -> None:
    """The checks of ``cached_attention_step`` on inputs drawn from ``generator``."""
    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    q, k, v = draw(B, H, 1, dh), draw(B, H, 1, dh), draw(B, H, 1, dh)
    K, V = draw(B, H, t, dh), draw(B, H, t, dh)
    originals = [x.clone() for x in (q, k, v, K, V)]
    first = "the first decoding step, with cache=None"
    result = _call_step(check, step, first, q, k, v, None)
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{first}: it returns a pair (out, cache)", expected="(out, (K, V))",
                 got=describe(result))
    out = check.tensor(result[0], f"out of {first}")
    check.shape(out, (B, H, 1, dh), f"out of {first}")
    check.close(out, v, f"{first}: out equals v_new (the only key gets all the weight)",
                mistakes={KEYS_AS_VALUES: k}, dims=("batch", "head", "query", "channel"))
    what = f"cached_attention_step with a cache of length {t}"
    out, (K2, V2) = _unpack(check, _call_step(check, step, what, q, k, v, (K, V)), what)
    for x, original in zip((q, k, v, K, V), originals, strict=True):
        check.close(x, original, "the inputs and the old cache are left unchanged",
                    likely="an input was changed in place; torch.cat returns a new tensor")
    full_K, full_V = torch.cat([K, k], dim=-2), torch.cat([V, v], dim=-2)
    for name, got, old, new, full, other in (("K'", K2, K, k, full_K, full_V),
                                             ("V'", V2, V, v, full_V, full_K)):
        shape = tuple(got.shape)
        check.expect(shape == tuple(full.shape), f"the new cache {name} has shape "
                     f"{tuple(full.shape)} (one more time step)", expected=f"shape "
                     f"{tuple(full.shape)}", got=f"shape {shape}", diagnoses={
                         CACHE_UNCHANGED: shape == tuple(old.shape) and torch.equal(got, old),
                         ONLY_NEW: shape == tuple(new.shape) and torch.equal(got, new),
                         CACHE_WRONG_AXIS: got.numel() == full.numel()})
        check.close(got, full, f"the new cache {name} is the old one with the new entry "
                    "appended at the end", mistakes={
                        NEW_FIRST: torch.cat([new, old], dim=-2), KEYS_VALUES_SWAPPED: other},
                    dims=("batch", "head", "time", "channel"))
    scale = 1 / math.sqrt(dh)
    check.shape(out, (B, H, 1, dh), f"out of {what}")
    check.close(out, _attend(q, full_K, full_V, scale),
                "out is the attention of q over all t + 1 keys, scaled by 1/sqrt(dh)",
                mistakes={NO_SCALE: _attend(q, full_K, full_V, 1.0),
                          SCALE_BY_DH: _attend(q, full_K, full_V, 1 / dh),
                          STEP_SOFTMAX_AXIS: _attend(q, full_K, full_V, scale, dim=-2),
                          NEW_KEY_LEFT_OUT: _attend(q, K, V, scale),
                          OLD_KEYS_LEFT_OUT: v.double(),
                          SDPA_CAUSAL: full_V[..., :1, :].double(),
                          KEYS_AS_VALUES: _attend(q, full_K, full_K, scale)},
                dims=("batch", "head", "query", "channel"))
    # A loop of steps from an empty cache reproduces causal attention over the sequence.
    qs, ks, vs = draw(B, H, T, dh), draw(B, H, T, dh), draw(B, H, T, dh)
    expected = F.scaled_dot_product_attention(qs.double(), ks.double(), vs.double(),
                                              is_causal=True)
    cache = None
    for i in range(T):
        what = "cached_attention_step with cache=None" if i == 0 else \
            f"step {i} of a loop that starts from cache=None"
        out, cache = _unpack(check, _call_step(check, step, what, qs[:, :, i:i + 1],
                                               ks[:, :, i:i + 1], vs[:, :, i:i + 1], cache),
                             what)
        check.close(out, expected[:, :, i:i + 1], f"{what}: out equals row {i} of "
                    "F.scaled_dot_product_attention(q, k, v, is_causal=True)",
                    dims=("batch", "head", "query", "channel"))
    check.close(cache[0], ks, "after the loop the cache holds every key, in order")
    check.close(cache[1], vs, "after the loop the cache holds every value, in order")


def check_cached_attention_step(cached_attention_step: Callable[..., Any]) -> None:
    """One step against a known cache, and a loop of steps against causal attention."""
    check = SelfCheck("cached_attention_step")
    check_cache(check, cached_attention_step, torch.Generator().manual_seed(71))
    check.passed()


# ---- online softmax ------------------------------------------------------------------------

SUM_NOT_RESCALED = ("the running sum was not rescaled when the maximum grew: multiply it by "
                    "exp(old max - new max)")
MAX_NOT_SUBTRACTED = ("the maximum was not subtracted before exp: e^1000 overflows to inf "
                      "(nan after the division)")
LAST_BLOCK_DROPPED = ("the last, shorter block was left out: loop until the end of the row "
                      "(range(0, T, block_size))")
EDGE_TWICE = ("the last element of each block was counted again at the start of the next "
              "one: a block is x[..., start:start + block_size]")
EACH_BLOCK_ALONE = "each block was normalised on its own: the sum must run over the whole row"


SUM_INVERTED = ("the running sum was rescaled by exp(new max - old max), the inverse of the "
                "right factor: multiply it by exp(old max - new max), which is at most 1")
LAST_BLOCK_MAX = ("the final numerator used the maximum of the last block, not the running "
                  "maximum of the whole row: return exp(x - m) / s with the m of the sum")
WRONG_AXIS = ("the blocks were cut along the first axis instead of the last: a block is "
              "x[..., start:start + block_size]")
MAX_STARTS_AT_ZERO = ("the running maximum started at 0 instead of -inf: for a row of logits "
                      "near -1000, e^(x - 0) underflows to 0 and the softmax becomes 0/0 = nan")
ONE_MAX_FOR_ALL = ("one maximum was taken over the whole tensor instead of one per row: rows "
                   "far below it underflow to 0 (0/0 = nan); keep the row's maximum with "
                   "amax(dim=-1, keepdim=True)")


def _online(x: torch.Tensor, block_size: int, *, rescale: bool = True,
            subtract_max: bool = True, drop_last: bool = False, overlap: bool = False,
            inverted: bool = False, start_at_zero: bool = False, one_max: bool = False,
            last_block_max: bool = False) -> torch.Tensor:
    """The right online softmax and its wrong variants (float64)."""
    x = x.double()
    T = x.shape[-1]
    m = torch.full(x.shape[:-1] + (1,), 0.0 if start_at_zero else float("-inf"),
                   dtype=torch.float64)
    s = torch.zeros_like(m)
    stop = T // block_size * block_size if drop_last else T
    block_max = m
    for start in range(0, stop, block_size):
        block = x[..., start:start + block_size + (1 if overlap else 0)]
        block_max = block.amax() if one_max else block.amax(-1, keepdim=True)
        new_m = torch.maximum(m, block_max) if subtract_max else 0 * m
        if inverted:  # before the first block s = 0, whatever the factor
            factor = torch.where(m.isinf(), 0.0, torch.exp(new_m - m))
        else:
            factor = torch.exp(m - new_m) if rescale and subtract_max else 1.0
        s = s * factor + torch.exp(block - new_m).sum(-1, keepdim=True)
        m = new_m
    return torch.exp(x - (block_max if last_block_max else m)) / s


def _online_first_axis(x: torch.Tensor, block_size: int) -> torch.Tensor | None:
    """Blocks cut along dim 0 with per-row statistics (None where that cannot run)."""
    x = x.double()
    m = torch.full(x.shape[:-1] + (1,), float("-inf"), dtype=torch.float64)
    s = torch.zeros_like(m)
    try:
        for start in range(0, x.shape[0], block_size):
            block = x[start:start + block_size]
            new_m = torch.maximum(m, block.amax(-1, keepdim=True))
            s = s * torch.exp(m - new_m) + torch.exp(block - new_m).sum(-1, keepdim=True)
            m = new_m
        return torch.exp(x - m) / s
    except RuntimeError:  # shapes that do not broadcast: the student's code crashes too
        return None


def _online_mistakes(x: torch.Tensor, block_size: int) -> dict[str, torch.Tensor]:
    T = x.shape[-1]
    mistakes = {SUM_NOT_RESCALED: _online(x, block_size, rescale=False),
                SUM_INVERTED: _online(x, block_size, inverted=True),
                MAX_NOT_SUBTRACTED: _online(x, block_size, subtract_max=False),
                EACH_BLOCK_ALONE: torch.cat([torch.softmax(b.double(), dim=-1)
                                             for b in x.split(block_size, dim=-1)], dim=-1),
                LAST_BLOCK_MAX: _online(x, block_size, last_block_max=True),
                MAX_STARTS_AT_ZERO: _online(x, block_size, start_at_zero=True),
                ONE_MAX_FOR_ALL: _online(x, block_size, one_max=True)}
    if T % block_size:
        mistakes[LAST_BLOCK_DROPPED] = _online(x, block_size, drop_last=True)
    if block_size < T:
        mistakes[EDGE_TWICE] = _online(x, block_size, overlap=True)
    first_axis = _online_first_axis(x, block_size)
    if first_axis is not None:
        mistakes[WRONG_AXIS] = first_axis
    return mistakes


def check_online(check: SelfCheck, online: Callable[..., torch.Tensor],
                 generator: torch.Generator,
                 cases: Sequence[tuple[tuple[int, ...], int]] = (
                     ((2, 3, 10), 3), ((2, 3, 10), 4), ((4, 10), 1), ((3, 10), 10),
                     ((3, 7), 16), ((5, 9), 2))) -> None:
    """The checks of ``online_softmax``; inputs drawn from ``generator``."""
    for shape, block_size in cases:
        # increasing trends make the running maximum change from block to block
        x = 2.0 * torch.randn(*shape, generator=generator) + torch.linspace(-2, 2, shape[-1])
        original = x.clone()
        out = check.tensor(check.call(online, x, block_size),
                           f"online_softmax(x of shape {shape}, block_size={block_size})")
        check.close(x, original, "x is left unchanged",
                    likely="x was changed in place; compute new tensors instead")
        check.close(out, torch.softmax(x.double(), dim=-1),
                    f"online_softmax(x of shape {shape}, block_size={block_size}) equals "
                    "torch.softmax(x, dim=-1)", mistakes=_online_mistakes(x, block_size),
                    atol=1e-6, rtol=1e-5, dims=("batch",) * (len(shape) - 1) + ("position",))
    for what, offsets in (("logits near 1000", (1000.0, 1000.0, 1000.0)),
                          ("rows of logits near +1000, near -1000 and near 0 in one tensor",
                           (1000.0, -1000.0, 0.0))):
        x = torch.randn(3, 8, generator=generator) * 3 + torch.tensor(offsets)[:, None]
        out = check.tensor(check.call(online, x, 3), f"online_softmax({what})")
        check.close(out, torch.softmax(x.double(), dim=-1),
                    f"online_softmax of {what} equals torch.softmax",
                    # float32 holds numbers near 1000 to about 6e-5: a log-sum-exp is that exact
                    mistakes=_online_mistakes(x, 3), atol=1e-5, rtol=1e-3, dims=("row", "position"))


def check_online_softmax(online_softmax: Callable[..., torch.Tensor]) -> None:
    """Equality with torch.softmax for many block sizes, partial blocks and huge logits."""
    check = SelfCheck("online_softmax")
    check_online(check, online_softmax, torch.Generator().manual_seed(72))
    check.passed()


# ---- attention in blocks -------------------------------------------------------------------

SEES_FUTURE = "causal=True was ignored: queries attend to keys after them"
DIAGONAL_MASKED = ("the diagonal was masked too (>= instead of >): a query may read its own "
                   "key, so row 0 has nothing left and becomes nan")
MASK_NOT_SHIFTED = ("the causal mask used positions inside the block (0..block_size-1) "
                    "instead of the keys' positions in the sequence (start + 0, start + 1, ...)")
NOT_RESCALED = ("the running sum and output were not rescaled when the maximum grew: "
                "multiply both by exp(old max - new max)")
BLOCK_NO_SCALE = "the scores were not scaled by 1/sqrt(d)"
BLOCK_ZERO_FILL = "the future was masked with 0 instead of -inf"
BLOCK_DROPPED = "the last, shorter block of keys was left out"
DIVIDED_EACH_STEP = ("each block's contribution was divided by the running sum at that step; "
                     "later blocks change the sum, so divide once, at the end")
FULL_MATRIX = ("a tensor with Tq × Tk entries was created: the full score matrix (or a full "
               "mask), which the blocks are meant to avoid")


OUTPUT_NOT_RESCALED = ("the running output o was not rescaled when the maximum grew: multiply "
                       "it by exp(old max - new max), like the running sum")
SUM_NOT_RESCALED_BLOCKS = ("the running sum s was not rescaled when the maximum grew: multiply "
                           "it by exp(old max - new max), like the running output")
SCALE_BY_D = "the scores were divided by d; divide them by its square root, sqrt(d)"
SCALE_BY_DV = ("the scores were scaled with the size of the values, dv: the scale is "
               "1/sqrt(d), with d the size of the queries and keys")
BOTTOM_RIGHT = ("the causal mask was aligned bottom-right (query i reading keys up to "
                "i + Tk - Tq): with is_causal, query i reads keys 0..i, the mask aligned "
                "top-left, as in F.scaled_dot_product_attention")
BLOCKS_AVERAGED = ("each block was normalised on its own and the results averaged: blocks "
                   "with larger scores must weigh more; carry the running max, sum and "
                   "output, and divide once, at the end")


def _blockwise(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, block_size: int,
               causal: bool, *, scale: str = "sqrt d", rescale_sum: bool = True,
               rescale_output: bool = True, fill: float = float("-inf"),
               shifted: bool = True, diagonal: bool = False, bottom_right: bool = False,
               drop_last: bool = False, divide_each_step: bool = False) -> torch.Tensor:
    """Attention over blocks of keys, right and wrong (float64)."""
    Q, K, V = Q.double(), K.double(), V.double()
    Tq, Tk = Q.shape[-2], K.shape[-2]
    factor_of = {"sqrt d": Q.shape[-1] ** -0.5, "none": 1.0, "d": 1 / Q.shape[-1],
                 "sqrt dv": V.shape[-1] ** -0.5}
    m = torch.full(Q.shape[:-1] + (1,), float("-inf"), dtype=torch.float64)
    s = torch.zeros_like(m)
    acc = torch.zeros(Q.shape[:-1] + (V.shape[-1],), dtype=torch.float64)
    rows = torch.arange(Tq)[:, None] + (Tk - Tq if bottom_right else 0)
    stop = Tk // block_size * block_size if drop_last else Tk
    for start in range(0, stop, block_size):
        Kb, Vb = K[..., start:start + block_size, :], V[..., start:start + block_size, :]
        scores = Q @ Kb.transpose(-2, -1) * factor_of[scale]
        if causal:
            cols = torch.arange(Kb.shape[-2]) + (start if shifted else 0)
            future = cols >= rows if diagonal else cols > rows
            scores = scores.masked_fill(future, fill)
        new_m = torch.maximum(m, scores.amax(-1, keepdim=True))
        factor = torch.exp(m - new_m)
        p = torch.exp(scores - new_m)
        s = (s * factor if rescale_sum else s) + p.sum(-1, keepdim=True)
        acc = (acc * factor if rescale_output else acc) + (p @ Vb / s if divide_each_step
                                                           else p @ Vb)
        m = new_m
    return acc if divide_each_step else acc / s


def _blocks_averaged(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                     block_size: int) -> torch.Tensor:
    """The mean over blocks of each block's own attention (no mask: it fails before)."""
    Q, K, V = Q.double(), K.double(), V.double()
    outs = [F.scaled_dot_product_attention(Q, K[..., i:i + block_size, :],
                                           V[..., i:i + block_size, :])
            for i in range(0, K.shape[-2], block_size)]
    return sum(outs) / len(outs)


def _blockwise_mistakes(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, block_size: int,
                        causal: bool) -> dict[str, torch.Tensor]:
    def variant(**kwargs: Any) -> torch.Tensor:
        return _blockwise(Q, K, V, block_size, causal, **kwargs)

    mistakes = {NOT_RESCALED: variant(rescale_sum=False, rescale_output=False),
                OUTPUT_NOT_RESCALED: variant(rescale_output=False),
                SUM_NOT_RESCALED_BLOCKS: variant(rescale_sum=False),
                BLOCK_NO_SCALE: variant(scale="none"), SCALE_BY_D: variant(scale="d"),
                DIVIDED_EACH_STEP: variant(divide_each_step=True)}
    if V.shape[-1] != Q.shape[-1]:
        mistakes[SCALE_BY_DV] = variant(scale="sqrt dv")
    if not causal:
        mistakes[BLOCKS_AVERAGED] = _blocks_averaged(Q, K, V, block_size)
    if K.shape[-2] % block_size:
        mistakes[BLOCK_DROPPED] = variant(drop_last=True)
    if causal:
        mistakes.update({SEES_FUTURE: _blockwise(Q, K, V, block_size, False),
                         DIAGONAL_MASKED: variant(diagonal=True),
                         MASK_NOT_SHIFTED: variant(shifted=False),
                         BLOCK_ZERO_FILL: variant(fill=0.0)})
        if Q.shape[-2] != K.shape[-2]:
            mistakes[BOTTOM_RIGHT] = variant(bottom_right=True)
    return mistakes


BLOCK_CASES: tuple[tuple[int, int, int, int, bool], ...] = (
    # (Tq, Tk, dv, block_size, causal)
    (10, 7, 5, 3, False), (6, 13, 4, 4, False), (5, 5, 3, 1, False), (4, 9, 6, 16, False),
    (10, 10, 5, 3, True), (11, 11, 4, 4, True), (8, 8, 3, 8, True), (6, 9, 5, 4, True),
    (9, 6, 5, 4, True),
)


def check_blocks(check: SelfCheck, blockwise: Callable[..., torch.Tensor],
                 generator: torch.Generator, batch: tuple[int, ...] = (2, 3), d: int = 8,
                 cases: Sequence[tuple[int, int, int, int, bool]] = BLOCK_CASES) -> None:
    """The checks of ``blockwise_attention`` on values; inputs drawn from ``generator``."""
    for Tq, Tk, dv, block_size, causal in cases:
        Q = 1.5 * torch.randn(*batch, Tq, d, generator=generator)
        K = 1.5 * torch.randn(*batch, Tk, d, generator=generator)
        V = torch.randn(*batch, Tk, dv, generator=generator)
        originals = [Q.clone(), K.clone(), V.clone()]
        what = (f"blockwise_attention(Q, K, V, block_size={block_size}, causal={causal}) "
                f"with Tq={Tq}, Tk={Tk}")
        out = check.tensor(check.call(blockwise, Q, K, V, block_size, causal=causal), what)
        for x, original in zip((Q, K, V), originals, strict=True):
            check.close(x, original, "Q, K and V are left unchanged",
                        likely="an input was changed in place; compute new tensors instead")
        check.shape(out, (*batch, Tq, dv), what)
        expected = F.scaled_dot_product_attention(Q.double(), K.double(), V.double(),
                                                  is_causal=causal)
        check.close(out, expected, f"{what} equals F.scaled_dot_product_attention(Q, K, V, "
                    f"is_causal={causal})", mistakes=_blockwise_mistakes(Q, K, V, block_size,
                                                                        causal),
                    dims=("batch",) * len(batch) + ("query", "channel"))


def check_blockwise_attention(blockwise_attention: Callable[..., torch.Tensor]) -> None:
    """Values against F.scaled_dot_product_attention, then the memory it uses."""
    check = SelfCheck("blockwise_attention")
    check_blocks(check, blockwise_attention, torch.Generator().manual_seed(73))
    generator = torch.Generator().manual_seed(74)
    T, block_size = 256, 16
    Q, K, V = (torch.randn(1, 1, T, 8, generator=generator) for _ in range(3))
    for causal in (False, True):
        try:
            record = largest_tensor(blockwise_attention, Q, K, V, block_size, causal=causal)
        except NotImplementedError as error:
            check.not_implemented(error)
        check.expect(record.numel < T * T, f"with T = {T} and block_size = {block_size} "
                     f"(causal={causal}), no tensor of T × T = {T * T} entries is created",
                     expected=f"every tensor smaller than {T * T} entries",
                     got=f"{record.op} created a tensor of shape {record.shape}",
                     likely=FULL_MATRIX)
    check.passed()
