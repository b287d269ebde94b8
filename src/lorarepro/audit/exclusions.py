"""Exclusions carry evidence: a run recorded as diverged (result JSON status FAILED with its
`failed_step`) is left out of the tables and claims only when its own files show the divergence,
re-derived here from what training leaves (lorarepro.stages.training.train `_write_failed`):

- the error names a non-finite loss (`… is nan at step N`) at the recorded failed step N;
- its loss history stops right before that step: N rows, steps 0..N-1, every loss finite (the step
  whose loss was non-finite is never appended: training stops there);
- its checkpoint directory holds only status.json, equal to the record's failure (no weights);
- its MLflow run (where the store is readable) is FAILED, with the same error and identity, and
  carries no result JSON artifact (training logs one only when it finishes).

A finished run relabelled as diverged has a full history, weights, a FINISHED MLflow run and a
logged FINISHED result: it fails. `evidence` is the per-run test; `excluded_runs` counts, per
(task, method), the runs a claim may leave out (with evidence) and those it may not.
"""

from __future__ import annotations

import math
import re

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.audit.inputs import BadInput, problem, read_json, read_text
from lorarepro.audit.mlflow_runs import identity_problems  # one identity rule for every run
from lorarepro.audit.report import record
from lorarepro.core.config import reported_runs
from lorarepro.core.hashing import NOT_CONTENT

_ERROR = re.compile(r" is (?P<value>[-+]?(nan|inf)) at step (?P<step>\d+)$")
FIX = ("a run excluded as diverged must show the divergence in its own files: restore its files, or "
       "retrain it (delete its result JSON and rerun `snakemake --cores 2`)")


def evidence(task: str, method: str, seed: int, result: dict, store=None) -> list[str]:
    """Why the record's divergence is not borne out by the run's own files ([] when it is)."""
    problems = []
    step = result.get("failed_step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return [f"failed_step {step!r} is not a step number"]
    found = _ERROR.search(str(result.get("error") or ""))
    if found is None:
        problems.append(f"error {str(result.get('error'))[:80]!r} names no non-finite loss")
    elif int(found["step"]) != step:
        problems.append(f"error names step {found['step']}, failed_step is {step}")
    problems += _history(task, method, seed, step)
    problems += _checkpoint(task, method, seed, result)
    if store is not None:
        problems += _mlflow(store, task, method, seed, result)
    return problems


def _history(task: str, method: str, seed: int, step: int) -> list[str]:
    path = paths.run_history(task, method, seed)
    try:
        lines = read_text(path).splitlines()
    except BadInput as bad:
        return [f"loss history {bad}"]
    if not lines or lines[0].split(",")[:2] != ["step", "loss"]:
        return [f"loss history {path} has no step,loss header"]
    try:
        rows = [(int(line.split(",")[0]), float(line.split(",")[1])) for line in lines[1:] if line.strip()]
    except (ValueError, IndexError):
        return [f"loss history {path} does not parse"]
    problems = []
    if [s for s, _ in rows] != list(range(step)):
        problems.append(f"loss history has {len(rows)} steps, a run diverging at step {step} leaves steps 0..{step - 1}")
    bad = [s for s, loss in rows if not math.isfinite(loss)]
    if bad:
        problems.append(f"loss history has non-finite losses before the failed step (steps {bad[:3]})")
    return problems


def _checkpoint(task: str, method: str, seed: int, result: dict) -> list[str]:
    folder = paths.checkpoint_dir(task, method, seed)
    if not folder.is_dir():
        return [f"checkpoint directory {folder} missing (a diverged run leaves status.json there)"]
    names = sorted(p.name for p in folder.iterdir() if p.name not in NOT_CONTENT)
    if names != ["status.json"]:
        return [f"checkpoint directory holds {names[:4]}: a diverged run leaves only status.json (no weights)"]
    try:
        status = read_json(folder / "status.json")
    except BadInput as bad:
        return [str(bad)]
    failure = {k: result.get(k) for k in ("status", "error", "failed_step")}
    return [] if status == failure else [f"{folder}/status.json {status} differs from the record's failure {failure}"]


def _mlflow(store, task: str, method: str, seed: int, result: dict) -> list[str]:

    run_id = (result.get("lineage") or {}).get("mlflow_run_id")
    tracked = store.get(run_id) if run_id else None
    if tracked is None:
        return [f"MLflow run {run_id} not found"]
    problems = identity_problems(tracked, task, method, seed)
    if tracked.status != "FAILED":
        problems.append(f"MLflow run {run_id} is {tracked.status}, not FAILED")
    if tracked.tags.get("error") != f"NonFiniteLoss: {result.get('error')}":
        problems.append(f"MLflow error tag {str(tracked.tags.get('error'))[:80]!r} differs from the record's error")
    folder = store.artifacts(tracked)
    if folder is not None and (folder / paths.run_result(task, method, seed).name).exists():
        problems.append("MLflow holds a result JSON artifact: training logs one only for a finished run")
    return problems


def diverged_records(config: dict, store=None) -> list[dict]:
    """One record per run of the config recorded as diverged: warn (evidence holds: the tables show
    the seed as missing) or fail (it does not)."""
    out = []
    for (task, method), seeds in reported_runs(config).items():
        for seed in seeds:
            path = paths.run_result(task, method, seed)
            try:
                result = read_json(path) if problem(path) is None else None
            except BadInput:
                continue  # the `result` check names it
            if not records.is_diverged(result):
                continue
            problems = evidence(task, method, seed, result, store)
            if problems:
                out.append(record("exclusion", "fail", path, "recorded as diverged, but its own files do not show it: "
                                  + "; ".join(problems), FIX))
            else:
                out.append(record("exclusion", "warn", path, f"run diverged at step {result['failed_step']}: "
                                  f"{result.get('error')}; its history, checkpoint and MLflow run agree; the tables "
                                  "show this seed as missing",
                                  "lower the method's lr (or fix its data) and rerun `snakemake --cores 2`"))
    return out


def excluded_runs(config: dict, pairs=None, store=None) -> dict[tuple[str, str], dict]:
    """{(task, method): {"excluded": [seeds with evidence], "unsupported": {seed: why}}} over the
    config's reported runs (or `pairs`): what a claim may leave out, and what it may not (an
    exclusion without evidence must count as a failure of the claim's inputs). MLflow is consulted
    only when `store` (audit.stores.open_store) is given."""
    runs = reported_runs(config)
    out = {}
    for pair in pairs or runs:
        entry = {"excluded": [], "unsupported": {}}
        for seed in runs.get(tuple(pair), []):
            try:
                result = read_json(paths.run_result(*pair, seed))
            except BadInput:
                continue  # missing or malformed: not an exclusion (the audit's `result` check names it)
            if not records.is_diverged(result):
                continue
            problems = evidence(*pair, seed, result, store)
            if problems:
                entry["unsupported"][seed] = "; ".join(problems)
            else:
                entry["excluded"].append(seed)
        out[tuple(pair)] = entry
    return out
