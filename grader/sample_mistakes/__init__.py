"""Typical wrong answers, written as a student would type them, for the sample class.

One module per tutorial, named by its topic (``sample_mistakes.causal_mask_trick``). Each
answer is ordinary, linted code with the exercise's own name, decorated with
:func:`mistake`, whose argument is what the hidden test's message must say about it::

    @mistake("divided by T instead of t + 1")
    def running_mean_matmul(x): ...

The sample class's student ``typical_mistakes`` types each answer's source (without the
decorator) into its answer cell; ``tests/test_syllabus.py`` requires every answer to fail its
hidden test with a message that contains the reason it is named after.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


def mistake(reason: str) -> Callable[[T], T]:
    """Mark a definition as a sample mistake that its hidden test must describe as ``reason``."""

    def mark(definition: T) -> T:
        definition.__sample_mistake__ = reason  # type: ignore[attr-defined]
        return definition

    return mark


@dataclass(frozen=True)
class SampleMistake:
    """A wrong answer: its exercise, the answer cell's source, the reason it must fail for."""

    exercise: str
    source: str
    reason: str
    definition: Any


def _source_without_decorator(definition: Any) -> str:
    """The definition's source as it goes in an answer cell: dedented, decorator left out."""
    source = textwrap.dedent(inspect.getsource(definition))
    node = ast.parse(source).body[0]
    lines = source.splitlines(keepends=True)
    return "".join(lines[node.lineno - 1:node.end_lineno])


def sample_mistakes(topic: str) -> dict[str, SampleMistake]:
    """Exercise name -> its sample mistake, for the tutorial with this topic (may be empty)."""
    try:
        module = importlib.import_module(f"sample_mistakes.{topic}")
    except ModuleNotFoundError as error:
        if error.name != f"sample_mistakes.{topic}":
            raise
        return {}
    found = {}
    for name, value in vars(module).items():
        reason = getattr(value, "__sample_mistake__", None)
        if reason is not None and getattr(value, "__module__", None) == module.__name__:
            found[name] = SampleMistake(name, _source_without_decorator(value), reason, value)
    return found
