"""Submissions that print without end: the graded notebook keeps a bounded amount."""

from misbehaving import _ATTENTION_ALONE

BANK = {
    # about 40 MB of text from one cell; both answers are right and keep their points
    "floods_output": ({"gained_dot_product_attention": _ATTENTION_ALONE + """\
for _ in range(40):
    print("x" * 1_000_000)
"""}, {}, {"test_stable_softmax": 2, "test_gained_dot_product_attention": 2}),
}
