"""Files from submissions and kernels are untrusted; results are replaced only when new ones
exist; tampered nbgrader metadata is repaired from the gradebook. No kernel, no nbgrader run."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import nbformat
import pytest
from nbconvert.exporters import NotebookExporter
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbgrader.api import Gradebook
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearOutput,
    ComputeChecksums,
    OverwriteCells,
    SaveCells,
)
from traitlets.config import Config

from pipeline.classroom.submissions import Submission, find_submissions
from pipeline.grading import autograde, nbgrader_batch
from pipeline.grading.metadata_repair import NOTE_TITLE, RepairMetadata
from pipeline.grading.preprocessors import DeduplicateGradeIds
from pipeline.untrusted_files import (
    UntrustedFileError,
    copy_untrusted,
    purge_folder,
    read_untrusted,
    write_new_file,
)

IDS = ["01_a", "02_b"]
_REAL_COLLECT = autograde._collect


def _notebook_bytes(text: str = "x") -> bytes:
    return json.dumps(new_notebook(cells=[new_code_cell(text)])).encode()


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return server


def _within(seconds: float, function, *args, **kwargs):
    """Run ``function``; fail (instead of hanging the test run) if it blocks, e.g. on a FIFO."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ---- finding submissions ------------------------------------------------------------------

def test_finder_refuses_links_special_files_and_huge_notebooks(tmp_path):
    root = tmp_path / "class"
    secret = tmp_path / "secret.ipynb"
    secret.write_bytes(_notebook_bytes("the solution"))

    def folder(student, assignment="01_a"):
        path = root / student / assignment
        path.mkdir(parents=True)
        return path / f"{assignment}.ipynb"

    honest = folder("honest")
    honest.write_bytes(_notebook_bytes())
    for name, target in {"leak.db": secret, "solutions": tmp_path}.items():  # next to it: fine
        (honest.parent / name).symlink_to(target)
    _fifo(honest.parent / "pipe")
    (honest.parent / "data.csv").write_text("1,2\n")
    folder("linked").symlink_to(secret)
    _fifo(folder("fifo"))
    server = _socket(folder("sock"))
    huge = folder("huge")
    with huge.open("wb") as handle:
        handle.truncate(2**31)  # sparse: 2 GiB on paper, nothing on disk
    folder("folder").mkdir()
    folder("small_cap", "02_b").write_bytes(b"x" * 5000)
    locked = folder("locked").parent
    locked.chmod(0)
    (root / "link_student").symlink_to(root / "honest")
    (root / "link_assignment").mkdir()
    (root / "link_assignment" / "01_a").symlink_to(root / "honest" / "01_a")
    try:
        subs, problems = _within(10, find_submissions, root, IDS)
        small_cap = _within(10, find_submissions, root, IDS, max_bytes=4096)[0]
    finally:
        server.close()
        locked.chmod(0o755)
    found = {s.student: s for s in subs}
    assert set(found) == {"honest", "linked", "fifo", "sock", "huge", "folder", "small_cap"}
    assert found["honest"].refused == "" and found["small_cap"].refused == ""
    assert "symbolic link" in found["linked"].refused
    assert "named pipe" in found["fifo"].refused
    assert "socket" in found["sock"].refused
    assert "over the 64.0 MiB limit" in found["huge"].refused
    assert "folder" in found["folder"].refused
    assert "over the" in {s.student: s for s in small_cap}["small_cap"].refused
    text = "\n".join(problems)
    for name in ("linked", "fifo", "sock", "huge", "link_student", "link_assignment"):
        assert name in text, f"{name} is not reported"
    assert "honest" not in text  # links and FIFOs next to a notebook are not its problem
    if os.geteuid() != 0:  # (root reads anything)
        assert "locked/01_a: cannot be read (Permission denied)" in text


# ---- reading and writing untrusted files --------------------------------------------------

