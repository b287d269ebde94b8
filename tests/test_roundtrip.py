"""The second machine. In a real git repository made from this one, on a reduced params.yaml:
a full run whose 18 training jobs write to one MLflow store 8 at a time, `dvc repro` and `dvc push`;
then a fresh `git clone`, `dvc pull` and `snakemake --cores 2`, which must train nothing and
regenerate identical results. Also: result lineage against MLflow tags, `dvc params diff`,
`dvc metrics show`.
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

COPIED = ("Snakefile", "dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore", "workflow", "src/lorarepro")
GIT = ("git", "-c", "user.name=lorarepro-test", "-c", "user.email=test@example.invalid")


def sh(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    """A command as a user runs it: no tracking settings inherited from the test process."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1500, env=env)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def snakemake(cwd: Path, *args: str) -> str:
    done = sh(cwd, sys.executable, "-m", "snakemake", *args)
    return done.stdout + done.stderr


def dvc(cwd: Path, *args: str) -> str:
    return sh(cwd, sys.executable, "-m", "dvc", *args).stdout


def config(params: dict) -> dict:
    """The reduced config with 6 methods: 3 tasks x 6 methods = 18 train jobs; sharpness kept cheap."""
    cfg = reduced(params)
    cfg["methods"].update({k: params["methods"][k] for k in ("lora_r16", "flat_lora_r16")})
    cfg["methods"]["lora_r4"] = {"label": "LoRA (r=4)", "adapter": {"type": "lora", "r": 4, "alpha": 8}}
    cfg["tables"][0]["methods"] = list(cfg["methods"])
    cfg["sharpness"] = {"n_eval": 4, "draws": 1, "hessian_iters": 3, "radii": [0.05]}
    return cfg


@pytest.fixture(scope="module")
def origin(tmp_path_factory, params):
    """The first machine: a git repository at one commit, after `snakemake --cores 8`."""
    root = copy_repo(tmp_path_factory.mktemp("origin"), COPIED)
    (root / "params.yaml").write_text(yaml.safe_dump(config(params), sort_keys=False))
    sh(root, *GIT, "init", "-q")
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", "code and params")
    log = snakemake(root, "--cores", "8")
    return root, log


def test_parallel_jobs_lose_no_run_or_metric(origin):
    from mlflow.tracking import MlflowClient

    root, log = origin
    job_logs = "".join(p.read_text() for p in (root / "logs").rglob("*.log"))
    assert "locked" not in (log + job_logs).lower()
    results = [json.loads(p.read_text()) for p in sorted((root / "results" / "runs").rglob("seed?.json"))]
    assert len(results) == 3 * 6 * 2
    with sqlite3.connect(root / "mlflow.db") as db:
        status = dict(db.execute("select run_uuid, status from runs").fetchall())
        parent = db.execute("select run_uuid from runs where name = 'snakemake'").fetchall()
        losses = dict(db.execute("select run_uuid, count(*) from metrics where key = 'train_loss' group by run_uuid").fetchall())
    assert len(parent) == 1 and len(status) == 1 + len(results)
    assert set(status.values()) == {"FINISHED"}
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    for result in results:
        run_id = result["lineage"]["mlflow_run_id"]
        assert losses[run_id] == result["train"]["steps"]  # every step's loss, none lost
        run = client.get_run(run_id)
        assert run.data.metrics[f"test_{result['metric']}"] == pytest.approx(result["metrics"]["test"])
        assert run.data.tags["mlflow.parentRunId"] == parent[0][0]
        assert run.data.tags["snakemake_rule"] == "train"
        assert run.data.tags["snakemake_job"] == f"train[task={result['task']},method={result['method']}]"  # jobs: auto
        assert run.data.params["training.lr"] == str(result["config"]["training"]["lr"])
        assert run.data.params["seed"] == str(result["seed"])
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert artifacts == {"config.json", f"seed{result['seed']}.json"}


