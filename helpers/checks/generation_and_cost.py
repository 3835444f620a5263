"""Self-checks for tutorial 07 (generation and the cost of attention).

Each check runs under a clause of its exercise's contract (``helpers.syllabus``). The
checking engines here are shared with the grader's hidden tests, which run them on fresh
inputs (a fresh order of the vocabulary, fresh random tensors, sizes and seeds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from helpers.checks.calls import Observation, tensors_in
from helpers.checks.framework import CheckFailed, SelfCheck, describe


def call_naming(check: SelfCheck, causes: dict[str, tuple[str, str | None]],
                fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``check.call``; when the student's code crashes and the failure's words (the error
    and the student's line) match a cause's pattern, name that cause as the likely mistake.
    ``causes``: cause -> (regular expression, the clause it breaks, or None for the current
    one). An empty cause only moves the failure to its clause, keeping what else it says."""
    try:
        return check.call(fn, *args, **kwargs)
    except CheckFailed as failure:
        message = str(failure)
        if "runs without an error" not in message.split("\n")[0]:
            raise
        for cause, (pattern, clause) in causes.items():
            if re.search(pattern, message):
                clause = clause or failure.clause
                likely = [line for line in message.split("\n")
                          if line.startswith("  likely mistake:")]
                lines = [line for line in message.split("\n")
                         if not line.startswith(("  likely mistake:", "  contract:"))]
                if clause in check.contract:
                    lines.append(f"  contract: {check.contract[clause]}")
                lines += [f"  likely mistake: {cause}"] if cause else likely
                if SelfCheck.record is not None and SelfCheck.record:
                    SelfCheck.record[-1] = (check.name, clause, False)
                raise CheckFailed("\n".join(lines), clause) from None
        raise


def _close(check: SelfCheck, actual: Any, expected: Any, what: str, **kwargs: Any) -> None:
    """``check.close`` with the expected values shown in the answer's floating dtype: they
    are computed in float64, and "expected ... float64" next to "got ... float32" would read
    like a dtype error (the dtype clause is where dtypes are tested)."""
    if (isinstance(actual, torch.Tensor) and actual.dtype in (torch.float32, torch.float64)
            and isinstance(expected, torch.Tensor) and expected.is_floating_point()):
        expected = expected.to(actual.dtype)
    check.close(actual, expected, what, **kwargs)


HALF_PROMOTED = ("a tensor of your own was made with a fixed dtype (`torch.zeros(...)`, "
                 "`torch.full(...)` make float32 unless told otherwise; `dtype=torch.float32`) "
                 "and promoted the bfloat16 result to float32: make it with dtype=x.dtype, or "
                 "with torch.*_like / x.new_*")


def _to_bfloat16(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(torch.bfloat16) if value.is_floating_point() else value
    if isinstance(value, tuple | list):
        return type(value)(_to_bfloat16(v) for v in value)
    return value


CONVERTED = ("the result was converted to another dtype (`.float()`, `.double()`, or a tensor "
             "made with a fixed dtype): keep the input's dtype")


def half_follows(check: SelfCheck, fn: Callable[..., Any], *args: Any, what: str,
                 likely: str = HALF_PROMOTED, **kwargs: Any) -> None:
    """With bfloat16 tensor arguments, every floating-point result is bfloat16 too (a float32
    tensor of the answer's own is promoted to float64 by float64 inputs, so only a smaller
    dtype shows it). The self-check's alone: the grader's transport carries half-precision
    tensors as float32."""
    out = check.call(fn, *_to_bfloat16(args), **{k: _to_bfloat16(v) for k, v in kwargs.items()})
    wrong = [f"{path} is {str(t.dtype).removeprefix('torch.')}"
             for path, t in tensors_in(out, "result")
             if t.is_floating_point() and t.dtype != torch.bfloat16]
    check.expect(not wrong, f"{what} with bfloat16 inputs returns bfloat16",
                 expected="bfloat16 results", got=", ".join(wrong) or "bfloat16",
                 likely=likely)


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
LARGEST_ONLY = ("only the largest logit of each row survived, whatever top_k: the threshold "
                "must be the k-th largest value (the smallest of the k values torch.topk "
                "returns), not the largest")
TOPK_OVER_BATCH = ("the k largest were taken down the batch (dim=0), not along the vocabulary: "
                   "a row kept only the tokens where it beats the other rows; take torch.topk "
                   "over dim=-1")
SOFTMAX_OVERFLOW = ("the probabilities hold inf or nan: e^(logit / temperature) overflows "
                    "once logit / temperature is in the hundreds; subtract each row's maximum "
                    "before the exponential, as torch.softmax does")
K_PLUS_ONE = "top_k + 1 tokens were kept: keep exactly the k largest logits"
K_MINUS_ONE = ("only top_k - 1 tokens were kept: the k-th largest logit itself must survive "
               "(remove the logits strictly below it: < instead of <=)")
SMALLEST_K = "the k smallest logits were kept instead of the k largest"
ZERO_FILL = ("the logits outside the top k were set to 0 instead of -inf, so those tokens "
             "can still be drawn")
TOP_K_IGNORED = ("top_k had no effect: tokens outside the k largest logits were drawn (a "
                 "threshold that counts from the smallest logit, as torch.kthvalue does, keeps "
                 "every token at top_k=1: the k-th largest of V logits is the (V - k + 1)-th "
                 "smallest)")
TOPK_FLATTENED = ("some row had every logit removed (all -inf, so its probabilities are nan "
                  "and torch.multinomial refuses them): the k largest were taken over the "
                  "whole batch at once, so rows with smaller logits lost all of theirs; take "
                  "the k largest of each row separately, along the vocabulary")
SORTED_IDS = ("the ids are positions in the row sorted by probability (0 = the most likely "
              "token), not the tokens' ids in the vocabulary: map each drawn position back to "
              "the token it came from")
TOP_K_POSITION = ("the position within the top k (0..k-1) came back instead of the token's "
                  "id in the vocabulary: map it back with the indices that torch.topk returns")
FIRST_ROW_THRESHOLD = ("the k-th largest logit of the first row was used as the threshold "
                       "for every row: compare each row with its own k-th largest value, "
                       "kept as a column of shape (B, 1)")
KTH_AXIS_DROPPED = ("the k-th largest value lost its axis: picking one column of torch.topk's "
                    "values with a single index leaves shape (B,), which lines up with the "
                    "vocabulary axis, not with the rows; keep it as a column of shape (B, 1)")
OTHER_K = ("a number of tokens other than top_k can be drawn (a k of your own?): keep "
           "exactly the top_k largest logits, with the top_k passed in")
TEMPERATURE_TWICE = ("the logits were divided by the temperature twice (the distribution "
                     "is that of temperature T²): divide them once")
SAMPLE_AXIS_KEPT = ("torch.multinomial returns shape (B, 1): remove that last axis to return "
                    "shape (B,)")
BATCH_AXIS_SQUEEZED = ("with one row (B = 1) the result has no axis left: .squeeze() removed "
                       "the batch axis too; remove only the sample axis, .squeeze(-1)")
NOT_INT64 = "the token ids are not int64: return what torch.multinomial gives, unconverted"
NO_VALUE_ERROR = ("no ValueError for a temperature <= 0: test the temperature before anything "
                  "else, and raise a ValueError whose message names it")
VAGUE_ERROR = ("the ValueError does not say what was wrong: name the temperature in its "
               "message")
GENERATOR_IGNORED = ("two generators in the same state gave different samples under "
                     "different global seeds: the generator was ignored (pass "
                     "generator=generator to torch.multinomial)")
RESEEDS = ("without a generator, two global seeds gave the same samples: the function "
           "reseeds (torch.manual_seed inside) or draws from a generator of its own; with "
           "generator=None, torch.multinomial draws from the global generator: leave it be")
SAME_FOR_ALL_SEEDS = ("generators seeded differently gave the same samples: the function "
                      "reseeds the generator passed in (generator.manual_seed(...) inside) or "
                      "draws from one of its own; draw from the generator as it is passed in")
SEED_NOT_STATE = ("a generator that had already drawn numbers gave the samples of a fresh one "
                  "with the same seed: every step of a generation loop would draw the same "
                  "numbers; draw from the generator's current state "
                  "(torch.multinomial(..., generator=generator)), not from its initial_seed()")
NOT_GLOBAL = ("without a generator, the same global seed gave different samples: the "
              "function draws from somewhere else than PyTorch's global generator (a "
              "torch.seed() inside reseeds it from the clock)")

# Two rows of logits per case, designed so that every listed mistake moves some token's
# probability by at least 0.1 from the right one (and from each other mistake's); a hidden
# test permutes the vocabulary and adds a little noise, which changes none of this (except
# for TOP_K_POSITION, whose answer does not move with the vocabulary: it is named only when
# the frequencies match it).
ROWS = {
    "plain": ((0.8, -0.4, 0.2, -3.0, -2.2, -3.6), (-2.5, 0.6, -3.2, 0.1, -0.5, -2.0)),
    "low tail": ((0.3, -6.0, -0.2, -6.5, 0.0, -5.5), (-6.2, 0.1, -5.8, 0.4, -6.0, -0.3)),
    "flat": ((0.5, 0.1, 0.4, 0.0, 0.3, 0.2), (0.0, 0.45, 0.1, 0.35, 0.2, 0.5)),
}
# clause -> (case, rows, temperature, top_k, the mistakes this case can tell apart)
CASES: dict[str, tuple[tuple[str, str, float, int | None, tuple[str, ...]], ...]] = {
    "distribution": (
        ("temperature 1, no top-k", "plain", 1.0, None, (ARGMAX, SOFTMAX_OVER_BATCH,
                                                          SORTED_IDS)),),
    "top_k": (
        ("top_k=3", "low tail", 1.0, 3, (LARGEST_ONLY, SMALLEST_K, ZERO_FILL, K_MINUS_ONE,
                                         FIRST_ROW_THRESHOLD, TOP_K_POSITION)),
        # after top_k=3: with k = 1, keeping k - 1 tokens keeps none, and the draw fails
        ("top_k=1", "plain", 1.0, 1, (TOPK_OVER_BATCH, K_PLUS_ONE, TOP_K_IGNORED)),
        ("top_k=2", "flat", 1.0, 2, (LARGEST_ONLY, SMALLEST_K, K_PLUS_ONE, TOP_K_IGNORED,
                                     TOP_K_POSITION))),
    "temperature": (
        ("temperature 0.5", "plain", 0.5, None, (MULTIPLIED, TEMPERATURE_IGNORED,
                                                  TEMPERATURE_TWICE)),
        ("temperature 0.5 with top_k=3", "plain", 0.5, 3, (TEMPERATURE_IGNORED_WITH_TOP_K,
                                                           TOP_K_POSITION))),
}
DRAWS_PER_ROW = 10_000
# A mistake is recognised when every frequency lies within TOLERANCE of its distribution.
TOLERANCE = 0.04
# ln(2 / 1e-13): a frequency of n independent draws passes its check (see `frequency_slack`)
# except with probability 1e-13 (Bernstein's inequality), so that a right answer cannot fail
# by chance, even over the hundreds of frequencies a hidden test compares.
_LOG_ODDS = math.log(2e13)
# Captured at import, before any student code runs (as in the framework).
_allclose = torch.allclose
_STUDENT_LINE = re.compile(r"\s*\(your line \d+: `.*`\)$")


def _keep_top(logits: torch.Tensor, k: int, largest: bool = True,
              fill: float = float("-inf")) -> torch.Tensor:
    index = torch.topk(logits, k, dim=-1, largest=largest).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, index, True)
    return logits.masked_fill(~keep, fill)


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).double()


