"""Shared pieces of the hidden tests."""

from __future__ import annotations

from helpers.checks.framework import SelfCheck


class HiddenCheck(SelfCheck):
    """A SelfCheck whose messages say they come from the hidden tests."""

    def __init__(self, exercise: str) -> None:
        super().__init__(f"{exercise} (hidden test)")

    def passed(self) -> None:  # hidden tests stay quiet on success
        pass
