"""nbgrader preprocessors of grading and feedback (see nbgrader_config.py): verdicts of the
hidden tests in sandboxed kernels, stderr that is not failure, hidden tests hidden."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from queue import Empty

from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import DeduplicateIds, Execute, NbGraderPreprocessor
from traitlets import Integer

from pipeline.grading import verdicts
from pipeline.kernels.kernel_manager import SandboxedKernelManager
from pipeline.markers import has_hidden_block, without_hidden_blocks

ANSI = re.compile(r"\x1b\[[0-9;]*m")
MAX_CELL_OUTPUT = 4 * 2**20  # characters of output one cell may leave in the graded notebook

class StderrIsNotFailure(NbGraderPreprocessor):
    """Keep stderr (PyTorch warnings, progress bars) visible without zeroing a test cell.

    nbgrader scores a test cell 0 on *any* stderr output. Failing checks in this course
    raise, so stderr never signals a failure: it is moved to stdout with a marker.
    """

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        if cell.cell_type == "code":
            for output in cell.outputs:
                if output.output_type == "stream" and output.name == "stderr":
                    output.name = "stdout"
                    output.text = "".join(f"[stderr] {line}\n" for line in
                                          output.text.splitlines())
        return cell, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback shows each check's name, points and message, never hidden-test source.

    Removes the hidden block from test cells and reduces tracebacks to the error's
    name and message (a traceback would quote the hidden tests' code).
    """

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not nbgrader.get("grade"):
            return cell, resources
        if has_hidden_block(cell.source):
            cell.source = without_hidden_blocks(
                cell.source, "# (hidden tests ran here; their code is not shown)\n").rstrip()
        for output in cell.outputs:
            if output.output_type == "error":
                output.traceback = [f"{output.ename}: {ANSI.sub('', output.evalue)}"]
        return cell, resources


class DeduplicateGradeIds(DeduplicateIds):
    """nbgrader's DeduplicateIds, minus the crash: the last copy of a graded cell counts.

    nbgrader empties the earlier copies' ``nbgrader`` metadata; with
    ``OverwriteCells.add_missing_cells`` that empty dict makes autograde fail with
    ``KeyError: 'grade_id'``, costing the student every point. The earlier copies
    become plain cells instead: they still run, they are not graded.
    """

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and grade_id in self.grade_ids:
            self.log.warning("Cell with id '%s' exists multiple times; grading the last",
                             grade_id)
            del cell.metadata["nbgrader"]
            return cell, resources
        return super().preprocess_cell(cell, resources, index)


