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

import pytest

from pipeline import lab
from pipeline.paths import NOTEBOOKS, ROOT

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


def test_make_formgrader_serves_nbgraders_formgrader():
    process, port = _start("formgrader")
    try:
        assert _get(port, "/formgrader")[0] == 200
    finally:
        _stop(process)


def test_allow_root_is_added_only_for_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args, env = lab.command("student", ["--no-browser"])
    assert "--allow-root" not in args and "labconfig" in os.listdir(env["JUPYTER_CONFIG_DIR"])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "--allow-root" in lab.command("formgrader", [])[0]
    with pytest.raises(SystemExit, match="expected one of"):
        lab.command("teachers", [])
