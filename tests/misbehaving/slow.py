"""Submissions that spend their time: each costs its own exercises, never a classmate's.

(A notebook whose many cells each stay under the cell limit but together outlast the
notebook's own limit is graded with small limits in ``tests/test_time_limits_end_to_end.py``:
the whole bank runs under the default notebook limit.)
"""

from misbehaving import _ATTENTION_ALONE

IGNORES_INTERRUPT = ("import signal, time\n"
                     "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                     "time.sleep(3600)\n")

BANK = {
    # sleeps past the cell limit and ignores the interrupt: its kernel is killed after the
    # grace period and restarted, that exercise scores 0, the next one is still graded
    "ignores_interrupt": ({"stable_softmax": IGNORES_INTERRUPT,
                           "gained_dot_product_attention": _ATTENTION_ALONE}, {},
                          {"test_stable_softmax": 0, "test_gained_dot_product_attention": 2}),
}
