"""Faults in the whole pipeline, on a reduced config in a temporary copy of the repository.

- Snakemake and every job it started are SIGKILLed mid-run; after `--unlock` (a hard kill leaves
  Snakemake's lock behind) the rerun completes the rest without redoing finished jobs.
- One method's loss goes NaN: under --keep-going the other jobs finish, its runs are FAILED in their
  result JSON and in MLflow, its job log names task, method, seed and step, and the table shows the
  cell as diverged, never as an average over fewer seeds.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import reduced
from workspace import copy_repo

pytestmark = pytest.mark.slow
TASK = "sentiment"


def _config(params: dict) -> dict:
    cfg = reduced(params)
    cfg["tasks"] = {TASK: cfg["tasks"][TASK]}
    cfg["backbones"] = {"t5-tiny": cfg["backbones"]["t5-tiny"]}
    cfg["training"] = {"nlu": cfg["training"]["nlu"]}
    cfg["methods"] = {m: cfg["methods"][m] for m in ("lora_r8", "flat_lora_r8")}
    cfg["methods"]["diverge"] = {"label": "LoRA, absurd lr", "adapter": {"type": "lora", "r": 8, "alpha": 16},
                                 "training": {"lr": 1.0e30}}
    cfg["tables"] = [{"id": "table_small", "caption": "faults", "paper_table": "table1",
                      "tasks": [TASK], "methods": ["lora_r8", "flat_lora_r8", "diverge"]}]
    cfg["figures"] = [{"id": "training_curves", "caption": "curves", "tasks": [TASK], "methods": ["lora_r8", "diverge"]}]
    cfg["sharpness"] = {"n_eval": 16, "draws": 2, "hessian_iters": 3, "radii": [0.05]}
    cfg["claims"]["comparisons"] = []
    cfg["jobs"] = "per_method"  # a job per method: the kill lands between methods, as the checks below expect
    return cfg


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "faults.yaml", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=_env())


def _finished_train_jobs(log: Path) -> set[str]:
    """Methods whose train job Snakemake reported finished (it writes outputs before it says so)."""
    return set(re.findall(rf"Finished jobid: \d+ \(Rule: train__{TASK}__(\w+)\)", log.read_text()))


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory, params):
    """Start the pipeline, SIGKILL its process group once the first train job has finished, rerun."""
    root = copy_repo(tmp_path_factory.mktemp("faults"))
    (root / "faults.yaml").write_text(yaml.safe_dump(_config(params)))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "faults.yaml", "--keep-going"]
    with open(root / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        deadline = time.time() + 600
        while not _finished_train_jobs(root / "first.log") and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the pipeline ended before it could be killed:\n" + (root / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = _finished_train_jobs(root / "first.log")
    finished = {p: p.stat().st_mtime_ns for m in done for p in (root / "results" / "runs" / TASK / m).glob("seed?.json")}
    assert len(finished) == 2 * len(done) and len(done) < 3  # killed mid-run: some train jobs done, not all

    locked = _snakemake(root, "--keep-going")
    unlock = _snakemake(root, "--unlock")
    rerun = _snakemake(root, "--keep-going")
    return root, finished, locked, unlock, rerun


def test_rerun_after_kill_completes_without_redoing_finished_jobs(killed_then_rerun):
    root, finished, locked, unlock, rerun = killed_then_rerun
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr  # the fix is named
    assert unlock.returncode == 0
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    done_methods = {p.parent.name for p in finished}
    rerun_methods = set(re.findall(rf"rule train__{TASK}__(\w+):", rerun.stdout + rerun.stderr))
    assert not done_methods & rerun_methods  # finished train jobs are not redone ...
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert rerun_methods  # ... the rest are
    assert len(list((root / "results" / "runs" / TASK).glob("*/seed?.json"))) == 6
    assert (root / "results" / "tables" / "table_small.md").is_file()
    assert _snakemake(root, "--dry-run").stdout.count("Nothing to be done") == 1


def test_diverged_method_is_recorded_and_reported_as_diverged(killed_then_rerun):
    root = killed_then_rerun[0]
    runs = root / "results" / "runs" / TASK
    for seed in (0, 1):
        failed = json.loads((runs / "diverge" / f"seed{seed}.json").read_text())
        assert failed["status"] == "FAILED" and failed["failed_step"] is not None
        assert f"task={TASK} method=diverge seed={seed}: loss is" in failed["error"]
        for method in ("lora_r8", "flat_lora_r8"):
            assert json.loads((runs / method / f"seed{seed}.json").read_text())["status"] == "FINISHED"
    log = (root / "logs" / "train" / TASK / "diverge.log").read_text()
    assert re.search(rf"ERROR: run diverged: task={TASK} method=diverge seed=0: loss is \S+ at step \d+", log)
    table = (root / "results" / "tables" / "table_small.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| LoRA, absurd lr"))
    assert "— (0/2; 2 diverged)" in row
    with sqlite3.connect(root / "mlflow.db") as db:
        rows = db.execute("select name, status from runs where name like ?", (f"{TASK}/%/seed0",)).fetchall()
        pipelines = db.execute("select status from runs where name = 'snakemake' order by start_time").fetchall()
        running = db.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]
    assert "FAILED" in {s for n, s in rows if n == f"{TASK}/diverge/seed0"}
    assert "FINISHED" in {s for n, s in rows if n == f"{TASK}/lora_r8/seed0"}
    # the killed invocation's runs (SIGKILL gives them no chance to end) are ended KILLED by the rerun
    assert [s for (s,) in pipelines] == ["KILLED", "FINISHED"] and running == 0
