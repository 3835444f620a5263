"""Which exercise defines which function, and a plain message when one is not finished yet.

A student notebook ships every exercise as a stub that raises ``NotImplementedError``. A
demo, a training cell or another exercise's self-check that calls such a stub should say
which exercise to finish, not show a traceback through the course's plotting code.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, TypeVar

# The exercises of every tutorial, in the order they appear in the notebook (names from the
# course's design brief: each answer cell defines one of them).
EXERCISES: dict[str, tuple[str, ...]] = {
    "01_gain_multiplication": ("stable_softmax", "gained_dot_product_attention"),
    "02_qkv_attention": ("scaled_dot_product_attention", "make_batch", "SingleQueryAttention"),
    "03_multi_head_attention": ("split_heads", "merge_heads", "MultiHeadSelfAttention"),
    "04_transformer_block": ("sinusoidal_positional_encoding", "TransformerBlock", "mean_pool"),
    "05_sparse_and_inductive_bias": ("sparse_and_dataset", "SelfAttentionClassifier"),
    "06_causal_mask_trick": ("running_mean_loop", "running_mean_matmul",
                             "causal_attention_weights", "CausalSelfAttentionHead"),
}
NUMBERS: dict[str, int] = {name: number for names in EXERCISES.values()
                           for number, name in enumerate(names, start=1)}

F = TypeVar("F", bound=Callable[..., Any])


class ExerciseNotFinished(NotImplementedError):
    """Student code needed here still raises ``NotImplementedError``.

    It goes by its parent's name: notebooks show "NotImplementedError: <what to finish>",
    and whatever reads a cell's error by name (the grader's "not answered yet") sees the
    same error as before, only with a message."""


ExerciseNotFinished.__name__ = ExerciseNotFinished.__qualname__ = "NotImplementedError"


def _frame_owner(frame: types.FrameType) -> str:
    """The exercise name a frame belongs to: its function, or the class of its ``self``."""
    owner = frame.f_locals.get("self")
    if owner is not None and type(owner).__name__ in NUMBERS:
        return type(owner).__name__
    return frame.f_code.co_name


def unfinished(error: BaseException) -> str | None:
    """The name of the exercise whose stub raised ``error``, if an exercise raised it."""
    if not isinstance(error, NotImplementedError):
        return None
    if isinstance(error, ExerciseNotFinished):
        return getattr(error, "exercise", None)
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame
        tb = tb.tb_next
    if last is None:
        return None
    name = _frame_owner(last)
    return name if name in NUMBERS else None


def _unfinished(name: str, message: str) -> ExerciseNotFinished:
    error = ExerciseNotFinished(message)
    error.exercise = name  # type: ignore[attr-defined]
    return error


def not_finished(name: str, used_by: str | None = None) -> ExerciseNotFinished:
    """The error to raise when ``name`` (an exercise) is still a stub."""
    user = f"{used_by} uses `{name}`, which" if used_by else f"`{name}`"
    return _unfinished(name, f"{user} is not finished yet (it still raises "
                             f"NotImplementedError): finish Exercise {NUMBERS[name]} first, "
                             "then run this cell again.")


def not_written(name: str) -> ExerciseNotFinished:
    """The error a self-check raises when its own exercise is still the stub."""
    return _unfinished(name, f"`{name}` is not written yet: replace `raise NotImplementedError()` "
                             f"in the cell of Exercise {NUMBERS[name]} with your code, run "
                             "that cell, then this one.")


def uses_student_code(function: F) -> F:
    """Decorate a demo that runs student code: an unfinished exercise becomes a plain message."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except NotImplementedError as error:
            name = unfinished(error)
            if name is None:
                raise
            raise not_finished(name, "This cell") from None

    return wrapper  # type: ignore[return-value]


def _explain_unfinished(shell: Any, etype: type, value: BaseException, tb: Any,
                        tb_offset: int | None = None) -> None:
    """Show IPython's usual traceback of a ``NotImplementedError``, plus which exercise to
    finish when an exercise's stub raised it (for cells that call student code directly).

    IPython hands custom exceptions to this handler instead of showing them, so it shows the
    traceback itself, the way IPython would (the cell still fails with this error)."""
    stb = list(shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset))
    name = None if isinstance(value, ExerciseNotFinished) else unfinished(value)
    if name is not None:
        stb.append(f"This cell uses `{name}`, which is not finished yet (it still raises "
                   f"NotImplementedError): finish Exercise {NUMBERS[name]} first, then run this "
                   "cell again.")
    shell._showtraceback(etype, value, stb)


def explain_unfinished_in_notebooks() -> None:
    """In a notebook, make every traceback of an exercise's stub say which exercise to finish.

    The error stays an error (the cell fails as before); only its message gains a line.
    Installed once, and only where no other custom exception handler is set.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "custom_exceptions", ()) not in ((), None):
        return
    shell.set_custom_exc((NotImplementedError,), _explain_unfinished)


explain_unfinished_in_notebooks()
