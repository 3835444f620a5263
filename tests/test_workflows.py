"""The GitHub Actions workflow: valid YAML with the CPU and GPU notebook jobs as documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "notebooks.yml"


def _workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _commands(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_every_step_is_well_formed():
    workflow = _workflow()
    assert {"push", "pull_request"} <= set(workflow["on"])
    for name, job in workflow["jobs"].items():
        assert job.get("runs-on"), f"job {name} has no runner"
        assert job.get("timeout-minutes", 0) > 0, f"job {name} has no timeout"
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"{name}: a step needs run or uses"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_cpu_job_runs_the_ci_entry_point():
    cpu = _workflow()["jobs"]["cpu"]
    assert cpu["runs-on"] == "ubuntu-latest"
    assert "bash .ci/run" in _commands(cpu)


def test_gpu_job_runs_validate_gpu_on_the_gpu_runner_but_not_for_forks():
    gpu = _workflow()["jobs"]["gpu"]
    assert set(gpu["runs-on"]) == {"self-hosted", "gpu"}
    assert "make validate-gpu" in _commands(gpu)
    condition = gpu["if"]
    assert "pull_request" in condition and "head.repo.full_name == github.repository" in condition


def test_make_targets_the_workflow_calls_exist():
    makefile = (ROOT / "Makefile").read_text()
    for job in _workflow()["jobs"].values():
        for command in _commands(job):
            for target in re.findall(r"\bmake ([a-z-]+)", command):
                assert re.search(rf"^{target}:", makefile, re.M), f"no make target {target}"


def test_readme_sharding_recipe_is_valid_yaml_that_shards_and_merges():
    readme = (ROOT / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)]
    recipe = next(b for b in blocks if "grade" in b.get("jobs", {}))["jobs"]
    shard_runs = _commands(recipe["grade"])
    assert any("SHARD=${{ matrix.shard }}/4" in run for run in shard_runs)
    assert recipe["grade"]["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert recipe["merge"]["needs"] == "grade"
    assert "make grade-merge" in _commands(recipe["merge"])
