"""The pipeline's subpackages depend on each other one way only, as README's Layout draws it:
making the release never loads the grading side or the sandbox, the sandbox knows nothing of
grading, and the class's files know nothing of how it is graded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.paths import GRADER

PIPELINE = GRADER / "pipeline"
# subpackage -> the subpackages it must never import (eagerly or inside a function)
NEVER = {
    "release": {"grading", "kernels", "classroom"},
    "kernels": {"grading", "classroom", "release"},
    "classroom": {"grading", "kernels"},
}


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_subpackages_are_the_ones_the_readme_draws():
    packages = {p.parent.name for p in PIPELINE.glob("*/__init__.py")}
    assert packages == {"release", "grading", "kernels", "classroom"}
    layout = (GRADER.parent / "README.md").read_text().split("## Layout", 1)[1]
    assert all(f"{name}/" in layout for name in packages)


@pytest.mark.parametrize("package", sorted(NEVER))
def test_a_subpackage_never_imports_what_depends_on_it(package):
    wrong = []
    for path in sorted((PIPELINE / package).glob("*.py")):
        for module in _imported(path):
            parts = module.split(".")
            if parts[0] == "pipeline" and len(parts) > 1 and parts[1] in NEVER[package]:
                wrong.append(f"{path.relative_to(GRADER)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_finds_an_import_that_breaks_the_rule(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text("def f():\n    from pipeline.grading import autograde\n")
    assert "pipeline.grading.autograde" in _imported(stray)