def test_untrusted_files_are_read_without_following_links_or_opening_special_files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("the gradebook")
    good = tmp_path / "base" / "ana" / "nb.ipynb"
    good.parent.mkdir(parents=True)
    good.write_bytes(b"{}")
    assert read_untrusted(good, base=tmp_path / "base") == b"{}"
    (good.parent / "link").symlink_to(secret)
    (tmp_path / "base" / "linked_folder").symlink_to(good.parent)
    _fifo(good.parent / "pipe")
    (good.parent / "big").write_bytes(b"x" * 101)
    refused = {
        good.parent / "link": "symbolic link",
        good.parent / "pipe": "named pipe",
        good.parent / "big": "over the 100 bytes limit",
        good.parent: "folder",
        tmp_path / "base" / "linked_folder" / "nb.ipynb": "not a folder",
    }
    for path, why in refused.items():
        with pytest.raises(UntrustedFileError, match=why):
            _within(10, read_untrusted, path, 100, base=tmp_path / "base")
    target = tmp_path / "copy.ipynb"
    with pytest.raises(UntrustedFileError):
        _within(10, copy_untrusted, good.parent / "link", target)
    assert not target.exists()


def test_new_files_replace_links_and_special_files_without_writing_through_them(tmp_path):
    victim = tmp_path / "victim.ipynb"
    victim.write_text("another student's notebook")
    folder = tmp_path / "graded"
    folder.mkdir()
    (folder / "nb.ipynb").symlink_to(victim)
    _fifo(folder / "nb.html")
    (folder / "nb.txt").mkdir()
    (folder / "nb.txt" / "inner").symlink_to(victim)
    for name in ("nb.ipynb", "nb.html", "nb.txt"):
        _within(10, write_new_file, folder / name, b"graded")
        assert not (folder / name).is_symlink() and (folder / name).read_bytes() == b"graded"
    assert victim.read_text() == "another student's notebook"


def test_purge_keeps_only_the_named_regular_files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("secret")
    folder = tmp_path / "kernel"
    (folder / "nested").mkdir(parents=True)
    (folder / "nb.ipynb").write_text("{}")
    (folder / "nb.html").symlink_to(secret)
    (folder / "nested" / "leak").symlink_to(secret)
    (folder / "source").symlink_to(tmp_path)
    _fifo(folder / "pipe")
    server = _socket(folder / "sock")
    with (folder / "big.bin").open("wb") as handle:
        handle.truncate(2**30)
    (folder / "x\nREFUSED bob: \x1b[2J").write_text("a forged log line")
    try:
        removed = purge_folder(folder, {"nb.ipynb", "nb.html"})
    finally:
        server.close()
    assert sorted(os.listdir(folder)) == ["nb.ipynb"]
    assert secret.read_text() == "secret" and tmp_path.is_dir()
    text = " ".join(removed)
    for words in ("'nb.html' (a symbolic link)", "'nested' (a folder)", "'pipe' (a named pipe",
                  "'sock' (a socket)", "'big.bin' (a file, 1024.0 MiB)"):
        assert words in text
    assert not any(c in text for c in "\n\x1b")  # a name cannot forge a log line


def test_nbgrader_in_a_batch_writes_no_file_through_a_link(tmp_path):
    """The batch's nbgrader writes graded notebooks as new files and purges kernel folders."""
    from nbgrader.converters import Autograde, GenerateFeedback, base

    saved = (base.FilesWriter, base.BaseConverter.set_permissions,
             GenerateFeedback.init_assignment)
    try:
        nbgrader_batch.harden_nbgrader()
        victim = tmp_path / "victim.ipynb"
        victim.write_text("another student's notebook")
        dest = tmp_path / "autograded" / "ana" / "01_a"
        dest.mkdir(parents=True)
        (dest / "01_a.ipynb").symlink_to(victim)
        (dest / "gradebook.db").symlink_to(victim)
        writer = base.FilesWriter()
        writer.build_directory = str(dest)
        writer.write("graded", {"output_extension": ".ipynb"}, notebook_name="01_a")
        assert victim.read_text() == "another student's notebook"
        assert (dest / "01_a.ipynb").read_text() == "graded"

        class Converter:
            notebooks = ["submitted/ana/01_a/01_a.ipynb"]
            permissions = 444
            exporter = NotebookExporter()

            def _format_dest(self, assignment_id, student_id):
                return str(dest)

        Autograde.set_permissions(Converter(), "01_a", "ana")
        assert sorted(os.listdir(dest)) == ["01_a.ipynb"] and victim.stat().st_mode & 0o200
        assert GenerateFeedback.init_assignment(object(), "01_a", "ana") is None  # copies nothing
    finally:
        (base.FilesWriter, base.BaseConverter.set_permissions,
         GenerateFeedback.init_assignment) = saved


# ---- copying out of a scratch course ------------------------------------------------------

