"""Class summary: which exercises the class found hardest, and the spread of grades."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs in the grading process, never in a notebook
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.paths import GRADER  # noqa: E402

SUMMARY = GRADER / "summary"


def pass_rates(results: list[dict]) -> list[tuple[str, str, int, int]]:
    """(assignment, exercise, students with full points, students graded) per auto-graded cell."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        for cell in result["cells"]:
            if cell["kind"] == "auto":
                key = (result["assignment"], cell["grade_id"].removeprefix("test_"))
                counts[key][0] += (cell["score"] or 0) >= cell["max_score"]
                counts[key][1] += 1
    return sorted((a, e, full, n) for (a, e), (full, n) in counts.items())


def write_summary(results: list[dict], out: Path = SUMMARY) -> str:
    """Write pass_rates.csv and grade_distribution.png; return the table as text."""
    out.mkdir(parents=True, exist_ok=True)
    rates = pass_rates(results)
    with (out / "pass_rates.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["assignment", "exercise", "full_marks", "graded", "pass_rate"])
        for assignment, exercise, full, n in rates:
            writer.writerow([assignment, exercise, full, n, f"{full / n:.2f}"])

    by_assignment: dict[str, list[float]] = defaultdict(list)
    for result in results:
        auto = [c for c in result["cells"] if c["kind"] == "auto"]
        available = sum(c["max_score"] for c in auto)
        if available:
            by_assignment[result["assignment"]].append(
                100 * sum(c["score"] or 0 for c in auto) / available)
    if by_assignment:
        names = sorted(by_assignment)
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), sharey=True,
                                 squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            ax.hist(by_assignment[name], bins=range(0, 101, 10), color="#0072B2",
                    label=f"{len(by_assignment[name])} students")
            ax.set(title=name, xlabel="auto-graded score (%)", xlim=(0, 100))
            ax.legend()
        axes[0][0].set_ylabel("students")
        fig.suptitle("Grade distribution per assignment")
        fig.tight_layout()
        fig.savefig(out / "grade_distribution.png", dpi=90)
        plt.close(fig)

    rows = [["assignment", "exercise", "full marks", "share"]]
    rows += [[assignment, exercise, f"{full}/{n}", f"{100 * full / n:.0f}%"]
             for assignment, exercise, full, n in sorted(rates, key=lambda r: r[2] / r[3])]
    return format_columns(rows, align="<<>>")


def format_columns(rows: list[list[str]], align: str) -> str:
    """``rows`` (the first is the header) as text columns, each as wide as its widest
    entry, two spaces apart, so that no two columns ever run together, whatever the
    assignment ids, exercise or student names; ``align`` has one ``<`` or ``>`` per column."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    return "\n".join("  ".join(f"{value:{a}{w}}" for value, a, w in zip(row, align, widths,
                                                                          strict=True)).rstrip()
                     for row in rows)
