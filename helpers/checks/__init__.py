"""Student self-checks, one module per tutorial, built on :mod:`helpers.checks.framework`.

A check runs the student's function on small cases and either prints a short
success line or raises :class:`CheckFailed` whose message says, in plain
words, what was expected, what came back and the likely mistake.
"""

from helpers.checks.framework import CheckFailed, SelfCheck

__all__ = ["CheckFailed", "SelfCheck"]
