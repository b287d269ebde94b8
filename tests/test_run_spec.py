"""Resolve once, hand on: building the DAG resolves each (task, method) run exactly once, every train
job gets its spec as a param, and the job trains from that spec without resolving it again."""

import json
import subprocess
import sys

import pytest

from lorarepro.domain import experiment
from lorarepro.core.config import reported_runs
from workspace import copy_repo, user_env

# Snakemake's dry run of the default, in one process, with resolve_run counted.
COUNTING_DRY_RUN = """
import collections, json, sys
import lorarepro.domain.experiment as experiment
calls = collections.Counter()
resolve = experiment.resolve_run
def counted(config, task, method):
    calls[f"{task}/{method}"] += 1
    return resolve(config, task, method)
experiment.resolve_run = counted
from snakemake.cli import main
try:
    main(["--dry-run", "--cores", "1", "--quiet", "all"])
except SystemExit as done:
    status = done.code
print("CALLS", json.dumps({"status": status, "calls": calls}))
"""


def test_building_the_dag_resolves_each_run_once(tmp_path, params):
    root = copy_repo(tmp_path)
    done = subprocess.run([sys.executable, "-c", COUNTING_DRY_RUN], cwd=root, capture_output=True, text=True,
                          timeout=300, env=user_env(src=True))
    line = next(line for line in done.stdout.splitlines() if line.startswith("CALLS "))
    outcome = json.loads(line.removeprefix("CALLS "))
    assert outcome["status"] in (0, None), done.stderr[-3000:]
    expected = {f"{t}/{m}" for t, m in reported_runs(params)}
    assert set(outcome["calls"]) == expected and set(outcome["calls"].values()) == {1}


def test_the_train_job_trains_the_spec_it_is_handed(monkeypatch):
    """jobs.train passes the DAG's spec and seeds on; nothing on its way resolves the run again."""
    from lorarepro.pipeline import jobs, launcher

    handed = {}
    monkeypatch.setattr(experiment, "resolve_run", lambda *a: pytest.fail("resolved again in the job"))
    monkeypatch.setattr(launcher, "train_task_method", lambda config, run, seeds, job: handed.update(run=run, seeds=seeds))

    spec = experiment.RunSpec(task="sentiment", method="lora_r8", family="nlu", backbone="t5-tiny", adapter=None,
                              training={"epochs": 1}, strategies={"flat": None, "sam": None})

    class Smk:  # the parts of Snakemake's script object the job reads
        rule, log, config = "train__sentiment__lora_r8", [str(__import__("os").devnull)], {"tasks": {}, "backbones": {}}
        wildcards = {}
        params = type("P", (), {"run": spec.as_dict(), "seeds": [3, 5]})()  # the layout Snakemake carries
        resources = {}

    jobs.for_rule(Smk.rule)(Smk)
    assert handed == {"run": spec, "seeds": [3, 5]}  # the same spec, typed again, nothing resolved


def test_a_spec_is_frozen_and_round_trips_through_the_record_layout(params):
    """The spec in a record's `config` layout (a Snakemake param, a result JSON) reads back as the same
    spec; its fields cannot be reassigned and its settings are its own copies."""
    import dataclasses
    import json

    spec = experiment.resolve_run(params, "digits", "flat_lora_r8")
    record = json.loads(json.dumps(spec.as_dict()))
    assert experiment.RunSpec.of(record) == spec and experiment.RunSpec.of(spec) is spec
    assert record["flat"] == spec.strategies["flat"] and "backbone_dtype" not in record
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.task = "sentiment"
    record["training"]["lr"] = 1.0
    assert experiment.RunSpec.of(record).training["lr"] == 1.0 and spec.training["lr"] != 1.0
    with pytest.raises(ValueError, match="without \\['family'"):
        experiment.RunSpec.of({"task": "digits", "method": "lora_r8", "backbone": "vit-tiny", "adapter": None, "training": {}})


def test_longest_train_jobs_start_first(params):
    """Per-method jobs are ordered by their optimizer steps over all seeds (longest-first packing on
    few cores): the 20-seed primaries above the 3-seed variants, a quarter of the data below the whole."""
    from lorarepro.core.config import train_priorities

    specs = experiment.check(params)
    priority = train_priorities(params, specs, reported_runs(params))
    assert set(priority.values()) <= set(range(1, 10))
    assert priority[("nli", "lora_r8")] > priority[("paraphrase", "dora_r8")]
    assert priority[("paraphrase", "lora_r8")] > priority[("paraphrase", "lora_r8_quarter_data")]
    assert max(priority.values()) == 9 and priority[("paraphrase", "dora_r8")] == 1 + round(8 * 3 * 6 * 12 / (20 * 16 * 8))
