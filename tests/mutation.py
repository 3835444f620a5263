"""Assertions for testing hidden tests and self-checks against wrong implementations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def assert_fails_naming(grade: Callable[[Any], None], candidate: Any, *keywords: str) -> str:
    """``grade(candidate)`` must raise an AssertionError whose message names the mistake.

    Every keyword must appear in the message (case-insensitive). Returns the message.
    """
    with pytest.raises(AssertionError) as info:
        grade(candidate)
    message = str(info.value)
    missing = [k for k in keywords if k.lower() not in message.lower()]
    assert not missing, f"message does not mention {missing}:\n{message}"
    return message
