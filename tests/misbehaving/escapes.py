"""Submissions that try to get out of their kernel's sandbox while they are graded.

Each answers both exercises of tutorial 01 correctly (so it must get its 4 points) and,
in the answer cell of ``gained_dot_product_attention``, tries one escape and prints
what it managed (lines starting with ``escape:``): processes that outlive grading,
messages to another student's kernel through /dev/shm or /tmp, a connection to the
grader's machine or to the internet, the grader's environment, 300 MB on its own stderr,
a disk filled up, a fork bomb. ``tests/test_sandbox_end_to_end.py`` checks that none of
them got anywhere.

Importing this module (as ``tests/conftest.py`` does, before anything is graded) opens a
TCP listener on the grader's machine and puts a secret in the grader's environment, so
that the attempts have something real to reach for.
"""

import os
import secrets
import socket

from misbehaving import ATTENTION, ATTENTION_ALONE, BOTH

TOKEN = secrets.token_hex(6)  # this test session's: markers of concurrent sessions differ
SECRET = f"grader-secret-{secrets.token_hex(16)}"
os.environ["COURSE_ESCAPE_SECRET"] = SECRET  # in the grader's environment, never a kernel's
LISTENER = socket.create_server(("127.0.0.1", 0))  # on the grader's machine
LISTENER.setblocking(False)
PORT = LISTENER.getsockname()[1]
SLEEP = f"600.{int(TOKEN, 16) % 10**6:06d}"  # the sleepers' argument: findable in /proc
MARK = f"course-escape-{TOKEN}"  # the files kernels leave for each other
FLOOD_BYTES = 300 * 2**20
BOMB = 600  # processes the fork bomb asks for (more than a kernel may have)


_SLEEPERS = f'''\
import os, subprocess
try:
    subprocess.Popen(["setsid", "sleep", "{SLEEP}1"], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    child = os.fork()
    if child == 0:  # a daemon: double fork, own session
        try:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "{SLEEP}2"])
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    print("escape: started two detached sleepers")
except Exception as error:
    print("escape: could not start sleepers", type(error).__name__)
'''


def _messages(mine: str, theirs: str) -> str:
    return f'''\
import os, pathlib
for folder in ("/dev/shm", "/tmp", "/var/tmp", os.path.expanduser("~"), "/"):
    try:
        pathlib.Path(folder, "{MARK}-{mine}").write_text("a message from {mine}")
        print("escape: left a message in", folder)
    except OSError as error:
        print("escape: could not write in", folder, type(error).__name__)
    try:
        print("escape: found", pathlib.Path(folder, "{MARK}-{theirs}").read_text())
    except OSError as error:
        print("escape: no message in", folder, type(error).__name__)
'''


_NETWORK = f'''\
import socket
for name, address in (("the grader's machine", ("127.0.0.1", {PORT})),
                      ("the internet", ("1.1.1.1", 53)), ("a name", ("example.com", 80))):
    try:
        socket.create_connection(address, timeout=5).close()
        print("escape: connected to", name)
    except OSError as error:
        print("escape: no connection to", name, type(error).__name__)
'''

_ENVIRONMENT = '''\
import os
print("escape: environment", " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            print("escape: environ of", pid, handle.read().replace(b"\\0", b" ").decode()[:4000])
    except OSError as error:
        print("escape: no environ of", pid, type(error).__name__)
'''

_FLOOD = f'''\
import os, sys
written = 0
try:
    chunk = b"E" * 2**20
    while written < {FLOOD_BYTES // 2}:
        written += os.write(2, chunk)
    while written < {FLOOD_BYTES}:
        sys.__stderr__.write("S" * 2**20)
        written += 2**20
    sys.__stderr__.flush()
except Exception as error:
    print("escape: the flood stopped", type(error).__name__)
print("escape: wrote", written, "bytes to its stderr")
'''

_DISK = '''\
written = 0
try:
    with open("big.bin", "wb") as handle:
        for _ in range(1024):  # 1 GiB
            handle.write(b"x" * 2**20)
            handle.flush()
            written += 1
except OSError as error:
    print("escape: the disk write stopped:", error.strerror)
print("escape: wrote", written, "MiB")
try:
    with open("sparse.bin", "wb") as handle:
        handle.truncate(2**30)
    print("escape: made a 1 GiB sparse file")
except OSError as error:
    print("escape: no sparse file:", error.strerror)
'''

_BOMB = f'''\
import subprocess
children = []
try:
    for _ in range({BOMB}):
        children.append(subprocess.Popen(["sleep", "{SLEEP}3"]))
except OSError as error:
    print("escape: the fork bomb stopped", type(error).__name__)
print("escape: started", len(children), "processes")
'''

BANK = {
    # processes in their own session (setsid, a double-forked daemon) to outlive grading
    "escape_sleepers": ({ATTENTION.name: _SLEEPERS + ATTENTION_ALONE}, {},
                        BOTH),
    # two students leave each other messages in /dev/shm, /tmp, /var/tmp, home and /
    "escape_messages_a": ({ATTENTION.name: _messages("a", "b")
                           + ATTENTION_ALONE}, {}, BOTH),
    "escape_messages_b": ({ATTENTION.name: _messages("b", "a")
                           + ATTENTION_ALONE}, {}, BOTH),
    # connections to a listener on the grader's machine, to the internet, to a DNS name
    "escape_network": ({ATTENTION.name: _NETWORK + ATTENTION_ALONE}, {},
                       BOTH),
    # prints its environment and every /proc/<pid>/environ it can read
    "escape_environment": ({ATTENTION.name: _ENVIRONMENT + ATTENTION_ALONE},
                           {}, BOTH),
    # 300 MB to its own stderr (the descriptor, and sys.__stderr__)
    "escape_stderr_flood": ({ATTENTION.name: _FLOOD + ATTENTION_ALONE}, {},
                            BOTH),
    # 1 GiB to the disk, and a 1 GiB sparse file
    "escape_disk": ({ATTENTION.name: _DISK + ATTENTION_ALONE}, {}, BOTH),
    # as many processes as it can, left running
    "escape_fork_bomb": ({ATTENTION.name: _BOMB + ATTENTION_ALONE}, {},
                         BOTH),
}

# Graded only where kernels can be sandboxed at all: unconfined, the fork bomb's and the
# sleepers' processes would outlive the test session by ten minutes.
SANDBOX_ONLY = set(BANK)
