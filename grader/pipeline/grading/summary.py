"""Class summary: which exercises the class found hardest, and the spread of grades.

``grader/summary/`` after grading: ``pass_rates.csv``, ``grade_distribution.png`` and
``index.html``, a page to look at (:func:`write_page`): the score distribution of each
assignment, the exercises the class found hardest (the share of students who lost points on
each), the most common mistakes the hidden tests named ("likely mistake: ..." in their
verdicts, counted), who is missing and who was late. The page is static and inert: no
script, no request, everything a result holds escaped, and a Content-Security-Policy that
allows nothing but its own inline style and drawings.
"""

from __future__ import annotations

import csv
import html
import re
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs in the grading process, never in a notebook
import matplotlib.pyplot as plt  # noqa: E402

from helpers.syllabus import grade_column  # noqa: E402
from pipeline.paths import GRADER  # noqa: E402

SUMMARY = GRADER / "summary"


def pass_rates(results: list[dict]) -> list[tuple[str, str, int, int]]:
    """(assignment, exercise, students with full points, students graded) per auto-graded cell."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        for cell in result["cells"]:
            if cell["kind"] == "auto":
                key = (result["assignment"], grade_column(cell["grade_id"]))
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

    write_page(results, out / "index.html")
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


# ---- the page -------------------------------------------------------------------------------

PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"
# The hidden test's own field, always the last line of a failed check's message: the lines
# of the fields above it are indented further, so a student's text cannot pass for it
# (nor can it in other messages, where a student's error may be quoted as it was).
LIKELY = re.compile(r"\ACheckFailed: .*\n  likely mistake: (.+)\Z", re.S)
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; } .num { text-align: right; }
.bar { fill: #0072B2; } .bar.lost { fill: #D55E00; } svg text { font: 12px system-ui; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .6em 1em; min-width: 9em; }
.card b { display: block; font-size: 1.6em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _auto(result: dict) -> tuple[float, float]:
    auto = [c for c in result["cells"] if c["kind"] == "auto"]
    penalty = float((result.get("late") or {}).get("penalty") or 0)
    earned = max(0.0, sum(c["score"] or 0 for c in auto) - penalty)
    return earned, sum(c["max_score"] for c in auto)


def histogram_svg(percents: list[float], title: str) -> str:
    """Ten bars, 0-10% ... 90-100% of the auto-graded points, with their counts."""
    counts = [0] * 10
    for p in percents:
        counts[min(9, int(p // 10))] += 1
    top = max(counts) or 1
    width, height, bar, pad = 430, 170, 36, 20
    parts = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height + 64}" '
             f'viewBox="0 0 {width} {height + 64}">', f"<title>{_e(title)}</title>"]
    for i, count in enumerate(counts):
        h = round(height * count / top)
        x = 10 + i * (bar + 4)
        parts.append(f'<rect class="bar" x="{x}" y="{pad + height - h}" width="{bar}" '
                     f'height="{h}"><title>{i * 10}-{i * 10 + 10}%: {count}</title></rect>')
        if count:
            parts.append(f'<text x="{x + bar / 2}" y="{pad + height - h - 4}" '
                         f'text-anchor="middle">{count}</text>')
        parts.append(f'<text x="{x - 2}" y="{pad + height + 16}" text-anchor="middle">'
                     f"{i * 10}</text>")
    parts.append(f'<text x="{10 + 10 * (bar + 4) - 6}" y="{pad + height + 16}" '
                 'text-anchor="middle">100</text>')
    parts.append(f'<text x="{width / 2}" y="{pad + height + 38}" text-anchor="middle">'
                 "auto-graded score, % (after late penalties)</text></svg>")
    return "".join(parts)


def hardest(results: list[dict]) -> list[tuple[str, str, int, int]]:
    """(assignment, exercise, students who lost points, students graded), hardest first."""
    return sorted(((a, e, n - full, n) for a, e, full, n in pass_rates(results)),
                  key=lambda row: (-row[2] / row[3], row[0], row[1]))


def named_mistakes(results: list[dict]) -> list[tuple[str, str, str, int]]:
    """(assignment, exercise, the mistake the hidden test named, how many), commonest first."""
    counts: Counter = Counter()
    for result in results:
        for cell in result["cells"]:  # one named mistake per student and cell, at most
            found = LIKELY.search(str(cell.get("message") or "").rstrip())
            if found:
                counts[result["assignment"], grade_column(cell["grade_id"]),
                       " ".join(found.group(1).split())[:300]] += 1
    return [(a, e, m, n) for (a, e, m), n in counts.most_common()]


def _names() -> dict[str, str]:
    try:
        from pipeline.classroom import roster

        loaded = roster.load()
    except (ValueError, OSError):
        return {}
    return {s.student_id: s.full_name for s in loaded.students} if loaded else {}


def write_page(results: list[dict], path: Path) -> None:
    """The class summary page: see the module's doc."""
    names = _names()
    assignments = sorted({r["assignment"] for r in results})
    students = sorted({r["student"] for r in results})
    missing = [r for r in results if r["status"] == "missing"]
    graded = [r for r in results if r["cells"]]
    late = [r for r in graded if (r.get("late") or {}).get("seconds_late")]
    other = [r for r in results if not r["cells"] and r["status"] != "missing"]
    body = ["<h1>Class summary</h1>",
            '<div class="cards">',
            f'<div class="card"><b>{len(students)}</b>students</div>',
            f'<div class="card"><b>{len(graded)}</b>notebooks graded</div>',
            f'<div class="card"><b>{len(missing)}</b>missing</div>',
            f'<div class="card"><b>{len(late)}</b>late</div>',
            f'<div class="card"><b>{len(other)}</b>not graded</div>', "</div>",
            '<h2 id="distribution">Score distribution</h2>']
    for assignment in assignments:
        percents = [100 * e / m for e, m in (_auto(r) for r in graded
                                             if r["assignment"] == assignment) if m]
        title = f"{assignment}: {len(percents)} students"
        mean = f", mean {sum(percents) / len(percents):.0f}%" if percents else ""
        body += [f"<h3>{_e(assignment)}</h3><p>{len(percents)} graded{mean}; "
                 f"{sum(r['assignment'] == assignment for r in missing)} missing.</p>",
                 histogram_svg(percents, title)]
    body.append('<h2 id="hardest">Exercises the class found hardest</h2>'
                "<p>The share of graded students who lost points on each exercise.</p>"
                "<table><tr><th>assignment</th><th>exercise</th><th>lost points</th>"
                '<th class="num">share</th><th></th></tr>')
    for assignment, exercise, lost, n in hardest(graded):
        share = lost / n
        body.append(f"<tr><td>{_e(assignment)}</td><td>{_e(exercise)}</td>"
                    f'<td class="num">{lost} of {n}</td><td class="num">{share:.0%}</td>'
                    f'<td><svg width="200" height="14"><rect class="bar lost" x="0" y="1" '
                    f'width="{200 * share:.0f}" height="12"/></svg></td></tr>')
    body.append("</table>")
    body.append('<h2 id="mistakes">Most common mistakes</h2><p>The likely mistakes the hidden '
                "tests named in their verdicts, counted over the class.</p>")
    mistakes = named_mistakes(graded)
    if mistakes:
        body.append('<table><tr><th class="num">students</th><th>assignment</th>'
                    "<th>exercise</th><th>likely mistake</th></tr>")
        body += [f'<tr><td class="num">{n}</td><td>{_e(a)}</td><td>{_e(e)}</td><td>{_e(m)}</td>'
                 "</tr>" for a, e, m, n in mistakes[:30]]
        body.append("</table>")
    else:
        body.append("<p>None named.</p>")
    body.append('<h2 id="missing">Missing</h2>')
    if missing:
        body.append("<table><tr><th>assignment</th><th>student</th><th>name</th></tr>")
        body += [f"<tr><td>{_e(r['assignment'])}</td><td>{_e(r['student'])}</td>"
                 f"<td>{_e(names.get(r['student'], ''))}</td></tr>"
                 for r in sorted(missing, key=lambda r: (r["assignment"], r["student"]))]
        body.append("</table>")
    else:
        body.append("<p>Nobody: every student on the roster handed something in.</p>")
    body.append('<h2 id="late">Late</h2>')
    if late:
        body.append("<table><tr><th>assignment</th><th>student</th><th>handed in (UTC)</th>"
                    '<th class="num">hours late</th><th class="num">penalty</th></tr>')
        for r in sorted(late, key=lambda r: (r["assignment"], r["student"])):
            info = r["late"]
            body.append(f"<tr><td>{_e(r['assignment'])}</td><td>{_e(r['student'])}</td>"
                        f"<td>{_e(str(info.get('submitted', ''))[:16].replace('T', ' '))}</td>"
                        f'<td class="num">{float(info["seconds_late"]) / 3600:.1f}</td>'
                        f'<td class="num">{float(info.get("penalty") or 0):g}</td></tr>')
        body.append("</table>")
    else:
        body.append("<p>Nobody.</p>")
    if other:
        body.append('<h2 id="not-graded">Handed in, not graded</h2><table>'
                    "<tr><th>assignment</th><th>student</th><th>why</th></tr>")
        body += [f"<tr><td>{_e(r['assignment'])}</td><td>{_e(r['student'])}</td>"
                 f"<td>{_e(r['status'])}</td></tr>" for r in other]
        body.append("</table>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{PAGE_POLICY}">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>Class summary</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    path.write_text(page, encoding="utf-8")
