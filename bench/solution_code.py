"""The solution notebooks' definitions, for the benchmarks that train the course's models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def solution_namespace(notebook_id: str) -> dict:
    """The definitions of ``solutions/<notebook_id>.ipynb``, loaded as the tests load them
    (``tests/notebook_code.py``)."""
    spec = importlib.util.spec_from_file_location("notebook_code",
                                                  ROOT / "tests" / "notebook_code.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.solution_namespace(notebook_id)