def test_copy_out_takes_only_the_graded_notebook_and_its_feedback_page(tmp_path):
    scratch = tmp_path / "scratch"
    secret = scratch / "gradebook.db"
    graded = scratch / "autograded" / "ana" / "01_a"
    page = scratch / "feedback" / "ana" / "01_a"
    for folder in (graded, page):
        folder.mkdir(parents=True)
    secret.write_bytes(b"SQLite format 3\0")
    (graded / "01_a.ipynb").write_text("graded notebook")
    (page / "01_a.html").write_text("<p>feedback</p>")
    (graded / "gradebook.db").symlink_to("../../../gradebook.db")
    (page / "01_a.ipynb").symlink_to(secret)
    (graded / "source").symlink_to(scratch)
    _fifo(graded / "pipe")
    with (graded / "big.bin").open("wb") as handle:
        handle.truncate(2**30)
    out = {kind: tmp_path / "run" / kind for kind in ("results", "autograded", "feedback")}
    stale = out["feedback"] / "ana" / "01_a" / "old.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("last run")
    sub = Submission("ana", "01_a", Path("unused"))
    refused = _within(10, autograde.copy_out, scratch, sub, out)
    assert sorted(os.listdir(out["autograded"] / "ana" / "01_a")) == ["01_a.ipynb"]
    assert sorted(os.listdir(out["feedback"] / "ana" / "01_a")) == ["01_a.html"]
    assert (out["autograded"] / "ana" / "01_a" / "01_a.ipynb").read_text() == "graded notebook"
    text = "\n".join(refused)
    for name in ("autograded/ana/01_a/'gradebook.db': a symbolic link",
                 "autograded/ana/01_a/'source': a symbolic link",
                 "autograded/ana/01_a/'pipe': a named pipe",
                 "autograded/ana/01_a/'big.bin': a file",
                 "feedback/ana/01_a/'01_a.ipynb': a symbolic link"):
        assert name in text, text
    assert all(line.startswith("REFUSED ") for line in refused)

    (page / "01_a.html").unlink()
    (page / "01_a.html").symlink_to(secret)
    (graded / "01_a.ipynb").write_text("x" * 200)
    refused = autograde.copy_out(scratch, sub, out, max_bytes=100)
    assert not (out["feedback"] / "ana" / "01_a" / "01_a.html").exists()
    assert not (out["autograded"] / "ana" / "01_a" / "01_a.ipynb").exists()
    text = "\n".join(refused)
    assert "feedback/ana/01_a/01_a.html:" in text and "symbolic link" in text
    assert "autograded/ana/01_a/01_a.ipynb:" in text and "over the 100 bytes limit" in text


# ---- batches that fail ---------------------------------------------------------------------

@pytest.fixture
def course(grading_course, tmp_path, monkeypatch):
    """A course folder for the grading functions, with nbgrader's runs replaced by fakes."""
    grader = grading_course
    monkeypatch.setattr(autograde, "ensure_release", lambda: None)
    monkeypatch.setattr(autograde, "assignment_ids", lambda: ["01_a"])
    monkeypatch.setattr(autograde, "finish", lambda results: None)
    klass = tmp_path / "class"
    for student in ("s0", "s1", "s2"):
        (klass / student / "01_a").mkdir(parents=True)
        (klass / student / "01_a" / "01_a.ipynb").write_bytes(_notebook_bytes(student))
    return grader, klass


def _subs(klass: Path) -> list[Submission]:
    return find_submissions(klass, ["01_a"])[0]


def _fake_nbgrader(runs: list, *, corrupt=lambda students: False, leave=lambda folder: None):
    """A stand-in for the batch's nbgrader: "grades" every submission in its scratch course."""
    def run(command, *, timeout, memory_limit, env):
        scratch = Path(command[3])
        students = sorted(p.name for p in (scratch / "submitted").iterdir())
        runs.append(students)
        for student in students:
            for kind, name in (("autograded", "01_a.ipynb"), ("feedback", "01_a.html")):
                folder = scratch / kind / student / "01_a"
                folder.mkdir(parents=True)
                text = f"{kind} of {student}"
                (folder / name).write_bytes(_notebook_bytes(text) if kind == "autograded"
                                            else text.encode())
                leave(folder)
        if corrupt(students):
            (scratch / "gradebook.db").write_bytes(b"this is not a database")
        return subprocess.CompletedProcess(command, 0, "", "")
    return run


