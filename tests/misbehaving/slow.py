"""Submissions that spend their time: each costs its own exercises, never a classmate's.

(A notebook whose many cells each stay under the cell limit but together outlast the
notebook's own limit is graded with small limits in ``tests/test_time_limits_end_to_end.py``:
the whole bank runs under the default notebook limit.)
"""

from misbehaving import ATTENTION, ATTENTION_ALONE, ATTENTION_ONLY, SOFTMAX

IGNORES_INTERRUPT = ("import signal, time\n"
                     "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                     "time.sleep(3600)\n")

BANK = {
    # sleeps past the cell limit and ignores the interrupt: its kernel is killed after the
    # grace period and restarted, that exercise scores 0, the next one is still graded
    "ignores_interrupt": ({SOFTMAX.name: IGNORES_INTERRUPT,
                           ATTENTION.name: ATTENTION_ALONE}, {},
                          ATTENTION_ONLY),
}
