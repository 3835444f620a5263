"""Unit tests of the shared helpers (seed, device, training, checks, widgets, plotting)."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

from helpers import get_device, set_seed
from helpers.checks import CheckFailed, SelfCheck
from helpers.plotting import heatmap, to_numpy
from helpers.training import count_parameters, evaluate, train
from helpers.widgets import slider_demo, widget_frontend_available

matplotlib.use("Agg")


def test_set_seed_makes_torch_and_numpy_repeat():
    import numpy as np

    set_seed(3)
    first = torch.randn(4), np.random.rand(3)
    set_seed(3)
    second = torch.randn(4), np.random.rand(3)
    assert torch.equal(first[0], second[0]) and (first[1] == second[1]).all()


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_set_seed_rejects_bad_seeds_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        set_seed(bad)


def test_get_device_prefers_what_is_available(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device().type == expected
    assert get_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_get_device_explains_a_missing_gpu():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        get_device("cuda")


def test_train_learns_a_separable_problem_and_records_history():
    set_seed(0)
    X = torch.randn(256, 2)
    y = (X[:, :1] + X[:, 1:] > 0).float()
    model = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    history = train(model, X, y, epochs=15, lr=0.1, val_inputs=X[:64], val_target=y[:64],
                    device=torch.device("cpu"), progress=False)
    assert set(history) == {"train_loss", "train_acc", "val_loss", "val_acc"}
    assert all(len(v) == 15 for v in history.values())
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["train_acc"][-1] > 0.95
    assert evaluate(model, X, y)[1] == pytest.approx(history["train_acc"][-1])
    assert count_parameters(model) == 3


def test_train_is_reproducible_for_a_seed():
    def run():
        set_seed(1)
        model = nn.Linear(3, 4)
        X, y = torch.randn(64, 3), torch.randint(0, 4, (64,))
        return train(model, X, y, task="multiclass", epochs=3, progress=False,
                     device=torch.device("cpu"))["train_loss"]

    assert run() == run()


def test_train_rejects_mismatched_inputs_clearly():
    with pytest.raises(ValueError, match="one row per target"):
        train(nn.Linear(2, 1), torch.zeros(5, 2), torch.zeros(4, 1), progress=False)
    with pytest.raises(ValueError, match="task must be one of"):
        train(nn.Linear(2, 1), torch.zeros(4, 2), torch.zeros(4, 1), task="regression")


def test_self_check_failure_message_is_plain_words():
    check = SelfCheck("my_function")
    with pytest.raises(CheckFailed) as info:
        check.close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]), "adds up",
                    mistakes={"forgot the second term": torch.tensor([1.0, 2.0])})
    message = str(info.value)
    assert "my_function: check 1 failed: adds up" in message
    assert "expected:" in message and "got:" in message
    assert "likely mistake: forgot the second term" in message
    assert info.value.__suppress_context__


def test_self_check_reports_a_crash_and_lets_not_implemented_through():
    check = SelfCheck("f")

    def crashes(x):
        return x @ x

    with pytest.raises(CheckFailed, match="runs without an error"):
        check.call(crashes, torch.zeros(2, 3))

    def blank(x):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check.call(blank, 1)


def test_self_check_uses_comparisons_captured_before_student_code(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *args, **kwargs: True)
    with pytest.raises(CheckFailed):
        SelfCheck("f").close(torch.zeros(3), torch.ones(3), "zeros are not ones")


def test_self_check_tolerates_float_noise_but_not_errors():
    check = SelfCheck("f")
    check.close(torch.tensor([0.1 + 0.2]), torch.tensor([0.3]), "float noise is fine")
    with pytest.raises(CheckFailed):
        check.close(torch.tensor([0.31]), torch.tensor([0.3]), "a real difference")


def test_slider_demo_draws_static_settings_without_a_frontend(monkeypatch):
    monkeypatch.setenv("COURSE_WIDGETS", "0")
    assert not widget_frontend_available()
    calls = []
    slider_demo(lambda a: calls.append(a), {"a": (0.0, 1.0, 0.1, 0.5)},
                static_settings=[{"a": 0.0}, {"a": 1.0}])
    assert calls == [0.0, 1.0]


def test_slider_demo_rejects_a_bad_slider():
    with pytest.raises(ValueError, match="min <= start <= max"):
        slider_demo(lambda a: None, {"a": (0.0, 1.0, 0.1, 5.0)}, static_settings=[])


def test_heatmap_labels_and_rejects_non_matrices():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    heatmap(ax, torch.eye(3), title="I", xlabel="key", ylabel="query",
            xticklabels=list("abc"), yticklabels=list("abc"))
    assert ax.get_title() == "I" and ax.get_xlabel() == "key"
    with pytest.raises(ValueError, match="2-D matrix"):
        heatmap(ax, torch.zeros(2, 2, 2), title="", xlabel="", ylabel="")
    plt.close(fig)
    assert to_numpy(torch.ones(2, requires_grad=True)).tolist() == [1.0, 1.0]


# ---- what a failure says: a likely mistake only with its signature, otherwise where ----------

def test_a_mismatch_without_a_matching_mistake_says_where_and_names_nothing():
    check = SelfCheck("f")
    expected = torch.zeros(3, 4)
    actual = expected.clone()
    actual[1, 2] = 1.0
    with pytest.raises(CheckFailed) as info:
        check.close(actual, expected, "rows", dims=("row", "column"),
                    mistakes={"a mistake that looks different": torch.ones(3, 4)})
    message = str(info.value)
    assert "likely mistake" not in message
    assert "where:    1 of 12 entries differ; the first at index [1, 2]" in message
    assert "row 1 only" in message and "column 2 only" in message


def test_a_diagnosis_is_named_only_when_its_signature_holds():
    calls = []

    def signature():
        calls.append(1)
        return True

    check = SelfCheck("f")
    check.expect(True, "passes", expected="", got="", diagnoses={"never asked": signature})
    assert calls == []  # signatures are evaluated only on failure
    with pytest.raises(CheckFailed, match="likely mistake: the second"):
        check.expect(False, "fails", expected="a", got="b",
                     diagnoses={"the first": False, "the second": signature})
    with pytest.raises(CheckFailed) as info:
        check.expect(False, "fails", expected="a", got="b", diagnoses={"the first": False})
    assert "likely mistake" not in str(info.value)


def test_a_mistake_with_nan_is_recognised_by_its_nan_pattern():
    check = SelfCheck("f")
    wrong = torch.tensor([[0.5, 0.5], [float("nan"), float("nan")]])
    with pytest.raises(CheckFailed, match="likely mistake: the nan row"):
        check.close(wrong, torch.tensor([[0.5, 0.5], [1.0, 0.0]]), "rows",
                    mistakes={"the nan row": wrong.clone()})


def test_shape_failures_say_how_the_shapes_differ():
    from helpers.checks.framework import shape_difference

    assert shape_difference((3, 5), (3, 4, 5)) == "dimension 1 (of size 4) is missing"
    assert shape_difference((3, 1, 5), (3, 5)) == "an extra dimension of size 1 at position 1"
    assert shape_difference((5, 3), (3, 5)) == "the same sizes in a different order"
    assert shape_difference((2, 2), (3, 5)) is None


def test_an_unfinished_exercise_used_by_another_says_which_to_finish():
    from helpers.exercises import ExerciseNotFinished

    def merge_heads(x):
        raise NotImplementedError()

    def MultiHeadSelfAttention(x):  # noqa: N802 - named like the exercise it stands for
        return merge_heads(x)

    check = SelfCheck("MultiHeadSelfAttention")
    with pytest.raises(ExerciseNotFinished, match="`merge_heads`, which is not finished yet.*"
                                                  "finish Exercise 2 first"):
        check.call(MultiHeadSelfAttention, 1)
    with pytest.raises(ExerciseNotFinished, match="`merge_heads` is not written yet"):
        SelfCheck("merge_heads").call(merge_heads, 1)  # its own stub: still NotImplementedError

    def helper_of_the_student(x):
        raise NotImplementedError("Cannot copy out of meta tensor; no data!")

    # a NotImplementedError that says why is PyTorch's, not a stub: a failure like any crash
    with pytest.raises(CheckFailed, match="runs without an error.*\n.*\n.*Cannot copy out"):
        SelfCheck("merge_heads").call(helper_of_the_student, 1)


def test_a_demo_that_runs_an_unfinished_exercise_says_which_to_finish():
    from helpers.exercises import ExerciseNotFinished, uses_student_code

    class SingleQueryAttention:
        def __init__(self):
            raise NotImplementedError()

    @uses_student_code
    def demo(model_class):
        return model_class()

    with pytest.raises(ExerciseNotFinished, match="This cell uses `SingleQueryAttention`.*"
                                                  "finish Exercise 3 first"):
        demo(SingleQueryAttention)

    @uses_student_code
    def unrelated():
        raise NotImplementedError("something else")

    with pytest.raises(NotImplementedError, match="something else"):
        unrelated()


def test_the_exercise_register_matches_the_answer_cells_of_the_solutions():
    from notebook_code import answer_cells

    from helpers.exercises import EXERCISES
    from helpers.syllabus import ids as declared
    from helpers.syllabus import tutorial

    ids = declared()
    assert list(EXERCISES) == ids
    for notebook_id in ids:
        pasted = {f"pasted_{name}" for name in tutorial(notebook_id).pasted}
        cells = tuple(answer_cells(notebook_id))
        assert pasted <= set(cells), notebook_id
        assert tuple(c for c in cells if c not in pasted) == EXERCISES[notebook_id], notebook_id


class FakeShell:
    """What ``_explain_unfinished`` uses of IPython's shell: it records what would be shown,
    and the files of the frames of each traceback it is given."""

    def __init__(self) -> None:
        self.shown: list[tuple[type, list[str]]] = []
        self.frames: list[list[str]] = []
        self.InteractiveTB = self

    def structured_traceback(self, etype, value, tb, tb_offset=None):
        files = []
        while tb is not None:
            files.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        self.frames.append(files)
        return [f"{etype.__name__}: {value}"]

    def _showtraceback(self, etype, value, stb):
        self.shown.append((etype, stb))


def test_a_notebook_traceback_of_a_stub_says_which_exercise_to_finish():
    from helpers.exercises import _explain_unfinished

    shell = FakeShell()

    def make_batch(N, T=10):
        raise NotImplementedError()

    try:
        make_batch(3)
    except NotImplementedError as error:
        _explain_unfinished(shell, NotImplementedError, error, error.__traceback__)
    etype, stb = shell.shown[-1]
    assert etype is NotImplementedError  # still the same error: the cell still fails
    assert "finish Exercise 2 first" in stb[-1] and "`make_batch`" in stb[-1]
    try:
        raise NotImplementedError("something else")
    except NotImplementedError as error:
        _explain_unfinished(shell, NotImplementedError, error, error.__traceback__)
    assert shell.shown[-1][1] == ["NotImplementedError: something else"]


def test_a_failed_self_check_shows_its_message_without_the_checks_own_frames():
    from helpers.checks.gain_multiplication import check_stable_softmax
    from helpers.exercises import _explain_unfinished

    shell = FakeShell()

    def stable_softmax(x, dim=-1):  # forgets the maximum: overflows for large logits
        return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)

    try:
        check_stable_softmax(stable_softmax)
    except AssertionError as error:
        _explain_unfinished(shell, type(error), error, error.__traceback__)
    assert shell.frames[-1] == [__file__]  # the cell's frame (here: this test's); none of the check's
    assert "likely mistake" in shell.shown[-1][1][0]
    assert shell.shown[-1][1][0].startswith("CheckFailed: ")
    try:
        assert torch.zeros(1).item() == 1, "a student's own assert"
    except AssertionError as error:
        _explain_unfinished(shell, type(error), error, error.__traceback__)
    assert shell.frames[-1] == [__file__]  # shown as IPython shows it


def test_set_seed_asks_for_deterministic_kernels_only_where_they_differ():
    from helpers.seed import set_seed

    before = torch.are_deterministic_algorithms_enabled()
    try:
        set_seed(0)
        # CUDA has nondeterministic kernels to switch off; on a CPU the switch only costs time
        assert torch.are_deterministic_algorithms_enabled() == torch.cuda.is_available()
    finally:
        torch.use_deterministic_algorithms(before)


def test_band_names_the_interval_a_value_falls_in():
    from helpers.training import band

    assert band(0.3) == "< 0.40"
    assert band(0.4) == "0.40-0.60"
    assert band(0.79) == "0.60-0.80"
    assert band(0.97) == "≥ 0.95"
    assert band(0.05, (0.1, 0.9)) == "< 0.10"


def test_progress_bars_are_silent_in_a_headless_kernel(monkeypatch):
    import helpers.widgets as widgets

    monkeypatch.setattr(widgets, "widget_frontend_available", lambda: False)
    monkeypatch.setattr(widgets, "_in_jupyter_kernel", lambda: True)
    bar = widgets.progress_bar(range(3), desc="x")
    assert bar.disable and list(bar) == [0, 1, 2]