def _graded(scratch, sub, max_bytes=None):
    if b"not a database" in (scratch / "gradebook.db").read_bytes():
        return _REAL_COLLECT(scratch, sub)  # the real thing: it raises
    result = autograde._result(sub, "graded")
    result["cells"] = [{"grade_id": "test_x", "kind": "auto", "score": 1, "max_score": 1,
                        "auto_score": 1, "needs_manual_grade": False, "message": ""}]
    return result


def test_a_corrupted_scratch_gradebook_costs_a_retry_never_the_class(course, monkeypatch):
    grader, klass = course
    runs = []
    monkeypatch.setattr(autograde, "_collect", _graded)
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader(runs, corrupt=lambda s: True))
    results = autograde.grade_batch(_subs(klass), timeout=10, memory_limit=None)
    assert runs == [["s0", "s1", "s2"], ["s0"], ["s1"], ["s2"]]
    for result in results:
        assert result["status"].startswith("grading failed (DatabaseError"), result
        assert "not a database" in result["status"]
    assert not list((grader / ".scratch").iterdir())

    runs.clear()  # a batch whose gradebook broke: its notebooks, graded alone, are fine
    monkeypatch.setattr(autograde, "run_limited",
                        _fake_nbgrader(runs, corrupt=lambda students: len(students) > 1))
    results = autograde.grade_batch(_subs(klass), timeout=10, memory_limit=None)
    assert runs == [["s0", "s1", "s2"], ["s0"], ["s1"], ["s2"]]
    assert [r["status"] for r in results] == ["graded"] * 3


def test_an_exception_while_collecting_one_result_costs_only_that_student(course, monkeypatch):
    grader, klass = course
    runs = []

    def collect(scratch, sub, max_bytes=None):
        if sub.student == "s1":
            raise RuntimeError("cannot read this one")
        return _graded(scratch, sub)

    monkeypatch.setattr(autograde, "_collect", collect)
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader(runs))
    results = autograde.grade_batch(_subs(klass), timeout=10, memory_limit=None)
    assert runs == [["s0", "s1", "s2"], ["s1"]]
    assert [r["status"] for r in results] == [
        "graded", "grading failed (RuntimeError: cannot read this one)", "graded"]
    assert json.loads((grader / "results" / "s1__01_a.json").read_text())["status"] \
        == results[1]["status"]


def test_refused_notebooks_get_a_result_saying_why_and_are_never_run(course, monkeypatch):
    grader, klass = course
    (klass / "s1" / "01_a" / "01_a.ipynb").unlink()
    (klass / "s1" / "01_a" / "01_a.ipynb").symlink_to(klass / "s0" / "01_a" / "01_a.ipynb")
    runs = []
    monkeypatch.setattr(autograde, "_collect", _graded)
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader(runs))
    subs = _subs(klass)
    results = autograde.grade_batch(subs, timeout=10, memory_limit=None)
    assert runs == [["s0", "s2"]]  # s1's link was neither copied nor graded alone
    assert results[1]["status"].startswith("not graded: ") and "symbolic link" in \
        results[1]["status"] and results[1]["cells"] == []
    only_refused = autograde.grade_batch([subs[1]], timeout=10, memory_limit=None)
    assert runs == [["s0", "s2"]] and only_refused[0]["status"] == results[1]["status"]


def test_leftovers_in_a_kernel_folder_are_logged_and_never_copied_out(course, monkeypatch,
                                                                      capsys):
    grader, klass = course
    secret = grader / "gradebook.db"

    def leave(folder):
        (folder / "leak").symlink_to(secret)

    monkeypatch.setattr(autograde, "_collect", _graded)
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader([], leave=leave))
    results = autograde.grade_batch(_subs(klass)[:1], timeout=10, memory_limit=None)
    assert os.listdir(grader / "autograded" / "s0" / "01_a") == ["01_a.ipynb"]
    assert os.listdir(grader / "feedback" / "s0" / "01_a") == ["01_a.html"]
    assert "REFUSED autograded/s0/01_a/'leak': a symbolic link" in results[0]["log"]
    assert "REFUSED autograded/s0/01_a/'leak'" in capsys.readouterr().err


# ---- replacing earlier results ------------------------------------------------------------

