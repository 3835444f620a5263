"""nbgrader preprocessors of the release (see nbgrader_config.py): the Colab cells, the
tutorial's number in its header, and no run state left in the student version."""

from __future__ import annotations

import re

from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

BADGE_ID, BOOTSTRAP_ID = "colab-badge", "colab-setup"
TUTORIAL_NUMBER = re.compile(r"tutorial \d+ of \d+")

BOOTSTRAP = '''\
# Colab only: install the course's `helpers` package (does nothing anywhere else).
import os, subprocess, sys
if "google.colab" in sys.modules or os.environ.get("COURSE_HELPERS_SOURCE"):
    _source = os.environ.get("COURSE_HELPERS_SOURCE", "{source}")
    _pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", _source],
                          capture_output=True, text=True)
    if _pip.returncode != 0:
        raise RuntimeError(f"Could not install the course helpers from {{_source}}:\\n"
                           f"{{_pip.stderr[-1500:]}}\\nCheck the internet connection, then run "
                           "this cell again (or Runtime > Restart session).")
    print("Course helpers installed.")'''


class ColabCells(NbGraderPreprocessor):
    """Put an "Open in Colab" badge and the Colab install cell at the top of a notebook.

    Both point at the *student edition* (``make student-edition``, ``pipeline.release.student_edition``),
    the public repository students use, never at the instructor's repository, which holds the
    solutions and hidden tests. Where it lives (GitHub ``owner/name`` and branch) is set once,
    in ``grader/nbgrader_config.py``; the student edition's README reads the same setting.
    Running it on a notebook that already has the cells replaces them.
    """

    repository = Unicode("", help="GitHub 'owner/name' of the student edition, the public "
                                  "repository badges and install cells point at").tag(config=True)
    branch = Unicode("main", help="branch (or tag) of the student edition that the badges and "
                                  "the install cell point at").tag(config=True)

    def check_settings(self) -> None:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", self.repository):
            raise ValueError(f"ColabCells.repository must look like 'owner/name', got "
                             f"{self.repository!r}; set it in grader/nbgrader_config.py")
        if not re.fullmatch(r"[\w.-]+", self.branch):
            raise ValueError(f"ColabCells.branch must be a branch or tag name without '/', got "
                             f"{self.branch!r}; set it in grader/nbgrader_config.py")

    @property
    def repository_url(self) -> str:
        """The student edition on GitHub."""
        return f"https://github.com/{self.repository}"

    @property
    def install_source(self) -> str:
        """What the Colab cell gives ``pip install``: the student edition at ``branch``."""
        return f"git+{self.repository_url}@{self.branch}"

    def colab_url(self, notebook: str) -> str:
        """Colab's address of ``notebooks/<notebook>.ipynb`` in the student edition."""
        return (f"https://colab.research.google.com/github/{self.repository}/blob/"
                f"{self.branch}/notebooks/{notebook}.ipynb")

    def badge(self, notebook: str) -> str:
        """The "Open in Colab" badge of a notebook, in markdown."""
        return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                f"({self.colab_url(notebook)})")

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        self.check_settings()
        notebook = resources.get("unique_key") or resources["nbgrader"]["notebook"]
        badge = new_markdown_cell(self.badge(notebook))
        badge["id"] = BADGE_ID
        bootstrap = new_code_cell(BOOTSTRAP.format(source=self.install_source))
        bootstrap["id"] = BOOTSTRAP_ID
        nb.cells = [badge, bootstrap] + [c for c in nb.cells if c.get("id") not in
                                         (BADGE_ID, BOOTSTRAP_ID)]
        return nb, resources


class CourseHeader(NbGraderPreprocessor):
    """Number the tutorial in its header ("tutorial 2 of 8") from the course's list.

    The list is the solution notebooks (``pipeline.paths.assignment_ids``), so adding a
    tutorial renumbers every student notebook at the next ``make assignments``.
    """

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        from pipeline.paths import assignment_ids

        notebook = resources.get("unique_key") or resources.get("nbgrader", {}).get("notebook")
        ids = assignment_ids()
        if notebook in ids:
            for cell in nb.cells:
                if cell.cell_type == "markdown" and TUTORIAL_NUMBER.search(cell.source):
                    cell.source = TUTORIAL_NUMBER.sub(
                        f"tutorial {ids.index(notebook) + 1} of {len(ids)}", cell.source, count=1)
                    break
        return nb, resources


class ClearRunState(NbGraderPreprocessor):
    """Drop what a run of the solution leaves in metadata: widget state, cell timings.

    nbgrader's ClearOutput clears outputs but not these; without this step every re-run
    of a solution would change the student notebooks.
    """

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        return nb, resources
