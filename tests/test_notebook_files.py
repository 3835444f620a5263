"""The committed solution notebooks stay small and quiet.

Figures are stored as opaque palette PNGs of bounded size (``helpers.use_course_style``
installs the formatter), the notebooks together stay within a size budget, no widget state
or random widget ids are stored, and re-executing a notebook without changes leaves its file
byte for byte as it was (so ``git diff`` after ``make execute`` shows only real changes).
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
import shutil
import struct
from pathlib import Path

import pytest

from helpers import syllabus

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = [ROOT / "solutions" / f"{notebook_id}.ipynb" for notebook_id in syllabus.ids()]

# Budgets, with margin over what the course's figures take (largest PNG about 55 KB,
# the eight notebooks about 1.7 MB together): a figure half again as large as the largest, or an
# RGBA figure, or a notebook that stores a lot more, fails here before it lands in git.
MAX_PNG_BYTES = 80_000
MAX_TOTAL_BYTES = 300_000 * len(SOLUTIONS)  # about 1.4x today's average per notebook

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}


def _notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _pngs(notebook: dict) -> list[tuple[int, bytes]]:
    """(cell index, PNG bytes) for every PNG stored in the notebook's outputs."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("image/png")
            if data is not None:
                found.append((index, base64.b64decode("".join(data))))
    return found


def _png_info(png: bytes) -> tuple[str, bool]:
    """Colour type and whether a transparency chunk is present."""
    assert png.startswith(PNG_SIGNATURE), "not a PNG"
    colour_type = png[25]  # IHDR: 8 signature + 8 chunk header + width, height, depth
    chunks, offset = set(), len(PNG_SIGNATURE)
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        chunks.add(kind)
        offset += 12 + length
    return COLOUR_TYPES.get(colour_type, str(colour_type)), b"tRNS" in chunks


def test_every_declared_tutorial_has_a_solution():
    assert [path for path in SOLUTIONS if not path.exists()] == []


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_figures_are_small_opaque_pngs(path):
    pngs = _pngs(_notebook(path))
    for index, png in pngs:
        colour, transparent = _png_info(png)
        where = f"{path.name} cell {index}"
        assert colour in {"palette", "RGB", "greyscale"} and not transparent, (
            f"{where} stores a {colour} PNG{' with transparency' if transparent else ''}: "
            "figures should be opaque palette PNGs. Does the notebook call "
            "helpers.use_course_style() before its first figure?")
        assert len(png) <= MAX_PNG_BYTES, (
            f"{where} stores a {len(png) // 1000} KB PNG (limit {MAX_PNG_BYTES // 1000} KB): "
            "a smaller figsize or fewer panels?")


def test_solutions_stay_within_their_size_budget():
    sizes = {path.name: path.stat().st_size for path in SOLUTIONS}
    total = sum(sizes.values())
    assert total <= MAX_TOTAL_BYTES, (
        f"solutions/ holds {total / 1e6:.2f} MB (budget {MAX_TOTAL_BYTES / 1e6:.2f} MB): "
        + ", ".join(f"{name} {size // 1000} KB" for name, size in sorted(sizes.items())))


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_no_widget_state_or_random_ids_are_stored(path):
    notebook = _notebook(path)
    assert "widgets" not in notebook["metadata"], (
        f"{path.name} stores widget state in its metadata: execute with "
        "`python -m pipeline.release.execute` (it does not store widget state)")
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            assert WIDGET_MIME not in output.get("data", {}), (
                f"{path.name} cell {index} stores a widget view (a random model id): "
                "widgets and progress bars must fall back to static output when executed "
                "headless (helpers.widgets.progress_bar, slider_demo)")
    text = path.read_text(encoding="utf-8")
    assert not re.search(r'"model_id"|"version_major"', text), (
        f"{path.name} stores widget model ids")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_no_timing_metadata_and_stable_cell_ids(path):
    notebook = _notebook(path)
    assert (notebook["nbformat"], notebook["nbformat_minor"]) >= (4, 5), (
        f"{path.name}: nbformat 4.5 or later stores cell ids; older files get random ones "
        "on every write")
    count = 0
    for index, cell in enumerate(notebook["cells"]):
        assert cell.get("id"), f"{path.name} cell {index} has no id"
        assert "execution" not in cell.get("metadata", {}), (
            f"{path.name} cell {index} stores execution timestamps")
        if cell["cell_type"] == "code" and cell.get("execution_count") is not None:
            count += 1
            assert cell["execution_count"] == count, (
                f"{path.name} cell {index}: execution count {cell['execution_count']}, "
                f"expected {count} (run top to bottom in a fresh kernel)")


@pytest.mark.slow
def test_re_executing_a_notebook_changes_nothing(tmp_path):
    """The cheapest notebook, re-run in place with pipeline.release.execute: byte-identical file."""
    from pipeline.release.execute import execute_notebook

    committed = ROOT / "solutions" / "01_gain_multiplication.ipynb"
    copy = tmp_path / committed.name
    shutil.copy(committed, copy)
    saved = dict(os.environ)
    try:
        execute_notebook(copy)
    finally:  # execute_notebook sets the kernel's variables in this process's environment
        os.environ.clear()
        os.environ.update(saved)
    before = committed.read_text(encoding="utf-8")
    after = copy.read_text(encoding="utf-8")
    if before != after:
        diff = "".join(list(difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True),
            "committed", "re-executed", n=1))[:60])
        pytest.fail(f"re-executing {committed.name} changed the file:\n{diff}")


def _course_figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow([[0.0, 0.5], [0.75, 1.0]])
    ax.set(title="a heat map", xlabel="key", ylabel="query")
    return fig


@pytest.mark.parametrize("styled", [False, True], ids=["plain", "course style"])
def test_figure_png_is_an_opaque_palette_png_and_reproducible(styled):
    import io

    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from helpers.plotting import COURSE_STYLE, figure_png

    # The course style lays figures out (figure.autolayout): the path every notebook takes.
    with matplotlib.rc_context(COURSE_STYLE if styled else {}):
        first, second = _course_figure(), _course_figure()
        assert (first.get_layout_engine() is not None) == styled
        png, again = figure_png(first), figure_png(second)
        reference = io.BytesIO()
        second.savefig(reference, format="png", bbox_inches="tight")
    plt.close("all")
    assert png == again  # the same figure, built afresh: the same bytes
    assert _png_info(png) == ("palette", False)
    ours, theirs = Image.open(io.BytesIO(png)).size, Image.open(reference).size
    assert all(abs(a - b) <= 3 for a, b in zip(ours, theirs, strict=True)), (ours, theirs)
    empty = plt.figure()
    assert figure_png(empty) is None
    plt.close(empty)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_nbval_markers_are_cell_tags_that_students_never_see(path):
    """nbval reads `nbval-ignore-output` from a cell's tags; a `# NBVAL_...` comment would
    be copied into the student's notebook as a line of code that means nothing to them."""
    for cell in _notebook(path)["cells"]:
        source = "".join(cell["source"])
        assert not re.search(r"#\s*NBVAL_", source), (
            f"{path.name}: a cell marks itself for nbval with a comment; give it the tag "
            f"nbval-ignore-output instead:\n{source[:200]}")
