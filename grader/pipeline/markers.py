"""The markers nbgrader reads in a solution notebook, spelled once.

They are nbgrader's defaults (``ClearSolutions.begin_solution_delimeter``,
``ClearHiddenTests.begin_test_delimeter`` and ``end_test_delimeter``), which the course
keeps; every part of the pipeline that looks for a hidden block uses these.
"""

from __future__ import annotations

import re

BEGIN_SOLUTION = "### BEGIN SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
# One hidden block, from its BEGIN line to the end of its END line (either may be indented).
HIDDEN_BLOCK = re.compile(rf"^[ \t]*{re.escape(BEGIN_HIDDEN)}.*?^[ \t]*{re.escape(END_HIDDEN)}[^\n]*\n?",
                          re.DOTALL | re.MULTILINE)


def has_hidden_block(source: str | None) -> bool:
    """Whether a cell's source holds a hidden block (or the start of one)."""
    return BEGIN_HIDDEN in (source or "")


def hidden_blocks(source: str) -> list[str]:
    """The hidden blocks of a cell's source, each from BEGIN to END, without the line break."""
    return [block.strip() for block in HIDDEN_BLOCK.findall(source)]


def without_hidden_blocks(source: str, stand_in: str = "") -> str:
    """A cell's source with each hidden block replaced by ``stand_in``."""
    return HIDDEN_BLOCK.sub(stand_in, source)
