"""Unit tests of tutorial 08's demos (fast, no kernel)."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from notebook_code import solution_namespace
from torch import nn

matplotlib.use("Agg")

from helpers.demos import beyond_words as demo  # noqa: E402

# The solution's answers (the demos take the student's code as arguments).
SOLUTION = solution_namespace("08_beyond_words")
patchify, Embedding = SOLUTION["patchify"], SOLUTION["PatchEmbedding"]


def sequence_log_prob(logits, tokens):
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def test_digits_load_with_their_labels():
    images, labels = demo.load_digits()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert 0.0 <= float(images.min()) and float(images.max()) == 1.0
    assert torch.equal(labels.unique(), torch.arange(10))
    assert int(labels[0]) == 0 and int(labels[1]) == 1  # the file's first rows


def test_missing_digits_file_says_where_it_should_be(tmp_path):
    with pytest.raises(FileNotFoundError, match="digits.csv.gz"):
        demo.load_digits(tmp_path / "nothing.csv.gz")


def test_split_is_fixed_and_disjoint():
    images, labels = demo.load_digits()
    a = demo.split_digits(images, labels, n_test=100)
    b = demo.split_digits(images, labels, n_test=100)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(a[0]) == 1697 and len(a[2]) == 100
    with pytest.raises(ValueError, match="n_test"):
        demo.split_digits(images, labels, n_test=0)


def test_vit_shapes_and_class_token_attention():
    vit = demo.build_vit(Embedding, seed=0, patch_size=2, d_model=16, n_heads=2)
    images = torch.rand(5, 1, 8, 8)
    assert vit(images).shape == (5, 10)
    weights = vit.eval().class_token_attention(images)
    assert weights.shape == (5, 16) and bool((weights >= 0).all())
    assert bool((weights.sum(-1) <= 1 + 1e-5).all())
    with pytest.raises(ValueError, match="divide"):
        demo.VisionTransformer(Embedding, patch_size=3)


class EmbeddingOtherOrder(nn.Module):
    """A correct embedding that creates its members in another order, at another small
    scale, with a truncated normal: it draws other numbers from the global generator."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__()
        self.patch_size = patch_size
        self.positions = nn.Parameter(torch.empty(1, n_patches + 1, d_model))
        nn.init.trunc_normal_(self.positions, std=0.05)
        self.cls_token = nn.Parameter(0.05 * torch.randn(1, 1, d_model))
        self.proj = nn.Linear(in_channels * patch_size**2, d_model)

    forward = Embedding.forward


def test_every_correct_embedding_gives_the_same_vit():
    """The ViT does not depend on how a correct embedding draws its start: same parameters,
    the encoder layers after it included; the notebook's random stream is left alone."""
    torch.manual_seed(5)
    before = torch.get_rng_state()
    reference = demo.build_vit(Embedding, seed=0)
    other = demo.build_vit(EmbeddingOtherOrder, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    parameters = dict(other.named_parameters())
    for name, value in reference.named_parameters():
        assert torch.equal(value, parameters[name]), name
    assert float(reference.embed.positions.detach().pow(2).mean().sqrt()) < 0.1
    assert not torch.equal(demo.build_vit(Embedding, seed=1).embed.positions,
                           reference.embed.positions)


def test_vit_and_mlp_have_about_the_same_size():
    vit = demo.build_vit(Embedding, seed=0)
    sizes = [sum(p.numel() for p in m.parameters()) for m in (vit, demo.mlp_baseline())]
    assert abs(sizes[0] - sizes[1]) / sizes[0] < 0.05


def test_vision_figures_draw(monkeypatch):
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: matplotlib.pyplot.close("all"))
    images, labels = demo.load_digits()
    vit = demo.build_vit(Embedding, seed=0)
    demo.plot_digits(images, labels, n=4)
    demo.plot_patches(patchify, images[0], patch_size=2)
    demo.plot_class_token_attention(vit, images, labels, n=3)
    demo.plot_class_token_attention(vit, images[:1], labels[:1], n=1)
    demo.plot_position_similarity(vit)
    demo.plot_learning_curves({"a": {"val_acc": [0.5, 0.7]}})
    with pytest.raises(ValueError, match="one image"):
        demo.plot_patches(patchify, images[:2], patch_size=2)