class ResilientExecute(Execute):
    """nbgrader's Execute with trusted verdicts, a throwaway working folder, time limits of
    its own and survival.

    - Hidden tests never reach the kernel: a test cell runs without its hidden block,
      then the hidden tests named in the *gradebook's* copy of the cell run here and
      call the student's definitions in the kernel (``pipeline.grading.verdicts``); the verdict
      alone decides the cell's points.
    - The kernel starts in a fresh, empty folder that is deleted afterwards, never in
      the folder nbgrader reads and writes (``autograded/<student>/<id>/``).
    - On a dead kernel (``os._exit``, a segfault, the memory limit) the cell gets an
      error output, the kernel restarts, the cells that ran cleanly before are replayed
      silently, and execution goes on with the next cell.
    - Each cell (and each test cell's hidden tests) may run ``timeout`` seconds; then the
      kernel is interrupted, and one that has not stopped ``interrupt_grace`` seconds
      later (it ignores SIGINT) is killed and restarted as above: that exercise fails,
      the rest is graded.
    - The notebook may run ``notebook_timeout`` seconds in all, from its first cell: a
      cell still running then is stopped as above, the cells after it are not run, and
      each graded cell among them fails with a plain message. So a notebook of many
      cells that each stay under the cell limit costs its own time, never another
      notebook's: it is still recorded, and gets its feedback.

    Kernels start sandboxed (``SandboxedKernelManager``).
    """

    notebook_timeout = Integer(900, allow_none=True, help=(
        "seconds all the cells of one notebook (and its hidden tests) may run, from the "
        "first cell; the cells after that are not run and their exercises fail "
        "(None or 0: no limit)")).tag(config=True)
    interrupt_grace = Integer(10, help=(
        "seconds a cell or a hidden test has to stop once interrupted at its time limit; "
        "then the kernel is killed and restarted")).tag(config=True)
    shell_timeout_interval = Integer(1, help=(
        "seconds between checks of a kernel that has not answered yet (nbclient's default "
        "of 5 makes every limit up to 5 s late)")).tag(config=True)

    _deadline: float | None = None  # the notebook's, set when its first cell runs
    _call_deadline: float | None = None  # a test cell's hidden tests'
    _timed_out = False  # whether a limit interrupted the kernel since the last cell began

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(*args, **kwargs)
        self._iopub_timeout = self.iopub_timeout  # (a timeout lends it interrupt_grace)

    def preprocess(self, nb: NotebookNode, resources: dict | None = None, km=None):
        resources = resources if resources is not None else {}
        self._hidden = _hidden_tests_from_gradebook(resources)
        self._ran_clean: set[int] = set()
        self._output_used: dict[int, int] = {}
        self._output_cut: set[int] = set()
        self._deadline = self._call_deadline = None
        # The sandboxed kernels' private homes and working folder live here and go when the
        # notebook is done.
        parent = os.environ.get("COURSE_KERNEL_HOMES")
        metadata = resources.setdefault("metadata", {})
        path = metadata.get("path")
        with tempfile.TemporaryDirectory(prefix="kernel-homes-", dir=parent,
                                         ignore_cleanup_errors=True) as homes:
            os.environ["COURSE_KERNEL_HOMES"] = homes
            metadata["path"] = tempfile.mkdtemp(prefix="work-", dir=homes)
            try:
                return super().preprocess(nb, resources, km)
            finally:
                metadata["path"] = path
                if parent is None:
                    os.environ.pop("COURSE_KERNEL_HOMES", None)
                else:
                    os.environ["COURSE_KERNEL_HOMES"] = parent

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        calls = self._hidden.get(grade_id) if cell.cell_type == "code" else None
        if self._deadline is None and self.notebook_timeout:
            self._deadline = time.monotonic() + self.notebook_timeout
        if cell.cell_type == "code" and self._out_of_time():
            self._not_run(cell, calls is not None)
            return cell, self.resources
        source = cell.source
        if calls is not None:  # the kernel never sees a hidden block
            cell.source = without_hidden_blocks(source)
        try:
            self._execute(cell, resources, index)
        finally:
            cell.source = source
        if calls is not None:
            outcome = self._verdict(calls, index) if not self._out_of_time() else (
                "NotebookTimeout", self._over_message("its hidden tests were not run"))
            verdicts.record(cell, outcome)
        return cell, self.resources

    def _verdict(self, calls: list[verdicts.HiddenCall], index: int) -> tuple[str, str] | None:
        """Run a test cell's hidden tests, within the cell limit and the notebook's; a
        kernel that died or will not stop is restarted (with the cells before replayed)."""
        self._call_deadline = time.monotonic() + (self.timeout or 120)
        self._timed_out = False
        try:
            deadline = min(d for d in (self._call_deadline, self._deadline) if d is not None)
            outcome = verdicts.verdict(calls, verdicts.KernelChannel(self, deadline))
        finally:
            self._call_deadline = None
            self.iopub_timeout = self._iopub_timeout
        if not run_sync(self.km.is_alive)():
            self.log.warning("Kernel died in the hidden tests of cell %d; restarting", index)
            self._restart_and_replay(index + 1)
        elif self._timed_out and not self._responsive():
            self.log.warning("Kernel did not stop after the hidden tests of cell %d timed "
                             "out; restarting", index)
            self._restart_and_replay(index + 1)
        if outcome is not None and self._out_of_time():
            outcome = ("NotebookTimeout", self._over_message(f"the hidden tests stopped: "
                                                             f"{outcome[1]}"))
        return outcome

    def _out_of_time(self) -> bool:
        """Whether the notebook has used up its time (less than a second left)."""
        return self._deadline is not None and self._deadline - time.monotonic() < 1

    def _over_message(self, what: str) -> str:
        return (f"the notebook used up its time limit ({self.notebook_timeout} s for all its "
                f"cells); {what}")

    def _not_run(self, cell: NotebookNode, has_hidden_tests: bool) -> None:
        """A code cell after the notebook's time was up: not run; a graded one fails."""
        message = self._over_message("this cell was not run")
        if has_hidden_tests:
            verdicts.record(cell, ("NotebookTimeout", message))
        elif cell.metadata.get("nbgrader", {}).get("grade"):
            cell.outputs.append(new_output("error", ename="NotebookTimeout", evalue=message,
                                           traceback=[f"NotebookTimeout: {message}"]))
        elif cell.source.strip():
            cell.outputs.append(new_output("stream", name="stdout", text=f"[{message}]\n"))

    def _get_timeout(self, cell: NotebookNode | None) -> int | None:
        """nbclient's limit for a cell or a reply, cut to what the notebook (and a test
        cell's hidden tests) have left."""
        timeout = super()._get_timeout(cell)
        deadlines = [d for d in (self._deadline, self._call_deadline) if d is not None]
        if not deadlines:
            return timeout
        left = max(1, math.ceil(min(deadlines) - time.monotonic()))
        return left if timeout is None else min(timeout, left)

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None):
        """nbclient interrupts the kernel here; the error says which limit it was, and
        nbclient then waits ``interrupt_grace`` seconds for the kernel to stop."""
        self._timed_out = True
        self.iopub_timeout = self.interrupt_grace
        if self._out_of_time():
            message = self._over_message("this cell was stopped, the cells after it were "
                                         "not run")
            self.error_on_timeout = {"ename": "NotebookTimeout", "evalue": message,
                                     "traceback": [f"NotebookTimeout: {message}"]}
        else:
            message = f"this cell ran longer than {timeout} s and was stopped"
            self.error_on_timeout = {"ename": "CellTimeoutError", "evalue": message,
                                     "traceback": [f"CellTimeoutError: {message}"]}
        return await super()._async_handle_timeout(timeout, cell)

    def _responsive(self) -> bool:
        """Whether the kernel answers within ``interrupt_grace`` seconds (one busy with a
        call it was interrupted in, ignoring SIGINT, does not)."""
        msg_id = self.kc.kernel_info()
        deadline = time.monotonic() + self.interrupt_grace
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = run_sync(self.kc.shell_channel.get_msg)(timeout=left)
            except Empty:
                return False
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return True
        return False

    def output(self, outs, msg, display_id, cell_index):
        """nbclient's output handling, with a budget per cell: a submission that prints or
        displays without end fills the grader's memory no further than this."""
        used = self._output_used.get(cell_index, 0) + len(json.dumps(msg.get("content", {}),
                                                                      default=str))
        self._output_used[cell_index] = used
        if used <= MAX_CELL_OUTPUT:
            return super().output(outs, msg, display_id, cell_index)
        if cell_index not in self._output_cut:
            self._output_cut.add(cell_index)
            outs.append(new_output("stream", name="stdout", text=(
                f"[output cut: this cell printed more than {MAX_CELL_OUTPUT // 2**20} MB]\n")))
        return None

    def _execute(self, cell: NotebookNode, resources: dict, index: int) -> None:
        self._timed_out = False
        try:
            super().preprocess_cell(cell, resources, index)
            if cell.cell_type == "code" and not any(
                    o.output_type == "error" for o in cell.get("outputs", [])):
                self._ran_clean.add(index)
        except DeadKernelError:
            self.log.warning("Kernel died in cell %d; restarting and continuing", index)
            cell.outputs.append(new_output(
                "error", ename="KernelDied",
                evalue="the kernel stopped while running this cell (a crash, os._exit, or "
                       "running out of memory); the cells after it were still graded",
                traceback=["KernelDied: the kernel stopped while running this cell"]))
            self._restart_and_replay(index)
        except CellTimeoutError:  # still busy after the interrupt's grace (or its output)
            self.log.warning("Kernel did not finish cell %d when asked; restarting", index)
            if self._out_of_time():
                ename, message = "NotebookTimeout", self._over_message(
                    "this cell was stopped, the cells after it were not run")
            else:
                ename, message = "CellTimeoutError", (
                    f"this cell ran past its time limit ({self.timeout} s) and did not stop "
                    f"when interrupted" if self._timed_out else
                    "the kernel did not finish sending this cell's output in time")
                message += "; the kernel was restarted and the cells after it were still graded"
            cell.outputs.append(new_output("error", ename=ename, evalue=message,
                                           traceback=[f"{ename}: {message}"]))
            self._restart_and_replay(index)
        finally:
            self.iopub_timeout = self._iopub_timeout

    def _restart_and_replay(self, index: int) -> None:
        """Kill and restart the kernel, then run again, silently, the cells before
        ``index`` that ran cleanly, as far as the notebook's time allows."""
        run_sync(self.km.restart_kernel)(now=True)
        run_sync(self.kc.wait_for_ready)(timeout=self.startup_timeout)
        for earlier in sorted(i for i in self._ran_clean if i < index):
            if self._out_of_time():
                return
            # silent: no outputs, nothing recorded in the notebook; never a hidden block
            source = without_hidden_blocks(self.nb.cells[earlier].source)
            msg_id = self.kc.execute(source, silent=True, store_history=False)
            try:
                replied = self.wait_for_reply(msg_id) is not None
            except DeadKernelError:
                replied = False
            if not replied:  # a replayed cell killing the kernel or hanging: start clean
                run_sync(self.km.restart_kernel)(now=True)
                run_sync(self.kc.wait_for_ready)(timeout=self.startup_timeout)
                return


def _hidden_tests_from_gradebook(resources: dict) -> dict[str, list[verdicts.HiddenCall]]:
    """grade_id -> the hidden tests of that test cell, read from the gradebook's copy."""
    info = resources.get("nbgrader", {})
    if not {"db_url", "assignment", "notebook"} <= set(info):
        return {}
    from nbgrader.api import Gradebook  # imported late: plain executions never need it

    hidden = {}
    with Gradebook(info["db_url"]) as gradebook:
        notebook = gradebook.find_notebook(info["notebook"], info["assignment"])
        for cell in notebook.source_cells:
            if has_hidden_block(cell.source):
                hidden[cell.name] = verdicts.hidden_calls(cell.source)
    return hidden
