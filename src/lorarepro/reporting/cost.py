"""The cost of a table with `cost: true` (the paper's Table 6): time per optimizer step and the
measured peak memory of one training step (lorarepro.stages.training.memory), read from the run records.

They are measurements that change from run to run and machine to machine, so they never enter the
table's own files (which must repeat bit for bit): they make a companion table of their own,
`<table_id>_cost` (paths.cost_table), one of the files paths.measured_outputs exempts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.core.config import column, entry

COST_HEADER = ["ms/step", "step peak MB"]
COST_NOTE = (
    "Cost columns: `ms/step` = training wall time per optimizer step (this machine, other jobs running "
    "beside it, so ±20% is noise); `step peak MB` = peak of the torch CPU bytes allocated during one "
    "training step (the middle one) and live at the same time, measured with the torch profiler's "
    "memory events (lorarepro.stages.training.memory), not a process RSS. Means over the row's finished runs and tasks."
)


def caption(table_id: str) -> str:
    return (f"Measured training cost of {table_id}'s methods; kept apart from the table because wall times "
            "vary between runs and machines")


def run_cost(task: str, method: str, seeds: list[int]) -> list[tuple[float, float]]:
    """(ms per step, step peak MB) of each FINISHED run of (task, method) that recorded both."""
    out = []
    for seed in seeds:
        run = records.finished(task, method, seed)
        res = (run or {}).get("resources") or {}
        if res.get("seconds_per_step") is not None and res.get("step_peak_mb") is not None:
            out.append((1000.0 * res["seconds_per_step"], float(res["step_peak_mb"])))
    return out


def cost_columns(spec: dict, seeds: list[int]) -> tuple[list[str], dict[str, list[float | None]]]:
    """Header and per-method values of a table's cost columns: ms/step and step peak MB, plus, with
    `cost_baseline`, time relative to the baseline (x) and memory beyond it (MB)."""
    means = {}
    for method in spec["methods"]:
        tasks = dict.fromkeys(column(name)[0] for name in spec["tasks"])  # a run counts once, whatever its columns
        values = [v for task in tasks for v in run_cost(task, method, seeds)]
        means[method] = ([sum(v[0] for v in values) / len(values), sum(v[1] for v in values) / len(values)]
                         if values else [None, None])
    header = list(COST_HEADER)
    baseline = spec.get("cost_baseline")
    if baseline is not None:
        header += [f"time vs {baseline} (x)", f"extra MB vs {baseline}"]
        ref = means[baseline]
        for method, (ms, mb) in means.items():
            known = None not in (ms, mb, *ref)
            means[method] = [ms, mb, ms / ref[0] if known else None, mb - ref[1] if known else None]
    return header, means


def cost_files(table_id: str, spec: dict, config: dict, seeds: list[int]) -> dict[Path, str]:
    """The companion `<table_id>_cost.csv|md` as {path: text}: one row per method of the table, its
    cost columns (empty where no run recorded them), the note on how they were measured under the Markdown."""
    header, means = cost_columns(spec, seeds)
    frame = pd.DataFrame([[method, entry(config, "methods", method).get("label", method), *values]
                          for method, values in means.items()], columns=["method", "label", *header])
    shown = [[row[1], *("" if pd.isna(v) else f"{v:.2f}" for v in row[2:])] for row in frame.itertuples(index=False)]
    md = "\n".join([f"**{table_id}_cost.** {caption(table_id)}.", "",
                    tabulate(shown, headers=["Method", *header], tablefmt="pipe", disable_numparse=True), "",
                    COST_NOTE]) + "\n"
    return {paths.cost_table(table_id, "csv"): frame.round(4).to_csv(index=False),
            paths.cost_table(table_id, "md"): md}
