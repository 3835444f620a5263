"""The course's environment is defined once (pipeline.environment), and the process or kernel
started by each path (make's commands, `make execute`, nbval, nbgrader, a graded kernel forked
or started directly) gets what it declares."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from pipeline import environment
from pipeline.environment import HEADLESS, SETTINGS, course_env, nbgrader_env
from pipeline.kernels import kernel_manager
from pipeline.nbgrader_cli import run_limited
from pipeline.paths import GRADER, ROOT

BIN = str(Path(sys.executable).parent)
# What the caller's environment may say: none of it may win over the course's settings.
HOSTILE = {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8", "PYTHONHASHSEED": "random",
           "PYTHONPATH": os.pathsep.join([str(GRADER), "/elsewhere"]), "COURSE_WIDGETS": "1",
           "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SECRET_TOKEN": "x"}
PRINT_ENV = "import json, os; print(json.dumps(dict(os.environ)))"
# Modules that set or patch what environment.py defines; tests/misbehaving is attack code.


def _python_files() -> list[Path]:
    files = [*(ROOT / "grader").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
             *(ROOT / "bench").glob("*.py"), *(ROOT / "helpers").rglob("*.py")]
    generated = ("source", "release", "submitted", "autograded", "feedback", ".scratch",
                 "sample_submissions")
    return [p for p in files if not any(part in generated for part in
                                        p.relative_to(ROOT).parts[1:2])
            and not p.relative_to(ROOT).parts[:2] == ("tests", "misbehaving")]


def _patches(path: Path) -> list[str]:
    """What ``path`` does that only pipeline.environment may: patch sys.path, or set
    PYTHONPATH or a course setting (in os.environ, or in an environment it builds; tests
    may build their inputs)."""
    names = {*SETTINGS, *HEADLESS, "PYTHONPATH"}
    test = path.parts[-2] == "tests"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("insert", "append", "extend")
                and ast.unparse(node.func.value) == "sys.path"):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.keyword) and node.arg in names:  # dict(os.environ, X=...)
            found.append(f"line {node.lineno}: {node.arg}=...")
        elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
              and (not test or ast.unparse(node.value) == "os.environ")
              and isinstance(node.slice, ast.Constant) and node.slice.value in names):
            found.append(f"line {node.lineno}: {ast.unparse(node)} = ...")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "setdefault" and node.args
              and isinstance(node.args[0], ast.Constant) and node.args[0].value in names
              and (not test or ast.unparse(node.func.value) == "os.environ")):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif (not test and isinstance(node, ast.Dict)
              and any(isinstance(k, ast.Constant) and k.value in names for k in node.keys)):
            found.append(f"line {node.lineno}: {ast.unparse(node)[:70]}")
    return found


def test_only_the_environment_module_sets_the_environment_or_patches_sys_path():
    offenders = {}
    for path in _python_files():
        name = str(path.relative_to(ROOT))
        if path in (Path(environment.__file__), Path(__file__)):
            continue
        if found := _patches(path):
            offenders[name] = found
    assert offenders == {}, "set these through pipeline.environment:\n" + json.dumps(
        offenders, indent=1)


def test_the_makefile_sets_no_environment_of_its_own():
    makefile = (ROOT / "Makefile").read_text()
    assert not re.search(r"^export\s+[A-Za-z_]", makefile, re.M)  # "export:" is a target
    for name in (*SETTINGS, *HEADLESS):
        assert name not in makefile
    # the one place it names PYTHONPATH: finding pipeline.environment itself
    assert [line for line in makefile.splitlines() if "PYTHONPATH" in line] == [
        "COURSE := PYTHONPATH=$(CURDIR)/grader$(if $(PYTHONPATH),:$(PYTHONPATH)) "
        "$(BIN)/python -m pipeline.environment"]


def test_course_env_wins_over_the_callers_and_keeps_the_rest():
    env = course_env(HOSTILE)
    assert env.items() >= SETTINGS.items()
    assert env["PATH"].split(os.pathsep)[0] == BIN
    assert env["PYTHONPATH"].split(os.pathsep) == [str(GRADER), "/elsewhere"]
    assert env["LANG"] == "C.UTF-8" and env["SECRET_TOKEN"] == "x"  # not a sandbox
    assert env["COURSE_WIDGETS"] == "1"  # `make lab` draws sliders


def test_course_env_of_a_copy_puts_the_copy_first_and_this_grader_nowhere(tmp_path):
    env = course_env(HOSTILE, grader=tmp_path / "grader")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "grader"), "/elsewhere"]


def test_nbgrader_env_has_the_settings_and_never_the_grader():
    env = nbgrader_env(HOSTILE)
    assert env.items() >= {**SETTINGS, **HEADLESS}.items()
    assert env["PYTHONPATH"] == "/elsewhere"
    assert "PYTHONPATH" not in nbgrader_env({"PYTHONPATH": str(GRADER)})


def test_the_wrapper_runs_a_command_in_course_env():
    """What every make target does: `python -m pipeline.environment CMD`."""
    run = subprocess.run([sys.executable, "-m", "pipeline.environment", "python", "-c", PRINT_ENV],
                         env={**HOSTILE, "PYTHONPATH": str(GRADER)}, capture_output=True,
                         text=True, check=True)
    env = json.loads(run.stdout)
    assert env.items() >= SETTINGS.items()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(GRADER)
    # `python` is the venv's: the course's packages are importable in what it runs
    which = subprocess.run([sys.executable, "-m", "pipeline.environment", "python", "-c",
                            "import sys; print(sys.prefix)"], env={**HOSTILE,
                           "PYTHONPATH": str(GRADER)}, capture_output=True, text=True, check=True)
    assert which.stdout.strip() == sys.prefix
    listed = subprocess.run([sys.executable, "-m", "pipeline.environment"],
                            env={**HOSTILE, "PYTHONPATH": str(GRADER)}, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert {f"{k}={v}" for k, v in SETTINGS.items() if HOSTILE.get(k) != v} <= set(listed)


def test_nbgrader_runs_in_nbgrader_env():
    env = json.loads(run_limited([sys.executable, "-c", PRINT_ENV], timeout=60).stdout)
    assert env.items() >= {**SETTINGS, **HEADLESS}.items()
    assert str(GRADER) not in env.get("PYTHONPATH", "").split(os.pathsep)
    assert env["PATH"].split(os.pathsep)[0] == BIN


# ---- kernels -------------------------------------------------------------------------------

KERNEL_PROBE = ("import json, os, sys; print(json.dumps({'env': dict(os.environ), "
                "'path': sys.path}))")


@pytest.mark.slow
def test_a_kernel_of_make_execute_gets_the_headless_course_env(tmp_path, monkeypatch):
    from pipeline.release.execute import execute_notebook

    for name, value in HOSTILE.items():
        if name != "PATH":
            monkeypatch.setenv(name, value)
    path = tmp_path / "probe.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(KERNEL_PROBE)]), path)
    execute_notebook(path, timeout=120)
    seen = json.loads(nbformat.read(path, as_version=4).cells[0].outputs[0].text)
    assert seen["env"].items() >= {**SETTINGS, **HEADLESS}.items()
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(GRADER)  # hidden tests


@pytest.mark.slow
def test_a_kernel_of_nbval_gets_the_course_env(tmp_path):
    """`make validate`: nbval, run through pipeline.environment, starts kernels in it."""
    check = textwrap.dedent(f"""\
        import os, sys
        settings = {SETTINGS!r}
        assert {{k: os.environ.get(k) for k in settings}} == settings, os.environ
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == {str(GRADER)!r}
        import hidden_tests  # the solutions' hidden tests are importable
        """)
    nbformat.write(new_notebook(cells=[new_code_cell(check)]), tmp_path / "probe.ipynb")
    run = subprocess.run([sys.executable, "-m", "pipeline.environment", "python", "-m", "pytest",
                          "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", "-q",
                          str(tmp_path / "probe.ipynb")],
                         env={**HOSTILE, "PATH": os.environ["PATH"], "PYTHONPATH": str(GRADER),
                              "HOME": os.environ.get("HOME", "/root")},
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


async def _graded_kernel_env() -> dict:
    from test_kernel_forkserver import printed, start_kernel, stop_kernel

    manager, client = await start_kernel()
    try:
        return json.loads(await printed(client, KERNEL_PROBE))
    finally:
        await stop_kernel(manager, client)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["forked", "started directly"])
def test_a_graded_kernel_gets_the_settings_and_nothing_else(how, monkeypatch):
    """However the sandboxed kernel is started, it gets the settings, static widgets and the
    locale, whatever the grader's environment says, and nothing of the grader."""
    for name, value in HOSTILE.items():
        if name != "PATH":
            monkeypatch.setenv(name, value)
    if how == "started directly":  # no fork server: python -m pipeline.kernels.sandbox_kernel
        monkeypatch.setattr(kernel_manager.ForkServer, "start",
                            classmethod(lambda cls, **kwargs: None))
    seen = asyncio.run(_graded_kernel_env())
    env = seen["env"]
    assert env.items() >= {**SETTINGS, **HEADLESS}.items()
    assert env["LANG"] == "C.UTF-8"
    assert not {"SECRET_TOKEN", "PYTHONPATH"} & set(env)
    assert not [p for p in seen["path"] if p.startswith(str(GRADER))]
    assert env["PATH"].split(os.pathsep)[0] == BIN
