"""Unit tests of tutorial 04's demos and self-checks (fast, no kernel)."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")
from notebook_code import solution_namespace  # noqa: E402

from helpers.checks.framework import CheckFailed  # noqa: E402
from helpers.checks.transformer_block import (  # noqa: E402
    check_mean_pool,
    check_sinusoidal_positional_encoding,
    check_TransformerBlock,
)
from helpers.demos import transformer_block as demo  # noqa: E402

SOLUTION = solution_namespace("04_transformer_block")
Block = SOLUTION["TransformerBlock"]
encoding = SOLUTION["sinusoidal_positional_encoding"]
mean_pool = SOLUTION["mean_pool"]


def classifier(**kwargs):
    torch.manual_seed(0)
    return demo.TransformerClassifier(Block, encoding, mean_pool, d_model=16, n_heads=2, d_ff=32,
                                      **kwargs).eval()


def rule_label(sentence: str) -> int:
    """The corpus's rule, written independently: the clause after "but" decides; "not" flips."""
    clause = sentence.split(" but ")[-1].split()
    positive = clause[-1] in demo.POSITIVE
    return int(positive != ("not" in clause))


# ---- the corpus ----------------------------------------------------------------------------------

def test_reviews_are_deterministic_and_well_formed():
    a, b = demo.make_reviews(300, seed=3), demo.make_reviews(300, seed=3)
    assert a.sentences == b.sentences and torch.equal(a.tokens, b.tokens)
    assert a.sentences != demo.make_reviews(300, seed=4).sentences
    assert a.tokens.shape == (300, demo.MAX_LEN) and a.tokens.dtype == torch.long
    assert a.labels.shape == (300,) and set(a.labels.tolist()) == {0, 1}
    lengths = (~a.padding_mask).sum(dim=1)
    assert lengths.min() >= 4 and lengths.max() <= demo.MAX_LEN
    # padding only at the end, and the tokens spell the sentence
    for row, sentence in zip(a.tokens, a.sentences, strict=True):
        words = [demo.VOCAB[i] for i in row.tolist() if i != demo.PAD_ID]
        assert " ".join(words) == sentence
        assert (row[len(words):] == demo.PAD_ID).all()


def test_labels_follow_negation_and_but():
    data = demo.make_reviews(500, seed=0)
    assert [rule_label(s) for s in data.sentences] == data.labels.tolist()
    assert 0.4 < data.labels.float().mean() < 0.6


def test_swapping_contrasting_clauses_flips_the_label_with_the_same_words():
    data = demo.make_reviews(400, seed=1)
    flipped = 0
    for sentence, label in zip(data.sentences, data.labels.tolist(), strict=True):
        if " but " not in sentence:
            continue
        first, second = sentence.split(" but ")
        swapped = f"{second} but {first}"
        assert sorted(swapped.split()) == sorted(sentence.split())
        flipped += rule_label(swapped) != label
    assert flipped > 150  # most two-clause reviews contrast their clauses


def test_review_kinds():
    assert demo.review_kind("the food was not bad") == "one clause"
    assert demo.review_kind("the food was good but the view was not bad") == "clauses agree"
    assert demo.review_kind("the food was good but the view was bad") == "clauses contrast"
    assert demo.clause_sentiment("the view was not very dull".split()) == 1


def test_encode_rejects_unknown_and_long_input():
    with pytest.raises(ValueError, match="unknown"):
        demo.encode(["the pizza was good"])
    with pytest.raises(ValueError, match="max_len"):
        demo.encode(["the food was good"], max_len=3)
    with pytest.raises(ValueError):
        demo.make_reviews(0)


# ---- the models ----------------------------------------------------------------------------------

def test_classifier_shapes_and_padding_invariance():
    model = classifier()
    tokens = demo.make_reviews(8, seed=2).tokens
    with torch.no_grad():
        logits = model(tokens)
        assert logits.shape == (8, 2)
        longer = torch.cat([tokens, torch.full((8, 5), demo.PAD_ID)], dim=1)
        torch.testing.assert_close(model(longer), logits, atol=1e-5, rtol=1e-4)


def test_without_positions_the_classifier_is_a_bag_of_words():
    tokens = demo.encode(["the food was good but the service was awful",
                          "the service was awful but the food was good"])
    blind, seeing = classifier(use_positions=False), classifier(use_positions=True)
    with torch.no_grad():
        out = blind(tokens)
        torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-4)
        out = seeing(tokens)
        assert (out[0] - out[1]).abs().max() > 1e-3
        bow = demo.BagOfWordsMLP()(tokens)
        torch.testing.assert_close(bow[0], bow[1])


def test_swap_test_says_whether_both_orders_get_the_same_probability(capsys):
    pair = ["the food was good but the service was awful",
            "the service was awful but the food was good"]
    models = {"bag": demo.BagOfWordsMLP(), "blind": classifier(use_positions=False),
              "seeing": classifier(use_positions=True)}
    demo.print_swap_test(models, pair)
    rows = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()}
    assert rows["bag"] == "yes" and rows["blind"] == "yes" and rows["seeing"] == "no"


