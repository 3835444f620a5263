"""The install story: pyproject, environment.yml, constraints, CI entry point, Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_runtime_requirements_are_ranges_not_pins():
    for requirement in _pyproject()["project"]["dependencies"]:
        assert "==" not in requirement, f"{requirement}: students must not be pinned"
    assert any(r.startswith("torch>=") for r in _pyproject()["project"]["dependencies"])


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    listed = {_name(item) for item in pip_section if item != "-e ."}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; " \
                             f"only in pyproject.toml: {wanted - listed}"


def test_cpu_torch_is_pinned_only_in_the_install_constraints():
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\d", constraints, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\b", ci, re.M)
    assert "|| true" not in ci and "set +e" not in ci


def test_every_make_target_of_the_design_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("setup", "demo", "test", "assignments", "grade", "lab", "validate-gpu"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target


def test_installed_packages_are_all_of_helpers_and_nothing_of_the_grader():
    from setuptools import find_packages

    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    found = set(find_packages(str(ROOT), include=include))
    expected = {str(p.parent.relative_to(ROOT)).replace("/", ".")
                for p in (ROOT / "helpers").rglob("__init__.py")}
    assert found == expected
    assert not any(p.startswith(("grader", "hidden_tests", "pipeline")) for p in found)