def _earlier_results(grader: Path) -> dict[Path, str]:
    """Results, graded notebooks and feedback of an earlier run, by path."""
    files = {grader / "results" / "s0__01_a.json": json.dumps({"old": True}),
             grader / "results" / "gone__01_a.json": json.dumps({"old": True}),
             grader / "autograded" / "s0" / "01_a" / "01_a.ipynb": "old notebook",
             grader / "feedback" / "s0" / "01_a" / "01_a.html": "old page",
             grader / "feedback" / "gone" / "01_a" / "01_a.html": "old page of a dropout"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


def test_a_run_that_crashes_midway_leaves_the_earlier_results_intact(course, monkeypatch):
    grader, klass = course
    earlier = _earlier_results(grader)
    runs = []
    fake = _fake_nbgrader(runs)

    def crashes_on_the_second_batch(command, **kwargs):
        if runs:
            raise KeyboardInterrupt  # the instructor pressed Ctrl-C, or the machine went down
        return fake(command, **kwargs)

    monkeypatch.setattr(autograde, "_collect", _graded)
    monkeypatch.setattr(autograde, "run_limited", crashes_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        autograde.main([str(klass), "--jobs", "1", "--batch-size", "1"])
    assert runs == [["s0"]]  # the first batch was graded, into the run's own folder
    for path, text in earlier.items():
        assert path.read_text() == text, path
    assert not (grader / "autograded" / "s1").exists()
    assert not list((grader / ".scratch").iterdir())  # the run's folder is gone too


def test_a_finished_run_replaces_the_earlier_results(course, monkeypatch):
    grader, klass = course
    earlier = _earlier_results(grader)
    monkeypatch.setattr(autograde, "_collect", _graded)
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader([]))
    assert autograde.main([str(klass), "--jobs", "2"]) == 0
    assert sorted(p.name for p in (grader / "results").iterdir()) == [
        "s0__01_a.json", "s1__01_a.json", "s2__01_a.json"]  # a full re-grade: results/ anew
    assert "autograded of s0" in (grader / "autograded" / "s0" / "01_a" / "01_a.ipynb").read_text()
    assert (grader / "feedback" / "s2" / "01_a" / "01_a.html").read_text() == "feedback of s2"
    gone = grader / "feedback" / "gone" / "01_a" / "01_a.html"
    assert gone.read_text() == earlier[gone]  # not in this class: left alone
    assert not list((grader / ".scratch").iterdir())


def test_a_shard_replaces_only_its_own_students(course, monkeypatch):
    grader, klass = course
    _earlier_results(grader)
    monkeypatch.setattr(autograde, "_collect", _graded)
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader([]))
    assert autograde.main([str(klass), "--jobs", "1", "--shard", "2/2"]) == 0  # s1 only
    names = sorted(p.name for p in (grader / "results").iterdir())
    assert names == ["gone__01_a.json", "s0__01_a.json", "s1__01_a.json"]
    assert json.loads((grader / "results" / "s0__01_a.json").read_text()) == {"old": True}
    assert json.loads((grader / "results" / "s1__01_a.json").read_text())["status"] == "graded"
    assert (grader / "feedback" / "s1" / "01_a" / "01_a.html").read_text() == "feedback of s1"
    (grader / "results" / "broken__01_a.json").write_text("{not json")
    (grader / "results" / "link__01_a.json").symlink_to(grader / "gradebook.db")
    merged = [r["student"] for r in autograde.read_results()]
    assert merged == ["s1"]  # the others are not results (an old run's dicts, garbage, a link)


def test_a_student_not_graded_this_time_loses_the_stale_feedback(course, monkeypatch):
    grader, klass = course
    _earlier_results(grader)
    monkeypatch.setattr(autograde, "_collect", lambda scratch, sub, max_bytes=None:
                        autograde._result(sub) if sub.student == "s0" else _graded(scratch, sub))
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader([]))
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    assert not (grader / "feedback" / "s0" / "01_a").exists()
    assert not (grader / "autograded" / "s0" / "01_a").exists()
    status = json.loads((grader / "results" / "s0__01_a.json").read_text())["status"]
    assert status == "not graded"


# ---- tampered nbgrader metadata -------------------------------------------------------------

