"""Unit tests of tutorial 01's demos (fast, no kernel)."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from notebook_code import solution_namespace

matplotlib.use("Agg")

from helpers.demos import gain_multiplication as demo  # noqa: E402

SOLUTION = solution_namespace("01_gain_multiplication")
attention = SOLUTION["gained_dot_product_attention"]


@pytest.fixture
def no_show(monkeypatch):
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: matplotlib.pyplot.close("all"))


def test_spotlights_prefer_the_left_and_the_right_half():
    x, q_1, q_2 = demo.spotlight_signal(T=40)
    assert x.shape == q_1.shape == q_2.shape == (40,)
    assert int(q_1.argmax()) < 20 <= int(q_2.argmax())
    assert torch.equal(x, demo.spotlight_signal(T=40)[0])  # seeded
    with pytest.raises(ValueError, match="at least 4"):
        demo.spotlight_signal(T=3)


def test_entropy_is_log_t_for_uniform_weights_and_zero_for_one_hot():
    assert demo.weight_entropy(torch.full((40,), 1 / 40)) == pytest.approx(math.log(40))
    assert demo.weight_entropy(torch.eye(5)[2]) == 0.0


def test_the_entropy_table_says_what_the_figure_shows(no_show, capsys):
    """Flat near gain 0, steep between 2 and 6, slow afterwards; y from the mean of x to the
    values under the left spotlight: the numbers the notebook's prose quotes."""
    demo.plot_entropy_vs_gain(attention)
    lines = capsys.readouterr().out.splitlines()
    gains, entropy, output = ([float(v) for v in line.split()[-7:]] for line in lines[-3:])
    assert gains == [float(g) for g in demo.TABLE_GAINS]
    assert entropy == [3.69, 3.62, 3.38, 2.57, 1.97, 1.51, 0.88]
    assert output == [-0.01, 0.19, 0.43, 0.79, 0.92, 0.96, 0.98]
    drops = [a - b for a, b in zip(entropy, entropy[1:], strict=False)]
    per_unit = [d / (g1 - g0) for d, g0, g1 in zip(drops, gains, gains[1:], strict=False)]
    assert per_unit[0] < 0.1 and per_unit[2] > 0.3 and per_unit[-1] < 0.05


def test_the_table_never_prints_minus_zero(no_show, capsys):
    def flat(x, q_1, q_2, z_1, z_2):
        w = torch.full_like(x, 1 / len(x))
        return w, torch.tensor(-0.001)

    demo.plot_entropy_vs_gain(flat)
    assert "-0.00" not in capsys.readouterr().out


def test_the_gain_demo_draws_its_static_settings(no_show):
    demo.gain_demo(attention)
    demo.plot_softmax_sharpening(torch.linspace(-1, 1, 12))
    demo.plot_signal(*demo.spotlight_signal())


def shown_figures(monkeypatch) -> list:
    """The figures a demo shows, kept open to inspect."""
    figures: list = []
    monkeypatch.setattr(matplotlib.pyplot, "show",
                        lambda: figures.append(matplotlib.pyplot.gcf()))
    return figures


def test_the_sharpening_figure_shows_the_scores_and_marks_the_best_position(monkeypatch):
    figures = shown_figures(monkeypatch)
    scores = torch.linspace(-1, 1, 12) ** 2 - 0.3 * torch.linspace(-1, 1, 12)
    demo.plot_softmax_sharpening(scores)
    left, right = figures[0].axes
    heights = [bar.get_height() for bar in left.patches]
    assert heights[:12] == pytest.approx(scores.tolist())
    assert heights[12] == pytest.approx(float(scores.max()))  # drawn again, highlighted
    assert left.get_legend().get_texts()[0].get_text() == "best position, t = 0"
    assert len(right.get_lines()) == 4
    matplotlib.pyplot.close("all")


def test_every_gain_setting_shares_one_weight_axis(monkeypatch):
    figures = shown_figures(monkeypatch)
    x, q_1, q_2 = demo.spotlight_signal(T=40)
    for z_1, z_2 in ((0.0, 0.0), (8.0, 0.0), (4.0, 4.0), (-4.0, -4.0), (10.0, 0.0)):
        demo.draw_gain_demo(attention, x, q_1, q_2, z_1, z_2)
    tops = {figure.axes[-1].get_ylim() for figure in figures}
    assert tops == {(0.0, demo.WEIGHT_AXIS_TOP)}
    matplotlib.pyplot.close("all")
