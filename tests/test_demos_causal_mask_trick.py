"""Unit tests of tutorial 06's demos and self-checks (fast, no kernel)."""

from __future__ import annotations

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

matplotlib.use("Agg")

from helpers.checks.framework import CheckFailed  # noqa: E402
from helpers.demos import causal_mask_trick as demo  # noqa: E402


# Test-local reference answers (the demos take the student's code as arguments).
def running_mean(x):
    counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device).view(1, -1, 1)
    return x.cumsum(dim=1) / counts


def running_mean_looped(x):
    out = torch.empty_like(x)
    for t in range(x.shape[1]):
        out[:, t] = x[:, : t + 1].mean(dim=1)
    return out


def running_mean_product(x):
    T = x.shape[1]
    weights = torch.ones(T, T, dtype=x.dtype, device=x.device).tril()
    return weights / weights.sum(dim=1, keepdim=True) @ x


def causal_weights(scores):
    T = scores.shape[-1]
    future = torch.ones(T, T, dtype=torch.bool, device=scores.device).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


class Head(nn.Module):
    def __init__(self, n_embd, head_size):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)

    def forward(self, x):
        return F.scaled_dot_product_attention(self.query(x), self.key(x), self.value(x),
                                              is_causal=True)


def test_toy_sequences_are_seeded_and_validated():
    a, b = demo.toy_sequences(2, 5, 3, seed=1), demo.toy_sequences(2, 5, 3, seed=1)
    assert a.shape == (2, 5, 3) and torch.equal(a, b)
    assert not torch.equal(a, demo.toy_sequences(2, 5, 3, seed=2))
    with pytest.raises(ValueError, match="positive"):
        demo.toy_sequences(0, 5, 3)


def test_causal_pattern_is_lower_triangle():
    p = demo.causal_pattern(4)
    assert p.dtype == torch.bool and p[3, 0] and p[2, 2] and not p[0, 1]
    assert int(p.sum()) == 10


def test_toy_corpus_targets_are_inputs_shifted():
    inputs, targets = demo.toy_corpus()
    assert inputs.shape == targets.shape == (2, 5)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert (inputs[:, 0] == demo.VOCAB.index("<s>")).all()
    assert [demo.VOCAB[int(i)] for i in targets[1]] == "woman ordered the beef .".split()
    assert demo.token_labels(inputs[0])[3] == "3: the"
    with pytest.raises(ValueError, match="vocabulary"):
        demo.toy_corpus(["man ate soup"])
    with pytest.raises(ValueError, match="same number"):
        demo.toy_corpus(["man ordered", "woman ordered the beef"])


@pytest.mark.parametrize("head_class", [Head, None])
def test_next_token_model_shapes(head_class):
    model = demo.NextTokenModel(head_class, head_size=4, n_embd=6, positions=True, block_size=5)
    inputs, _ = demo.toy_corpus()
    assert model(inputs).shape == (2, 5, len(demo.VOCAB))


def test_training_is_short_deterministic_and_restores_threads():
    threads = torch.get_num_threads()
    m1, h1 = demo.train_next_token_model(Head, head_size=4, steps=15, progress=False)
    m2, h2 = demo.train_next_token_model(Head, head_size=4, steps=15, progress=False)
    assert torch.get_num_threads() == threads
    assert len(h1) == 15 and h1[-1] < h1[0]
    assert h1 == h2
    probs = demo.next_token_probabilities(m1)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 5))
    assert all(0.0 <= p <= 1.0 for p in demo.noun_after_the(m1))


