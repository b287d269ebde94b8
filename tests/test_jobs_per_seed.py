"""`jobs: per_seed` (one training job per (task, method, seed)) and `jobs: per_method` (one job trains
every seed of a (task, method) in turn; `auto`, the default, picks it for local CPU runs) give the
same runs: a seed's result depends neither on the process that trained it nor on the seeds trained
before it in that process.

Both run through Snakemake in one temporary copy of the repository (data and backbone built once).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import reduced
from lorarepro.domain import records
from workspace import copy_repo

pytestmark = pytest.mark.slow
TASK = "sentiment"


def _config(params: dict, jobs: str) -> dict:
    cfg = reduced(params)
    cfg["tasks"] = {TASK: cfg["tasks"][TASK]}
    cfg["backbones"] = {"t5-tiny": cfg["backbones"]["t5-tiny"]}
    cfg["training"] = {"nlu": cfg["training"]["nlu"]}
    cfg["methods"] = {m: cfg["methods"][m] for m in ("lora_r8", "flat_lora_r8")}  # Flat draws its own noise
    cfg["tables"] = [{"id": "table_small", "caption": "jobs", "paper_table": "table1", "tasks": [TASK], "methods": list(cfg["methods"])}]
    cfg["figures"] = []
    cfg["claims"]["comparisons"] = []
    cfg["jobs"] = jobs
    return cfg


def _train(root: Path, jobs: str) -> list[str]:
    """Snakemake up to the train jobs under `jobs`; each train job it ran: per seed, its wildcards;
    per method, its rule (one per (task, method))."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", f"{jobs}.yaml", "--until", "train"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-5000:]
    log = done.stdout + done.stderr
    return (re.findall(r"^(?:local)?rule train:(?:\n    .*)*?\n    wildcards: (.+)$", log, flags=re.M)
            + re.findall(r"^(?:local)?rule (train__\S+):", log, flags=re.M))


def _runs(root: Path) -> dict:
    """Every run's result JSON (without its volatile keys) and loss history."""
    return {p.relative_to(root): records.stable(records.load(p)) if p.suffix == ".json" else p.read_text()
            for p in sorted((root / "results" / "runs").rglob("seed?.*"))}


def test_per_seed_and_per_method_jobs_give_identical_runs(tmp_path, params):
    root = copy_repo(tmp_path / "repo")
    for jobs in ("per_seed", "per_method"):
        (root / f"{jobs}.yaml").write_text(yaml.safe_dump(_config(params, jobs)))
    per_seed_jobs = _train(root, "per_seed")
    per_seed = _runs(root)
    shutil.rmtree(root / "results" / "runs")
    per_method_jobs = _train(root, "per_method")  # the results are gone: every train job reruns
    assert sorted(per_seed_jobs) == [f"task={TASK}, method={m}, seed={s}" for m in ("flat_lora_r8", "lora_r8") for s in (0, 1)]
    assert sorted(per_method_jobs) == [f"train__{TASK}__{m}" for m in ("flat_lora_r8", "lora_r8")]
    assert len(per_seed) == 2 * 2 * 2  # result JSON and history of 2 methods x 2 seeds
    assert _runs(root) == per_seed