def test_plot_patches_checks_the_patch_size_before_calling_patchify():
    called = []

    def spy(images, patch_size):
        called.append(patch_size)
        return patchify(images, patch_size)

    images, _ = demo.load_digits()
    with pytest.raises(ValueError, match=r"patch_size must divide the image's height and width "
                                         r"\(8 × 8\), got 3"):
        demo.plot_patches(spy, images[0], patch_size=3)
    assert called == []
    with pytest.raises(ValueError, match="patchify returned patches of shape"):
        demo.plot_patches(lambda x, p: patchify(x, p).transpose(1, 2), images[0], patch_size=2)


# Stubs as the student notebook ships them, under the exercises' own names.
def stub_patchify(images, patch_size):
    raise NotImplementedError()


stub_patchify.__code__ = stub_patchify.__code__.replace(co_name="patchify")


class PatchEmbedding(nn.Module):
    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__()
        raise NotImplementedError()


def stub_sequence_log_prob(logits, tokens):
    raise NotImplementedError()


stub_sequence_log_prob.__code__ = stub_sequence_log_prob.__code__.replace(
    co_name="sequence_log_prob")


def test_demos_say_which_exercise_to_finish_first(monkeypatch):
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: matplotlib.pyplot.close("all"))
    images, labels = demo.load_digits()
    with pytest.raises(NotImplementedError, match="`patchify`.*finish Exercise 1 first"):
        demo.plot_patches(stub_patchify, images[0], patch_size=2)
    with pytest.raises(NotImplementedError, match="`PatchEmbedding`.*finish Exercise 2 first"):
        demo.build_vit(PatchEmbedding, seed=0)
    model = demo.train_language_model(demo.make_corpus(0.8, 30), steps=1)
    with pytest.raises(NotImplementedError, match="`sequence_log_prob`.*finish Exercise 3"):
        demo.pronoun_preference(model, stub_sequence_log_prob)
    with pytest.raises(NotImplementedError, match="`sequence_log_prob`.*finish Exercise 3"):
        demo.plot_pair(model, stub_sequence_log_prob, "the nurse said she was late .",
                       "the nurse said he was late .")


def test_corpus_follows_its_rates_and_is_seeded():
    corpus = demo.make_corpus(skew=1.0, n_sentences=200, seed=3)
    assert corpus.shape == (200, 8) and torch.equal(corpus, demo.make_corpus(1.0, 200, 3))
    counts = demo.corpus_counts(corpus)
    assert counts["nurse"][1] == 0 and counts["engineer"][0] == 0  # skew 1: one pronoun only
    assert sum(she + he for she, he in counts.values()) == 200
    assert demo.decode(corpus[0]).endswith(" .")
    assert demo.she_rate("teacher", 0.9) == 0.5 and demo.she_rate("pilot", 0.6) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="skew"):
        demo.make_corpus(skew=1.5)
    with pytest.raises(ValueError, match="occupation"):
        demo.she_rate("astronaut", 0.5)
    with pytest.raises(ValueError, match="vocabulary"):
        demo.encode("the astronaut said she was late .")


def test_rebalancing_balances_every_occupation():
    balanced = demo.rebalance(demo.make_corpus(skew=0.9, n_sentences=100))
    assert len(balanced) == 200
    assert all(she == he for she, he in demo.corpus_counts(balanced).values())
    assert all(abs(v) < 1e-12 for v in demo.data_log_odds(balanced).values())


def test_sentence_pairs_differ_in_the_pronoun_only():
    she, he = demo.sentence_pairs("nurse")
    assert she.shape == he.shape == (8, 8)
    differ = she != he
    assert bool(differ[:, demo.PRONOUN_POSITION].all()) and int(differ.sum()) == 8


def test_language_model_learns_the_skew_quickly_and_restores_threads():
    threads = torch.get_num_threads()
    corpus = demo.make_corpus(skew=0.9, n_sentences=120)
    model = demo.train_language_model(corpus, steps=40)
    assert torch.get_num_threads() == threads
    assert model(corpus[:2]).shape == (2, 8, len(demo.VOCAB))
    preference = demo.pronoun_preference(model, sequence_log_prob)
    assert preference["nurse"] > 0.5 and preference["engineer"] < -0.5


def test_skew_experiment_and_its_figure(monkeypatch):
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: matplotlib.pyplot.close("all"))
    results = demo.skew_experiment(sequence_log_prob, skews=(0.0, 0.9), n_sentences=120,
                                   steps=40)
    assert [r["name"] for r in results] == ["skew 0.0", "skew 0.9", "skew 0.9, rebalanced"]
    assert demo.majority_agreement(results[1]) == 1.0
    demo.plot_skew_experiment(results)
    model = demo.train_language_model(demo.make_corpus(0.8, 60), steps=5)
    demo.plot_pair(model, sequence_log_prob, "the nurse said she was late .",
                   "the nurse said he was late .")