def test_fit_trains_and_restores_threads():
    threads = torch.get_num_threads()
    train_set, test_set = demo.make_reviews(128, seed=0), demo.make_reviews(64, seed=1)
    history = demo.fit(classifier(), train_set, test_set, epochs=1, device=torch.device("cpu"),
                       description="test")
    assert len(history["val_acc"]) == 1 and 0.0 <= history["val_acc"][0] <= 1.0
    assert torch.get_num_threads() == threads
    probs = demo.predict(demo.BagOfWordsMLP(), test_set.tokens)
    assert probs.shape == (64,) and ((probs >= 0) & (probs <= 1)).all()


# ---- figures and printouts --------------------------------------------------------------------------

def test_figures_draw(capsys):
    demo.plot_permutation_equivariance()
    assert "largest difference" in capsys.readouterr().out
    demo.plot_positional_encoding(encoding, T=20, d_model=8)
    demo.plot_encoding_columns(encoding, T=20, d_model=8, columns=(0, 1))
    curves = demo.plot_residual_and_norm(depth=4)
    assert set(curves) == {"plain", "residual", "add & norm", "input"}
    assert all(len(curves[name]["kept"]) == 4 for name in demo.WIRINGS)
    assert "cosine after layer 1" in capsys.readouterr().out
    data = demo.make_reviews(64, seed=0)
    demo.plot_length_histogram(data)
    demo.show_reviews(data, k=2)
    model = classifier()
    models = {"bag": demo.BagOfWordsMLP(), "transformer": model}
    demo.plot_confusion_matrices(models, data)
    demo.print_swap_test(models, ["the food was good", "the food was not good"],
                         banded=["transformer"])
    out = capsys.readouterr().out
    assert "probability" in out and "pair 1" in out
    with pytest.raises(ValueError, match="pairs"):
        demo.print_swap_test(models, ["the food was good"])
    with pytest.raises(ValueError, match="banded"):
        demo.print_swap_test(models, ["the food was good", "the food was bad"], banded=["x"])
    demo.print_accuracy_by_kind(models, data)
    out = capsys.readouterr().out
    assert "clauses contrast" in out and "expected accuracy on these 64 reviews" in out
    demo.plot_attention(model, "the food was not good but the room was nice")
    effect = demo.plot_padding_effect(model, "the food was good", max_extra=6)
    assert effect["masked"]["extra"] == [0, 4]
    assert max(effect["masked"]["moved"]) < 1e-5 < effect["unmasked"]["moved"][1]
    with pytest.raises(ValueError, match="positions"):
        demo.plot_padding_effect(model, "the food was good", max_extra=100)
    history = {"train_loss": [0.7, 0.5], "train_acc": [0.5, 0.8], "val_loss": [0.7, 0.6],
               "val_acc": [0.5, 0.7]}
    demo.plot_test_accuracy({"a, b": history, "c + d": history})
    assert demo.parameter_summary(nn.Linear(2, 3)) == "9 parameters"
    assert demo.sinusoid_wavelengths(4)[0] == pytest.approx(6.2832, rel=1e-4)


# ---- self-checks -----------------------------------------------------------------------------------

def test_self_checks_pass_the_solution(capsys):
    check_sinusoidal_positional_encoding(encoding)
    check_TransformerBlock(Block)
    check_mean_pool(mean_pool)
    assert capsys.readouterr().out.count("✅") == 3


def test_self_checks_explain_a_crash_in_plain_words():
    def broken(T, d_model):
        return torch.zeros(T, d_model) @ torch.zeros(3, 3)

    with pytest.raises(CheckFailed, match="runs without an error"):
        check_sinusoidal_positional_encoding(broken)


def test_self_check_reports_missing_members():
    class Empty(nn.Module):
        def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
            super().__init__()

        def forward(self, x, padding_mask=None):
            return x

    with pytest.raises(CheckFailed, match="nn.MultiheadAttention"):
        check_TransformerBlock(Empty)


def test_self_checks_pass_through_not_implemented():
    def blank(*args, **kwargs):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_mean_pool(blank)
    with pytest.raises(NotImplementedError):
        check_sinusoidal_positional_encoding(blank)


def test_the_order_blind_ceiling_is_computed_exactly_from_the_generator():
    joint = demo.order_blind_posterior()
    assert sum(p for pair in joint.values() for p in pair) == pytest.approx(1.0)
    one_clause = demo.order_blind_best(["the food was not good", "the room was nice"])
    assert one_clause.tolist() == [1.0, 1.0]  # one clause: the words decide
    swapped = demo.order_blind_best(["the food was good but the service was awful",
                                     "the service was awful but the food was good"])
    assert swapped.tolist() == [0.5, 0.5]  # contrasting clauses: a coin flip at best
    test_set = demo.make_reviews(500, seed=1)
    kinds = [demo.review_kind(s) for s in test_set.sentences]
    best = demo.order_blind_best(test_set.sentences)
    contrast = torch.tensor([k == "clauses contrast" for k in kinds])
    assert best[contrast].mean().item() == pytest.approx(0.5)
    assert 0.6 < best.mean().item() < 0.7


def test_the_best_order_blind_rule_is_what_a_big_sample_shows():
    from collections import Counter, defaultdict

    data = demo.make_reviews(20000, seed=11)
    counts = defaultdict(Counter)
    for sentence, label in zip(data.sentences, data.labels.tolist(), strict=True):
        counts[demo.order_blind_features(sentence)][label] += 1
    for features, (p_negative, p_positive) in demo.order_blind_posterior().items():
        seen = counts[features]
        assert seen[1] / sum(seen.values()) == pytest.approx(
            p_positive / (p_negative + p_positive), abs=0.03)
