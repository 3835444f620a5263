"""Trusted verdicts: hidden tests run in the grader's process and call into the kernel.

A test cell's hidden block names the hidden test (``grade_x(x)`` after an import from
``hidden_tests``). While grading, the block is read from the *gradebook's* copy of the
cell (a submission cannot change which test runs), it is never sent to the kernel, and
the hidden test runs here, in the process that drives nbgrader. It reaches the student's
definitions through ``kernel_protocol.grader_side`` proxies over a :class:`KernelChannel`: each
call sends the fixed probe (``kernel_protocol.in_kernel``, no test inside) and fresh inputs to
the kernel and parses its plain-data answer strictly. The cell's points follow the
verdict alone: errors the student's own code raised in the cell stay visible as text,
and the verdict is recorded as the cell's only error output when it fails.
"""

from __future__ import annotations

import ast
import base64
import binascii
import importlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_output

from helpers.checks.framework import CheckFailed
from hidden_tests.common import set_salt
from kernel_protocol import in_kernel
from kernel_protocol.grader_side import (
    MAX_REPLY_BYTES,
    ProtocolError,
    StudentError,
    StudentFunction,
    parse_reply,
)
from pipeline.markers import hidden_blocks

PROBE_SOURCE = Path(in_kernel.__file__).read_text()
VERDICT_ERRORS = ("CheckFailed", "NotImplementedError", "HiddenTestError")
# The kernel's answer comes back as the repr of a base64 string: nothing but these
# characters between quotes, checked before anything is decoded or parsed.
REPLY_TEXT = re.compile(r"'([A-Za-z0-9+/=]*)'")
MAX_REPLY_TEXT = 4 * MAX_REPLY_BYTES // 3 + 8
MAX_CELL_REPLIES = 256 * 2**20  # bytes of answers one test cell's hidden tests accept


@dataclass(frozen=True)
class HiddenCall:
    """``module.function(argument)``: one hidden test and the student's name it checks."""

    module: str
    function: str
    argument: str

    def run(self, channel) -> None:
        grade = getattr(importlib.import_module(self.module), self.function)
        grade(StudentFunction(channel, self.argument))


def hidden_calls(source: str) -> list[HiddenCall]:
    """The hidden tests a test cell's source calls (from its hidden block), in order.

    Only ``from hidden_tests.<module> import grade_<x>`` and calls ``grade_<x>(<name>)``
    are understood; anything else in the block is a ValueError, so a malformed solution
    is caught when the release is generated, not while grading.
    """
    calls, imported = [], {}
    for block in hidden_blocks(source):
        body = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("###"))
        for statement in ast.parse(body).body:
            if (isinstance(statement, ast.ImportFrom) and statement.module
                    and statement.module.startswith("hidden_tests.")):
                imported.update({alias.asname or alias.name: (statement.module, alias.name)
                                 for alias in statement.names})
            elif (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
                  and isinstance(statement.value.func, ast.Name)
                  and statement.value.func.id in imported and len(statement.value.args) == 1
                  and isinstance(statement.value.args[0], ast.Name)
                  and not statement.value.keywords):
                module, function = imported[statement.value.func.id]
                calls.append(HiddenCall(module, function, statement.value.args[0].id))
            else:
                raise ValueError(f"unexpected statement in a hidden-test block: "
                                 f"{ast.unparse(statement)!r}")
    return calls