def _meta(grade_id, grade=False, solution=False, locked=False, points=None):
    meta = {"grade_id": grade_id, "grade": grade, "solution": solution, "locked": locked,
            "schema_version": 3, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A one-exercise assignment recorded in a gradebook (as generate_assignment does):
    the released notebook, the nbgrader resources and config to sanitize a submission."""
    tmp_path = tmp_path_factory.mktemp("release")
    cells = [new_markdown_cell("# Title"),
             new_code_cell("def f():\n    raise NotImplementedError()",
                           metadata=_meta("f", solution=True)),
             new_code_cell("assert f() == 1", metadata=_meta("test_f", grade=True, locked=True,
                                                                   points=2)),
             new_markdown_cell("YOUR ANSWER HERE",
                               metadata=_meta("think", grade=True, solution=True, points=1))]
    for cell, cell_id in zip(cells, ["title", "f-cell", "test-f", "think-cell"], strict=True):
        cell["id"] = cell_id
    source = new_notebook(cells=cells)
    (tmp_path / "source" / "a").mkdir(parents=True)
    nbformat.write(source, tmp_path / "source" / "a" / "nb.ipynb")
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(db_url) as gb:
        gb.add_assignment("a")
    config = Config()
    config.CourseDirectory.root = str(tmp_path)
    config.OverwriteCells.add_missing_cells = True
    resources = {"nbgrader": {"db_url": db_url, "assignment": "a", "notebook": "nb",
                              "student": "s"}}
    exporter = NotebookExporter(config=config)
    for preprocessor in (ComputeChecksums, SaveCells):
        exporter.register_preprocessor(preprocessor, enabled=True)
    released, _ = exporter.from_notebook_node(source, resources=copy.deepcopy(resources))
    return nbformat.reads(released, as_version=4), resources, config


def _sanitize(notebook, resources, config, *, repair=True):
    """The course's sanitize step (without the kernelspec check) on ``notebook``."""
    exporter = NotebookExporter(config=config)
    for preprocessor in ([RepairMetadata] * repair + [ClearOutput, DeduplicateGradeIds,
                                                      OverwriteCells, CheckCellMetadata]):
        exporter.register_preprocessor(preprocessor, enabled=True)
    output, _ = exporter.from_notebook_node(copy.deepcopy(notebook),
                                            resources=copy.deepcopy(resources))
    return nbformat.reads(output, as_version=4)


def _graded_cells(notebook) -> dict[str, float]:
    return {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"]
            for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade")}


def _note(notebook) -> str:
    return notebook.cells[0].source if notebook.cells[0].source.startswith(NOTE_TITLE) else ""


def _cell(notebook, cell_id):
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def test_the_course_repairs_metadata_before_nbgrader_checks_it():
    config = nbgrader_batch.course_config(Path("/nowhere"))
    steps = list(config.Autograde.sanitize_preprocessors)
    names = [s if isinstance(s, str) else f"{s.__module__}.{s.__name__}" for s in steps]
    repair = names.index("pipeline.grading.metadata_repair.RepairMetadata")
    assert repair < min(i for i, n in enumerate(names) if n.endswith(
        ("OverwriteCells", "CheckCellMetadata", "DeduplicateGradeIds", "ClearOutput")))


def test_an_untampered_notebook_is_left_alone(release):
    notebook, resources, config = release
    graded = _sanitize(notebook, resources, config)
    assert not _note(graded)
    assert _graded_cells(graded) == {"test_f": 2, "think": 1}
    assert [c.get("id") for c in graded.cells] == ["title", "f-cell", "test-f", "think-cell"]


TAMPERING = {
    "answer cell claims to be graded": lambda nb: _cell(nb, "f-cell").metadata.nbgrader.update(
        grade=True, points=100),
    "test cell renamed": lambda nb: _cell(nb, "test-f").metadata.nbgrader.update(
        grade_id="mine", points=50),
    "test cell made an answer cell": lambda nb: (
        _cell(nb, "test-f").metadata.nbgrader.update(grade=False, locked=False, solution=True),
        setattr(_cell(nb, "test-f"), "source", "pass")),
    "unknown graded cells": lambda nb: nb.cells.extend([
        new_code_cell("print('bonus')", metadata=_meta("bonus", grade=True, locked=True,
                                                       points=100)),
        new_markdown_cell("essay", metadata=_meta("essay", grade=True, solution=True,
                                                  points=10))]),
    "garbage metadata": lambda nb: (
        _cell(nb, "f-cell").metadata.update(nbgrader="garbage"),
        _cell(nb, "test-f").metadata.nbgrader.update(schema_version=99, points="lots"),
        _cell(nb, "think-cell").metadata.nbgrader.pop("grade_id"),
        _cell(nb, "title").metadata.update(nbgrader=["a", "list"])),
    "metadata stripped": lambda nb: [_cell(nb, i).metadata.pop("nbgrader")
                                     for i in ("f-cell", "test-f", "think-cell")],
    "think answer turned into code with points": lambda nb: (
        _cell(nb, "think-cell").metadata.nbgrader.update(points=100),
        setattr(_cell(nb, "think-cell"), "cell_type", "code"),
        _cell(nb, "think-cell").update(outputs=[], execution_count=None)),
    "answer and test cells deleted": lambda nb: [nb.cells.remove(_cell(nb, i))
                                                 for i in ("f-cell", "test-f")],
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_tampered_metadata_is_graded_against_the_gradebook_with_a_note(release, tampering):
    notebook, resources, config = release
    tampered = copy.deepcopy(notebook)
    TAMPERING[tampering](tampered)
    graded = _sanitize(tampered, resources, config)  # nbgrader's checks pass
    assert _graded_cells(graded) == {"test_f": 2, "think": 1}
    test = next(c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                == "test_f")
    assert test.source.endswith("assert f() == 1") and test.metadata.nbgrader["locked"]
    answer = [c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "f"]
    assert len(answer) == 1 and answer[0].metadata.nbgrader["solution"]
    assert not answer[0].metadata.nbgrader["grade"]
    think = next(c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                 == "think")
    assert think.cell_type == "markdown"
    assert _note(graded), "the notebook does not say what was repaired"


def test_without_the_repair_nbgrader_fails_on_tampered_metadata(release):
    """Why the repair exists: nbgrader alone fails the whole notebook (0 of 0 points)."""
    notebook, resources, config = release
    for tampering in ("answer cell claims to be graded", "test cell renamed",
                      "unknown graded cells", "garbage metadata",
                      "answer and test cells deleted"):
        tampered = copy.deepcopy(notebook)
        TAMPERING[tampering](tampered)
        with pytest.raises(Exception):  # noqa: B017 - KeyError, MissingEntry, ValidationError...
            _sanitize(tampered, resources, config, repair=False)


def test_unknown_cells_are_kept_as_plain_cells_and_named_safely_in_the_note(release):
    notebook, resources, config = release
    tampered = copy.deepcopy(notebook)
    forged = new_code_cell("print('bonus')", metadata=_meta("x", grade=True, points=100))
    forged.metadata.nbgrader["grade_id"] = "<script>alert(1)</script>"
    forged["id"] = "bonus"
    tampered.cells.append(forged)
    graded = _sanitize(tampered, resources, config)
    kept = _cell(graded, "bonus")
    assert kept.source == "print('bonus')" and "nbgrader" not in kept.metadata
    note = _note(graded)
    assert "cell `bonus` claimed grade id `?script?alert?1???script?`" in note
    assert "<" not in note and "kept as an ordinary cell, never graded" in note


def test_a_renamed_test_cell_keeps_its_place_and_gets_its_points_back(release):
    notebook, resources, config = release
    tampered = copy.deepcopy(notebook)
    _cell(tampered, "test-f").metadata.nbgrader.update(grade_id="mine", points=50)
    graded = _sanitize(tampered, resources, config)
    assert [c.get("id") for c in graded.cells[1:]] == ["title", "f-cell", "test-f", "think-cell"]
    assert _cell(graded, "test-f").metadata.nbgrader["grade_id"] == "test_f"
    note = _note(graded)
    assert "cell `test-f` counts as the graded cell `test_f` (2 points)" in note
    assert "its grade id was `mine`" in note and "points were `50`" in note


def test_a_results_folder_linked_to_shared_storage_stays_a_link(course, monkeypatch, tmp_path):
    grader, klass = course
    shared = tmp_path / "shared-results"
    shared.mkdir()
    (shared / "old__01_a.json").write_text("{}")
    (grader / "results").symlink_to(shared)
    monkeypatch.setattr(autograde, "_collect", _graded)
    monkeypatch.setattr(autograde, "run_limited", _fake_nbgrader([]))
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    assert (grader / "results").is_symlink()
    assert sorted(p.name for p in shared.iterdir()) == [
        "s0__01_a.json", "s1__01_a.json", "s2__01_a.json"]
