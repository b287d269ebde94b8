"""The Snakemake workflow end to end on a reduced --configfile, in a temporary copy of the repository.

Checks the real run, that a second run does nothing, that changing one method's setting reruns
only that method's jobs, and that a bad config is refused before any job starts.
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import reduced
from workspace import copy_repo

pytestmark = pytest.mark.slow


def snakemake(cwd: Path, *args: str, config: str = "reduced.yaml") -> subprocess.CompletedProcess:
    """Snakemake as a user runs it, with no tracking settings inherited from the test process."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", config, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, params):
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    (root / "reduced.yaml").write_text(yaml.safe_dump(reduced(params)))
    done = snakemake(root)
    assert done.returncode == 0, done.stderr[-5000:]
    return root


def test_pipeline_produces_every_output(repo, params):
    cfg = reduced(params)
    runs = sorted((repo / "results" / "runs").rglob("seed?.json"))
    assert len(runs) == 3 * 3 * 2  # tasks x methods x seeds
    assert all(json.loads(p.read_text())["status"] == "FINISHED" for p in runs)
    for ext in ("csv", "md", "tex"):
        assert (repo / "results" / "tables" / f"table_small.{ext}").is_file()
    for name in ("table_small_significance.csv", "table_sharpness.md"):
        assert (repo / "results" / "tables" / name).is_file()
    sharp = json.loads((repo / "results" / "runs" / "digits" / "flat_lora_r8" / "seed0.sharpness.json").read_text())
    assert sharp["hessian_top"]["eigenvalue"] > 0 and sharp["expected_sharpness"]["0.05"] is not None
    index = json.loads((repo / "results" / "tables" / "index.reduced.json").read_text())  # per config: paths.config_id
    assert len(index["tables"][0]["runs"]) == 18
    for fig in ("ood_curve", "training_curves"):
        assert (repo / "results" / "figures" / f"{fig}.png").stat().st_size > 1000
    assert json.loads((repo / "results" / "metrics.reduced.json").read_text())
    assert (repo / "logs" / "train" / "digits" / "lora_r8.log").is_file()  # jobs: auto runs per_method locally
    table = (repo / "results" / "tables" / "table_small.md").read_text()
    assert "paper: SST-2" in table and cfg["methods"]["flat_lora_r8"]["label"] in table


def test_every_training_run_is_in_mlflow_under_one_parent(repo):
    with sqlite3.connect(repo / "mlflow.db") as db:
        rows = db.execute("select run_uuid, status, name from runs").fetchall()
        parents = {r[0] for r in rows if r[2] == "snakemake"}
        children = db.execute("select run_uuid, value from tags where key = 'mlflow.parentRunId'").fetchall()
        losses = db.execute("select count(*) from metrics where key = 'train_loss'").fetchone()[0]
        hessians = db.execute("select count(*) from latest_metrics where key = 'hessian_top_eigenvalue'").fetchone()[0]
    assert len(parents) == 1 and len(rows) == 19
    assert {status for _, status, _ in rows} == {"FINISHED"}
    assert len(children) == 18 and {v for _, v in children} == parents
    assert losses > 18
    assert hessians == 9  # λ_max of the sharpness detail seed ([0]) lands in each of its training runs


def test_second_run_does_nothing(repo):
    again = snakemake(repo, "--dry-run")
    assert again.returncode == 0
    assert "Using workflow specific profile profiles/default" in again.stdout + again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr


def test_changing_one_method_reruns_only_its_jobs(repo, params):
    cfg = reduced(params)
    cfg["methods"]["lora_r8"]["training"] = {"lr": 0.004}
    (repo / "changed.yaml").write_text(yaml.safe_dump(cfg))
    plan = snakemake(repo, "--dry-run", config="changed.yaml")
    assert plan.returncode == 0, plan.stderr
    jobs = re.findall(r"^(?:local)?rule (\w+):", plan.stdout, flags=re.M)
    # jobs: auto, run locally: one train job per (task, method); the per-task sharpness jobs reread
    # the changed runs' checkpoints
    trained = [f"train__{t}__lora_r8" for t in ("sentiment", "digits", "arithmetic")]
    assert sorted(jobs) == sorted(trained + ["sharpness"] * 3 + ["tables", "figures", "audit", "report_captions", "all"])


def test_bad_config_is_refused_before_any_job(repo, params):
    cfg = reduced(params)
    cfg["methods"]["lora_r8"]["adapter"]["rnak"] = 8
    (repo / "bad.yaml").write_text(yaml.safe_dump(cfg))
    before = {p: p.stat().st_mtime_ns for p in (repo / "results").rglob("*") if p.is_file()}
    bad = snakemake(repo, config="bad.yaml")
    assert bad.returncode != 0
    assert "rnak" in bad.stdout + bad.stderr
    assert before == {p: p.stat().st_mtime_ns for p in (repo / "results").rglob("*") if p.is_file()}
