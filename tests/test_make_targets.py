"""The Makefile, read with `make -n` (nothing runs): grade's variables reach pipeline.grading.autograde,
clean removes everything generation and grading write, test reuses lint and validate and runs
nbval on two CPU capabilities, lint covers every Python file; and the class tables printed
after grading never run their columns together."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from pipeline.grading import autograde, summary
from pipeline.paths import GRADER, GRADES_CSV, ROOT, SAMPLE_CLASS


def make_n(*args: str) -> list[str]:
    """The commands `make -n ARGS` would run (setup's left out), continuation lines joined."""
    run = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    text = run.stdout.replace("\\\n", " ")
    return [line for line in text.splitlines()
            if not re.search(r"pip install|ipykernel install|-m venv|touch .venv", line)]


def _grading_args(lines: list[str]) -> list[str]:
    line = next(line for line in lines if "-m pipeline.grading" in line)
    words = shlex.split(line)
    return words[words.index("pipeline.grading") + 1:]


def test_grade_passes_each_variable_set_to_pipeline_grading():
    args = _grading_args(make_n("grade", "SUBMISSIONS=class", "JOBS=3", "SHARD=2/4",
                                "CELL_TIMEOUT=30", "MEMORY_GB=2.5"))
    parsed = autograde.build_parser().parse_args(args)
    assert (parsed.submissions.name, parsed.jobs, parsed.shard, parsed.cell_timeout,
            parsed.memory_gb) == ("class", 3, "2/4", 30, 2.5)


def test_grade_leaves_unset_variables_to_the_modules_defaults():
    args = _grading_args(make_n("grade", "SUBMISSIONS=class"))
    assert args == ["class"]
    parsed = autograde.build_parser().parse_args(args)
    assert parsed.jobs == autograde.default_jobs()  # one source for the number of jobs
    assert parsed.cell_timeout is None  # nbgrader_config.py's Execute.timeout
    assert parsed.memory_gb > 0


def test_help_documents_the_variables_grade_and_validate_take():
    text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    for name in ("SUBMISSIONS", "JOBS", "SHARD", "CELL_TIMEOUT", "MEMORY_GB", "CPU_CAPABILITY"):
        assert re.search(rf"^  {name} +make ", text, re.M), name
    for line in text.splitlines():  # a name never runs into its description
        assert re.match(r"  (make [a-z-]+|[A-Z_]+) {2,}\S|\S", line), line


def test_clean_removes_everything_generation_and_grading_write():
    removed = {word for line in make_n("clean") for word in shlex.split(line)
               if line.startswith("rm ")}
    written = [GRADER / "source", GRADER / "release", GRADER / "gradebook.db",
               GRADER / "autograded", GRADER / "feedback", autograde.RESULTS, autograde.SCRATCH,
               GRADES_CSV, summary.SUMMARY, SAMPLE_CLASS, ROOT / "dist",
               ROOT / "build" / "dist-edition"]
    missing = [str(p.relative_to(ROOT)) for p in written if str(p.relative_to(ROOT)) not in removed]
    assert missing == []
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
               if line.startswith(("grader/", "dist"))]
    assert [p for p in ignored if p not in removed] == []
    assert not {"solutions", "notebooks", ".venv", "grader", "helpers"} & removed


def test_test_reuses_lint_and_validate_on_two_cpu_capabilities():
    lines = make_n("test")
    ruff = [line for line in lines if "ruff" in line]
    assert ruff == [line for line in make_n("lint") if "ruff" in line]  # lint's, once
    nbval = [line for line in lines if "--nbval " in line]
    validate = [line for line in make_n("validate") if "--nbval " in line]
    assert len(nbval) == 2 and validate[0] in nbval[0]
    assert [re.findall(r"ATEN_CPU_CAPABILITY=(\w+)", line) for line in nbval] == [[], ["default"]]
    assert any(re.search(r"-m pytest tests\b", line) for line in lines)
    # every Python command runs in the course's environment
    for line in lines:
        if re.search(r"\bpython -m (pytest|pipeline)", line):
            assert "-m pipeline.environment python" in line, line


@pytest.mark.parametrize("name", ["grader/nbgrader_config.py"])
def test_lint_covers_every_python_file(name):
    assert make_n("lint")[-1].endswith("ruff check .")
    files = subprocess.run([str(ROOT / ".venv" / "bin" / "ruff"), "check", "--show-files", "."],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert str(ROOT / name) in files.split()
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.ipynb"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    left_out = [f for f in tracked if str(ROOT / f) not in files.split()
                and not f.startswith("notebooks/")]  # generated, and nbgrader's stubs
    assert left_out == []


def test_nb_narrows_the_targets_to_one_tutorial():
    one = "03_multi_head_attention"
    check = " ".join(make_n("check", f"NB={one}"))
    assert "tests/test_hidden_multi_head_attention.py" in check
    assert "tests/test_demos_multi_head_attention.py" in check
    assert f"validate NB={one}" in check
    selection = re.search(r'-k "not \(([^)]*)\)"', check).group(1).split(" or ")
    assert one not in selection and "01_gain_multiplication" in selection
    assert len(selection) == len(list((ROOT / "solutions").glob("*.ipynb"))) - 1
    assert f"pipeline.release.execute solutions/{one}.ipynb" in " ".join(make_n("execute", f"NB={one}"))
    assert re.search(rf"pipeline.release.assignments {one}\b", " ".join(make_n("assignments",
                                                                        f"NB={one}")))
    validate = " ".join(make_n("validate", f"NB={one}"))
    assert validate.rstrip().endswith(f"solutions/{one}.ipynb")
    assert " ".join(make_n("validate")).rstrip().endswith("solutions")


def test_check_without_a_tutorial_says_how_to_call_it():
    run = subprocess.run(["make", "-s", "check"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "usage: make check NB=<id>" in run.stdout


def test_setup_refuses_a_venv_that_serves_another_checkout(tmp_path):
    # a stand-in venv whose Python imports `helpers` from somewhere else
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho /another/checkout\n")
    python.chmod(0o755)
    run = subprocess.run(["make", "--no-print-directory", "setup", f"VENV={tmp_path / 'venv'}"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0
    assert "holds the course installed from /another/checkout, not from this checkout" \
        in run.stderr, run.stderr
    assert not (tmp_path / "venv" / ".installed").exists()  # nothing was installed into it
