"""Unit tests of tutorial 02's demos and helpers (fast, no kernel)."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from notebook_code import solution_namespace

matplotlib.use("Agg")

from helpers.demos import qkv_attention as demo  # noqa: E402

SOLUTION = solution_namespace("02_qkv_attention")


def test_word_vectors_are_deterministic_and_cover_the_demo():
    words, vectors = demo.word_vectors()
    words_again, vectors_again = demo.word_vectors()
    assert words == words_again and torch.equal(vectors, vectors_again)
    assert vectors.shape == (len(words), len(demo.AXES) + demo.N_NOISE_AXES)
    assert len(set(words)) == len(words)
    for query, contexts in demo.CONTEXTS.items():
        assert query in words and query in demo.SENSES
        for context in contexts:
            known, _, unknown = demo.embed_words(context)
            assert known and not unknown, context
        for _, probes in demo.SENSES[query]:
            assert all(p in words for p in probes)


def test_embed_words_skips_unknown_words_and_punctuation():
    known, vectors, unknown = demo.embed_words("The Bank, by the river!")
    assert known == ["the", "bank", "the", "river"]
    assert unknown == ["by"]
    assert vectors.shape == (4, len(demo.AXES) + demo.N_NOISE_AXES)
    assert demo.embed_words("zebra")[0] == []


def test_lookup_weights_are_a_distribution_and_pick_the_sense():
    words, vectors = demo.word_vectors()

    def closer_to(result, a, b):
        out = result["output"]
        sim = [float(torch.cosine_similarity(out, vectors[words.index(w)], dim=0)) for w in (a, b)]
        return sim[0] > sim[1]

    river = demo.word_lookup("bank", "we sat on the bank of the river")
    money = demo.word_lookup("bank", "the bank gave me a loan")
    for result in (river, money):
        assert torch.allclose(result["weights"].sum(), torch.tensor(1.0), atol=1e-5)
        assert bool((result["weights"] >= 0).all())
    assert closer_to(river, "river", "money") and closer_to(money, "money", "river")
    # the weights are those of a plain scaled dot-product softmax
    q = vectors[words.index("bank")]
    _, keys, _ = demo.embed_words("the bank gave me a loan")
    expected = torch.softmax(keys @ q / math.sqrt(q.numel()), dim=0)
    assert torch.allclose(money["weights"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="unknown query"):
        demo.word_lookup("zebra", "the river")
    with pytest.raises(ValueError, match="no known word"):
        demo.word_lookup("bank", "zebra giraffe")


def test_word_demo_draws_static_settings_and_builds_widgets(monkeypatch, capsys):
    demo.word_demo()
    demo.draw_word_demo("bat", "the bat and some unknownword")
    demo.print_vocabulary()
    assert "money:" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_WIDGETS", "1")
    demo.word_demo()  # builds the dropdown + combobox (displayed as text outside Jupyter)


def test_score_statistics_follow_sqrt_d():
    stats = demo.score_statistics(dims=(4, 64), n_samples=400)
    for d, raw, scaled in zip(stats["d"], stats["std_raw"], stats["std_scaled"], strict=True):
        assert raw == pytest.approx(math.sqrt(d), rel=0.1)
        assert scaled == pytest.approx(1.0, rel=0.1)
    assert stats["max_w_raw"][1] > stats["max_w_raw"][0] + 0.2
    assert abs(stats["max_w_scaled"][1] - stats["max_w_scaled"][0]) < 0.05
    demo.plot_score_statistics(stats)


def test_the_softmax_gradient_shrinks_for_wide_raw_scores_only():
    stats = demo.score_statistics(dims=(4, 512), n_samples=400)
    assert stats["grad_raw"][1] < stats["grad_raw"][0] / 3
    assert stats["grad_scaled"][1] == pytest.approx(stats["grad_scaled"][0], rel=0.15)


def test_softmax_gradient_size_is_the_jacobian_norm():
    scores = torch.randn(50, 7, dtype=torch.float64)
    w = torch.softmax(scores, -1)
    jacobian = torch.diag_embed(w) - w.unsqueeze(-1) * w.unsqueeze(-2)
    assert demo.softmax_gradient_size(scores) == pytest.approx(
        float(jacobian.square().sum((-2, -1)).sqrt().mean()), rel=1e-9)
    one_hot = torch.tensor([[0.0, 1e4, 0.0]])
    assert demo.softmax_gradient_size(one_hot) == pytest.approx(0.0, abs=1e-9)


def test_example_masks():
    masks = demo.example_masks(T=5, n_pad=2)
    assert set(masks) == {"no mask", "causal", "padding"}
    assert torch.equal(masks["causal"], torch.tril(torch.ones(5, 5, dtype=torch.bool)))
    padding = masks["padding"]
    assert not padding[3:].any() and not padding[:, 3:].any() and padding[:3, :3].all()


def test_plots_run_with_the_solution():
    demo.plot_masks(SOLUTION["scaled_dot_product_attention"])
    torch.manual_seed(0)
    model = SOLUTION["SingleQueryAttention"]()
    scores, values = demo.digit_profile(model)
    assert scores.shape == (10,) and values.shape == (10,)
    assert abs(scores.mean()) < 1e-5
    history = {"train_loss": [0.6, 0.3, 0.1], "val_loss": [0.6, 0.35, 0.15]}
    demo.plot_where_it_attends(model, SOLUTION["make_batch"], history, n=6)


def test_examples_and_label_statistics(capsys):
    torch.manual_seed(0)
    demo.show_examples(SOLUTION["make_batch"], n=3)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("->  y =" in line for line in lines)
    stats = demo.label_statistics(SOLUTION["make_batch"], N=5000)
    assert 0.3 < stats["positive"] < 0.42 and 0.2 < stats["ties"] < 0.35


def test_lookup_summary_gives_the_numbers_the_prose_relies_on(capsys):
    river = demo.lookup_summary("bank", "we sat on the bank of the river")
    money = demo.lookup_summary("bank", "the bank gave me a loan")
    assert river["top_word"] == "river" and money["top_word"] == "loan"
    for summary in (river, money):
        assert 0.3 < summary["own"] < 0.5 and summary["top_weight"] < summary["own"]
    assert river["senses"]["river"] > river["senses"]["money"] + 0.3
    assert money["senses"]["money"] > money["senses"]["river"] + 0.3
    demo.print_lookups()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "closer to the river words" in lines[0]
    assert "closer to the money words" in lines[1]


def test_score_statistics_are_printed_for_the_chosen_widths(capsys):
    stats = demo.score_statistics(dims=(1, 16, 64), n_samples=200)
    demo.print_score_statistics(stats, dims=(1, 64))
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["d_k =   1", "d_k =  64"]
