"""benchmarks/default_run.py's profile: job spans read from Snakemake's log, job-seconds per kind of
job, core utilisation and the train jobs' split, from a constructed log and records (no timing)."""

import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

LOG = """Building DAG of jobs...
[Mon Dec  7 00:18:27 2026]
localrule backbone:
    output: models/t5-tiny
    jobid: 4
[Mon Dec  7 00:18:27 2026]
localrule train__nli__lora_r8:
    jobid: 7
[Mon Dec  7 00:18:37 2026]
Finished jobid: 4 (Rule: backbone)
[Mon Dec  7 00:18:47 2026]
Finished jobid: 7 (Rule: train__nli__lora_r8)
[Mon Dec  7 00:18:47 2026]
localrule audit:
    jobid: 1
[Mon Dec  7 00:18:52 2026]
Finished jobid: 1 (Rule: audit)
"""


def _load():
    spec = importlib.util.spec_from_file_location("default_run", ROOT / "benchmarks" / "default_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_splits_job_seconds_and_train_time(tmp_path):
    bench = _load()
    spans = bench.job_spans(LOG)
    assert [(s["rule"], s["start"], s["end"]) for s in spans] == [("backbone", 0, 10), ("train__nli__lora_r8", 0, 20),
                                                                  ("audit", 20, 25)]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "seeds": [0, 1]}))
    runs = tmp_path / "results" / "runs" / "nli" / "lora_r8"
    runs.mkdir(parents=True)
    for seed in (0, 1, 7):  # seed 7: a record of a run the config no longer plans, not counted
        (runs / f"seed{seed}.json").write_text(json.dumps({"resources": {"seconds": 6.0, "evaluate_seconds": 2.0}}))
    (runs / "seed0.sharpness.json").write_text(json.dumps({"seconds": 99}))  # not a training run
    result = bench.profile(LOG, tmp_path, bench.cores("snakemake --cores 2"))
    assert result["job_seconds"] == {"train:nli": 20, "backbone": 10, "audit": 5}
    assert result["makespan_seconds"] == 25 and result["core_utilisation"] == round(35 / 50, 3)
    assert result["train_jobs"] == {"runs": 2, "optimizer_steps_seconds": 12, "evaluation_seconds": 4,
                                    "other_seconds": 4, "share_optimizer_steps": 0.6}
