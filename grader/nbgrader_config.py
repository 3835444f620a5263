"""nbgrader configuration of the course (this folder is the nbgrader course root)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # makes `pipeline` importable

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    GetGrades,
    IncludeHeaderFooter,
    InstantiateTests,
    LimitOutput,
    LockCells,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
    SaveCells,
)
from pipeline.preprocessors import (  # noqa: E402
    ClearRunState,
    ColabCells,
    DeduplicateGradeIds,
    HideHiddenTests,
    ResilientExecute,
    StderrIsNotFailure,
)

c = get_config()  # noqa: F821 - provided by traitlets when this file is loaded

# ---- THE ONE PLACE to set the repository that Colab badges and install cells point at ----
c.ColabCells.repository = "attention-course/attention-from-gain-to-transformers"
c.ColabCells.branch = "main"
# Then run `make assignments` to rewrite notebooks/.

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "attention-course"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")

# Release = nbgrader's own pipeline, plus: no run state, and the Colab cells at the very end.
c.GenerateAssignment.preprocessors = [
    IncludeHeaderFooter, InstantiateTests, LockCells, ClearSolutions, ClearOutput,
    ClearRunState, CheckCellMetadata, ComputeChecksums, SaveCells, ClearHiddenTests,
    ClearMarkScheme, ComputeChecksums, CheckCellMetadata, ColabCells,
]

# Autograde: long enough for the tutorials' training cells, kernels that die are survived,
# stderr (PyTorch warnings) does not zero a test cell.
c.Autograde.autograde_preprocessors = [
    ResilientExecute, StderrIsNotFailure, ClearMetadataPreprocessor, LimitOutput,
    SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
]
# Duplicated cells (same grade_id): the last copy is graded, once (nbgrader's own dedup
# crashes together with add_missing_cells).
c.Autograde.sanitize_preprocessors = [
    ClearOutput, DeduplicateGradeIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata,
]
c.OverwriteCells.add_missing_cells = True  # a deleted test cell is put back and still runs
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
c.Execute.startup_timeout = 60
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Feedback: grades and messages, never the hidden tests' source.
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, HideHiddenTests]
