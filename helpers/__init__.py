"""Shared helpers for *Attention, from multiplicative gain to transformers*.

Every tutorial starts with::

    from helpers import set_seed, get_device, use_course_style

Self-checks live in :mod:`helpers.checks` (one module per tutorial); they test
properties of the student's code and agreement with PyTorch's built-ins, and
never contain an exercise's solution.
"""

from helpers.plotting import use_course_style
from helpers.seed import get_device, set_seed

__all__ = ["set_seed", "get_device", "use_course_style"]
__version__ = "0.1.0"
