"""Unit tests of tutorial 05's demos module (data, baseline, experiments, figures) and checks."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from notebook_code import solution_namespace  # noqa: E402

from helpers.checks.framework import CheckFailed  # noqa: E402
from helpers.checks.sparse_and_inductive_bias import (  # noqa: E402
    check_SelfAttentionClassifier,
    check_sparse_and_dataset,
)
from helpers.demos import sparse_and_inductive_bias as demo  # noqa: E402

SOLUTION = solution_namespace("05_sparse_and_inductive_bias")
generate = SOLUTION["sparse_and_dataset"]
Classifier = SOLUTION["SelfAttentionClassifier"]


def test_pick_positions_is_seeded_sorted_and_distinct():
    a, b = demo.pick_positions(20, 3, seed=4), demo.pick_positions(20, 3, seed=4)
    assert a == b == sorted(set(a)) and len(a) == 3 and all(0 <= i < 20 for i in a)
    assert demo.pick_positions(20, 3, seed=5) != a or demo.pick_positions(20, 3, seed=6) != a
    with pytest.raises(ValueError):
        demo.pick_positions(4, 5, seed=0)


def test_dense_vote_is_balanced_and_depends_on_many_positions():
    torch.manual_seed(0)
    X, y = demo.dense_vote_dataset(4000, 16)
    assert X.shape == (4000, 16) and X.dtype == torch.int64 and y.shape == (4000, 1)
    assert abs(y.mean().item() - 0.5) < 0.04
    # every single bit is correlated with the label a little, none decides it alone
    correlations = [abs(torch.corrcoef(torch.stack([X[:, t].float(), y[:, 0]]))[0, 1].item())
                    for t in range(16)]
    assert max(correlations) < 0.6 and sum(c > 0.02 for c in correlations) >= 12


def test_rule_dataset_follows_the_rule_bit():
    torch.manual_seed(1)
    idx_0, idx_1 = [1, 4], [2, 9]
    X, y = demo.rule_dataset(generate, 2000, 12, idx_0, idx_1)
    assert X.shape == (2000, 12) and y.shape == (2000, 1)
    rule = X[:, -1]
    expected = torch.where(rule == 0, X[:, idx_0].all(1), X[:, idx_1].all(1)).float()
    assert torch.equal(y[:, 0], expected)
    assert abs(rule.float().mean().item() - 0.5) < 0.01
    assert abs(y.mean().item() - 0.5) < 0.05
    with pytest.raises(ValueError):
        demo.rule_dataset(generate, 10, 12, [11], [2])


def test_mlp_baseline_outputs_probabilities():
    model = demo.BinaryMLP(10)
    out = model(torch.randint(0, 2, (7, 10)))
    assert out.shape == (7, 1) and bool(((out > 0) & (out < 1)).all())


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with demo.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_samples_to_target_finds_an_easy_case_and_reports_failure():
    found = demo.samples_to_target(demo.BinaryMLP, "MLP", generate, T=4, s=1, seed=0,
                                   target=0.9, sizes=(32, 64), m_val=100, max_steps=60)
    assert found in (32, 64)
    never = demo.samples_to_target(demo.BinaryMLP, "MLP", generate, T=8, s=2, seed=0,
                                   target=1.01, sizes=(8,), m_val=50, max_steps=5)
    assert never is None


def test_medians_and_csv_round_trip(tmp_path):
    rows = [{"T": 8, "model": "MLP", "seed": 0, "samples_to_target": 32},
            {"T": 8, "model": "MLP", "seed": 1, "samples_to_target": None},
            {"T": 8, "model": "MLP", "seed": 2, "samples_to_target": 64},
            {"T": 8, "model": "attention", "seed": 0, "samples_to_target": 16}]
    path = tmp_path / "out.csv"
    demo.write_csv(rows, path)
    assert path.read_text().splitlines()[0] == "T,model,seed,samples_to_target"
    assert demo.read_csv(path) == rows
    table = {(r["T"], r["model"]): r["median"] for r in demo.medians(rows)}
    assert table[(8, "MLP")] == 64 and table[(8, "attention")] == 16
    assert math.isinf(demo.medians(rows[1:2])[0]["median"])
    spread = demo.spreads(rows)
    assert spread[(8, "attention")] == (16, 16) and spread[(8, "MLP")] == (32, math.inf)


def test_print_medians_shows_the_spread_over_seeds(capsys):
    demo.print_medians([{"T": 8, "model": "MLP", "seed": s, "samples_to_target": v}
                        for s, v in enumerate((32, 64, None))])
    out = capsys.readouterr().out
    assert "fewest-most" in out and "32-never" in out


def test_shipped_benchmark_table_is_complete():
    rows = demo.read_csv()
    assert {r["model"] for r in rows} == {"attention", "MLP"}
    Ts = sorted({r["T"] for r in rows})
    assert Ts[:4] == [8, 16, 32, 64]
    seeds = {r["seed"] for r in rows}
    assert len(rows) == len(Ts) * 2 * len(seeds)


def test_figures_draw_without_error(tmp_path, capsys):
    demo.plot_label_balance()
    demo.plot_samples(generate, T=12, idx=[2, 7], n=10)
    demo.plot_selection_margin()
    rows = demo.read_csv()
    demo.plot_sample_complexity(rows, live_rows=rows[:2], save_to=tmp_path / "f.png")
    assert (tmp_path / "f.png").exists()
    torch.manual_seed(0)
    model = Classifier(10)
    X, y = generate(40, 10, [3, 5])
    stats = demo.plot_mean_attention(model, X, y, [3, 5])
    assert 0 <= stats["share_y0"] <= 1 and stats["uniform"] == pytest.approx(0.1)
    assert "relevant positions" in capsys.readouterr().out
    X_rule, _ = demo.rule_dataset(generate, 40, 10, [1, 2], [4, 6])
    demo.plot_rule_graph(model, X_rule, [1, 2], [4, 6])
    fake = [{"task": task, "model": name, "samples": 20, "parameters": 10, "train_acc": 1.0,
             "val_acc": 0.7, "val_curve": [0.5, 0.7]}
            for task in ("sparse", "dense") for name in ("attention", "MLP")]
    demo.plot_comparison(fake)
    demo.print_table(fake)
    for number in plt.get_fignums():
        for ax in plt.figure(number).axes:
            if ax.get_label() != "<colorbar>":
                assert ax.get_title(), "every axes has a title"


def test_compare_models_runs_small_and_reports_rows():
    torch.manual_seed(0)
    rows, trained = demo.compare_models(Classifier, generate, T=8, m=32, m_val=50, epochs=3)
    assert [(r["task"], r["model"]) for r in rows] == [
        ("sparse AND (s=2)", "attention"), ("sparse AND (s=2)", "MLP"),
        ("dense vote (all T)", "attention"), ("dense vote (all T)", "MLP")]
    assert all(0 <= r["val_acc"] <= 1 and len(r["val_curve"]) == 3 for r in rows)
    assert trained["T"] == 8 and len(trained["idx"]) == 2


def test_train_rule_model_runs_small():
    result = demo.train_rule_model(Classifier, generate, T=8, m=32, epochs=2)
    assert result["X_val"].shape[1] == 8 and len(result["history"]["val_acc"]) == 2
    assert not set(result["idx_0"]) & set(result["idx_1"])


def test_self_checks_pass_the_solution_and_fail_in_plain_words():
    check_sparse_and_dataset(generate)
    check_SelfAttentionClassifier(Classifier)
    with pytest.raises(CheckFailed, match="expected"):
        check_sparse_and_dataset(lambda m, T, idx, p=None: (torch.zeros(m, T), torch.zeros(m, 1)))


def test_not_as_expected_points_to_the_exercises():
    message = demo.not_as_expected("attention reached 0.45")
    assert message.startswith("attention reached 0.45") and "eval mode" in message
    assert "initialisation" not in message and "std=0.1" not in message


def test_self_check_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_sparse_and_dataset(generate)
    assert torch.equal(torch.rand(3), expected)


class ReversedDrawOrder(Classifier):
    """A correct classifier whose ``__init__`` builds its members in reverse order and
    initialises each right after building it: other random draws, the same model family."""

    def __init__(self, T: int, d: int = 8) -> None:
        torch.nn.Module.__init__(self)
        self.T, self.d = T, d
        self.readout = torch.nn.Linear(d, 1)
        self.value = torch.nn.Linear(d, d, bias=False)
        torch.nn.init.normal_(self.value.weight, std=0.1)
        self.key = torch.nn.Linear(d, d, bias=False)
        torch.nn.init.normal_(self.key.weight, std=0.1)
        self.query = torch.nn.Linear(d, d, bias=False)
        torch.nn.init.normal_(self.query.weight, std=0.1)
        self.position_embedding = torch.nn.Parameter(torch.randn(T, d) * 0.1)
        self.token_embedding = torch.nn.Embedding(2, d)
        torch.nn.init.normal_(self.token_embedding.weight, std=0.1)


def test_initialise_classifier_makes_the_draw_order_irrelevant():
    torch.manual_seed(0)
    solution = demo.initialise_classifier(Classifier(12), seed=3)
    torch.manual_seed(1)
    reversed_order = demo.initialise_classifier(ReversedDrawOrder(12), seed=3)
    torch.manual_seed(0)
    as_built = ReversedDrawOrder(12)
    torch.manual_seed(0)
    assert not torch.equal(Classifier(12).position_embedding, as_built.position_embedding)
    for (name, a), (_, b) in zip(sorted(solution.named_parameters()),
                                 sorted(reversed_order.named_parameters()), strict=True):
        assert torch.equal(a, b), name
    other_seed = demo.initialise_classifier(Classifier(12), seed=4)
    assert not torch.equal(other_seed.position_embedding, solution.position_embedding)
    assert abs(solution.position_embedding.std().item() - 0.1) < 0.04
    bound = 1 / math.sqrt(8)
    assert solution.readout.weight.abs().max().item() <= bound
    mlp = demo.BinaryMLP(6)
    before = [p.clone() for p in mlp.parameters()]
    demo.initialise_classifier(mlp, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(before, mlp.parameters(), strict=True))


def test_the_experiments_train_the_same_model_whatever_the_draw_order():
    runs = []
    for cls in (Classifier, ReversedDrawOrder):
        torch.manual_seed(0)
        rows, trained = demo.compare_models(cls, generate, T=12, s=2, m=32, m_val=50, epochs=5)
        runs.append((rows, trained["models"][("sparse AND (s=2)", "attention")]))
    (rows_a, model_a), (rows_b, model_b) = runs
    assert [r["val_curve"] for r in rows_a] == [r["val_curve"] for r in rows_b]
    for (name, a), (_, b) in zip(sorted(model_a.named_parameters()),
                                 sorted(model_b.named_parameters()), strict=True):
        assert torch.equal(a, b), name
