"""`make demo`: run every solution, regenerate the release, grade the sample class."""

from __future__ import annotations

import sys
import time

from pipeline.classroom import sample_class
from pipeline.grading import autograde
from pipeline.paths import GRADER, ROOT, SAMPLE_CLASS, SOLUTIONS, assignment_ids
from pipeline.release.assignments import generate
from pipeline.release.execute import execute_notebook


def main() -> int:
    print("1/3  Running every solution notebook (outputs are compared by `make test`, "
          "not rewritten here)")
    scratch = GRADER / ".scratch" / "demo"
    scratch.mkdir(parents=True, exist_ok=True)
    for path in (SOLUTIONS / f"{notebook_id}.ipynb" for notebook_id in assignment_ids()):
        copy = scratch / path.name
        copy.write_bytes(path.read_bytes())
        start = time.perf_counter()
        execute_notebook(copy)
        print(f"     {path.stem:<32} {time.perf_counter() - start:5.1f} s")
    print("2/3  Generating the release with nbgrader (grader/release, notebooks/)")
    generate()
    print("3/3  Grading the sample class (full solution, blank release, typical mistakes)")
    sample_class.build()
    return autograde.main([str(SAMPLE_CLASS.relative_to(ROOT))])


if __name__ == "__main__":
    sys.exit(main())
