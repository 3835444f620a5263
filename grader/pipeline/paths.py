"""Where things are. Everything is relative to the repository root."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
GRADER = ROOT / "grader"  # the nbgrader course root
HIDDEN_TESTS = GRADER / "hidden_tests"
SAMPLE_CLASS = GRADER / "sample_submissions"
GRADES_CSV = GRADER / "grades.csv"
SCRATCH = GRADER / ".scratch"  # where each grading run and collect work apart


def assignment_ids() -> list[str]:
    """The assignment ids declared in ``helpers/syllabus.py``, in course order."""
    from helpers import syllabus

    return syllabus.ids()


# nbgrader's layout of a course root: grader/ itself, and every scratch copy graded apart.
def gradebook(course_root: Path) -> Path:
    """The gradebook of a course root."""
    return course_root / "gradebook.db"


def db_url(course_root: Path) -> str:
    """nbgrader's database URL of that gradebook."""
    return f"sqlite:///{gradebook(course_root)}"


def source_folder(course_root: Path, assignment: str) -> Path:
    """Where nbgrader's source of an assignment lives (``make assignments`` writes it)."""
    return course_root / "source" / assignment


def release_notebook(course_root: Path, assignment: str) -> Path:
    """The student version of an assignment, as nbgrader generated it."""
    return course_root / "release" / assignment / f"{assignment}.ipynb"


def submitted_folder(course_root: Path, student: str, assignment: str) -> Path:
    """Where nbgrader looks for one student's submission of an assignment."""
    return course_root / "submitted" / student / assignment


def autograded_notebook(course_root: Path, student: str, assignment: str) -> Path:
    """The notebook nbgrader's autograde writes for one submission."""
    return course_root / "autograded" / student / assignment / f"{assignment}.ipynb"


def feedback_page(course_root: Path, student: str, assignment: str) -> Path:
    """The feedback page nbgrader writes for one submission."""
    return course_root / "feedback" / student / assignment / f"{assignment}.html"
