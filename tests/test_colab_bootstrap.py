"""The Colab install cell, run as in Colab, in a fresh environment holding only what Colab
preinstalls.

The cell installs the course's `helpers` from the student edition configured in
grader/nbgrader_config.py (`git+https://github.com/<owner/name>@<branch>`). Here that URL
is replaced by a local student edition standing in for it, and pip works offline.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from test_student_edition import _clean_env, environment_with_only

from pipeline.paths import NOTEBOOKS
from pipeline.release import student_edition

pytestmark = pytest.mark.slow
COLAB_PREINSTALLED = ["torch", "numpy", "matplotlib", "ipywidgets", "tqdm"]
IN_COLAB = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
# Offline: no index; the build backend (setuptools) comes from the environment. pip reads
# PIP_NO_BUILD_ISOLATION inverted: "0" means --no-build-isolation (pypa/pip#5735).
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_CACHE_DIR": "1"}


@pytest.fixture(scope="module")
def colab():
    return student_edition.edition_settings()


@pytest.fixture(scope="module")
def edition(tmp_path_factory, colab):
    dest = tmp_path_factory.mktemp("colab-edition") / "students"
    student_edition.build(dest, colab=colab)
    return dest


@pytest.fixture(scope="module")
def colab_like_python(tmp_path_factory):
    return environment_with_only(tmp_path_factory.mktemp("colab"), COLAB_PREINSTALLED)


def _bootstrap_source() -> str:
    notebook = nbformat.read(NOTEBOOKS / "01_gain_multiplication.ipynb", as_version=4)
    return next(c.source for c in notebook.cells if c.get("id") == "colab-setup")


def _cell_installing_from(source: str, colab) -> str:
    """The install cell as it runs in Colab, with ``source`` in place of the configured URL."""
    cell = _bootstrap_source()
    configured = f'"{colab.install_source}"'
    assert cell.count(configured) == 1, f"the install cell does not install {configured}"
    return IN_COLAB + cell.replace(configured, repr(source))


def test_every_install_cell_installs_from_the_configured_student_edition(colab):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        setup = nbformat.read(path, as_version=4).cells[1]
        assert setup.get("id") == "colab-setup"
        assert f'"git+https://github.com/{colab.repository}@{colab.branch}"' in setup.source


def test_bootstrap_does_nothing_outside_colab():
    env = {k: v for k, v in os.environ.items() if k != "COURSE_HELPERS_SOURCE"}
    result = subprocess.run([sys.executable, "-c", _bootstrap_source()], env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout == ""


def test_bootstrap_installs_helpers_from_the_edition_into_a_colab_like_environment(
        colab_like_python, edition, colab, tmp_path):
    run = subprocess.run([colab_like_python, "-c", _cell_installing_from(str(edition), colab)],
                         env=_clean_env(**OFFLINE_PIP), cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert "Course helpers installed." in run.stdout
    check = subprocess.run(
        [colab_like_python, "-c",
         "from helpers import set_seed, get_device; from helpers.checks.gain_multiplication "
         "import check_stable_softmax; import torch, helpers; set_seed(0); "
         "import helpers.demos.gain_multiplication, helpers.checks.causal_mask_trick; "
         "e = lambda x, dim: (x - x.amax(dim=dim, keepdim=True)).exp(); "
         "check_stable_softmax(lambda x, dim=-1: e(x, dim) / e(x, dim).sum(dim=dim, "
         "keepdim=True)); "
         "print(helpers.__file__)"],
        capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "✅" in check.stdout
    assert check.stdout.splitlines()[-1].startswith(str(colab_like_python.parent.parent))


def test_bootstrap_failure_is_a_clear_message(colab_like_python, colab, tmp_path):
    cell = _cell_installing_from(str(tmp_path / "no-such-package"), colab)
    run = subprocess.run([colab_like_python, "-c", cell], env=_clean_env(**OFFLINE_PIP),
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0
    assert "Could not install the course helpers" in run.stderr
