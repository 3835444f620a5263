"""Unit tests of tutorial 07's demos and helpers (fast, no kernel)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

from helpers.demos import generation_and_cost as demo  # noqa: E402


# Test-local reference answers (the demos take the student's code as arguments).
def sample(logits, temperature=1.0, top_k=None, generator=None):
    return torch.multinomial(torch.softmax(logits / temperature, -1), 1,
                             generator=generator).squeeze(-1)


def step(q, k, v, cache=None):
    K = k if cache is None else torch.cat([cache[0], k], -2)
    V = v if cache is None else torch.cat([cache[1], v], -2)
    return F.scaled_dot_product_attention(q, K, V), (K, V)


def blocks(Q, K, V, block_size, causal=False):
    return F.scaled_dot_product_attention(Q, K, V, is_causal=causal)


def test_the_corpus_is_the_shipped_sonnets():
    text, tokenizer = demo.load_corpus()
    assert len(text) == 95_728 and text.startswith("THE SONNETS")
    assert tokenizer.vocab_size == 62
    assert tokenizer.decode(tokenizer.encode("Shall I")) == "Shall I"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.encode("é")
    with pytest.raises(ValueError, match="non-empty"):
        demo.CharTokenizer("")


def test_the_model_is_causal_and_bounded():
    _, tokenizer = demo.load_corpus()
    model = demo.untrained_model(tokenizer)
    idx = torch.randint(62, (2, 10), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 62
    with torch.no_grad():
        assert model(idx).shape == (2, 10, 62)
        assert torch.allclose(model(idx)[:, :6], model(changed)[:, :6], atol=1e-5)
    with pytest.raises(ValueError, match="at most 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_training_is_short_deterministic_and_learns():
    text, tokenizer = demo.load_corpus()
    threads = torch.get_num_threads()
    m1, h1 = demo.train_tiny_lm(text, tokenizer, steps=30, progress=False)
    m2, h2 = demo.train_tiny_lm(text, tokenizer, steps=30, progress=False)
    assert torch.get_num_threads() == threads
    assert h1 == h2 and h1[-1] < h1[0] < math.log(62) + 0.5
    out = demo.generate(m1, tokenizer, sample, prompt="Sh", n_tokens=40, seed=3)
    assert out.startswith("Sh") and len(out) == 42
    assert out == demo.generate(m2, tokenizer, sample, prompt="Sh", n_tokens=40, seed=3)


def test_entropy_falls_with_the_gain():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    values = [demo.entropy_bits(logits, t) for t in (0.1, 1.0, 10.0, 1000.0)]
    assert values == sorted(values) and values[0] < 0.01
    assert abs(values[-1] - 2.0) < 1e-3


def test_decoding_times_agree_and_plot():
    times = demo.time_decoding(step, n_tokens=24, repeats=2)
    assert times.agree and len(times.with_cache) == 24
    assert (times.with_cache > 0).all() and (times.without_cache > 0).all()
    demo.plot_decoding_times(times, bin_size=8)
    with pytest.raises(ValueError, match="repeats"):
        demo.time_decoding(step, n_tokens=4, repeats=0)


def _times(slow, fast):
    n = len(slow)
    return demo.DecodingTimes(np.arange(1, n + 1), np.array(slow, dtype=float),
                              np.array(fast, dtype=float), True)


def test_the_trend_is_measured_and_a_hidden_trend_fails_in_plain_words(capsys):
    rising = _times([1.0] * 40 + [3.0] * 32, [1.0] * 72)
    assert demo.trend_ratios(rising) == (3.0, 3.0) and demo.shows_trend(rising)
    demo.decoding_trend(rising)
    assert "more than 1.5 times as long" in capsys.readouterr().out
    flat = _times([1.0] * 72, [1.0] * 72)
    assert not demo.shows_trend(flat)
    # a busy moment at the end (a burst of slow steps) is not a trend
    burst = _times([1.0] * 64 + [9.0] * 8, [1.0] * 72)
    assert demo.trend_ratios(burst) == (1.0, 1.0) and not demo.shows_trend(burst)
    with pytest.raises(AssertionError, match="busy with something else"):
        demo.decoding_trend(flat)


def test_a_timing_that_hides_the_trend_is_timed_again(monkeypatch):
    hidden, shown = _times([1.0] * 72, [1.0] * 72), _times([1.0] * 40 + [3.0] * 32, [1.0] * 72)
    runs = iter([hidden, shown, hidden])
    monkeypatch.setattr(demo, "_time_decoding", lambda *args: next(runs))
    assert demo.time_decoding(step, n_tokens=72) is shown
    runs = iter([hidden] * 3)
    monkeypatch.setattr(demo, "_time_decoding", lambda *args: next(runs))
    assert demo.time_decoding(step, n_tokens=72, tries=3) is hidden  # the last try, shown
    assert next(runs, None) is None


def test_the_tail_share_is_what_the_top_k_leaves_out():
    text, tokenizer = demo.load_corpus()
    model = demo.untrained_model(tokenizer)
    everything = demo.tail_share(model, tokenizer, text, k=tokenizer.vocab_size)
    assert abs(everything) < 1e-6
    shares = [demo.tail_share(model, tokenizer, text, k=k) for k in (1, 5, 20)]
    assert shares == sorted(shares, reverse=True) and 0 < shares[-1] < shares[0] < 1


def test_a_cache_in_the_wrong_order_still_agrees_without_a_mask():
    """What the markdown after the demo says: the demo cannot see the order, the check can."""
    def new_first(q, k, v, cache=None):
        K = k if cache is None else torch.cat([k, cache[0]], -2)
        V = v if cache is None else torch.cat([v, cache[1]], -2)
        return F.scaled_dot_product_attention(q, K, V), (K, V)

    assert demo.time_decoding(new_first, n_tokens=6, repeats=1).agree


def test_space_and_line_break_are_visible_tick_labels():
    assert demo._visible(" ") == "␣" and demo._visible("\n") == "\\n"
    assert demo._visible("a") == "a"


def test_the_decoder_rejects_uneven_heads():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        demo.AttentionDecoder(d_model=10, n_heads=4)


def test_largest_tensor_counts_new_tensors_not_views():
    x = torch.randn(4, 100)
    record = demo.largest_tensor(lambda a: (a.T.reshape(100, 4), a.sum(0)), x)
    assert record.numel == 100  # the transpose is a view; the sum is new
    assert demo.largest_tensor(lambda a: a @ a.T, x).shape == (4, 4)


def test_score_memory_is_quadratic_and_blocks_are_not():
    records = demo.score_memory(lengths=(32, 64))
    assert [r.bytes for r in records.values()] == [4 * 32**2, 4 * 64**2]
    demo.plot_score_memory(records)
    result = demo.blockwise_memory(blocks, lengths=(32, 64), block_size=16)
    assert result["full score matrix"] == [4 * 32**2, 4 * 64**2]
    demo.plot_blockwise_memory(result)


def test_the_online_softmax_figure_says_whether_it_matches():
    import matplotlib.pyplot as plt

    x = torch.randn(10, generator=torch.Generator().manual_seed(0))
    titles = []
    for fn in (lambda x, b: torch.softmax(x, -1), lambda x, b: torch.softmax(2 * x, -1)):
        demo.plot_online_softmax(fn, x, 4)
        titles.append(plt.gcf().axes[1].get_title())
        plt.close("all")
    assert "same softmax" in titles[0] and "differs" in titles[1]


def test_other_plots_run(capsys):
    _, tokenizer = demo.load_corpus()
    demo.plot_temperature(torch.randn(62), tokenizer, "abc")
    demo.plot_loss([4.0, 3.0], 62)
    demo.plot_online_softmax(lambda x, b: torch.softmax(x, -1), torch.randn(10), 4)
    demo.print_samples({"a": "\nxyz\n"})
    assert "xyz" in capsys.readouterr().out


def test_the_gpu_part_says_it_was_skipped_on_a_cpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    demo.sdpa_on_gpu()
    assert capsys.readouterr().out == (
        "No GPU here: the comparison of PyTorch's GPU attention kernels was skipped.\n")


def test_standard_attention_moves_four_t_squared_numbers_and_keeps_the_weights():
    traffic = demo.standard_traffic(1024, 64)
    assert traffic.moved == 4 * 1024**2 + 4 * 1024 * 64
    assert traffic.kept == 1024**2


def test_tiled_traffic_is_counted_block_by_block():
    # T = 8, d = 2, 16 numbers on chip: key blocks of 16 // 8 = 2 rows, query blocks of 2;
    # 4 x 4 block pairs, each reading Q_i, O_i and two statistics and writing O_i and them
    traffic = demo.tiled_traffic(8, 2, on_chip=16)
    start, keys_values, per_pair = 8 * 2 + 2 * 8, 2 * 8 * 2, 3 * 2 * 2 + 4 * 2
    assert traffic.moved == start + keys_values + 16 * per_pair
    assert traffic.kept == 2 * 8  # a maximum and a sum per row


def test_tiling_saves_more_traffic_as_t_grows_up_to_m_over_3_d_squared(capsys):
    table = demo.attention_traffic(lengths=(256, 1024, 4096, 16384), d=64, on_chip_kb=100)
    ratios = [s / t for s, t in zip(table["standard moved"], table["tiled moved"], strict=True)]
    assert ratios == sorted(ratios) and ratios[0] > 1
    limit = 100 * 1024 / 2 / (3 * 64**2)  # M / (3 d^2): the T^2 terms' ratio
    assert 0.9 * limit < ratios[-1] < limit
    for T, standard, tiled in zip(table["lengths"], table["standard kept"], table["tiled kept"],
                                  strict=True):
        assert standard / tiled == pytest.approx(T / 2)  # T^2 weights against 2T statistics
    printed = capsys.readouterr().out
    assert "16384" in printed and "ratio" in printed
    demo.plot_attention_traffic(table)
