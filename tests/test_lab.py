"""`make lab` and `make formgrader` start, serve what their audience needs, and stop cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline import lab
from pipeline.paths import GRADER, NOTEBOOKS, ROOT

pytestmark = pytest.mark.slow
TOKEN = "course-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}{'&' if '?' in path else '?'}token={TOKEN}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def _start(target: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    args = f"--no-browser --port={port} --IdentityProvider.token={TOKEN}"
    process = subprocess.Popen(["make", "-s", target, f"LAB_ARGS={args}"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    for _ in range(120):
        try:
            if _get(port, "/api/status")[0] == 200:
                return process, port
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    pytest.fail(f"`make {target}` did not serve: {process.communicate()[0][-3000:]}")


def _stop(process: subprocess.Popen) -> str:
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode is not None
    return output


def test_make_lab_serves_the_student_notebooks_without_the_instructors_tools():
    process, port = _start("lab")
    try:
        status, listing = _get(port, "/api/contents")
        names = sorted(item["name"] for item in json.loads(listing)["content"])
        assert names == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
        assert _get(port, "/formgrader")[0] == 404  # nbgrader's server side is off
        page = _get(port, "/lab")[1]
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page,
                                      re.S).group(1))
        assert "@jupyter/nbgrader" in config["disabledExtensions"]  # and its menus
    finally:
        output = _stop(process)
    if os.geteuid() == 0:
        assert "Running as root: starting JupyterLab with --allow-root." in output
    assert "Shutting down" in output or "shutting down" in output.lower()


def test_make_formgrader_serves_the_courses_formgrader():
    process, port = _start("formgrader")
    try:
        assert _get(port, "/formgrader")[0] == 200
        # started with the course's configuration: its id and root (hence its gradebook)
        status, page = _get(port, "/formgrader/manage_assignments")
        assert status == 200 and "attention-course" in page
        # (formgrader shows the configuration it loaded)
        assert f"'db_url': {'sqlite:///' + str(GRADER / 'gradebook.db')!r}" in page
        # JupyterLab's pages too ("open live notebook") load images and media from here only
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={TOKEN}",
                                    timeout=10) as response:
            policy = response.headers["Content-Security-Policy"]
        assert "img-src 'self' data: blob:" in policy and "media-src 'self'" in policy
    finally:
        output = _stop(process)
    # served by the inert formgrader, in place of nbgrader's own
    assert "pipeline.grading.safe_formgrader | extension was successfully loaded" in output
    assert "Loading the formgrader nbgrader serverextension" not in output


def test_allow_root_is_added_only_for_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args, env, _ = lab.command("student", ["--no-browser"])
    assert "--allow-root" not in args and "labconfig" in os.listdir(env["JUPYTER_CONFIG_DIR"])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "--allow-root" in lab.command("formgrader", []).args
    with pytest.raises(SystemExit, match="expected one of"):
        lab.command("teachers", [])


def test_formgrader_starts_in_the_course_root_with_the_inert_formgrader():
    launch = lab.command("formgrader", ["--port=8890"])
    assert launch.cwd == GRADER  # where nbgrader finds nbgrader_config.py
    assert f"--ServerApp.root_dir={GRADER}" in launch.args and "--port=8890" in launch.args
    config = json.loads((Path(launch.env["JUPYTER_CONFIG_DIR"])
                         / "jupyter_server_config.json").read_text())
    assert config["ServerApp"]["jpserver_extensions"] == {
        "nbgrader.server_extensions.formgrader": False, "pipeline.grading.safe_formgrader": True}
    assert str(GRADER) in launch.env["PYTHONPATH"].split(os.pathsep)  # the extension imports