def test_training_does_not_disturb_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    demo.train_next_token_model(None, steps=2, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_model_without_head_cannot_tell_the_dishes_apart():
    model, _ = demo.train_next_token_model(None, steps=80, progress=False)
    assert all(abs(p - 0.5) < 0.05 for p in demo.noun_after_the(model))


def test_score_statistics_show_variance_growing_with_d():
    stats = demo.score_statistics([1, 64], T=8, n=64)
    assert stats["var_raw"][1] == pytest.approx(64, rel=0.2)
    assert stats["var_scaled"][1] == pytest.approx(1, rel=0.2)
    assert stats["max_raw"][1] > stats["max_scaled"][1]


def test_head_weights_match_sdpa():
    torch.manual_seed(0)
    head = Head(5, 3)
    x = torch.randn(2, 6, 5)
    w = demo.head_weights(head, x, causal_weights)
    assert torch.allclose(w @ head.value(x), head(x), atol=1e-6)


def test_plots_run_with_reference_answers(capsys):
    x = demo.toy_sequences()
    demo.plot_sequence_and_pattern(x)
    demo.plot_running_mean(running_mean, x)
    demo.plot_matmul_sums()
    demo.plot_weight_matrix(running_mean)
    scores = demo.example_scores()
    demo.plot_masking_steps(scores)
    demo.plot_causal_weights(causal_weights, scores)
    demo.compare_running_means(running_mean, running_mean, causal_weights, x)
    assert capsys.readouterr().out.count("agrees with the loop: True") == 3
    demo.plot_scaling(head_sizes=(1, 4), T=4)
    demo.plot_head_weights(Head(2, 4), x, causal_weights)
    demo.plot_attention_kinds()


def test_timing_stops_at_budget(capsys):
    demo.time_running_means(running_mean, running_mean, lengths=(4, 8, 16), budget_s=0.0)
    assert capsys.readouterr().out.count("T=") == 1


def test_toy_model_figures_and_sweep(capsys):
    model, history = demo.train_next_token_model(Head, head_size=2, steps=5, progress=False)
    demo.plot_loss(history)
    demo.plot_toy_model(model, causal_weights)
    demo.head_size_sweep(Head, head_sizes=(1, 2), seeds=(0,), steps=3)
    out = capsys.readouterr().out
    assert "head size  2" in out and "stored run" not in out  # no stored counts for size 2
    demo.head_size_sweep(Head, head_sizes=(1, 4, 16), seeds=(0,), steps=2)
    assert ("stored run with seeds=range(30): head size 1: 5 of 30, head size 4: 15 of 30, "
            "head size 16: 22 of 30") in capsys.readouterr().out
    demo.head_size_demo(Head, causal_weights, steps=3)  # reuses the cached models


def test_self_checks_pass_reference_answers():
    from helpers.checks.causal_mask_trick import (
        check_causal_attention_weights,
        check_CausalSelfAttentionHead,
        check_running_mean_loop,
        check_running_mean_matmul,
    )

    check_running_mean_loop(running_mean_looped)
    check_running_mean_matmul(running_mean_product)
    check_causal_attention_weights(causal_weights)
    check_CausalSelfAttentionHead(Head)


def test_self_check_reports_a_crash_in_plain_words():
    from helpers.checks.causal_mask_trick import check_running_mean_loop

    def broken(x):
        return x @ torch.ones(3, 3)

    with pytest.raises(CheckFailed, match="runs without an error"):
        check_running_mean_loop(broken)


def test_self_check_flags_a_missing_scale():
    from helpers.checks.causal_mask_trick import check_CausalSelfAttentionHead

    class Unscaled(Head):
        def forward(self, x):
            q, k, v = self.query(x), self.key(x), self.value(x)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)

    with pytest.raises(CheckFailed, match="not scaled"):
        check_CausalSelfAttentionHead(Unscaled)


def test_queries_and_keys_figure_draws_for_a_trained_model():
    model, _ = demo.train_next_token_model(Head, head_size=4, steps=5, progress=False)
    demo.plot_queries_and_keys(model)


def test_positions_matter_only_where_word_order_decides():
    runs = demo.positions_experiment(Head, head_size=8, steps=100, seed=6)
    assert set(runs) == {(c, p) for c in ("chicken/beef", "man and woman") for p in (False, True)}
    blind = runs["man and woman", False]
    assert blind["right"] == pytest.approx([0.5, 0.5], abs=0.02)  # the same set of vectors
    assert min(runs["man and woman", True]["right"]) > 0.9
    assert min(runs["chicken/beef", False]["right"]) > 0.9
    assert runs["man and woman", True]["model"].position_embedding is not None
    demo.plot_positions(runs)


def test_a_model_knows_its_corpus_for_its_predictions():
    model, _ = demo.train_next_token_model(Head, head_size=4, steps=3, progress=False,
                                           sentences=demo.ORDER_SENTENCES,
                                           vocab=demo.ORDER_VOCAB)
    assert demo.next_token_probabilities(model).shape == (2, 6, len(demo.ORDER_VOCAB))
    assert len(demo.prediction_after(model, "ordered")) == 2


def test_a_demo_with_an_unfinished_head_says_which_exercise_to_finish():
    from helpers.exercises import ExerciseNotFinished

    class CausalSelfAttentionHead(nn.Module):
        def __init__(self, n_embd, head_size):
            super().__init__()
            raise NotImplementedError()

    with pytest.raises(ExerciseNotFinished, match="finish Exercise 4 first"):
        demo.train_next_token_model(CausalSelfAttentionHead, steps=1, progress=False)


def test_the_kinds_of_attention_figure_shows_a_wider_cross_attention_matrix():
    import matplotlib.pyplot as plt

    demo.plot_attention_kinds()
    axes = [ax for ax in plt.gcf().axes if ax.images]
    shapes = [ax.images[0].get_array().shape for ax in axes]
    assert shapes == [(5, 5), (5, 5), (5, 7)]
    assert "output" in axes[2].get_xlabel()
    assert all(ax.images[0].get_clim() == (0, 1) for ax in axes)  # a 0/1 map, a 0-1 bar
    plt.close("all")


@pytest.mark.slow
def test_thirty_seeds_per_head_size_give_the_counts_the_notebook_quotes():
    """The notebook quotes (and the sweep prints) the stored counts of 30 seeds per head
    size: 5, 15 and 22 for head sizes 1, 4 and 16."""
    from notebook_code import solution_namespace

    head = solution_namespace("06_causal_mask_trick")["CausalSelfAttentionHead"]
    counts = []
    for head_size in (1, 4, 16):
        solved = 0
        for seed in range(30):
            model, _ = demo.trained_model(head, head_size, steps=60, seed=seed)
            solved += sum(demo.noun_after_the(model)) / 2 > 0.9
        counts.append(solved)
    assert counts == [5, 15, 22] == [demo.THIRTY_SEED_COUNTS[d] for d in (1, 4, 16)]
