"""The Colab install cell, run in a fresh environment holding only what Colab preinstalls.

The cell installs the course package from the configured repository URL; here the
environment variable it honours points it at this checkout instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import nbformat
import pytest
from pipeline.paths import NOTEBOOKS, ROOT

pytestmark = pytest.mark.slow
COLAB_PREINSTALLED = ["torch==2.13.0", "numpy", "matplotlib", "ipywidgets", "tqdm"]


@pytest.fixture(scope="module")
def colab_like_python(tmp_path_factory):
    where = tmp_path_factory.mktemp("colab") / "venv"
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", *COLAB_PREINSTALLED], check=True)
    return python


def _bootstrap_source() -> str:
    notebook = nbformat.read(NOTEBOOKS / "01_gain_multiplication.ipynb", as_version=4)
    return next(c.source for c in notebook.cells if c.get("id") == "colab-setup")


def test_bootstrap_does_nothing_outside_colab():
    env = {k: v for k, v in os.environ.items() if k != "COURSE_HELPERS_SOURCE"}
    result = subprocess.run([sys.executable, "-c", _bootstrap_source()], env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout == ""


def test_bootstrap_installs_helpers_into_a_colab_like_environment(colab_like_python):
    env = dict(os.environ, COURSE_HELPERS_SOURCE=str(ROOT), PYTHONPATH="")
    run = subprocess.run([colab_like_python, "-c", _bootstrap_source()], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Course helpers installed." in run.stdout
    check = subprocess.run(
        [colab_like_python, "-c",
         "from helpers import set_seed, get_device; from helpers.checks.gain_multiplication "
         "import check_stable_softmax; import torch; set_seed(0); "
         "import helpers.demos.gain_multiplication, helpers.checks.causal_mask_trick; "
         "check_stable_softmax(lambda x, dim=-1: torch.softmax(x, dim=dim))"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=""), cwd="/")
    assert check.returncode == 0, check.stderr
    assert "✅" in check.stdout


def test_bootstrap_failure_is_a_clear_message(colab_like_python, tmp_path):
    env = dict(os.environ, COURSE_HELPERS_SOURCE=str(tmp_path / "no-such-package"))
    run = subprocess.run([colab_like_python, "-c", _bootstrap_source()], env=env,
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "Could not install the course helpers" in run.stderr
