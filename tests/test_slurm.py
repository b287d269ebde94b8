"""The pipeline through a real SLURM: scripts/slurm_cluster.sh starts a single-node cluster on this
machine, `snakemake --profile workflow/profiles/slurm` runs a subset of the embedded default on it
(benchmarks/slurm_run.py `subset`: every rule, training one job per seed), and its results must
equal the same subset run locally.

Needs Debian's slurm-wlm and munge, root (slurmd) and the executor plugin; skipped otherwise (CI's
fresh machine has only Python and pip).
"""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _missing() -> str | None:
    if not (shutil.which("sbatch") and shutil.which("slurmctld")):
        return "SLURM is not installed (sbatch/slurmctld missing: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "scripts/slurm_cluster.sh must run as root (slurmd starts the jobs)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -c constraints.txt -e '.[slurm]')"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("slurm_run", ROOT / "benchmarks" / "slurm_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster(bench):
    """The cluster, up; stopped afterwards unless it was already running."""
    was_up = bench.cluster("status").returncode == 0
    started = bench.cluster("start")
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    if not was_up:
        stopped = bench.cluster("stop")
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def runs(bench, cluster, tmp_path_factory, params):
    root = tmp_path_factory.mktemp("slurm")
    slurm = bench.run(bench.workspace(root / "slurm", params), slurm=True)
    assert slurm["returncode"] == 0, slurm["log"][-5000:]
    local = bench.run(bench.workspace(root / "local", params), slurm=False)
    assert local["returncode"] == 0, local["log"][-5000:]
    return root, slurm, local


def test_every_job_runs_as_a_slurm_job_with_its_rules_resources(bench, runs, params):
    _, slurm, local = runs
    cfg = bench.subset(params)
    seeds = len(cfg["seeds"]) * len(cfg["methods"])
    assert slurm["jobs_by_rule"]["train"] == seeds  # jobs: per_seed, one SLURM job per (task, method, seed)
    assert slurm["jobs_by_rule"] == local["jobs_by_rule"]
    assert not {"prepare_data", "prepare_pretext", "backbone", "train", "sharpness"} & set(slurm["local_rules"])
    local_jobs = sum(n for rule, n in slurm["jobs_by_rule"].items() if rule in slurm["local_rules"])
    assert len(slurm["slurm_job_ids"]) == sum(slurm["jobs_by_rule"].values()) - local_jobs
    jobs = bench.granted(slurm["slurm_run_id"])
    assert sorted(str(j["job"]) for j in jobs) == sorted(slurm["slurm_job_ids"])
    assert {j["state"] for j in jobs} == {"COMPLETED"}
    # CPUs follow the config's threads; the config's gpu 0 sends no GPU request (this node has none)
    assert {j["cpus"] for j in jobs} == {cfg["threads"]}
    assert {j["gres"] for j in jobs} == {"N/A"}
    assert "4000M" in {j["memory"] for j in jobs}  # train's mem_mb (lorarepro.core.config), not the profile's fallback


def test_results_equal_the_local_run(bench, runs):
    root, _, _ = runs
    assert bench.differences(root / "local", root / "slurm") == []
    assert len(list((root / "slurm" / "results" / "runs").rglob("seed?.json"))) == 4


def test_cluster_script_is_idempotent(bench, runs):
    again = bench.cluster("start")
    assert again.returncode == 0 and "already running" in again.stdout
    assert bench.cluster("stop").returncode == 0
    assert bench.cluster("status").returncode != 0
    assert "not running" in bench.cluster("stop").stdout
    restarted = bench.cluster("start")  # as the module found it: the fixture stops it if it started it
    assert restarted.returncode == 0 and bench.cluster("status").returncode == 0, restarted.stdout + restarted.stderr
