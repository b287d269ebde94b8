"""Cells of a result table: each configured (method, task) collected from the FINISHED run JSONs
of every seed (mean, sample std, diverged/not-run counts), the paper's number beside it, the best
complete cell and the row averages."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, stdev

import pandas as pd
import yaml

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.core.config import column, entry, spec_seeds, specs
from lorarepro.reporting import claims

# ----------------------------------------------------------------------------- small I/O helpers


def load_reference(path: str | Path) -> dict:
    """The paper's numbers; an empty file means "nothing known", not an error."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of paper tables, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- collecting cells


def table_spec(config: dict, table_id: str) -> dict:
    tables = specs(config, "tables")
    if table_id not in tables:
        raise KeyError(f"unknown table id {table_id!r}; configured: {sorted(tables)}")
    return tables[table_id]


def seed_metric(run: dict, path: Path, split: str = "test") -> float | None:
    """None: the split was deliberately not run (a null metric with its reason under `not_run`)."""
    if (run.get("metrics") or {}).get(split, 0) is None and split in (run.get("not_run") or {}):
        return None
    try:
        return float(run["metrics"][split])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: FINISHED run has no numeric metrics.{split}") from err


def collect_cell(task: str, method: str, seeds: list[int], split: str = "test") -> dict:
    """Per-seed values of one (method, task) metric (the test split's unless `split` names another);
    n_seeds < n_expected flags an incomplete cell; n_collapsed counts its runs that did not learn
    (lorarepro.reporting.claims.collapsed), kept in the mean."""
    values, used, failed, not_run = [], [], 0, []
    rate = claims.majority_rate(task)
    n_collapsed = sum(bool(claims.collapsed(task, method, seed, rate)) for seed in seeds)
    for seed in seeds:
        path = paths.run_result(task, method, seed)
        run = records.load_finished(path)
        if run is not None:
            value = seed_metric(run, path, split)
            if value is None:
                not_run.append(run["not_run"][split])
            else:
                values.append(value)
            used.append(str(path))
        elif path.is_file():
            failed += 1  # recorded but not FINISHED: the trainer's FAILED outcome (loss went NaN/inf)
    n = len(values)
    return {
        "values": values, "runs": used, "n_seeds": n, "n_expected": len(seeds), "n_failed": failed,
        "n_not_run": len(not_run), "not_run": "; ".join(sorted(set(not_run))), "n_collapsed": n_collapsed,
        "mean": mean(values) if n else math.nan,
        "std": (stdev(values) if n > 1 else 0.0) if n else math.nan,
    }


def paper_value(reference: dict | None, paper_table: str | None, row: str | None,
                column: str | None) -> float | None:
    """The paper's number for a cell (workflow/configs/paper_reference.yaml: a number, or a mapping
    with its `value`), or None: unknown cells stay empty, never guessed."""
    value = ((((reference or {}).get(paper_table) or {}).get("rows") or {}).get(row) or {}).get(column)
    if isinstance(value, dict):
        value = value.get("value")
    return None if value is None else float(value)


def table_cells(table_id: str, config: dict, reference: dict | None = None) -> pd.DataFrame:
    """Long form, one row per (method, task), with the best complete cell of each task marked."""
    spec = table_spec(config, table_id)
    if not spec.get("methods") or not spec.get("tasks"):
        raise ValueError(f"table {table_id!r} needs at least one method and one task")
    seeds = spec_seeds(config, spec)
    rows = []
    for method in spec["methods"]:
        method_cfg = entry(config, "methods", method)
        for task in spec["tasks"]:
            mirrors = column_mirrors(config, task)
            cell = collect_cell(*column(task)[:1], method, seeds, column(task)[1])
            rows.append({
                "table": table_id, "method": method,
                "label": method_cfg.get("label", method), "task": task, "mirrors": mirrors,
                "scale": claims.METRIC_SCALES.get(claims.task_metric(config, column(task)[0]), "percent"),
                **cell,
                "paper": paper_value(reference, spec.get("paper_table"),
                                     method_cfg.get("paper_row"), mirrors),
            })
    cells = pd.DataFrame.from_records(rows)
    return _mark_best(cells)


def column_mirrors(config: dict, name: str) -> str | None:
    """The paper's column a table column stands in for: the task's `mirrors`, or for `task:benchmark`
    the benchmark's (tasks.<task>.lm_eval.<benchmark>.mirrors)."""
    task, split = column(name)
    task_cfg = entry(config, "tasks", task)
    if split == "test":
        return task_cfg.get("mirrors")
    return ((task_cfg.get("lm_eval") or {}).get(split) or {}).get("mirrors")


def is_complete(cells: pd.DataFrame) -> pd.Series:
    return (cells["n_expected"] > 0) & (cells["n_seeds"] == cells["n_expected"])


def _mark_best(cells: pd.DataFrame) -> pd.DataFrame:
    """Only complete cells compete, so a lucky partial cell is never shown as the winner."""
    cells = cells.copy()
    complete = is_complete(cells)
    best_by_task = cells[complete].groupby("task")["mean"].max()
    cells["best"] = complete & (cells["mean"] == cells["task"].map(best_by_task))
    return cells


def row_averages(cells: pd.DataFrame) -> pd.Series:
    """Mean over tasks of a row's task means; NaN unless every task cell of the row is complete, and
    everywhere when the columns' metrics are on different scales (a judge's 1-10 beside a percentage:
    their mean has no unit, so the table shows no Avg)."""
    cells = cells.assign(complete=is_complete(cells))
    if "scale" in cells and cells["scale"].nunique() > 1:
        return cells.groupby("method", sort=False)["mean"].mean() * math.nan
    grouped = cells.groupby("method", sort=False)
    avg = grouped["mean"].mean()
    return avg.where(grouped["complete"].all())
