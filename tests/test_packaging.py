"""The install story: pyproject, environment.yml, constraints, CI entry point, Makefile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
    for target in ("setup", "demo", "test", "assignments", "grade", "lab", "validate-gpu",
                   "student-edition", "dist"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target


def test_installed_packages_are_all_of_helpers_and_nothing_of_the_grader():
    from setuptools import find_packages

    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    found = set(find_packages(str(ROOT), include=include))
    expected = {str(p.parent.relative_to(ROOT)).replace("/", ".")
                for p in (ROOT / "helpers").rglob("__init__.py")}
    assert found == expected
    assert not any(p.startswith(("grader", "hidden_tests", "kernel_protocol", "pipeline")) for p in found)


def test_licence_is_an_spdx_expression_with_both_licence_files():
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause AND CC-BY-4.0"  # a string, not the old table
    assert project["license-files"] == ["LICENSE", "LICENSE-CC-BY-4.0"]
    licence = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in licence and "LICENSE-CC-BY-4.0" in licence
    assert "Neither the name of the copyright holder" in licence
    legal_code = (ROOT / "LICENSE-CC-BY-4.0").read_text()
    assert legal_code.startswith("Attribution 4.0 International")
    for section in range(1, 9):
        assert f"Section {section} -- " in legal_code
    requires = _pyproject()["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77
               for r in requires), "SPDX `license` strings need setuptools>=77"


def test_version_is_defined_once_in_helpers():
    pyproject = _pyproject()
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "helpers.__version__"}
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$',
                     (ROOT / "helpers" / "__init__.py").read_text(), re.M)


def test_dist_tools_are_in_the_dev_extra():
    dev = {_name(r) for r in _pyproject()["project"]["optional-dependencies"]["dev"]}
    assert {"build", "twine", "setuptools"} <= dev


def test_building_the_package_metadata_prints_no_deprecation_warning(tmp_path):
    """setuptools warned, twice per install, about `project.license` as a table."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "import sys; from setuptools import build_meta; "
         "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))", tmp_path],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stdout + run.stderr, run.stderr
    metadata = (tmp_path / run.stdout.splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: BSD-3-Clause AND CC-BY-4.0" in metadata
