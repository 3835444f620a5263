"""The student edition (`make student-edition`): what it holds, what it never holds, and that
it works on its own, in a fresh environment holding only what it declares.

`environment_with_only` is also used by test_colab_bootstrap.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import nbformat
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.paths import GRADER, NOTEBOOKS, ROOT, SOLUTIONS, assignment_ids
from pipeline.release import student_edition

IDS = assignment_ids()
EDITION_TOP_LEVEL = {".gitignore", "LICENSE", "LICENSE-CC-BY-4.0", "README.md", "environment.yml",
                     "helpers", "notebooks", "pyproject.toml"}
# Lines of a solution block that every PyTorch file has: they also occur, by coincidence, in
# the demos and self-checks of helpers/. Any other solution line found in the edition is a leak.
GENERIC_SOLUTION_LINES = {"return out, weights", "T = x.shape[1]", "for t in range(T):",
                          "if mask is not None:", "T = scores.shape[-1]", "if top_k is not None:",
                          "B, C, H, W = images.shape", "B, T, C = x.shape", "for b in range(B):",
                          # the four lines of every PyTorch training loop
                          "model.train()", "optimizer.zero_grad()", "loss.backward()",
                          "optimizer.step()", "optimizer = torch.optim.AdamW(model.parameters(), lr=lr)",
                          # lines every small language model has (tutorial 07's, built on
                          # PyTorch's own layers, and the student's own GPT of tutorial 09)
                          "self.token_embedding = nn.Embedding(vocab_size, d_model)",
                          "T = tokens.shape[1]", "for _ in range(n_tokens):", "return tokens"}
SIGNATURE_TAIL = re.compile(r"[\w: ,|\[\]]+\) -> [\w\[\], .|]+:")  # `n_layers: int) -> None:`
STORED_ARGUMENT = re.compile(r"self\.(\w+) = \1")  # `self.n_heads = n_heads` gives nothing away
INSTRUCTOR_MODULES = ("pipeline", "kernel_protocol", "hidden_tests", "nbgrader", "sample_mistakes")


# ---- fixtures and tools ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def colab():
    """Where the edition lives, as grader/nbgrader_config.py says."""
    return student_edition.edition_settings()


@pytest.fixture(scope="module")
def edition(tmp_path_factory, colab) -> Path:
    dest = tmp_path_factory.mktemp("edition") / "students"
    student_edition.build(dest, colab=colab)
    return dest


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".git" not in p.parts}


def _normalised_lines(text: str) -> set[str]:
    return {" ".join(line.split()) for line in text.splitlines()} - {""}


def _text(path: Path) -> str:
    """A file's text; for a notebook, its cells' sources (what a student reads and runs)."""
    if path.suffix == ".ipynb":
        return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    return path.read_text(encoding="utf-8", errors="replace")


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would reach the course's packages,
    the instructor's checkout or a package index (PYTHONPATH, pip settings, Jupyter hints)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "JPY_", "VSCODE_", "COURSE_"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: no index, no find-links, no constraints
    env.update(extra)
    return env


def _closure(requirements: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that ``requirements`` need, following their metadata."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in found:
            continue
        try:
            found[key] = distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} is needed but not installed in the course environment "
                        "(run `make setup`)")
        for line in distribution.requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra})
                                            for extra in ("", *requirement.extras)):
                todo.append(needed)
    return {canonicalize_name(d.metadata["Name"]): d for d in found.values()}


def environment_with_only(where: Path, requirements: list[str]) -> Path:
    """A fresh virtual environment that sees only ``requirements`` and what they depend on.

    Downloading PyTorch for every test run would take minutes and the network, so the
    packages come from this (the course's) environment, but only those that are needed:
    the dependency closure of ``requirements`` read from the installed metadata, plus pip
    and setuptools (what a new environment has). Each of them is linked into one folder
    that the new environment (``venv``, no system site-packages) puts on its path with a
    ``.pth`` line. Nothing else is visible there: not nbgrader, pytest or the grader, not
    the instructor's editable ``helpers``. pip sees the linked packages as installed, so
    ``pip install --no-index`` of the edition works only if they satisfy everything the
    edition declares, and a notebook that imports anything undeclared fails.
    Returns the environment's Python.
    """
    linked = where / "linked-site-packages"
    linked.mkdir(parents=True)
    for distribution in _closure([*requirements, "pip", "setuptools>=77"]).values():
        site = Path(distribution.locate_file(""))
        tops = {f.parts[0] for f in distribution.files or []
                if f.parts[0] not in ("..", "__pycache__") and not f.parts[0].endswith(".pth")}
        for top in sorted(tops):
            if not (linked / top).exists() and (site / top).exists():
                (linked / top).symlink_to(site / top)
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(where / "venv")
    python = where / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip()
    Path(purelib, "course-linked.pth").write_text(f"{linked}\n")
    return python


def _declared(edition: Path, extras: tuple[str, ...] = ()) -> list[str]:
    project = tomllib.loads((edition / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [r for e in extras
                                      for r in project["optional-dependencies"][e]]


# ---- what the edition holds ---------------------------------------------------------------

def test_edition_holds_the_student_files_and_nothing_else(edition):
    assert {p.name for p in edition.iterdir()} == EDITION_TOP_LEVEL
    assert sorted(p.stem for p in (edition / "notebooks").iterdir()) == IDS
    for notebook_id in IDS:
        assert (edition / "notebooks" / f"{notebook_id}.ipynb").read_bytes() == \
            (NOTEBOOKS / f"{notebook_id}.ipynb").read_bytes()
    ours = {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    theirs = {p.relative_to(edition).as_posix() for p in (edition / "helpers").rglob("*")
              if p.is_file()}
    assert theirs == ours
    for name in ("LICENSE", "LICENSE-CC-BY-4.0"):
        assert (edition / name).read_bytes() == (ROOT / name).read_bytes()


def test_edition_holds_no_solution_line(edition):
    secret, shown = set(), set()
    for path in SOLUTIONS.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            blocks = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)
            for block in blocks:
                secret |= _normalised_lines(block)
            # what the author shows students on purpose (a hint quoting one line, say)
            shown |= _normalised_lines(re.sub(r"### BEGIN SOLUTION\n.*?### END SOLUTION", "",
                                              cell.source, flags=re.S))
    secret = {line for line in secret - shown - GENERIC_SOLUTION_LINES
              if len(line) >= 12 and not STORED_ARGUMENT.fullmatch(line)}
    assert len(secret) > 50  # the check has something to check
    for path in edition.rglob("*"):
        if path.is_file():
            leaked = secret & _normalised_lines(_text(path))
            assert not leaked, f"{path.relative_to(edition)} holds solution lines: {leaked}"


def test_edition_holds_no_hidden_test_and_no_grader_module(edition):
    # (a clause tag, `check.clause("dtype")`, names a clause of the public contract)
    hidden = {p: {line for line in _normalised_lines(p.read_text()) if len(line) >= 20
                  and not line.startswith(("import ", "from ", "#", "check.clause(",
                                           "check.rule(", ") -> "))
                  and not SIGNATURE_TAIL.fullmatch(line)}
              for p in (GRADER / "hidden_tests").glob("*.py")}
    grader_files = {p for p in GRADER.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and not {"release", "source", "autograded", "feedback", "submitted",
                             "sample_submissions", "results", "summary", ".scratch"}
                    & set(p.relative_to(GRADER).parts)}
    grader_hashes = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in grader_files}
    # (hidden tests are named after the tutorials, like helpers' own checks and demos)
    grader_names = {p.name for p in grader_files if p.suffix == ".py" and p.name != "__init__.py"
                    and "hidden_tests" not in p.parts and "sample_mistakes" not in p.parts}
    importing = re.compile(rf"^\s*(?:from|import)\s+({'|'.join(INSTRUCTOR_MODULES)})\b", re.M)
    for path in sorted(edition.rglob("*")):
        name = path.relative_to(edition).as_posix()
        assert not {"grader", "solutions", "hidden_tests", "kernel_protocol", "pipeline", "tests", "bench",
                    "sample_submissions", "sample_mistakes"} & set(name.split("/")), name
        if not path.is_file():
            continue
        assert path.name not in grader_names, f"{name} has the name of a grader module"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest not in grader_hashes, f"{name} is a copy of {grader_hashes.get(digest)}"
        text = _text(path)
        assert not importing.search(text), f"{name} imports the instructor's side"
        lines = _normalised_lines(text)
        for module, secret in hidden.items():
            shared = secret & lines
            if not name.startswith("helpers/"):
                assert not shared, f"{name} holds lines of hidden test {module.name}: {shared}"
            else:
                # The self-checks in helpers/checks share idioms of the check framework with
                # the hidden tests (SelfCheck calls, `check.passed()`): a few lines in
                # common, never a module's worth (today at most 9 %).
                assert len(shared) <= 0.25 * len(secret), (
                    f"{name} holds {len(shared)} of the {len(secret)} lines of hidden test "
                    f"{module.name}")


def test_badges_and_install_cells_point_at_the_configured_edition(edition, colab):
    for notebook_id in IDS:
        notebook = nbformat.read(edition / "notebooks" / f"{notebook_id}.ipynb", as_version=4)
        badge, setup = notebook.cells[0], notebook.cells[1]
        assert badge.source == colab.badge(notebook_id)
        assert f'"{colab.install_source}"' in setup.source
        assert colab.install_source == f"git+https://github.com/{colab.repository}@{colab.branch}"
    readme = (edition / "README.md").read_text()
    for notebook_id in IDS:
        assert colab.badge(notebook_id) in readme
        assert f"(notebooks/{notebook_id}.ipynb)" in readme
    # Every Colab link anywhere (student README, instructor README, notebooks) goes to the edition.
    colab_links = re.compile(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w.-]+)/")
    for path in [edition / "README.md", ROOT / "README.md",
                 *(edition / "notebooks").glob("*.ipynb")]:
        found = set(colab_links.findall(path.read_text()))
        assert found == {(colab.repository, colab.branch)}, f"{path}: {found}"


def test_student_readme_covers_colab_local_install_and_self_checks(edition, colab):
    readme = (edition / "README.md").read_text()
    for needed in (f"git clone {colab.repository_url}.git", 'pip install -e ".[lab]"',
                   "conda env create -f environment.yml", "jupyter lab notebooks",
                   "NotImplementedError", "CheckFailed", "✅", "Think!", "LICENSE-CC-BY-4.0"):
        assert needed in readme, needed
    for unwanted in ("nbgrader", "make ", "solutions/", "grader/", "hidden test"):
        assert unwanted not in readme, unwanted
    assert "${" not in readme  # every placeholder of the template filled


def test_edition_pyproject_is_the_helpers_package_without_instructor_tools(edition):
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    theirs = tomllib.loads((edition / "pyproject.toml").read_text())
    for key in ("name", "dynamic", "description", "requires-python", "license", "license-files",
                "dependencies"):
        assert theirs["project"][key] == ours["project"][key], key
    assert theirs["project"]["license"] == "BSD-3-Clause AND CC-BY-4.0"
    assert set(theirs["project"]["optional-dependencies"]) == {"lab"}
    assert theirs["tool"]["setuptools"] == {k: ours["tool"]["setuptools"][k]
                                            for k in ("packages", "package-data", "dynamic")}
    assert set(theirs["tool"]) == {"setuptools"}
    assert theirs["build-system"] == ours["build-system"]
    environment = (edition / "environment.yml").read_text()
    assert "-e .[lab]" in environment and "nbgrader" not in environment


def test_building_twice_gives_the_same_tree_and_keeps_git(edition, colab, tmp_path):
    before = _tree(edition)
    (edition / ".git").mkdir()
    (edition / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (edition / "stale.txt").write_text("from an older edition")
    student_edition.build(edition, colab=colab)
    assert _tree(edition) == before
    assert (edition / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    elsewhere = tmp_path / "again"
    student_edition.build(elsewhere, colab=colab)
    assert _tree(elsewhere) == before
    shutil.rmtree(edition / ".git")


def test_refuses_to_wipe_a_folder_that_is_not_an_edition(tmp_path, colab):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(student_edition.EditionError, match="neither empty"):
        student_edition.build(tmp_path, colab=colab)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    with pytest.raises(student_edition.EditionError, match="instructor repository"):
        student_edition.build(ROOT / "notebooks", colab=colab, force=True)
    with pytest.raises(student_edition.EditionError, match="instructor repository"):
        student_edition.build(ROOT.parent, colab=colab, force=True)


def test_refuses_notebooks_that_point_elsewhere(tmp_path, colab):
    elsewhere = student_edition.ColabCells(repository="someone/else", branch=colab.branch)
    with pytest.raises(student_edition.EditionError, match="make assignments"):
        student_edition.build(tmp_path / "edition", colab=elsewhere)
    assert not (tmp_path / "edition").exists()


# ---- it works on its own ---------------------------------------------------------------------

@pytest.mark.slow
def test_dist_builds_a_checked_wheel_and_sdist_of_helpers_only(edition, tmp_path):
    """What `make dist` does (offline here: the build backend comes from this environment)."""
    source = tmp_path / "source"
    shutil.copytree(edition, source)
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                          tmp_path / "dist", source], capture_output=True, text=True,
                         env=_clean_env())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Deprecat" not in run.stdout + run.stderr  # e.g. setuptools on a `license` table
    wheel, = (tmp_path / "dist").glob("*.whl")
    sdist, = (tmp_path / "dist").glob("*.tar.gz")
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    version = re.search(r'^__version__ = "(.+)"', (ROOT / "helpers/__init__.py").read_text(),
                        re.M).group(1)
    assert wheel.name == f"attention_course_helpers-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"attention_course_helpers-{version}.dist-info/METADATA").decode()
    assert {n.split("/")[0] for n in names} == {"helpers",
                                                f"attention_course_helpers-{version}.dist-info"}
    assert "License-Expression: BSD-3-Clause AND CC-BY-4.0" in metadata
    assert "License-File: LICENSE-CC-BY-4.0" in metadata
    with tarfile.open(sdist) as archive:
        inside = {Path(*Path(n).parts[1:]).as_posix() for n in archive.getnames()}
    assert {n.split("/")[0] for n in inside} <= {".", "helpers", "LICENSE", "LICENSE-CC-BY-4.0",
                                                 "README.md", "PKG-INFO", "pyproject.toml",
                                                 "setup.cfg",
                                                 "attention_course_helpers.egg-info"}


@pytest.fixture(scope="module")
def student_python(edition, tmp_path_factory) -> Path:
    """A fresh environment with what the edition declares (and its `lab` extra for Jupyter),
    where the edition was then pip-installed, offline, as its README says."""
    where = tmp_path_factory.mktemp("student-env")
    python = environment_with_only(where, _declared(edition, extras=("lab",)))
    clone = where / "clone"  # building writes build/ and *.egg-info into the source folder
    shutil.copytree(edition, clone)
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-cache-dir",
         "--verbose", f"{clone}[lab]"], capture_output=True, text=True, env=_clean_env())
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert "Successfully installed attention-course-helpers" in install.stdout
    assert "Deprecat" not in install.stdout + install.stderr
    return python


@pytest.mark.slow
def test_fresh_environment_has_helpers_installed_and_nothing_of_the_instructor(student_python,
                                                                                tmp_path):
    probe = ("import importlib.util as u; print(u.find_spec('helpers').origin); "
             f"print([m for m in {INSTRUCTOR_MODULES + ('pytest', 'nbval')!r} if u.find_spec(m)])")
    run = subprocess.run([student_python, "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path, env=_clean_env())
    assert run.returncode == 0, run.stderr
    location, importable = run.stdout.splitlines()
    assert Path(location).is_relative_to(student_python.parent.parent)  # installed in the venv
    assert importable == "[]"


def _up_to_first_exercise_and_self_checks(notebook: nbformat.NotebookNode) -> list:
    """The cells before the first exercise, then each exercise cell (as released) and its
    self-check: what a student runs before writing any code."""
    cells, started = [], False
    for cell in notebook.cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        is_code = cell.cell_type == "code"
        started = started or (is_code and nbgrader.get("solution", False))
        if not started or (is_code and (nbgrader.get("solution") or nbgrader.get("grade"))):
            cells.append(cell)
    return cells


async def _run_notebooks(paths: list[Path], python: Path, kernels: Path) -> dict:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    spec = kernels / "student-edition"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "student edition", "language": "python"}))
    slots = asyncio.Semaphore(max(2, min(4, os.cpu_count() or 2)))

    async def run(path: Path) -> tuple[str, nbformat.NotebookNode]:
        notebook = nbformat.read(path, as_version=4)
        notebook.cells = _up_to_first_exercise_and_self_checks(notebook)
        manager = AsyncKernelManager(kernel_name="student-edition",
                                     kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
        client = NotebookClient(notebook, km=manager, timeout=120, allow_errors=True,
                                resources={"metadata": {"path": str(path.parent)}})
        async with slots:
            await client.async_execute(env=_clean_env())
        return path.stem, notebook

    return dict(await asyncio.gather(*(run(p) for p in paths)))


@pytest.mark.slow
def test_every_notebook_runs_to_its_first_exercise_and_self_checks_say_not_answered(
        edition, student_python, tmp_path):
    notebooks = sorted((edition / "notebooks").glob("*.ipynb"))
    results = asyncio.run(_run_notebooks(notebooks, student_python, tmp_path / "kernels"))
    assert sorted(results) == IDS
    for notebook_id, notebook in results.items():
        checks = 0
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            errors = [o for o in cell.outputs if o.output_type == "error"]
            where = f"{notebook_id}, cell {cell.get('id')}"
            if cell.metadata.get("nbgrader", {}).get("grade"):
                checks += 1
                assert [e.ename for e in errors] == ["NotImplementedError"], (
                    f"{where}: the self-check of an unanswered exercise should stop at "
                    f"NotImplementedError (not answered yet), got "
                    f"{[(e.ename, e.evalue) for e in errors]}")
            elif cell.metadata.get("nbgrader", {}).get("solution"):
                # an answer cell whose whole body is the stub (a pasted earlier answer)
                # says "not answered yet" and nothing else
                assert [e.ename for e in errors] in ([], ["NotImplementedError"]), (
                    f"{where}: {[(e.ename, e.evalue) for e in errors]}")
            else:
                assert not errors, f"{where}: {[(e.ename, e.evalue) for e in errors]}"
        assert checks >= 2, notebook_id
