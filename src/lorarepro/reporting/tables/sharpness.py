"""The flatness table (table_sharpness.csv|md): every measured run's flatness in the full weight
space (lorarepro.stages.sharpness) beside its accuracy, summarised per method, with a per-task verdict for
each Flat variant against its base."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.core.config import entry, sharpness_runs, sharpness_specs
from lorarepro.reporting.stats import flatness_verdicts, method_summary

def load_measures(task: str, method: str, seed: int) -> dict | None:
    """The run's flatness summary beside its metrics, only for a FINISHED result (records.read_sharpness)."""
    measures = records.read_sharpness(task, method, seed)
    if measures is None:
        return None
    path = paths.run_sharpness(task, method, seed)
    try:
        summary = {"expected_sharpness": {str(k): float(v) for k, v in measures["expected_sharpness"].items()},
                   "lambda_max": math.nan if measures["hessian_top"] is None else float(measures["hessian_top"]["eigenvalue"])}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a sharpness file with expected_sharpness and "
                         f"hessian_top.eigenvalue ({err!r})") from err
    metrics = records.finished(task, method, seed).get("metrics") or {}
    return {**summary, "metrics": metrics, "path": str(path)}


def runs_frame(runs: dict, methods: list[str]):
    """One row per measured run of {(task, method): seeds}, in `methods` order: sharpness per ρ
    (`rho=…` columns), λ_max, test and mean OOD accuracy."""
    rows = []
    for method, ((task, _), seeds) in ((m, item) for m in methods for item in runs.items() if item[0][1] == m):
        for seed in seeds:
            m = load_measures(task, method, seed)
            if m is None:
                continue
            ood = [float(v) for k, v in m["metrics"].items() if k.startswith("ood_s") and v is not None]
            rows.append({"method": method, "task": task, "seed": seed, "path": m["path"],
                         **{f"rho={rho}": v for rho, v in m["expected_sharpness"].items()},
                         "lambda_max": m["lambda_max"],
                         "test": float(math.nan if m["metrics"].get("test") is None else m["metrics"]["test"]),
                         "ood": sum(ood) / len(ood) if ood else math.nan})
    if not rows:
        return pd.DataFrame(columns=["method", "task", "seed", "path", "lambda_max", "test", "ood"])
    return pd.DataFrame.from_records(rows)


SHARPNESS_ID = "table_sharpness"
SHARPNESS_CAPTION = (
    "Flatness in the full weight space, on the merged weights (W + s·BA for LoRA) of every linear "
    "layer LoRA targets: expected loss increase E[L(W+ε)] − L(W) under Flat-LoRA's filter-wise noise "
    "of radius ρ, and the top Hessian eigenvalue λ_max, on a fixed set of training examples (what each run minimised); clean test "
    "and mean OOD (ood_s1-5) accuracy (%) of the same runs. Lower ρ-columns and λ_max = flatter."
)


def sharpness_files(config: dict) -> tuple[dict[Path, str], dict]:
    """table_sharpness.csv|md as {path: text} (per method, mean over seeds then over the main tables'
    tasks, with a verdict per Flat/base pair) and its index entry. Reads paths.run_sharpness files."""
    runs = sharpness_runs(config)
    methods = list(dict.fromkeys(m for spec in sharpness_specs(config).values() for m in spec["methods"]))
    frame = runs_frame(runs, methods)
    summary = method_summary(frame) if len(frame) else pd.DataFrame(columns=["method"])
    summary.insert(1, "label", [entry(config, "methods", m).get("label", m) for m in summary["method"]])
    shown = summary.drop(columns="method")
    body = (tabulate(shown.values.tolist(), headers=list(shown.columns), tablefmt="pipe", floatfmt=".4g")
            if len(shown) else "No sharpness measured yet.")
    md = "\n".join([
        f"**{SHARPNESS_ID}.** {SHARPNESS_CAPTION}", "", body, "",
        "Means over each run's seeds where measured (`n_runs` in all), then over "
        "tasks (`n_tasks`); averages across tasks mix loss scales, so the verdict counts tasks, "
        "comparing seed-paired means per task:", "",
        *(f"- {line}" for line in flatness_verdicts(frame, config, methods)),
    ]) + "\n"
    files = {paths.table(SHARPNESS_ID, "csv"): summary.round(6).to_csv(index=False),
             paths.table(SHARPNESS_ID, "md"): md}
    return files, {"id": SHARPNESS_ID, "caption": SHARPNESS_CAPTION, "rows": list(summary["method"]),
                   "columns": [c for c in summary.columns if c not in ("method", "label")],
                   "runs": sorted(frame["path"]), "files": [str(f) for f in files]}
