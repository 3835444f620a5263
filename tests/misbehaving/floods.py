"""Submissions that print without end (the graded notebook keeps a bounded amount) or write
markup built to stall the feedback sanitiser (its page leaves that markup out)."""

from misbehaving import ATTENTION, ATTENTION_ALONE, BOTH


def nested_markup(count: int, tag: str = "b") -> str:
    """``count`` tags open inside each other, each with attributes of its own: quadratic
    work for an HTML sanitiser that reads it whole (254 KB took minutes)."""
    return "".join(f'<{tag} id="n{i}" title="t{i}">' for i in range(count)) + "deep"


BANK = {
    # about 40 MB of text from one cell; both answers are right and keep their points
    "floods_output": ({ATTENTION.name: ATTENTION_ALONE + """\
for _ in range(40):
    print("x" * 1_000_000)
"""}, {}, BOTH),
    # Think! answers and an HTML output of tags nested thousands deep (about 1 MB in all):
    # the page shows a note in their place, and this student and the others get their pages
    "nested_markup": ({"think_equal_gains": nested_markup(8_000),
                       "think_fixed_vs_gain": nested_markup(8_000, "i"),
                       ATTENTION.name: ATTENTION_ALONE + (
                           "from IPython.display import HTML, display\n"
                           "display(HTML(''.join(f'<div id=\"n{i}\" title=\"t{i}\">' "
                           "for i in range(20_000))))\n")},
                      {}, BOTH),
}