def test_position_summary_tells_neighbours_far_pairs_and_corners_apart(capsys):
    vit = demo.build_vit(Embedding, seed=0, patch_size=2, d_model=16, n_heads=2)
    side = 4
    rows, columns = torch.arange(16) // side, torch.arange(16) % side
    angle = (rows + columns).double() * (torch.pi / 12)  # neighbours 15° apart, corners far
    with torch.no_grad():
        vit.embed.positions.zero_()
        vit.embed.positions[0, 1:, 0] = torch.cos(angle).float()
        vit.embed.positions[0, 1:, 1] = torch.sin(angle).float()
    summary = demo.position_similarity_summary(vit)
    assert summary["neighbours"] == pytest.approx(float(torch.cos(torch.tensor(torch.pi / 12))))
    assert summary["further apart"] < summary["neighbours"]
    corners = torch.tensor([0.0, 3, 3, 6]) * torch.pi / 12  # the corners' angles
    wanted = torch.cos(corners[:, None] - corners[None])[~torch.eye(4, dtype=torch.bool)].mean()
    assert summary["corners"] == pytest.approx(float(wanted))
    printed = capsys.readouterr().out
    assert "neighbouring patches: +1.0" in printed and "-0.0" not in printed


def test_plot_pair_says_where_the_curves_part(monkeypatch, capsys):
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: matplotlib.pyplot.close("all"))
    model = demo.train_language_model(demo.make_corpus(0.9, 120), steps=30)
    demo.plot_pair(model, sequence_log_prob, "the nurse said she was late .",
                   "the nurse said he was late .")
    printed = capsys.readouterr().out
    assert "the curves part at 'she/he'" in printed
    demo.plot_pair(model, sequence_log_prob, "the nurse said she was late .",
                   "the nurse said she was late .")
    assert "part" not in capsys.readouterr().out.split("prefers")[-1]


# ---- the long-budget tables (bench/beyond_words_budgets.py) ---------------------------------


def test_digit_curves_table_has_every_seed_and_epoch_it_claims():
    curves = demo.load_digit_curves()
    assert set(curves) == {"ViT", "MLP"}
    for name, table in curves.items():
        assert table.shape == (5, 60), name
        assert ((table >= 0) & (table <= 1)).all()
        # flat at the end: the mean curve moves by less than 2 points over its last 10 epochs
        last = table[:, -10:].mean(0)
        assert last.max() - last.min() < 0.02, name


def test_digit_curves_table_reproduces_with_the_same_code_path():
    """Seed 0 of the table is the notebook's run: the MLP's first epochs, trained again."""
    images, labels = demo.load_digits()
    data = demo.split_digits(images, labels, n_test=500)
    rows = demo.digit_curves(Embedding, data, seeds=[0], epochs=3, models=["MLP"])
    table = demo.load_digit_curves()["MLP"]
    again = [r["test_accuracy"] for r in rows]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert again == pytest.approx(table[0, :3], abs=0.01)


def test_loader_rejects_a_table_with_a_missing_epoch(tmp_path):
    path = tmp_path / "curves.csv"
    demo.write_rows([{"model": "MLP", "seed": 0, "epoch": 1, "test_accuracy": 0.5},
                     {"model": "MLP", "seed": 1, "epoch": 2, "test_accuracy": 0.6}],
                    path, demo.DIGIT_CURVE_FIELDS)
    with pytest.raises(ValueError, match="epochs 1..N"):
        demo.load_digit_curves(path)


