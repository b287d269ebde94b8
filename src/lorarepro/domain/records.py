"""The run record: one result JSON per (task, method, seed) under results/runs/, with its loss
history (CSV) and its flatness measures (sharpness JSON) beside it.

This module alone writes and reads them and knows which of their keys differ between two runs of
the same config on the same machine (VOLATILE: timings, memory, the MLflow run id, the git state,
package versions). A result counts once the trainer marked it FINISHED; a FAILED one (the loss
went NaN/inf) is a recorded outcome the tables show as diverged.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pandas as pd

from lorarepro.core import paths
from lorarepro.core.atomic import write_json, write_text

FINISHED = "FINISHED"
# "resources" holds the CPU model too: information beside lineage.numerics, which is what results compare by
VOLATILE = ("resources", "lineage.mlflow_run_id", "lineage.git_commit", "lineage.git_dirty", "versions")
SHARPNESS_VOLATILE = ("seconds", "hessian_top.seconds")


def load(path: str | Path) -> dict | None:
    """A result JSON whatever its status; None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: result file is not valid JSON ({err})") from err


def load_finished(path: str | Path) -> dict | None:
    """A result JSON only once the trainer marked it FINISHED; anything else reads as missing."""
    result = load(path)
    return result if result is not None and result.get("status") == FINISHED else None


def read(task: str, method: str, seed: int) -> dict | None:
    return load(paths.run_result(task, method, seed))


def finished(task: str, method: str, seed: int) -> dict | None:
    return load_finished(paths.run_result(task, method, seed))


def is_diverged(result: dict | None) -> bool:
    """Whether a result JSON records a diverged run: FAILED at a recorded step (its loss went NaN/inf)."""
    return isinstance(result, dict) and result.get("status") == "FAILED" and "failed_step" in result


def write(result: dict) -> Path:
    """Write (or rewrite) a run's result JSON, atomically; its path comes from task, method and seed."""
    return write_json(paths.run_result(result["task"], result["method"], result["seed"]), result)


def write_history(task: str, method: str, seed: int, history) -> Path:
    """The per-step training loss and learning rate (a loop.History) as CSV."""
    rows = ["step,loss,lr"] + [f"{s},{l:.6g},{r:.6g}" for s, l, r in zip(history.steps, history.loss, history.lr)]
    return write_text(paths.run_history(task, method, seed), "\n".join(rows) + "\n")


def read_history(task: str, method: str, seed: int) -> pd.DataFrame | None:
    """The loss history sorted by step, only beside a FINISHED result (so a curve matches the tables)."""
    path = paths.run_history(task, method, seed)
    if finished(task, method, seed) is None or not path.is_file():
        return None
    history = pd.read_csv(path)
    lacking = {"step", "loss"} - set(history.columns)
    if lacking:
        raise ValueError(f"{path}: history lacks columns {sorted(lacking)}")
    return history.sort_values("step") if len(history) else None


def write_sharpness(measures: dict) -> Path:
    return write_json(paths.run_sharpness(measures["task"], measures["method"], measures["seed"]), measures)


def read_sharpness(task: str, method: str, seed: int) -> dict | None:
    """A run's flatness measures, only beside a FINISHED result (so accuracy and flatness agree)."""
    path = paths.run_sharpness(task, method, seed)
    if finished(task, method, seed) is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: sharpness file is not valid JSON ({err})") from err


def stable(record: dict, volatile: tuple[str, ...] = VOLATILE) -> dict:
    """A copy of `record` without its volatile keys (dotted paths): what two identical runs share."""
    out = copy.deepcopy(record)
    for key in volatile:
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def json_equal(a, b) -> bool:
    """Equal as a record stores them in JSON: exact values, and a NaN (a metric not run, an
    unconverged λ_max) equals a NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def sharpness_digest(record: dict) -> str:
    """The content hash of a sharpness record without its timings (SHARPNESS_VOLATILE): what its job
    writes into the pair file and MLflow and the audit holds the record against; deterministic, so
    the pair file stays byte-identical across runs."""
    text = json.dumps(stable(record, SHARPNESS_VOLATILE), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