def test_result_lineage_matches_mlflow_and_the_files(origin):
    from mlflow.tracking import MlflowClient

    from lorarepro.core.hashing import sha256_dir

    root, _ = origin
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    head = sh(root, "git", "rev-parse", "HEAD").stdout.strip()
    for path in sorted((root / "results" / "runs").rglob("seed?.json")):
        result = json.loads(path.read_text())
        lineage = result["lineage"]
        tags = client.get_run(lineage["mlflow_run_id"]).data.tags
        for key in ("data_sha256", "backbone_sha256", "checkpoint_sha256", "git_commit"):
            assert tags[key] == lineage[key], (path, key)
        assert tags["git_dirty"] == "False" and lineage["git_dirty"] is False
        assert lineage["git_commit"] == head
        task, method, seed = result["task"], result["method"], result["seed"]
        manifest = json.loads((root / "data" / "prepared" / task / "manifest.json").read_text())
        assert lineage["data_sha256"] == manifest["sha256"]
        assert lineage["checkpoint_sha256"] == sha256_dir(root / "checkpoints" / task / method / f"seed{seed}")
        marker = json.loads((root / "models" / result["backbone"] / "lorarepro_backbone.json").read_text())
        assert lineage["backbone_sha256"] == marker["sha256"]


@pytest.fixture(scope="module")
def clone(origin, tmp_path_factory):
    """`dvc repro` + `dvc push` on the first machine; `git clone` + `dvc pull` + `snakemake` on the second."""
    root, _ = origin
    remote = tmp_path_factory.mktemp("remote")
    before = {p: p.stat().st_mtime_ns for p in (root / "checkpoints").rglob("*") if p.is_file()}
    repro = sh(root, sys.executable, "-m", "dvc", "repro")
    assert "Nothing to be done" in repro.stdout + repro.stderr  # persist: true kept every output; nothing retrained
    assert before == {p: p.stat().st_mtime_ns for p in (root / "checkpoints").rglob("*") if p.is_file()}
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", "results and dvc.lock")
    dvc(root, "remote", "modify", "--local", "local", "url", str(remote))
    dvc(root, "push")
    second = tmp_path_factory.mktemp("second") / "lorarepro"
    sh(second.parent, "git", "clone", "-q", str(root), str(second))
    dvc(second, "remote", "modify", "--local", "local", "url", str(remote))
    dvc(second, "pull")
    return second, snakemake(second, "--cores", "2")


def test_clone_and_pull_train_nothing_and_regenerate_identical_results(origin, clone):
    root, _ = origin
    second, log = clone
    assert not re.search(r"rule (train\w*|backbone|prepare_data):", log)  # per seed `train`, per method `train__…`
    assert sh(second, "git", "status", "--porcelain").stdout == ""  # every committed result byte-identical
    tables = sorted(p.relative_to(root) for p in (root / "results" / "tables").iterdir())
    assert tables and all((second / t).read_bytes() == (root / t).read_bytes() for t in tables)
    assert "Nothing to be done" in snakemake(second, "--cores", "2", "--dry-run")
    assert "up to date" in dvc(second, "status")  # code, params and every output match dvc.lock


def test_dvc_params_diff_and_metrics_show(origin, clone):
    root, _ = origin
    second, _ = clone
    shown = json.loads(dvc(second, "metrics", "show", "--json"))
    summary = json.loads((root / "results" / "metrics.json").read_text())
    assert shown[""]["data"]["results/metrics.json"]["data"] == summary
    assert "table_small/lora_r8/sentiment" in summary
    params = yaml.safe_load((second / "params.yaml").read_text())
    params["training"]["nlu"]["lr"] = 0.004
    (second / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        diff = json.loads(dvc(second, "params", "diff", "--json"))
        change = diff["params.yaml"]["training.nlu.lr"]
        assert (change["old"], change["new"]) == (0.005, 0.004)
        assert "pipeline" in dvc(second, "status")  # the stage is out of date with the new params
    finally:
        sh(second, "git", "checkout", "--", "params.yaml")


def test_where_jobs_ran_upstream_changes_still_retrain(origin):
    """Train inputs are ancient only where the job never ran (a clone); here, on the machine that
    ran it, changing one task's data or one backbone retrains exactly the jobs that use them."""
    root, _ = origin
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    cfg["tasks"]["sentiment"]["sizes"]["train"] = 48
    cfg["backbones"]["llama-tiny"]["pretrain"]["steps"] = 10
    changed = root / "logs" / "changed.yaml"  # ignored by git
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))  # same key order: params compare as text
    plan = snakemake(root, "--dry-run", "--configfile", str(changed))
    trained = set(re.findall(r"wildcards: task=(\w+), method=(\w+)", plan))
    assert trained == {(t, m) for t in ("sentiment", "arithmetic") for m in cfg["methods"]}
    jobs = re.findall(r"^rule (\w+):", plan, flags=re.M)
    assert jobs.count("prepare_data") == 1 and jobs.count("backbone") == 1
    assert "wildcards: task=sentiment\n" in plan and "wildcards: backbone=llama-tiny\n" in plan
