"""Which exercise defines which function, a plain message when one is not finished yet, and
the error a failed self-check raises.

A student notebook ships every exercise as a stub that raises ``NotImplementedError``. A
demo, a training cell or another exercise's self-check that calls such a stub should say
which exercise to finish, not show a traceback through the course's plotting code.
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable
from typing import Any, TypeVar

from helpers.syllabus import TUTORIALS

# The exercises of every tutorial, in the order they appear in the notebook.
EXERCISES: dict[str, tuple[str, ...]] = {
    tutorial.id: tuple(exercise.name for exercise in tutorial.exercises)
    for tutorial in TUTORIALS
}
NUMBERS: dict[str, int] = {name: number for names in EXERCISES.values()
                           for number, name in enumerate(names, start=1)}

F = TypeVar("F", bound=Callable[..., Any])


class CheckFailed(AssertionError):
    """A check failed. The message is meant for students: what, expected, got, likely mistake.

    ``clause`` is the contract clause (or rule) whose check failed, None outside any."""

    def __init__(self, message: str, clause: str | None = None) -> None:
        super().__init__(message)
        self.clause = clause


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
    if str(error):  # a stub raises NotImplementedError() bare; PyTorch's own say why
        return None
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


_HELPERS = os.path.dirname(os.path.abspath(__file__))


def _without_course_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without the frames of the course's own check code: a failed self-check
    is explained by its message, and its source would only show the check's inputs."""
    frames = []
    while tb is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_HELPERS + os.sep):
            frames.append(tb)
        tb = tb.tb_next
    kept = None
    for frame in reversed(frames):
        kept = types.TracebackType(kept, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return kept


def _explain_unfinished(shell: Any, etype: type, value: BaseException, tb: Any,
                        tb_offset: int | None = None) -> None:
    """Show IPython's usual traceback, plus which exercise to finish when an exercise's stub
    raised a ``NotImplementedError``, and without the check's own frames when a self-check
    failed (the cell still fails with the same error).

    IPython hands custom exceptions to this handler instead of showing them, so it shows the
    traceback itself, the way IPython would."""
    if isinstance(value, CheckFailed):
        tb = _without_course_frames(tb)
    stb = list(shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset))
    name = None if isinstance(value, ExerciseNotFinished) else unfinished(value)
    if name is not None:
        stb.append(str(not_finished(name, "This cell")))
    shell._showtraceback(etype, value, stb)


def explain_unfinished_in_notebooks() -> None:
    """In a notebook, make every traceback of an exercise's stub say which exercise to finish,
    and every failed self-check show its message without the check's code.

    The error stays an error (the cell fails as before); only what is shown changes.
    Installed once, and only where no other custom exception handler is set.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "custom_exceptions", ()) not in ((), None):
        return
    # AssertionError: self-checks raise CheckFailed, a subclass; other assertion errors are
    # shown exactly as IPython shows them.
    shell.set_custom_exc((NotImplementedError, AssertionError), _explain_unfinished)


explain_unfinished_in_notebooks()