class KernelChannel:
    """Asks the probe in a running kernel, through the executing nbclient client.

    The answer is read as data, never evaluated: at most ``MAX_REPLY_TEXT`` characters of
    base64 between quotes, decoded and parsed with the bounds of ``parse_reply``; all the
    answers of one test cell together at most ``MAX_CELL_REPLIES`` bytes.
    """

    def __init__(self, client, deadline: float) -> None:
        self.client, self.deadline = client, deadline
        self.received = 0

    def ask(self, request: dict) -> dict:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the hidden tests ran out of time calling your code")
        code = ("import base64 as _course_base64\n"
                "_course_probe = {}\n"
                f"exec(compile({PROBE_SOURCE!r}, '<grader probe>', 'exec'), _course_probe)\n"
                f"_course_probe = _course_base64.b64encode(_course_probe['serve']("
                f"{json.dumps(request)!r}, globals()).encode()).decode()")
        msg_id = self.client.kc.execute(code, silent=True, store_history=False,
                                        user_expressions={"reply": "_course_probe"})
        reply = self.client.wait_for_reply(msg_id)
        if reply is None:  # nbclient interrupted the kernel after its timeout
            raise TimeoutError(f"your code did not return within {self.client.timeout} s")
        content = reply.get("content", {})
        if content.get("status") != "ok":
            raise ProtocolError("the kernel refused to run the grader's call "
                                f"({str(content.get('ename', 'no reason given'))[:80]})")
        return parse_reply(self.answer_text(content))

    def answer_text(self, content: dict) -> str:
        """The probe's JSON out of an execute reply, bounded before anything is decoded."""
        answer = content.get("user_expressions", {}).get("reply", {})
        text = answer.get("data", {}).get("text/plain") if isinstance(answer, dict) and \
            answer.get("status") == "ok" and isinstance(answer.get("data"), dict) else None
        if not isinstance(text, str):
            raise ProtocolError("the kernel's answer is missing")
        if len(text) > MAX_REPLY_TEXT:
            raise ProtocolError(f"the kernel's answer is larger than "
                                f"{MAX_REPLY_BYTES // 2**20} MB")
        self.received += len(text)
        if self.received > MAX_CELL_REPLIES:
            raise ProtocolError(f"the kernel's answers to this cell's hidden tests exceed "
                                f"{MAX_CELL_REPLIES // 2**20} MB in total")
        match = REPLY_TEXT.fullmatch(text)
        if match is None:
            raise ProtocolError("the kernel's answer is not the probe's plain data")
        try:
            return base64.b64decode(match.group(1), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ProtocolError("the kernel's answer is not the probe's plain data") from None


def verdict(calls: list[HiddenCall], channel) -> tuple[str, str] | None:
    """Run the hidden tests; None when they pass, else (error name, message)."""
    set_salt(secrets.randbits(62))
    try:
        for call in calls:
            call.run(channel)
    except CheckFailed as failure:
        return "CheckFailed", str(failure)
    except NotImplementedError:
        return "NotImplementedError", "not answered yet: the function still raises NotImplementedError"
    except (StudentError, ProtocolError, TimeoutError) as error:
        return "HiddenTestError", f"the hidden tests could not use your answer: {error}"
    except Exception as error:  # noqa: BLE001 - a hidden test's own crash costs the point only
        return "HiddenTestError", f"the hidden tests stopped with {type(error).__name__}: {error}"
    finally:
        set_salt(0)
    return None


def record(cell: NotebookNode, outcome: tuple[str, str] | None) -> None:
    """Make the verdict the only output nbgrader scores: the student's own errors and
    stderr become text, and a value the cell displayed (nbgrader would read a number as
    partial credit, anything else as full marks) becomes a plain display."""
    outputs = []
    for output in cell.outputs:
        if output.output_type == "error":
            output = new_output("stream", name="stdout",
                                text=f"[your code raised] {output.ename}: {output.evalue}\n")
        elif output.output_type == "stream" and output.get("name") != "stdout":
            output = new_output("stream", name="stdout", text=output.get("text", ""))
        elif output.output_type == "execute_result":
            output = new_output("display_data", data=output.get("data", {}),
                                metadata=output.get("metadata", {}))
        outputs.append(output)
    if outcome is None:
        outputs.append(new_output("stream", name="stdout", text="Hidden tests: passed.\n"))
    else:
        ename, message = outcome
        outputs.append(new_output("error", ename=ename, evalue=message,
                                  traceback=[f"{ename}: {message}"]))
    cell.outputs = outputs
