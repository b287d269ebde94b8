"""Entry points: every configured table's files (plus the sharpness table), the tables index and
the metrics summary, as {path: text} for the audit, or written (atomically) for the tables rule."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from lorarepro import cost, paths
from lorarepro.atomic import write_text
from lorarepro.config import sharpness_specs, specs
from lorarepro.stats import flatness_verdicts, method_summary
from lorarepro.tables.cells import _complete, _lookup, _spec, load_reference, row_averages, table_cells
from lorarepro.tables.paired import _attach_marks, render_significance_csv, render_significance_md, significance
from lorarepro.tables.render import render_csv, render_latex, render_markdown


def table_files(table_id: str, config: dict, reference: dict | None) -> tuple[dict[Path, str], dict]:
    """The table's CSV/MD/TeX and significance files as {path: text}, and its index entry with the
    exact runs it read; nothing is written (the audit recomputes with this too)."""
    spec = _spec(config, table_id)
    sig = significance(table_id, config, reference)
    cells = _attach_marks(table_cells(table_id, config, reference), sig)
    extra = cost.cost_columns(spec, list(config["seeds"])) if spec.get("cost") else None
    md = render_markdown(cells, spec["caption"], config, extra) + (f"\n{cost.COST_NOTE}\n" if extra else "")
    files = {
        paths.table(table_id, "csv"): render_csv(cells),
        paths.table(table_id, "md"): md,
        paths.table(table_id, "tex"): render_latex(cells, spec["caption"], config, extra),
        paths.table(f"{table_id}_significance", "csv"): render_significance_csv(sig),
        paths.table(f"{table_id}_significance", "md"): render_significance_md(sig, table_id, config),
    }
    entry = {
        "id": table_id, "caption": spec["caption"],
        "rows": list(spec["methods"]), "columns": list(spec["tasks"]),
        "runs": sorted(run for runs in cells["runs"] for run in runs),
        "files": [str(path) for path in files],
    }
    return files, entry


def _write(files: dict[Path, str]) -> None:
    for path, text in files.items():
        write_text(path, text)


def build_table(table_id: str, config: dict, reference: dict | None) -> dict:
    """Write one table's files; returns its index entry."""
    files, entry = table_files(table_id, config, reference)
    _write(files)
    return entry


SHARPNESS_ID = "table_sharpness"
SHARPNESS_CAPTION = (
    "Flatness in the full weight space, on the merged weights (W + s·BA for LoRA) of every linear "
    "layer LoRA targets: expected loss increase E[L(W+ε)] − L(W) under Flat-LoRA's filter-wise noise "
    "of radius ρ, and the top Hessian eigenvalue λ_max, on a fixed validation batch set; clean test "
    "and mean OOD (ood_s1-5) accuracy (%) of the same runs. Lower ρ-columns and λ_max = flatter."
)


def sharpness_files(config: dict) -> tuple[dict[Path, str], dict]:
    """table_sharpness.csv|md as {path: text} (per method, mean over seeds then over the main tables'
    tasks, with a verdict per Flat/base pair) and its index entry. Reads paths.run_sharpness files."""
    from lorarepro import sharpness  # deferred: pulls in torch

    tables = sharpness_specs(config).values()
    tasks = list(dict.fromkeys(t for spec in tables for t in spec["tasks"]))
    methods = list(dict.fromkeys(m for spec in tables for m in spec["methods"]))
    frame = sharpness.runs_frame(config, tasks, methods)
    summary = method_summary(frame) if len(frame) else pd.DataFrame(columns=["method"])
    summary.insert(1, "label", [_lookup(config, "methods", m).get("label", m) for m in summary["method"]])
    shown = summary.drop(columns="method")
    body = (tabulate(shown.values.tolist(), headers=list(shown.columns), tablefmt="pipe", floatfmt=".4g")
            if len(shown) else "No sharpness measured yet.")
    md = "\n".join([
        f"**{SHARPNESS_ID}.** {SHARPNESS_CAPTION}", "", body, "",
        f"Means over the {len(config['seeds'])} configured seeds where measured (`n_runs`), then over "
        "tasks (`n_tasks`); averages across tasks mix loss scales, so the verdict counts tasks, "
        "comparing seed-paired means per task:", "",
        *(f"- {line}" for line in flatness_verdicts(frame, config, methods)),
    ]) + "\n"
    files = {paths.table(SHARPNESS_ID, "csv"): summary.round(6).to_csv(index=False),
             paths.table(SHARPNESS_ID, "md"): md}
    return files, {"id": SHARPNESS_ID, "caption": SHARPNESS_CAPTION, "rows": list(summary["method"]),
                   "columns": [c for c in summary.columns if c not in ("method", "label")],
                   "runs": sorted(frame["path"]), "files": [str(f) for f in files]}


def sharpness_table(config: dict) -> dict:
    """Write table_sharpness.csv|md; returns its index entry."""
    files, entry = sharpness_files(config)
    _write(files)
    return entry


def index_text(entries: list[dict]) -> str:
    return json.dumps({"tables": entries}, indent=2) + "\n"


def metrics_text(config: dict) -> str:
    """Flat {"table/method/task": mean} for `dvc metrics show`; incomplete cells are left out."""
    summary = {}
    for table_id in specs(config, "tables"):
        cells = table_cells(table_id, config)
        for cell in cells[_complete(cells)].itertuples():
            summary[f"{table_id}/{cell.method}/{cell.task}"] = round(float(cell.mean), 4)
        for method, avg in row_averages(cells).dropna().items():
            summary[f"{table_id}/{method}/Avg"] = round(float(avg), 4)
    return json.dumps(summary, indent=2) + "\n"


def all_files(config: dict, reference: dict | None) -> dict[Path, str]:
    """Every file the tables rule writes, as {path: text}: tables, index.json, metrics.json."""
    files, entries = {}, []
    for table_id in specs(config, "tables"):
        texts, entry = table_files(table_id, config, reference)
        files.update(texts)
        entries.append(entry)
    if config.get("sharpness") is not None:
        texts, entry = sharpness_files(config)
        files.update(texts)
        entries.append(entry)
    files[paths.tables_index()] = index_text(entries)
    files[paths.metrics_summary()] = metrics_text(config)
    return files


def build_all(config: dict, reference_path: str | Path) -> None:
    """Every configured table, the tables index and the metrics summary."""
    _write(all_files(config, load_reference(reference_path)))
