"""Execution time of every solution notebook against the 10 s budget.

    make bench [BENCH_ARGS="--repeat N notebook ..."]

(in the course's environment, pipeline.environment, which makes grader/ importable).

Each notebook runs top to bottom in a fresh kernel (a copy: the committed outputs
are not touched), as nbval and the autograder run it. Kernel start-up is measured
separately, so the table shows what the notebook itself costs. The table is also
written to bench/out/notebook_runtime_<device>.csv; tables recorded on other
devices (e.g. a GPU runner) are shown beside this one.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from pipeline.paths import ROOT
from pipeline.release.execute import execute_notebook

BUDGET_S = 10.0  # per notebook, kernel start-up included, on a 2-core CPU
COURSE_BUDGET_S = 75.0  # the nine notebooks together
OUT = ROOT / "bench" / "out"


def kernel_startup_seconds() -> float:
    """A fresh kernel that only imports torch, started as the notebooks' are."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "startup.ipynb"
        nbformat.write(new_notebook(cells=[new_code_cell("import torch")]), path)
        return execute_notebook(path)


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="runs per notebook (median)")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "solutions").glob("*.ipynb"))
    device = device_name()
    startup = kernel_startup_seconds()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in notebooks:
            times = []
            for _ in range(args.repeat):
                copy = Path(scratch) / path.name
                shutil.copy2(path, copy)
                times.append(execute_notebook(copy))
            rows.append((path.stem, statistics.median(times)))
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / f"notebook_runtime_{device}.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("notebook", "seconds")] + [(n, f"{s:.2f}") for n, s in rows])
    others = {}
    for table in OUT.glob("notebook_runtime_*.csv"):
        other = table.stem.removeprefix("notebook_runtime_")
        if other != device:
            with table.open() as handle:
                others[other] = {r["notebook"]: float(r["seconds"]) for r in csv.DictReader(handle)}

    header = f"{'notebook':<34}{device + ' s':>9}" + "".join(f"{d + ' s':>9}" for d in others)
    print(f"kernel start-up + `import torch`: {startup:.1f} s (included in every row)\n")
    print(header + f"{'budget':>9}  ok")
    print("-" * (len(header) + 13))
    for name, seconds in rows:
        extra = "".join(f"{others[d].get(name, float('nan')):>9.1f}" for d in others)
        print(f"{name:<34}{seconds:>9.1f}{extra}{BUDGET_S:>9.0f}  "
              f"{'yes' if seconds <= BUDGET_S else 'NO'}")
    total = sum(s for _, s in rows)
    median = statistics.median(s for _, s in rows)
    print("-" * (len(header) + 13))
    print(f"{'total':<34}{total:>9.1f}   (target {COURSE_BUDGET_S:.0f} s for the course; "
          f"median {median:.1f} s)")
    return 0 if all(s <= BUDGET_S for _, s in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