def test_skew_table_has_every_seed_step_corpus_and_occupation():
    rows = demo.load_skew_seeds()
    steps = sorted({r["steps"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    corpora = {r["corpus"] for r in rows}
    assert steps == [35, 140] and seeds == list(range(10))
    assert corpora == {"skew 0.0", "skew 0.45", "skew 0.9", "skew 0.9, rebalanced"}
    assert len(rows) == len(steps) * len(seeds) * len(corpora) * len(demo.LEANS)
    summary = demo.skew_summary(rows, 35)
    assert all(v["n"] == 10 for v in summary.values())
    # the data side of a seed does not depend on the number of steps
    data = {(r["seed"], r["corpus"], r["occupation"], r["steps"]): r["data_log_odds"]
            for r in rows}
    assert all(data[s, c, o, 35] == data[s, c, o, 140] for s, c, o, _ in data)


def test_skew_table_reproduces_with_the_same_code_path():
    rows = demo.skew_seed_rows(sequence_log_prob, seeds=[1], steps=[35], skews=(0.9,))
    table = {(r["corpus"], r["occupation"]): r for r in demo.load_skew_seeds()
             if r["seed"] == 1 and r["steps"] == 35}
    assert len(rows) == 2 * len(demo.LEANS)  # skew 0.9 and its rebalanced corpus
    for row in rows:
        stored = table[row["corpus"], row["occupation"]]
        assert row["data_log_odds"] == pytest.approx(stored["data_log_odds"], abs=1e-4)
        assert row["learned"] == pytest.approx(stored["learned"], abs=0.05)


def test_skew_summary_means_and_spreads():
    rows = [{"steps": 35, "seed": s, "corpus": "skew 0.9", "occupation": "nurse",
             "data_log_odds": 2.0 + s, "learned": 3.0 + 3 * s} for s in range(3)]
    summary = demo.skew_summary(rows + [{**rows[0], "steps": 140}], 35)
    v = summary["skew 0.9", "nurse"]
    assert v["n"] == 3 and v["data"] == pytest.approx(3.0) and v["learned"] == pytest.approx(6.0)
    assert v["excess"] == pytest.approx(3.0) and v["excess_sd"] == pytest.approx(2.0)
    assert v["data_sd"] == pytest.approx(1.0)


def _labelled(ax):
    return ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and ax.get_legend()


def test_long_budget_figures_have_titles_labels_and_legends(monkeypatch):
    drawn = []
    monkeypatch.setattr(matplotlib.pyplot, "show",
                        lambda: (drawn.append(matplotlib.pyplot.gcf()),
                                 matplotlib.pyplot.close("all")))
    curves = demo.load_digit_curves()
    demo.plot_long_budget(curves, live={"ViT": {"val_acc": [0.2, 0.5]}})
    (ax,) = drawn[-1].axes
    assert _labelled(ax)
    labels = ax.get_legend_handles_labels()[1]
    assert "ViT: mean of 5 seeds" in labels and "ViT: this notebook's run" in labels
    demo.plot_skew_over_seeds(demo.load_skew_seeds(), steps=[35, 140])
    axes = drawn[-1].axes
    assert len(axes) == 2 and all(_labelled(ax) for ax in axes)
    assert "10 seeds" in axes[0].get_title() and "140" in axes[1].get_title()


def test_amplification_counts_only_seeds_that_learned_the_lean():
    def rows_of(seed, learned):
        return [{"steps": 35, "seed": seed, "corpus": "skew 0.9", "occupation": o,
                 "data_log_odds": 2.0 * lean, "learned": learned * lean + (lean == 0)}
                for o, lean in demo.LEANS.items()]

    # seed 0 goes 1 beyond its data everywhere, seed 1 falls 1 short, seed 2 learned nothing
    rows = rows_of(0, 3.0) + rows_of(1, 1.0) + rows_of(2, 0.1)
    result = demo.amplification(rows, 35)
    assert result["seeds"] == [0, 1, 2] and result["learned_seeds"] == [0, 1]
    assert len(result["beyond"]) == 8 and result["beyond"][0, "pilot"] == pytest.approx(1.0)
    assert (result["n_beyond"], result["n_short"]) == (4, 4)
    assert result["mean"] == pytest.approx(0.0)
    # over every seed, seed 2 (learned 0.1, data 2) counts too: 1.9 short four times
    assert result["all"]["n"] == 12 and result["all"]["n_short"] == 8
    assert result["all"]["mean"] == pytest.approx((0 * 4 + -1.9 * 4) / 12)
    with pytest.raises(ValueError, match="no rows"):
        demo.amplification(rows, 140)


def test_summaries_print_the_numbers_the_notebook_states(capsys):
    summary = demo.long_budget_summary(demo.load_digit_curves())
    printed = capsys.readouterr().out
    assert "ViT: epoch 7" in printed and "epoch 60" in printed and "5 seeds" in printed
    assert summary["MLP"]["final_sd"] < summary["ViT"]["final_sd"]
    assert summary["MLP ahead"]["seeds"] <= 5
    result = demo.print_amplification(demo.load_skew_seeds(), 140)
    printed = capsys.readouterr().out
    assert f"{len(result['learned_seeds'])} of 10 seeds learned the lean" in printed
    assert f"over all 10 seeds: more than 0.5 beyond the data in {result['all']['n_beyond']} " \
           f"of 40 cases" in printed
    assert "teacher and doctor (no lean)" in printed
