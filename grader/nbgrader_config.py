"""nbgrader configuration of the course (this folder is the nbgrader course root)."""

import os
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
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

# The pipeline is importable where nbgrader runs in the course's environment: every make
# target (pipeline.environment), or `python -m nbgrader ...` run in this folder.
try:
    from pipeline.grading.preprocessors import (
        DeduplicateGradeIds,
        HideHiddenTests,
        ResilientExecute,
        StderrIsNotFailure,
    )
    from pipeline.grading.safe_feedback import SafeFeedbackExporter
    from pipeline.paths import db_url
    from pipeline.release.preprocessors import ClearRunState, ColabCells, CourseHeader
except ModuleNotFoundError as error:
    if error.name != "pipeline":
        raise
    raise ModuleNotFoundError(
        "grader/nbgrader_config.py needs the course's pipeline: run nbgrader through the make "
        "targets, or as `python -m nbgrader ...` from grader/ (or with grader/ on PYTHONPATH)",
        name="pipeline") from error

c = get_config()  # noqa: F821 - provided by traitlets when this file is loaded

# ---- THE ONE PLACE that says where the student edition lives ----------------------------------
# The public repository students use, written by `make student-edition DEST=dir`: the Colab
# badges, the Colab install cell and the student README point here, never at this (private)
# instructor repository. The owner is a placeholder: set your own GitHub 'owner/name' (and the
# branch or tag students use), then run `make assignments` and publish the edition (README,
# "Publishing the student edition").
c.ColabCells.repository = "attention-course/attention-from-gain-to-transformers-students"
c.ColabCells.branch = "main"

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "attention-course"
c.CourseDirectory.db_url = db_url(Path(c.CourseDirectory.root))

# Release = nbgrader's own pipeline, plus: no run state, and the Colab cells at the very end.
c.GenerateAssignment.preprocessors = [
    IncludeHeaderFooter, InstantiateTests, LockCells, ClearSolutions, ClearOutput,
    ClearRunState, CheckCellMetadata, ComputeChecksums, SaveCells, ClearHiddenTests,
    ClearMarkScheme, ComputeChecksums, CheckCellMetadata, CourseHeader, ColabCells,
]

# Autograde: long enough for the tutorials' training cells, kernels that die are survived,
# stderr (PyTorch warnings) does not zero a test cell.
c.Autograde.autograde_preprocessors = [
    ResilientExecute, StderrIsNotFailure, ClearMetadataPreprocessor, LimitOutput,
    SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
]
# Tampered nbgrader metadata is rebuilt from the gradebook first (unknown ids demoted, renamed
# ids matched by cell id, with a note in the feedback: pipeline.grading.metadata_repair).
# Duplicated cells (same grade_id): the last copy is graded, once (nbgrader's own dedup
# crashes together with add_missing_cells).
c.Autograde.sanitize_preprocessors = [
    "pipeline.grading.metadata_repair.RepairMetadata", ClearOutput, DeduplicateGradeIds,
    OverwriteKernelspec, OverwriteCells, CheckCellMetadata,
]
c.OverwriteCells.add_missing_cells = True  # a deleted test cell is put back and still runs
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
c.Execute.startup_timeout = 60
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Feedback: grades and messages, never the hidden tests' source, and nothing a submission
# displayed or wrote can run in the reader's browser: outputs and markdown are sanitised and
# the page carries a Content-Security-Policy with no scripts (pipeline.grading.safe_feedback).
# Setting the exporter here covers `make grade` and a plain `nbgrader generate_feedback`.
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, HideHiddenTests]
c.GenerateFeedback.exporter_class = SafeFeedbackExporter

# ---- Formgrader ----------------------------------------------------------------------------
# `make formgrader` serves nbgrader's formgrader through pipeline.grading.safe_formgrader: Manual
# Grading shows each submission as the feedback pages do (outputs from safe MIME types,
# markdown cleaned), with only formgrader's own scripts allowed to run on the page. nbgrader's
# stock formgrader (a `jupyter lab` started by hand here) renders with a plain HTMLExporter:
# every HTMLExporter gets this check, so that one refuses a submission instead of running its
# scripts in the instructor's browser (the course's own exporters pass it).
c.HTMLExporter.preprocessors = ["pipeline.grading.safe_formgrader.RequireInertExporter"]

# ---- Deadlines and late submissions --------------------------------------------------------
# Each assignment's deadline is in grader/deadlines.csv (pipeline.classroom.deadlines), put into the
# gradebook before every grading run; each submission's time is its timestamp.txt, written by
# `make collect` from what the LMS says, or by nbgrader's exchange. nbgrader's
# AssignLatePenalties (in the Autograde steps above) asks this plugin for the penalty of a
# late notebook; nbgrader caps it at the notebook's score. A day begun counts as a day.
from pipeline.classroom.deadlines import LateNote, PercentPerDay  # noqa: E402

c.AssignLatePenalties.plugin_class = PercentPerDay
c.PercentPerDay.percent_per_day = 10.0  # of the score, per day late
c.PercentPerDay.grace_minutes = 0.0  # minutes after the deadline that do not count
c.PercentPerDay.zero_after_days = 7.0  # later than this: the whole score
# The feedback page says at the top when the notebook came in against its deadline, and why
# it lost points for it (nbgrader's template lists the penalty with the scores).
c.GenerateFeedback.preprocessors.append(LateNote)