def right_distribution(rows: torch.Tensor, temperature: float,
                       top_k: int | None) -> torch.Tensor:
    """The distribution each row is drawn from: softmax(rows / T) over the k largest."""
    scaled = rows.double() / temperature
    return torch.softmax(_keep_top(scaled, top_k) if top_k is not None else scaled, dim=-1)


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
        TEMPERATURE_TWICE: torch.softmax(rows / temperature**2, dim=-1),
        SORTED_IDS: torch.softmax(kept, dim=-1).sort(dim=-1, descending=True).values,
    }
    if top_k is not None:
        ranked = result[None].sort(dim=-1, descending=True).values
        first_row = scaled.masked_fill(scaled < scaled[0].topk(top_k).values[-1], float("-inf"))
        # the k-th largest of a column down the batch of alternating rows is the larger of
        # the two rows' values: a row keeps the tokens where it is at least the other row
        over_rows = scaled.masked_fill(scaled < scaled.amax(0, keepdim=True), float("-inf"))
        result.update({
            LARGEST_ONLY: _one_hot_argmax(rows),
            TOPK_OVER_BATCH: torch.softmax(over_rows, dim=-1),
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


def _other_k_matches(frequencies: torch.Tensor, rows: torch.Tensor, temperature: float,
                     top_k: int) -> bool:
    """Whether every row drew exactly k' different tokens, with the frequencies of its top k',
    for some k' other than top_k (and top_k ± 1, which have diagnoses of their own)."""
    scaled = rows.double() / temperature
    drawn = set((frequencies > 0).sum(-1).tolist())
    return any(drawn == {k} and _matches(frequencies, torch.softmax(_keep_top(scaled, k), -1))
               for k in range(1, rows.shape[-1]) if abs(k - top_k) > 1)


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


def expect_token_ids(check: SelfCheck, got: Any, B: int, V: int, what: str) -> torch.Tensor:
    """``got`` is a (B,) int64 tensor of ids in 0..V-1."""
    got = check.tensor(got, what)
    shape = tuple(got.shape)
    check.expect(shape == (B,), f"{what} has shape ({B},)", expected=f"shape ({B},)",
                 got=f"shape {shape}", diagnoses={SAMPLE_AXIS_KEPT: shape == (B, 1),
                                                  BATCH_AXIS_SQUEEZED: B == 1 and shape == ()})
    check.expect(got.dtype == torch.int64, f"{what} holds token ids of dtype int64",
                 expected="torch.int64", got=str(got.dtype),
                 diagnoses={NOT_INT64: not got.is_floating_point()})
    check.expect(bool(((got >= 0) & (got < V)).all()), f"every token id of {what} lies in "
                 f"0..{V - 1}", expected=f"ids in 0..{V - 1}", got=describe(got))
    return got


def check_shapes(check: SelfCheck, sample: Callable[..., torch.Tensor],
                 logits: torch.Tensor, generator: torch.Generator) -> None:
    """The shape clause: (B,) int64 ids, for B rows and for one; ``logits`` by keyword."""
    B, V = logits.shape
    got = check.call(sample, logits=logits, generator=generator)
    expect_token_ids(check, got, B, V, f"sample_next_token(logits of shape {(B, V)})")
    one = check.call(sample, logits[:1], generator=generator)
    expect_token_ids(check, one, 1, V, f"sample_next_token(logits of shape {(1, V)})")


def sampling_case(check: SelfCheck, sample: Callable[..., torch.Tensor], rows: torch.Tensor,
                  case: str, temperature: float, top_k: int | None,
                  mistakes: Sequence[str], seed: int, large: bool = False
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Draw DRAWS_PER_ROW tokens from each of two rows (the batch alternates them) and
    compare how often each token comes up with its probability. Returns, per row, its draws
    in order and the probabilities they come from. ``large``: logits / temperature are in
    the thousands, where an exponential without the row's maximum subtracted overflows."""
    V = rows.shape[-1]
    logits = rows.repeat(DRAWS_PER_ROW, 1)
    what = f"sample_next_token(logits of shape {tuple(logits.shape)}, {case})"
    causes = {KTH_AXIS_DROPPED: (
        rf"size of tensor a \({V}\) must match the size of tensor b \({len(logits)}\)", None)}
    if large:
        causes[SOFTMAX_OVERFLOW] = (r"probability tensor contains either `inf`, `nan`", None)
    elif top_k is not None:
        causes[TOPK_FLATTENED] = (r"probability tensor contains either `inf`, `nan`", None)
    got = call_naming(check, causes, sample, logits, temperature=temperature, top_k=top_k,
                      generator=_generator(seed))
    got = expect_token_ids(check, got, len(logits), V, what)
    frequencies = torch.stack([
        torch.bincount(got[r::2], minlength=V).double() / DRAWS_PER_ROW for r in (0, 1)])
    expected = _distributions(rows, temperature, top_k)
    draws = []
    matching = {m: (lambda w=expected[m], f=frequencies: _matches(f, w)) for m in mistakes}
    # exactly k' tokens drawn is a stronger signature than the others, except that of one
    # token (k' = 1), which has its own cause
    diagnoses = {m: matching.pop(m) for m in (LARGEST_ONLY,) if m in matching}
    if top_k is not None:
        diagnoses[OTHER_K] = lambda: _other_k_matches(frequencies, rows, temperature, top_k)
    diagnoses.update(matching)
    for r in (0, 1):  # one comparison per row, so that the message shows the whole row
        expect_frequencies(check, frequencies[r], expected[None][r], DRAWS_PER_ROW,
                           f"{case}: how often each token is drawn for row {r} of the two "
                           f"rows of logits ({DRAWS_PER_ROW} draws each) matches "
                           "softmax(logits / temperature) over the kept tokens",
                           diagnoses=diagnoses)
        draws.append((got[r::2], expected[None][r]))
    return draws


def small_temperature_case(check: SelfCheck, sample: Callable[..., torch.Tensor],
                           rows: torch.Tensor, offset: float, temperature: float,
                           seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logits near ``offset`` at a small temperature: logits / temperature lie in the
    thousands, and the distribution is that of ``rows`` at temperature 1."""
    return sampling_case(check, sample, offset + rows * temperature,
                         f"logits near {offset:.0f} at temperature {temperature:.3g}",
                         temperature, None, (), seed, large=True)


def _message(error: BaseException) -> str:
    return _STUDENT_LINE.sub("", str(error))


def check_bad_temperatures(check: SelfCheck, sample: Callable[..., torch.Tensor],
                           logits: torch.Tensor, temperatures: Sequence[float]) -> None:
    """Each temperature <= 0 raises a ValueError whose message names the temperature."""
    for bad in temperatures:
        try:
            sample(logits.clone(), temperature=bad)
        except NotImplementedError as error:
            check.not_implemented(error)
        except Exception as error:  # noqa: BLE001 - which error came back is the check
            # through the grader's proxies a student's exception arrives with its name only
            is_value_error = (isinstance(error, ValueError)
                              or type(error).__name__ == "ValueError")
            check.expect(is_value_error, f"temperature={bad:.3g} raises a ValueError",
                         expected="ValueError: ... temperature ...",
                         got=f"{type(error).__name__}: {_message(error)[:200]}")
            check.expect("temperature" in _message(error).lower(), f"the ValueError for "
                         f"temperature={bad:.3g} names the temperature",
                         expected="ValueError: ... temperature ...",
                         got=f"ValueError: {_message(error)[:200]}", likely=VAGUE_ERROR)
            continue
        check.expect(False, f"temperature={bad:.3g} raises a ValueError",
                     expected="ValueError: ... temperature ...", got="no error",
                     likely=NO_VALUE_ERROR)


GENERATOR_COPIED = ("the draws came from a copy of the generator's state (or a generator made "
                    "from it), so the generator you were given never moved on and the next "
                    "call draws the same numbers again: draw from the generator itself")


def check_randomness(check: SelfCheck, sample: Callable[..., torch.Tensor],
                     logits: torch.Tensor, seeds: Sequence[int]) -> None:
    """A generator alone decides the draws, from its current state; without one, the global
    generator does; neither is ever reseeded. ``seeds``: four different seeds."""
    same, global_a, global_b, state = seeds
    what = f"sample_next_token(logits of shape {tuple(logits.shape)}"
    first = check.call_seeded(global_a, sample, logits, generator=_generator(state))
    second = check.call_seeded(global_b, sample, logits, generator=_generator(state))
    check.expect(torch.equal(torch.as_tensor(first), torch.as_tensor(second)),
                 f"{what}, generator=...): two generators in the same state give the same "
                 "tokens under different global seeds", expected="identical tokens",
                 got="different tokens", likely=GENERATOR_IGNORED)
    one = check.call_seeded(same, sample, logits)
    again = check.call_seeded(same, sample, logits)
    check.expect(torch.equal(torch.as_tensor(one), torch.as_tensor(again)),
                 f"{what}) without a generator: the same global seed gives the same tokens",
                 expected="identical tokens", got="different tokens", likely=NOT_GLOBAL)
    other = check.call_seeded(global_a, sample, logits)
    check.expect(not torch.equal(torch.as_tensor(one), torch.as_tensor(other)),
                 f"{what}) without a generator: two global seeds give different tokens",
                 expected="different tokens", got="identical tokens", likely=RESEEDS)

    def draw(seed: int, advanced: bool = False) -> torch.Tensor:
        generator = _generator(seed)
        if advanced:  # the state after some draws: the same seed, other numbers to come
            torch.rand(17, generator=generator)
        return torch.as_tensor(check.call(sample, logits, generator=generator))

    fresh = draw(state)
    check.expect(not torch.equal(fresh, draw(global_b)), f"{what}, generator=...): "
                 "generators seeded differently give different tokens",
                 expected="different tokens", got="identical tokens", likely=SAME_FOR_ALL_SEEDS)
    check.expect(not torch.equal(fresh, draw(state, advanced=True)), f"{what}, generator=...): "
                 "a generator that has already drawn numbers (as in a generation loop) gives "
                 "other tokens than a fresh one with the same seed",
                 expected="different tokens", got="identical tokens", likely=SEED_NOT_STATE)
    shared = _generator(state)
    once = torch.as_tensor(check.call(sample, logits, generator=shared))
    twice = torch.as_tensor(check.call(sample, logits, generator=shared))
    check.expect(not torch.equal(once, twice), f"{what}, generator=...): two calls with one "
                 "generator give different tokens (the generator moves on with every draw)",
                 expected="different tokens", got="identical tokens", likely=GENERATOR_COPIED)


def check_sample_next_token(sample_next_token: Callable[..., torch.Tensor]) -> None:
    """Shapes, the frequencies of many draws, top-k, temperature, bad temperatures, and
    where the randomness comes from."""
    check = SelfCheck("sample_next_token")
    permutation = torch.tensor([2, 0, 5, 1, 4, 3])
    seeds = iter(range(70, 80))
    plain = torch.tensor(ROWS["plain"])[:, permutation]
    check.clause("shape")
    check_shapes(check, sample_next_token, plain.repeat(3, 1), _generator(next(seeds)))
    for clause in ("distribution", "top_k", "temperature"):
        check.clause(clause)
        for case, rows, temperature, top_k, mistakes in CASES[clause]:
            sampling_case(check, sample_next_token, torch.tensor(ROWS[rows])[:, permutation],
                          case, temperature, top_k, mistakes, next(seeds))
    small_temperature_case(check, sample_next_token, plain, 100.0, 0.05, 84)
    check_bad_temperatures(check, sample_next_token, plain, (0.0, -1.0))
    check.clause("randomness")
    check_randomness(check, sample_next_token, plain.repeat(50, 1), (80, 81, 82, 83))
    check.clause("device")
    check_sample_device(check, sample_next_token, plain.repeat(3, 1))
    check.passed()


def check_sample_device(check: SelfCheck, sample: Callable[..., torch.Tensor],
                        logits: torch.Tensor) -> None:
    """Without top-k and with it (where a tensor of -inf is easily made on the CPU)."""
    for top_k in (None, 3):
        check.device_follows(sample, logits, temperature=0.8, top_k=top_k,
                             what=f"sample_next_token(logits, temperature=0.8, top_k={top_k})")


# ---- the KV cache ------------------------------------------------------------------------------

NEW_FIRST = ("the new entry was put first: append it at the end, so that the cache stays "
             "in the order of the tokens")
CACHE_UNCHANGED = "the old cache came back unchanged: append the new key and value to it"
ONLY_NEW = "the cache returned holds only the new entry: it must hold all t + 1"
CACHE_WRONG_AXIS = ("the new entry was appended on the wrong axis: keys and values are "
                    "stacked along the time axis, dim=-2 of (B, H, t, dh)")
KEYS_VALUES_SWAPPED = "keys and values were swapped in the returned cache: return (K', V')"
NEW_KV_SWAPPED = ("the new key was appended to the values and the new value to the keys: "
                  "K' = cat(K, k_new), V' = cat(V, v_new)")
SCALE_BY_LENGTH = ("the scores were scaled by 1/sqrt(t + 1), the number of keys: the scale is "
                   "1/sqrt(dh), the size of each query and key")
NO_SCALE = "the scores were not scaled: divide q · k by sqrt(dh)"
SCALE_TIMES_SQRT = ("the scores were multiplied by sqrt(dh): divide them by it (the scale is "
                    "1/sqrt(dh))")
AXES_SQUEEZED = ("the shapes stopped lining up after an axis was removed (.squeeze() with no "
                 "dim removes every axis of size 1, the batch or head axis too when B or H is "
                 "1): keep all four axes (B, H, 1, t + 1) for the scores and weights")
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
ALL_AXES_REVERSED = ("`K.T` reverses all four axes of a (B, H, t, dh) tensor: swap only the "
                     "last two, K.transpose(-2, -1) (or K.mT)")
QUERY_AXIS_DROPPED = ("the query axis of size 1 was removed: out keeps the shape of q, "
                      "(B, H, 1, dh)")


def _attend(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, scale: float,
            dim: int = -1) -> torch.Tensor:
    weights = torch.softmax(q.double() @ K.double().transpose(-2, -1) * scale, dim=dim)
    return weights @ V.double()


def _cloned(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple | list):
        return type(value)(_cloned(v) for v in value)
    return value


def _call_step(check: SelfCheck, step: Callable[..., Any], what: str, *args: Any) -> Any:
    """Call the student's step; name the crashes that have one cause (torch.cat on the wrong
    axis, a cache of None indexed like a pair, ``K.T`` on a tensor of four axes)."""
    return call_naming(check, {
        CACHE_WRONG_AXIS: (r"must match except in dimension", "cache"),
        NONE_NOT_HANDLED: (r"NoneType" if args[-1] is None else r"(?!)", "cache"),
        ALL_AXES_REVERSED: (r"line \d+ of its cell: `[^`]*\.T\b", "values"),
        AXES_SQUEEZED: (r"must match the size of tensor b", "values"),
        # any other crash outside the line that builds the cache is the attention's
        "": (r"line \d+ of its cell: `(?![^`]*\bcat\b)", "values"),
    }, step, *args)


def _pair(check: SelfCheck, result: Any, what: str) -> tuple[Any, Any]:
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{what} returns a pair (out, cache)", expected="(out, (K', V'))",
                 got=describe(result))
    return result[0], result[1]


def _unpack_cache(check: SelfCheck, cache: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    check.expect(cache is not None, f"{what} returns the new cache", expected="(K', V')",
                 got="None", likely=NO_CACHE_RETURNED)
    check.expect(isinstance(cache, tuple | list) and len(cache) == 2
                 and all(isinstance(c, torch.Tensor) for c in cache),
                 f"the cache returned by {what} is a pair of tensors (K', V')",
                 expected="(K', V')", got=describe(cache))
    return cache[0], cache[1]


def check_cache(check: SelfCheck, step: Callable[..., Any], generator: torch.Generator,
                B: int = 2, H: int = 3, t: int = 5, dh: int = 4, T: int = 5,
                half: bool = True) -> None:
    """The checks of ``cached_attention_step`` on inputs drawn from ``generator`` (t + 1 ≠ dh,
    so that a scale of 1/sqrt(t + 1) does not pass by coincidence)."""
    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    q, k, v = draw(B, H, 1, dh), draw(B, H, 1, dh), draw(B, H, 1, dh)
    K, V = draw(B, H, t, dh), draw(B, H, t, dh)
    first = "the first decoding step, with cache=None"
    what = f"cached_attention_step with a cache of length {t}"

    check.clause("cache")
    out_first, cache_first = _pair(check, _call_step(check, step, first, q, k, v, None), first)
    out, cache = _pair(check, _call_step(check, step, what, q, k, v, (K, V)), what)
    K2, V2 = _unpack_cache(check, cache, what)
    full_K, full_V = torch.cat([K, k], dim=-2), torch.cat([V, v], dim=-2)
    for name, got, old, new, full, other, crossed in (
            ("K'", K2, K, k, full_K, full_V, torch.cat([K, v], dim=-2)),
            ("V'", V2, V, v, full_V, full_K, torch.cat([V, k], dim=-2))):
        shape = tuple(got.shape)
        check.expect(shape == tuple(full.shape), f"the new cache {name} has shape "
                     f"{tuple(full.shape)} (one more time step)", expected=f"shape "
                     f"{tuple(full.shape)}", got=f"shape {shape}", diagnoses={
                         CACHE_UNCHANGED: shape == tuple(old.shape) and torch.equal(got, old),
                         ONLY_NEW: shape == tuple(new.shape) and torch.equal(got, new),
                         CACHE_WRONG_AXIS: got.numel() == full.numel()})
        _close(check, got, full, f"the new cache {name} is the old one with the new entry "
                    "appended at the end", mistakes={
                        NEW_FIRST: torch.cat([new, old], dim=-2), KEYS_VALUES_SWAPPED: other,
                        NEW_KV_SWAPPED: crossed},
                    dims=("batch", "head", "time", "channel"))
    K1, V1 = _unpack_cache(check, cache_first, first)
    _close(check, K1, k, f"{first}: the new cache of keys is k_new", mistakes={
        KEYS_VALUES_SWAPPED: v}, dims=("batch", "head", "time", "channel"))
    _close(check, V1, v, f"{first}: the new cache of values is v_new", mistakes={
        KEYS_VALUES_SWAPPED: k}, dims=("batch", "head", "time", "channel"))

    check.clause("shape")
    for name, got in ((f"out of {first}", out_first), (f"out of {what}", out)):
        got = check.tensor(got, name)
        check.expect(tuple(got.shape) == (B, H, 1, dh), f"{name} has shape {(B, H, 1, dh)}",
                     expected=f"shape {(B, H, 1, dh)}", got=f"shape {tuple(got.shape)}",
                     diagnoses={QUERY_AXIS_DROPPED: tuple(got.shape) == (B, H, dh)})
    single = [x[:1, :1] for x in (q, k, v, K, V)]
    one_out, _ = _pair(check, _call_step(check, step, "with B = H = 1", *single[:3],
                                         tuple(single[3:])), "a step with B = H = 1")
    check.shape(check.tensor(one_out, "out for B = H = 1"), (1, 1, 1, dh),
                "out of a step with B = H = 1")

    check.clause("values")
    scale = 1 / math.sqrt(dh)
    _close(check, out_first, v, f"{first}: out equals v_new (the only key gets all the weight)",
                mistakes={KEYS_AS_VALUES: k}, dims=("batch", "head", "query", "channel"))
    _close(check, out, _attend(q, full_K, full_V, scale),
                "out is the attention of q over all t + 1 keys, scaled by 1/sqrt(dh)",
                mistakes={NO_SCALE: _attend(q, full_K, full_V, 1.0),
                          SCALE_TIMES_SQRT: _attend(q, full_K, full_V, math.sqrt(dh)),
                          SCALE_BY_DH: _attend(q, full_K, full_V, 1 / dh),
                          SCALE_BY_LENGTH: _attend(q, full_K, full_V, 1 / math.sqrt(t + 1)),
                          STEP_SOFTMAX_AXIS: _attend(q, full_K, full_V, scale, dim=-2),
                          NEW_KEY_LEFT_OUT: _attend(q, K, V, scale),
                          OLD_KEYS_LEFT_OUT: v.double(),
                          SDPA_CAUSAL: full_V[..., :1, :].double(),
                          KEYS_AS_VALUES: _attend(q, full_K, full_K, scale)},
                dims=("batch", "head", "query", "channel"))
    _close(check, one_out, _attend(*single[:1], torch.cat([single[3], single[1]], dim=-2),
                                 torch.cat([single[4], single[2]], dim=-2), scale),
                "out of a step with B = H = 1", dims=("batch", "head", "query", "channel"))
    # A loop of steps from an empty cache reproduces causal attention over the sequence.
    qs, ks, vs = draw(B, H, T, dh), draw(B, H, T, dh), draw(B, H, T, dh)
    expected = F.scaled_dot_product_attention(qs.double(), ks.double(), vs.double(),
                                              is_causal=True)
    loop_cache = None
    for i in range(T):
        step_what = f"step {i} of a loop that starts from cache=None"
        step_out, loop_cache = _pair(check, _call_step(
            check, step, step_what, qs[:, :, i:i + 1], ks[:, :, i:i + 1], vs[:, :, i:i + 1],
            loop_cache), step_what)
        _close(check, step_out, expected[:, :, i:i + 1], f"{step_what}: out equals row {i} of "
                    "F.scaled_dot_product_attention(q, k, v, is_causal=True)",
                    dims=("batch", "head", "query", "channel"))
    _close(check, loop_cache[0], ks, "after the loop the cache holds every key, in order")
    _close(check, loop_cache[1], vs, "after the loop the cache holds every value, in order")

    check.clause("dtype")
    check.dtype_follows(step, q, k, v, (K, V), what=what)
    check.dtype_follows(step, q, k, v, None, what=first)
    if half:  # (a float32 tensor of its own meets bfloat16 ones in a matmul, which raises)
        half_follows(check, step, q, k, v, (K, V), what=what, likely=CONVERTED)
        half_follows(check, step, q, k, v, None, what=first, likely=CONVERTED)
    check.clause("device")
    check.device_follows(step, q, k, v, (K, V), what=what)
    check.device_follows(step, q, k, v, None, what=first)


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
LOOP_STOPS_EARLY = ("the last block was left out: the loop stops before it "
                    "(range(0, T - block_size, block_size)?); loop over "
                    "range(0, T, block_size)")
SOFTMAX_FIRST_AXIS = ("the softmax ran along the first axis (dim=0), not along each row: the "
                      "blocks and the running statistics go along the last axis, dim=-1")
NUMERATOR_PER_BLOCK = ("each block's numerator used the running maximum of its own time, "
                       "e^(x - m) with the m after that block, not the final maximum of the "
                       "row: compute every e^(x - m) at the end, with the m of the sum")
EDGE_TWICE = ("the last element of each block was counted again at the start of the next "
              "one: a block is x[..., start:start + block_size]")
EACH_BLOCK_ALONE = "each block was normalised on its own: the sum must run over the whole row"
FIRST_BLOCK_SKIPPED = ("the first block was left out of the running maximum and sum: the "
                       "blocks start at position 0")
FIRST_MAX_KEPT = ("the first block's maximum stayed the reference of the whole row (for the "
                  "sum, or for the final e^(x - m)): once later values rise hundreds above "
                  "it, e^(x - m) overflows to inf (nan after the division); let m grow with "
                  "every block, and divide with the final m")
SUM_INVERTED = ("the running sum was rescaled by exp(new max - old max), the inverse of the "
                "right factor, so the sum comes out too large: multiply it by "
                "exp(old max - new max), which is at most 1")
SUM_INVERTED_NAN = ("every entry is nan: the running sum was probably rescaled by "
                    "exp(new max - old max), the inverse of the right factor (at the first "
                    "block, where the old max is -inf, that is 0 · e^(+inf) = nan): multiply "
                    "it by exp(old max - new max), which is at most 1")
ONE_SUM_FOR_ALL = ("a single maximum and a single sum served every row (numbers, e.g. from "
                   ".item() or max(...)), not one pair per row: keep one m and one s for "
                   "every row, each with a trailing axis of size 1")
EMPTY_BLOCK = ("a block came out empty (a tensor with an axis of size 0): the blocks were "
               "probably cut along dim 0, x[start:start + block_size], instead of along "
               "the rows, x[..., start:start + block_size]")
LAST_BLOCK_MAX = ("the final numerator used the maximum of the last block, not the running "
                  "maximum of the whole row: the numerator and the sum must be relative to "
                  "the same m")
WRONG_AXIS = ("the blocks were cut along the first axis instead of the last: a block is "
              "x[..., start:start + block_size]")
MAX_STARTS_AT_ZERO = ("the running maximum started at 0 instead of -inf: for a row of logits "
                      "near -1000, e^(x - 0) underflows to 0 and the softmax becomes 0/0 = nan")
ONE_MAX_FOR_ALL = ("one maximum was taken over the whole tensor instead of one per row: rows "
                   "far below it underflow to 0 (0/0 = nan); keep the row's maximum with "
                   "amax(dim=-1, keepdim=True)")
BLOCK_SIZE_UNUSED = ("block_size made no difference to the work done: go over the row in "
                     "blocks of block_size (torch.softmax, or a loop with a block size of its "
                     "own, does the same work whatever block_size is)")
BLOCK_MAX_NOT_RUNNING = ("m was set to each block's own maximum instead of the running "
                         "maximum: when a block's values fall far below the earlier ones, "
                         "e^(m_old - m) overflows to inf (nan after the division); keep "
                         "m = max(m, block max), so that m never decreases")


def _online(x: torch.Tensor, block_size: int, *, rescale: bool = True,
            subtract_max: bool = True, drop_last: bool = False, overlap: bool = False,
            inverted: bool = False, start_at_zero: bool = False, one_max: bool = False,
            last_block_max: bool = False, block_max_only: bool = False,
            stops_early: bool = False, numerator_per_block: bool = False,
            skip_first: bool = False, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The right online softmax and its wrong variants (in ``dtype``: float64 unless a
    mistake's overflow in the input's float32 is what tells it apart)."""
    x = x.to(dtype)
    T = x.shape[-1]
    m = torch.full(x.shape[:-1] + (1,), 0.0 if start_at_zero else float("-inf"), dtype=dtype)
    s = torch.zeros_like(m)
    stop = T // block_size * block_size if drop_last else T
    if stops_early:
        stop = max(T - block_size, 1)
    block_max = m
    numerators = []
    for start in range(block_size if skip_first else 0, stop, block_size):
        block = x[..., start:start + block_size + (1 if overlap else 0)]
        block_max = block.amax() if one_max else block.amax(-1, keepdim=True)
        if block_max_only:
            new_m = block_max
        else:
            new_m = torch.maximum(m, block_max) if subtract_max else torch.zeros_like(m)
        if inverted:  # before the first block s = 0, whatever the factor
            factor = torch.where(m.isinf(), 0.0, torch.exp(new_m - m))
        else:
            factor = torch.exp(m - new_m) if rescale and subtract_max else 1.0
        s = s * factor + torch.exp(block - new_m).sum(-1, keepdim=True)
        m = new_m
        numerators.append(torch.exp(block - m))
    if numerator_per_block:
        return torch.cat(numerators, dim=-1) / s
    return torch.exp(x - (block_max if last_block_max else m)) / s


def _first_max_kept(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two ways of keeping the first block's maximum m0 (in the input's dtype, whose
    overflow they share): a sum relative to m0 alone, and a right running sum whose final
    division still uses m0."""
    m0 = x[..., :block_size].amax(-1, keepdim=True)
    fixed = torch.exp(x - m0) / torch.exp(x - m0).sum(-1, keepdim=True)
    m = x.amax(-1, keepdim=True)
    final = torch.exp(x - m0) / (torch.exp(x - m).sum(-1, keepdim=True) * torch.exp(m - m0))
    return fixed, final


def _like(out: torch.Tensor, candidate: torch.Tensor) -> bool:
    """Whether ``out`` is what a wrong variant returns (nan where it has nan)."""
    return (out.shape == candidate.shape and _allclose(out.double(), candidate.double(), atol=1e-5, rtol=1e-4,
                          equal_nan=True))


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


def online_mistakes(x: torch.Tensor, block_size: int) -> dict[str, torch.Tensor]:
    """What the usual wrong online softmaxes return for ``x`` in blocks of ``block_size``."""
    T = x.shape[-1]
    mistakes = {SUM_NOT_RESCALED: _online(x, block_size, rescale=False),
                SUM_INVERTED: _online(x, block_size, inverted=True),
                MAX_NOT_SUBTRACTED: _online(x, block_size, subtract_max=False),
                LAST_BLOCK_MAX: _online(x, block_size, last_block_max=True),
                MAX_STARTS_AT_ZERO: _online(x, block_size, start_at_zero=True),
                ONE_MAX_FOR_ALL: _online(x, block_size, one_max=True),
                BLOCK_MAX_NOT_RUNNING: _online(x, block_size, block_max_only=True,
                                               dtype=x.dtype)}
    if T % block_size:
        mistakes[LAST_BLOCK_DROPPED] = _online(x, block_size, drop_last=True)
    if x.dim() > 1:
        mistakes[SOFTMAX_FIRST_AXIS] = torch.softmax(x.double(), dim=0)
    if block_size < T:
        mistakes[FIRST_BLOCK_SKIPPED] = _online(x, block_size, skip_first=True)
        mistakes[NUMERATOR_PER_BLOCK] = _online(x, block_size, numerator_per_block=True)
        mistakes[LOOP_STOPS_EARLY] = _online(x, block_size, stops_early=True)
        mistakes[EDGE_TWICE] = _online(x, block_size, overlap=True)
    first_axis = _online_first_axis(x, block_size)
    if first_axis is not None:
        mistakes[WRONG_AXIS] = first_axis
    whole = torch.exp(x.double() - x.double().max())
    mistakes[ONE_SUM_FOR_ALL] = whole / whole.sum()
    return mistakes


def _each_block_alone(out: torch.Tensor, x: torch.Tensor, block_size: int) -> bool:
    """Each block's own softmax, concatenated (and perhaps divided by the number of blocks
    so that the row sums to 1)."""
    blocks = x.double().split(block_size, dim=-1)
    alone = torch.cat([torch.softmax(b, dim=-1) for b in blocks], dim=-1)
    return _like(out, alone) or _like(out, alone / len(blocks))


def _inverted_without_guard(out: torch.Tensor) -> bool:
    """The inverse factor with the running max starting at -inf: 0 · inf = nan at the first
    block, and nan everywhere after."""
    return out.numel() > 0 and bool(torch.isnan(out).all())


def check_online_case(check: SelfCheck, online: Callable[..., torch.Tensor], x: torch.Tensor,
                      block_size: int, what: str, dims: Sequence[str], **tolerance: float
                      ) -> None:
    """``online(x, block_size)`` equals torch.softmax(x, dim=-1), or names the mistake."""
    out = check.tensor(call_naming(check, {EMPTY_BLOCK: (r"tensor [ab] \(0\)", None)},
                                   online, x, block_size),
                       f"online_softmax({what}, block_size={block_size})")
    _close(check, out, torch.softmax(x.double(), dim=-1), f"online_softmax({what}, "
                f"block_size={block_size}) equals torch.softmax(x, dim=-1)",
                mistakes=online_mistakes(x, block_size), dims=dims,
                diagnoses={SUM_INVERTED_NAN: lambda: _inverted_without_guard(out),
                           EACH_BLOCK_ALONE: lambda: _each_block_alone(out, x, block_size),
                           FIRST_MAX_KEPT: lambda: any(
                               _like(out, c) for c in _first_max_kept(x, block_size)
                               if not bool(c.isfinite().all()))},
                **tolerance)


def rising(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Random logits with a rising trend: the running maximum changes from block to block."""
    return 2.0 * torch.randn(*shape, generator=generator) + torch.linspace(-2, 2, shape[-1])


def falling(rows: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """Rows whose maximum comes first, the values then falling by hundreds at every step."""
    first = 10 * torch.rand(rows, 1, generator=generator) - 5
    steps = 100 + 200 * torch.rand(rows, T - 1, generator=generator)
    return torch.cat([first, first - steps.cumsum(-1)], dim=-1)


def rising_by_hundreds(rows: int, T: int, block_size: int,
                       generator: torch.Generator) -> torch.Tensor:
    """Rows whose first block is near 0 and whose later values lie hundreds above it: the
    maximum of the first block is far below that of the row."""
    first = torch.randn(rows, block_size, generator=generator)
    rise = 150 + 300 * torch.rand(rows, 1, generator=generator)
    later = first.amax(-1, keepdim=True) + rise + 2 * torch.randn(rows, T - block_size,
                                                                 generator=generator)
    return torch.cat([first, later], dim=-1)


def large(generator: torch.Generator, offsets: Sequence[float]) -> torch.Tensor:
    """Rows of logits near each of ``offsets`` (in the thousands)."""
    return torch.randn(len(offsets), 8, generator=generator) * 3 + torch.tensor(offsets)[:, None]


def check_online(check: SelfCheck, online: Callable[..., torch.Tensor],
                 generator: torch.Generator, *,
                 values: Sequence[tuple[tuple[int, ...], int]],
                 blocks: Sequence[tuple[tuple[int, ...], int]],
                 falling_rows: Sequence[tuple[int, int]] = ((2, 4), (3, 3)),
                 large_offsets: Sequence[Sequence[float]] = ((1000.0, 1000.0, 1000.0),
                                                             (1000.0, -1000.0, 0.0)),
                 rising_rows: Sequence[tuple[int, int, int]] = ((3, 8, 2), (2, 9, 3)),
                 work_length: int = 24, work_block: int = 1, half: bool = True) -> None:
    """The checks of ``online_softmax``; inputs drawn from ``generator``. ``values``: shapes
    and block sizes that divide the rows; ``blocks``: the others; ``falling_rows``: (rows,
    length) of falling rows, in blocks of 1 and 2; ``rising_rows``: (rows, length,
    block_size) of rows that rise by hundreds after their first block; ``work_length``, ``work_block``: the row
    and the small block size of the check that block_size changes the work done; ``half``:
    also with bfloat16 inputs (the self-check's alone)."""
    check.clause("values")
    for shape, block_size in values:
        check_online_case(check, online, rising(shape, generator), block_size,
                          f"x of shape {shape}", ("batch",) * (len(shape) - 1) + ("position",),
                          atol=1e-6, rtol=1e-5)
    check.clause("blocks")
    for shape, block_size in blocks:
        check_online_case(check, online, rising(shape, generator), block_size,
                          f"x of shape {shape}", ("batch",) * (len(shape) - 1) + ("position",),
                          atol=1e-6, rtol=1e-5)
    check_blocks_used(check, online, generator, T=work_length, few=work_block)
    check.clause("falling")
    for (rows, T), block_size in zip(falling_rows, (1, 2), strict=False):
        x = falling(rows, T, generator)
        check_online_case(check, online, x, block_size, f"rows that fall by hundreds, such as "
                          f"{[round(v) for v in x[0].tolist()]}", ("row", "position"),
                          atol=1e-6, rtol=1e-5)
    check.clause("large")
    for offsets in large_offsets:
        # float32 holds numbers near 1000 to about 6e-5: a log-sum-exp is that exact
        check_online_case(check, online, large(generator, offsets), 3,
                          f"rows of logits near {', '.join(f'{o:+.0f}' for o in offsets)}",
                          ("row", "position"), atol=1e-5, rtol=1e-3)
    check.clause("rising")
    for rows, T, block_size in rising_rows:
        x = rising_by_hundreds(rows, T, block_size, generator)
        check_online_case(check, online, x, block_size, f"rows that rise by hundreds after "
                          f"their first block, such as {[round(v) for v in x[0].tolist()]}",
                          ("row", "position"), atol=1e-5, rtol=1e-3)
    x = rising((3, 10), generator)
    check.clause("dtype")
    check.dtype_follows(online, x, 4, what="online_softmax(x, 4)")
    if half:
        half_follows(check, online, x, 4, what="online_softmax(x, 4)")
    check.clause("device")
    check.device_follows(online, x, 4, what="online_softmax(x, 4)")


def check_blocks_used(check: SelfCheck, online: Callable[..., torch.Tensor],
                      generator: torch.Generator, T: int = 24, few: int = 1) -> None:
    """The work done grows with the number of blocks (a function that ignores block_size,
    or calls torch.softmax, does the same work for blocks of ``few`` and of T)."""
    x = rising((3, T), generator)
    whole, small = (check.call_observed(online, x, size)[1] for size in (T, few))
    expect_more_work(check, whole, small, T, few, f"online_softmax(x of shape (3, {T}))",
                     "the row", BLOCK_SIZE_UNUSED)


def expect_more_work(check: SelfCheck, whole: Observation, small: Observation, total: int,
                     few: int, what: str, over: str, likely: str) -> None:
    """A call with blocks of ``few`` did more operations than one with a single block of
    ``total``: the work follows block_size."""
    work = (sum(whole.calls.values()), sum(small.calls.values()))
    blocks = -(-total // few)
    check.expect(work[1] > work[0], f"{what} with block_size={few} does more operations than "
                 f"with block_size={total} (one block): it goes over {over} in blocks of "
                 "block_size", expected="more operations for more blocks",
                 got=f"{work[1]} operations for {blocks} blocks, {work[0]} for one block",
                 likely=likely)


def check_online_softmax(online_softmax: Callable[..., torch.Tensor]) -> None:
    """Equality with torch.softmax for many block sizes, partial blocks, falling and huge
    logits."""
    check = SelfCheck("online_softmax")
    check_online(check, online_softmax, torch.Generator().manual_seed(72),
                 values=(((2, 3, 12), 3), ((4, 10), 5), ((2, 8), 1), ((12,), 4)),
                 blocks=(((2, 3, 10), 4), ((3, 10), 10), ((3, 7), 16), ((5, 9), 2),
                         ((2, 150), 3)))
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
BLOCK_TIMES_SQRT = "the scores were multiplied by sqrt(d): divide them by it"
ALWAYS_CAUSAL = ("causal=False still masked the future: apply the causal mask only when "
                 "causal is True")
BLOCK_MAX_AT_ZERO = ("with every score in the negative hundreds the result is nan: the running "
                     "maximum probably started at 0 instead of -inf, so e^(score - 0) "
                     "underflows to 0 for every key and o / s is 0 / 0")
BLOCK_ZERO_FILL = "the future was masked with 0 instead of -inf"
BLOCK_DROPPED = "the last, shorter block of keys was left out"
DIVIDED_EACH_STEP = ("each block's contribution was divided by the running sum at that step; "
                     "later blocks change the sum, so divide once, at the end")
SCORES_OVERFLOW = ("with scores in the hundreds the result is not finite: e^score overflows "
                   "unless the running maximum is subtracted first, exp(scores - m')")
BLOCK_TOO_BIG = ("a tensor larger than a block of scores was made: block_size was not used "
                 "(a block size of your own), or the queries were cut into blocks instead of "
                 "the keys; cut K and V into blocks of block_size along the Tk axis")
BLOCK_ALL_AXES_REVERSED = ("`K.T` reverses all the axes of K: swap only the last two, "
                           "K.transpose(-2, -1) (or K.mT)")
BLOCK_CRASHES = {BLOCK_ALL_AXES_REVERSED: (r"line \d+ of its cell: `[^`]*\.T\b", "values")}
BLOCKS_IGNORED = ("block_size made no difference to the work done: go over the keys in "
                  "blocks of block_size (F.scaled_dot_product_attention, the whole score "
                  "matrix at once, or a block size of your own does the same work whatever "
                  "block_size is)")
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
MASK_INVERTED = ("the causal mask was inverted (keys before the query hidden instead of those "
                 "after it): query i reads keys 0..i; hide key j when j > i")
DIVIDED_RUNNING = ("the running output was divided by the running sum at every block and "
                   "not multiplied back: o is kept unnormalised (o' = o e^(m - m') + "
                   "Σ e^(x - m') v) and divided once, at the end")
NORMALISED_AND_RESET = ("the running output was normalised after every block (o / s) and "
                        "the sum reset to 1: the blocks seen so far then weigh as much as one "
                        "key with score m; keep o unnormalised and s the running sum, and "
                        "divide once, at the end")
BLOCKS_AVERAGED = ("each block was normalised on its own and the results averaged: blocks "
                   "with larger scores must weigh more; carry the running max, sum and "
                   "output, and divide once, at the end")


def _blockwise(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, block_size: int,
               causal: bool, *, scale: str = "sqrt d", rescale_sum: bool = True,
               rescale_output: bool = True, fill: float = float("-inf"),
               shifted: bool = True, diagonal: bool = False, bottom_right: bool = False,
               drop_last: bool = False, divide_each_step: bool = False,
               inverted_mask: bool = False, divide_running: bool = False,
               reset_sum: bool = False) -> torch.Tensor:
    """Attention over blocks of keys, right and wrong (float64)."""
    Q, K, V = Q.double(), K.double(), V.double()
    Tq, Tk = Q.shape[-2], K.shape[-2]
    factor_of = {"sqrt d": Q.shape[-1] ** -0.5, "none": 1.0, "d": 1 / Q.shape[-1],
                 "sqrt dv": V.shape[-1] ** -0.5, "times sqrt d": Q.shape[-1] ** 0.5}
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
            if inverted_mask:
                future = cols < rows
            scores = scores.masked_fill(future, fill)
        new_m = torch.maximum(m, scores.amax(-1, keepdim=True))
        factor = torch.exp(m - new_m)
        p = torch.exp(scores - new_m)
        s = (s * factor if rescale_sum else s) + p.sum(-1, keepdim=True)
        acc = (acc * factor if rescale_output else acc) + (p @ Vb / s if divide_each_step
                                                           else p @ Vb)
        if divide_running or reset_sum:
            acc = acc / s
        if reset_sum:
            s = torch.ones_like(s)
        m = new_m
    return acc if divide_each_step or divide_running or reset_sum else acc / s


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
                BLOCK_TIMES_SQRT: variant(scale="times sqrt d"),
                DIVIDED_EACH_STEP: variant(divide_each_step=True),
                DIVIDED_RUNNING: variant(divide_running=True),
                NORMALISED_AND_RESET: variant(reset_sum=True)}
    if V.shape[-1] != Q.shape[-1]:
        mistakes[SCALE_BY_DV] = variant(scale="sqrt dv")
    if not causal:
        mistakes[BLOCKS_AVERAGED] = _blocks_averaged(Q, K, V, block_size)
        mistakes[ALWAYS_CAUSAL] = _blockwise(Q, K, V, block_size, True)
    if K.shape[-2] % block_size:
        mistakes[BLOCK_DROPPED] = variant(drop_last=True)
    if causal:
        mistakes.update({SEES_FUTURE: _blockwise(Q, K, V, block_size, False),
                         DIAGONAL_MASKED: variant(diagonal=True),
                         MASK_NOT_SHIFTED: variant(shifted=False),
                         BLOCK_ZERO_FILL: variant(fill=0.0),
                         MASK_INVERTED: variant(inverted_mask=True)})
        if Q.shape[-2] != K.shape[-2]:
            mistakes[BOTTOM_RIGHT] = variant(bottom_right=True)
    return mistakes


Case = tuple[int, int, int, int, bool]  # (Tq, Tk, dv, block_size, causal)
SHAPE_CASE: Case = (5, 8, 3, 4, False)
VALUE_CASES: tuple[Case, ...] = ((10, 9, 5, 3, False), (6, 12, 4, 4, False),
                                 (4, 8, 6, 8, False))
LARGE_CASES: tuple[Case, ...] = ((6, 12, 3, 4, False),)
CAUSAL_CASES: tuple[Case, ...] = ((10, 10, 5, 5, True), (12, 12, 4, 4, True),
                                  (6, 8, 5, 4, True), (9, 6, 5, 3, True))
BLOCK_CASES: tuple[Case, ...] = ((10, 7, 5, 3, False), (6, 13, 4, 4, False),
                                 (5, 5, 3, 1, False), (4, 9, 6, 16, False),
                                 (10, 10, 5, 3, True), (11, 11, 4, 4, True),
                                 (9, 6, 5, 4, True), (6, 150, 4, 8, False),
                                 (20, 100, 3, 7, True))


def _draw_qkv(generator: torch.Generator, batch: Sequence[int], Tq: int, Tk: int, d: int,
              dv: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (1.5 * torch.randn(*batch, Tq, d, generator=generator),
            1.5 * torch.randn(*batch, Tk, d, generator=generator),
            torch.randn(*batch, Tk, dv, generator=generator))


def _what(Tq: int, Tk: int, block_size: int, causal: bool) -> str:
    return (f"blockwise_attention(Q, K, V, block_size={block_size}, causal={causal}) with "
            f"Tq={Tq}, Tk={Tk}")


def check_block_shapes(check: SelfCheck, blockwise: Callable[..., torch.Tensor],
                       generator: torch.Generator, batches: Sequence[Sequence[int]], d: int,
                       case: Case = SHAPE_CASE) -> None:
    """out is (..., Tq, dv) for every batch shape in ``batches``."""
    Tq, Tk, dv, block_size, causal = case
    for batch in batches:
        Q, K, V = _draw_qkv(generator, batch, Tq, Tk, d, dv)
        what = f"{_what(Tq, Tk, block_size, causal)}, Q of shape {tuple(Q.shape)}"
        out = check.tensor(call_naming(check, BLOCK_CRASHES, blockwise, Q, K, V, block_size,
                                       causal=causal), what)
        check.shape(out, (*batch, Tq, dv), what)


def check_block_values(check: SelfCheck, blockwise: Callable[..., torch.Tensor],
                       generator: torch.Generator, cases: Sequence[Case],
                       batch: Sequence[int] = (2, 3), d: int = 8, gain: float = 1.0,
                       negative: bool = False) -> None:
    """out equals F.scaled_dot_product_attention(Q, K, V, is_causal=causal), or the message
    names the mistake. ``gain`` multiplies Q and K: 10 makes scores in the hundreds;
    ``negative``: every score lies in the negative hundreds."""
    for Tq, Tk, dv, block_size, causal in cases:
        Q, K, V = _draw_qkv(generator, batch, Tq, Tk, d, dv)
        Q, K = Q * gain, K * gain
        if negative:  # q near +c, k near -c: every q · k / sqrt(d) is about -c^2 sqrt(d)
            target = float(150 + 250 * torch.rand((), generator=generator))
            c = math.sqrt(target / math.sqrt(d))
            Q, K = c + 0.2 * Q, -c + 0.2 * K
        what = _what(Tq, Tk, block_size, causal) + (" and scores in the hundreds"
                                                     if gain > 1 else "") + (
            " and every score in the negative hundreds" if negative else "")
        out = check.tensor(call_naming(check, BLOCK_CRASHES, blockwise, Q, K, V, block_size,
                                       causal=causal), what)
        expected = F.scaled_dot_product_attention(Q.double(), K.double(), V.double(),
                                                  is_causal=causal)
        _close(check, out, expected, f"{what} equals F.scaled_dot_product_attention(Q, K, V, "
                    f"is_causal={causal})", mistakes=_blockwise_mistakes(Q, K, V, block_size,
                                                                        causal),
                    diagnoses={SCORES_OVERFLOW: lambda o=out: bool(gain > 1 and not
                                                                    o.isfinite().all()),
                               BLOCK_MAX_AT_ZERO: lambda o=out: bool(negative and
                                                                      o.isnan().any())},
                    dims=("batch",) * len(batch) + ("query", "channel"),
                    # float32 holds scores near -400 to about 3e-5: the output is that exact
                    **({"atol": 1e-4, "rtol": 1e-3} if negative else {}))


def check_blockwise_attention(blockwise_attention: Callable[..., torch.Tensor]) -> None:
    """Shapes, values against F.scaled_dot_product_attention (plain, causal, any block
    size), dtype and device, then the memory it uses."""
    check = SelfCheck("blockwise_attention")
    generator = torch.Generator().manual_seed(73)
    check.clause("shape")
    check_block_shapes(check, blockwise_attention, generator, ((2, 3), (), (2, 1, 3)), d=6)
    for clause, cases in (("values", VALUE_CASES), ("causal", CAUSAL_CASES),
                          ("blocks", BLOCK_CASES)):
        check.clause(clause)
        check_block_values(check, blockwise_attention, generator, cases)
        if clause == "values":
            check_block_values(check, blockwise_attention, generator, LARGE_CASES, gain=10.0)
            check_block_values(check, blockwise_attention, generator, LARGE_CASES,
                               negative=True)
    check_block_work(check, blockwise_attention, generator)
    Q, K, V = _draw_qkv(generator, (2,), 6, 9, 5, 3)
    check.clause("dtype")
    check.dtype_follows(blockwise_attention, Q, K, V, 4, causal=True,
                        what="blockwise_attention(Q, K, V, 4, causal=True)")
    half_follows(check, blockwise_attention, Q, K, V, 4, causal=True,
                 what="blockwise_attention(Q, K, V, 4, causal=True)")
    check.clause("device")
    check.device_follows(blockwise_attention, Q, K, V, 4, causal=True,
                         what="blockwise_attention(Q, K, V, 4, causal=True)")
    check.rule("memory")
    check_block_memory(check, blockwise_attention, generator)
    check.passed()


def check_block_work(check: SelfCheck, blockwise: Callable[..., torch.Tensor],
                     generator: torch.Generator, Tq: int = 6, Tk: int = 24, few: int = 2,
                     d: int = 4) -> None:
    """The work done grows with the number of blocks of keys: an answer that ignores
    block_size does the same work for blocks of ``few`` and of Tk."""
    Q, K, V = _draw_qkv(generator, (2,), Tq, Tk, d, d)
    # causal=False: a causal answer may rightly skip the blocks that lie wholly in the future
    whole, small = (check.call_observed(blockwise, Q, K, V, size, causal=False)[1]
                    for size in (Tk, few))
    expect_more_work(check, whole, small, Tk, few, f"blockwise_attention with Tk = {Tk}",
                     "the keys", BLOCKS_IGNORED)


def check_block_memory(check: SelfCheck, blockwise: Callable[..., torch.Tensor],
                       generator: torch.Generator, Tq: int = 64, Tk: int = 256,
                       block_size: int = 16, d: int = 8) -> None:
    """No tensor of Tq × Tk entries; none larger than a block of scores (Tq × block_size),
    the inputs or the running output (Tq × dv)."""
    Q, K, V = _draw_qkv(generator, (1, 1), Tq, Tk, d, d)
    bound = max(Tq * block_size, Tk * d, Tq * d)
    for causal in (False, True):
        _, seen = check.call_observed(blockwise, Q, K, V, block_size, causal=causal)
        where = f"with Tq = {Tq}, Tk = {Tk} and block_size = {block_size} (causal={causal})"
        check.expect(seen.largest < Tq * Tk, f"{where}, no tensor of Tq × Tk = {Tq * Tk} "
                     "entries is created", expected=f"every tensor smaller than {Tq * Tk} "
                     "entries", got=f"a tensor of {seen.largest} entries", likely=FULL_MATRIX)
        check.expect(seen.largest <= bound, f"{where}, no tensor is larger than a block of "
                     f"scores (Tq × block_size = {Tq * block_size} entries), K and V "
                     f"({Tk * d} entries each) or the output o (Tq × dv = {Tq * d})", expected=f"every tensor of at most {bound} "
                     "entries", got=f"a tensor of {seen.largest} entries", likely=BLOCK_TOO_BIG)

