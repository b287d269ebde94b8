"""Result tables of the reproduced runs beside the paper's numbers (CSV, Markdown, LaTeX).

Each cell is the mean ± sample std of the test metric over every configured seed. A cell with
fewer finished seeds than configured is shown but flagged `(k/n)` and kept out of the row average,
the best-cell marking and every comparison, so a missing seed can never pass for a full result.

A seed whose test split was deliberately not run (a FINISHED run with a null metric and a reason
under `not_run`: no judge configured) is never a number: the cell reads "not run", the reason is
given under the table (Markdown) or in the caption (LaTeX), the CSV gains `n_not_run`/`not_run`
columns, and like a missing seed it stays out of every average and comparison.

Each table also gets `{id}_significance.csv|md`: every Flat variant against its base (pairing rule
in `stats.flat_pairs`), per task, paired by seed; a Flat cell of the main table is marked ↑/↓ only
when the 95% CI of its per-seed gain excludes 0 and both cells are complete.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import mean, stdev

import pandas as pd
import yaml
from tabulate import tabulate

from lorarepro import cost, paths
from lorarepro.config import sharpness_specs, specs
from lorarepro.atomic import write_text
from lorarepro.stats import flat_pairs, flatness_verdicts, method_summary, paired_test, verdict

FINISHED = "FINISHED"
CSV_COLUMNS = [
    "table", "method", "label", "task", "mirrors", "n_seeds", "n_expected", "n_failed",
    "mean", "std", "values", "paper", "best",
]
SIG_COLUMNS = [
    "table", "task", "flat_method", "base_method", "n", "mean_diff", "paper_gain",
    "ci_lo", "ci_hi", "p_ttest", "p_sign", "p_permutation", "significant", "seeds",
]
_MARK = {"md": {"better": " ↑", "worse": " ↓"}, "tex": {"better": r"$^\uparrow$", "worse": r"$^\downarrow$"}}
_PM = {"md": " ± ", "tex": r" $\pm$ "}
_DASH = {"md": "—", "tex": "--"}
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


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


def load_finished_run(path: str | Path) -> dict | None:
    """A run counts only once the trainer marked it FINISHED; anything else reads as missing."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: result file is not valid JSON ({err})") from err
    return run if run.get("status") == FINISHED else None


# ----------------------------------------------------------------------------- collecting cells


def _spec(config: dict, table_id: str) -> dict:
    tables = specs(config, "tables")
    if table_id not in tables:
        raise KeyError(f"unknown table id {table_id!r}; configured: {sorted(tables)}")
    return tables[table_id]


def _lookup(config: dict, section: str, key: str) -> dict:
    entries = config.get(section) or {}
    if key not in entries:
        raise KeyError(f"{section}: no entry {key!r} (a table or figure refers to it)")
    return entries[key]


def _test_metric(run: dict, path: Path) -> float | None:
    """None: the test split was deliberately not run (a null metric with its reason under `not_run`)."""
    if (run.get("metrics") or {}).get("test", 0) is None and "test" in (run.get("not_run") or {}):
        return None
    try:
        return float(run["metrics"]["test"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: FINISHED run has no numeric metrics.test") from err


def collect_cell(task: str, method: str, seeds: list[int]) -> dict:
    """Per-seed test values of one (method, task); n_seeds < n_expected flags an incomplete cell."""
    values, used, failed, not_run = [], [], 0, []
    for seed in seeds:
        path = paths.run_result(task, method, seed)
        run = load_finished_run(path)
        if run is not None:
            value = _test_metric(run, path)
            if value is None:
                not_run.append(run["not_run"]["test"])
            else:
                values.append(value)
            used.append(str(path))
        elif path.is_file():
            failed += 1  # recorded but not FINISHED: the trainer's FAILED outcome (loss went NaN/inf)
    n = len(values)
    return {
        "values": values, "runs": used, "n_seeds": n, "n_expected": len(seeds), "n_failed": failed,
        "n_not_run": len(not_run), "not_run": "; ".join(sorted(set(not_run))),
        "mean": mean(values) if n else math.nan,
        "std": (stdev(values) if n > 1 else 0.0) if n else math.nan,
    }


def paper_value(reference: dict | None, paper_table: str | None, row: str | None,
                column: str | None) -> float | None:
    """The paper's number for a cell, or None: unknown cells stay empty, never guessed."""
    value = (((reference or {}).get(paper_table) or {}).get(row) or {}).get(column)
    return None if value is None else float(value)


def table_cells(table_id: str, config: dict, reference: dict | None = None) -> pd.DataFrame:
    """Long form, one row per (method, task), with the best complete cell of each task marked."""
    spec = _spec(config, table_id)
    if not spec.get("methods") or not spec.get("tasks"):
        raise ValueError(f"table {table_id!r} needs at least one method and one task")
    seeds = list(config["seeds"])
    records = []
    for method in spec["methods"]:
        method_cfg = _lookup(config, "methods", method)
        for task in spec["tasks"]:
            mirrors = _lookup(config, "tasks", task).get("mirrors")
            cell = collect_cell(task, method, seeds)
            records.append({
                "table": table_id, "method": method,
                "label": method_cfg.get("label", method), "task": task, "mirrors": mirrors,
                **cell,
                "paper": paper_value(reference, spec.get("paper_table"),
                                     method_cfg.get("paper_row"), mirrors),
            })
    cells = pd.DataFrame.from_records(records)
    return _mark_best(cells)


def _complete(cells: pd.DataFrame) -> pd.Series:
    return (cells["n_expected"] > 0) & (cells["n_seeds"] == cells["n_expected"])


def _mark_best(cells: pd.DataFrame) -> pd.DataFrame:
    """Only complete cells compete, so a lucky partial cell is never shown as the winner."""
    cells = cells.copy()
    complete = _complete(cells)
    best_by_task = cells[complete].groupby("task")["mean"].max()
    cells["best"] = complete & (cells["mean"] == cells["task"].map(best_by_task))
    return cells


def row_averages(cells: pd.DataFrame) -> pd.Series:
    """Mean over tasks of a row's task means; NaN unless every task cell of the row is complete."""
    cells = cells.assign(complete=_complete(cells))
    grouped = cells.groupby("method", sort=False)
    avg = grouped["mean"].mean()
    return avg.where(grouped["complete"].all())


# ----------------------------------------------------------------------------- significance


def seed_values(task: str, method: str, seeds: list[int]) -> dict[int, float]:
    """{seed: test metric} of the FINISHED runs, so two methods can be paired seed by seed."""
    values = {}
    for seed in seeds:
        path = paths.run_result(task, method, seed)
        run = load_finished_run(path)
        if run is not None and (value := _test_metric(run, path)) is not None:
            values[seed] = value
    return values


def paper_gain(reference: dict | None, spec: dict, config: dict, flat: str, base: str,
               task: str) -> float | None:
    """The paper's gain of `flat` over `base` on the mirrored task: an explicit claim under
    `{paper_table}_gains` ("<flat row> - <base row>"), else paper flat − paper base, else None."""
    methods, mirrors = config["methods"], _lookup(config, "tasks", task).get("mirrors")
    rows = [methods[m].get("paper_row") for m in (flat, base)]
    gains = (reference or {}).get(f"{spec.get('paper_table')}_gains") or {}
    claimed = (gains.get(f"{rows[0]} - {rows[1]}") or {}).get(mirrors)
    if claimed is not None:
        return float(claimed)
    values = [paper_value(reference, spec.get("paper_table"), row, mirrors) for row in rows]
    return None if None in values else round(values[0] - values[1], 4)


def significance(table_id: str, config: dict, reference: dict | None = None) -> pd.DataFrame:
    """One row per (flat, base, task): paired tests over the seeds finished for both methods."""
    spec = _spec(config, table_id)
    seeds = list(config["seeds"])
    records = []
    for flat, base in flat_pairs(config.get("methods") or {}, list(spec["methods"])):
        for task in spec["tasks"]:
            a, b = seed_values(task, flat, seeds), seed_values(task, base, seeds)
            common = [s for s in seeds if s in a and s in b]
            test = paired_test([a[s] for s in common], [b[s] for s in common])
            lo, hi = test["ci95"] or (None, None)
            records.append({
                "table": table_id, "task": task, "flat_method": flat, "base_method": base,
                "n": test["n"], "mean_diff": test["mean_diff"],
                "paper_gain": paper_gain(reference, spec, config, flat, base, task),
                "ci_lo": lo, "ci_hi": hi, "p_ttest": test["p_ttest"], "p_sign": test["p_sign"],
                "p_permutation": test["p_permutation"], "significant": verdict(test),
                "seeds": ";".join(map(str, common)),
            })
    return pd.DataFrame.from_records(records, columns=SIG_COLUMNS)


def _attach_marks(cells: pd.DataFrame, sig: pd.DataFrame) -> pd.DataFrame:
    """`sig` column for the Flat cells to mark; only when both cells are complete, like every comparison."""
    cells = cells.assign(sig="")
    complete = cells[_complete(cells)].set_index(["method", "task"]).index
    for row in sig.itertuples():
        if row.significant in ("better", "worse") and {(row.flat_method, row.task),
                                                        (row.base_method, row.task)} <= set(complete):
            cells.loc[(cells["method"] == row.flat_method) & (cells["task"] == row.task), "sig"] = row.significant
    return cells


def _sig_text(value, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def render_significance_md(sig: pd.DataFrame, table_id: str, config: dict) -> str:
    seeds = list(config["seeds"])
    digits = {"mean_diff": ".2f", "paper_gain": ".2f", "ci_lo": ".2f", "ci_hi": ".2f",
              "p_ttest": ".3g", "p_sign": ".3g", "p_permutation": ".3g"}
    rows = [[_sig_text(getattr(r, c), digits[c]) if c in digits else str(getattr(r, c))
             for c in SIG_COLUMNS[1:]] for r in sig.itertuples()]
    body = (tabulate(rows, headers=SIG_COLUMNS[1:], tablefmt="pipe", disable_numparse=True)
            if rows else "No Flat variant with its base among this table's rows.")
    lines = [
        f"**{table_id}: significance.** Flat variants against their base, per task, paired by seed.", "",
        body, "",
        f"{len(seeds)} seeds configured ({', '.join(map(str, seeds))}); `n` = seeds finished for both "
        "methods (`seeds` lists them). Tests: paired t-test; with fewer than 5 seeds also exact sign "
        "and permutation tests (all three are always reported; with n pairs the exact tests cannot "
        f"give p below 2/2^n, {2 ** (1 - len(seeds)):.4g} for {len(seeds)} seeds). `mean_diff` = flat − base "
        "in points of the test metric, with its 95% t-interval `ci_lo`..`ci_hi`; `paper_gain` = the "
        "paper's gain for the mirrored task, empty where unknown; `significant` is better/worse only "
        "when the 95% CI excludes 0, else n.s.",
    ]
    return "\n".join(lines) + "\n"


def render_significance_csv(sig: pd.DataFrame) -> str:
    numeric = ["mean_diff", "paper_gain", "ci_lo", "ci_hi", "p_ttest", "p_sign", "p_permutation"]
    return sig.astype({c: float for c in numeric}).round(6).to_csv(index=False)


# ----------------------------------------------------------------------------- rendering


def _tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(char, char) for char in str(text))


def _bold(text: str, style: str) -> str:
    return f"**{text}**" if style == "md" else rf"\textbf{{{text}}}"


def _format_cell(cell, style: str) -> str:
    failed = f"; {cell.n_failed} diverged" if getattr(cell, "n_failed", 0) else ""
    not_run = getattr(cell, "n_not_run", 0)
    if cell.n_seeds == 0 and not_run:  # never a number: the reason is under the table
        return "not run" + (f" ({not_run}/{cell.n_expected}{failed})" if not_run < cell.n_expected or failed else "")
    failed += f"; {not_run} not run" if not_run else ""
    if cell.n_seeds == 0:
        text = f"{_DASH[style]} (0/{cell.n_expected}{failed})"
    else:
        text = f"{cell.mean:.2f}{_PM[style]}{cell.std:.2f}"
        if cell.n_seeds < cell.n_expected:
            text += f" ({cell.n_seeds}/{cell.n_expected}{failed})"
    text = _bold(text, style) if cell.best else text
    return text + _MARK[style].get(getattr(cell, "sig", ""), "")


def _format_number(value, style: str, best: bool = False) -> str:
    if value is None or pd.isna(value):
        return ""
    text = f"{value:.2f}"
    return _bold(text, style) if best else text


def _wide(cells: pd.DataFrame, style: str, extra=None) -> tuple[list[str], list[list[str]]]:
    """Display grid: each task column followed by its paper column, then Avg, then any `extra`
    (header, {method: values}) columns such as cost.cost_columns."""
    tasks = list(dict.fromkeys(cells["task"]))
    first = cells.drop_duplicates("task").set_index("task")
    header = ["Method"]
    for task in tasks:
        header += [task, f"paper: {first.loc[task, 'mirrors'] or '?'}"]
    header.append("Avg")
    extra_header, extra_values = extra or ([], {})
    header += extra_header
    avg = row_averages(cells)
    best_avg = avg.max()
    rows = []
    for method, group in cells.groupby("method", sort=False):
        by_task = group.set_index("task")
        row = [by_task["label"].iloc[0]]
        for task in tasks:
            cell = next(by_task.loc[[task]].itertuples())
            row += [_format_cell(cell, style), _format_number(cell.paper, style)]
        row.append(_format_number(avg[method], style, best=avg[method] == best_avg))
        row += [_format_number(v, style) for v in extra_values.get(method, [])]
        rows.append(row)
    return header, rows


def flat_vs_lora(cells: pd.DataFrame, methods_cfg: dict) -> list[str]:
    """Honest tally of each Flat row against its base (`stats.flat_pairs`), over complete cells only."""
    cells = cells.assign(complete=_complete(cells))
    n_tasks = cells["task"].nunique()
    sentences = []
    for flat, base in flat_pairs(methods_cfg, list(dict.fromkeys(cells["method"]))):
        pair = cells[cells["method"].isin([flat, base])].pivot(
            index="task", columns="method", values=["mean", "complete", "n_not_run"])
        comparable = pair["complete"].all(axis=1).astype(bool)
        not_run = int((~comparable & (pair["n_not_run"].sum(axis=1) > 0)).sum())
        diff = (pair["mean"][flat] - pair["mean"][base])[comparable]
        n = int(comparable.sum())
        text = f"{flat} beats {base} on {int((diff > 0).sum())} of {n} task{'s' * (n != 1)}"
        notes = []
        if (ties := int((diff == 0).sum())):
            notes.append(f"{ties} tied")
        if not_run:
            notes.append(f"{not_run} not run")
        if n + not_run < n_tasks:
            notes.append(f"{n_tasks - n - not_run} not comparable: incomplete seeds")
        sentences.append(text + (f" ({'; '.join(notes)})" if notes else ""))
    return sentences


def not_run_notes(cells: pd.DataFrame) -> list[str]:
    """One note per (task, reason) of the cells not run: which methods, and why."""
    if "n_not_run" not in cells or not cells["n_not_run"].any():
        return []
    shown = cells[cells["n_not_run"] > 0]
    return [f"{task} ({', '.join(dict.fromkeys(group['label']))}): {reason}"
            for (task, reason), group in shown.groupby(["task", "not_run"], sort=False)]


def render_markdown(cells: pd.DataFrame, caption: str, config: dict, extra=None) -> str:
    header, rows = _wide(cells, "md", extra)
    seeds = list(config["seeds"])
    pairs = flat_vs_lora(cells, config.get("methods") or {})
    lines = [
        f"**{cells['table'].iloc[0]}.** {caption}", "",
        tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True), "",
        f"Cells are mean ± std (sample std) of the test metric over {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}); `(k/{len(seeds)})` marks a cell with only k finished "
        "seeds (`; j diverged`: j runs failed with a NaN/inf loss), left out of Avg, of the bold best and of the comparison below. "
        "`paper:` columns are the paper's reported means for the mirrored task, empty where unknown. "
        "↑/↓ after a Flat cell: significantly better/worse than its base (paired t-test over the "
        f"{len(seeds)} seeds, 95% CI of the per-seed difference excludes 0; complete cells only; "
        f"all tests in `{cells['table'].iloc[0]}_significance.md`).",
        "",
        "Flat-LoRA vs LoRA: " + ("; ".join(pairs) if pairs else "no Flat row with its base") + ".",
    ]
    lines += [f"\nNot run: {note}." for note in not_run_notes(cells)]
    return "\n".join(lines) + "\n"


def render_latex(cells: pd.DataFrame, caption: str, config: dict, extra=None) -> str:
    header, rows = _wide(cells, "tex", extra)
    n_seeds = len(config["seeds"])
    full_caption = (f"{_tex_escape(caption)}. Mean $\\pm$ std over {n_seeds} seeds; "
                    f"(k/{n_seeds}) marks incomplete cells; $^\\uparrow$/$^\\downarrow$: Flat variant "
                    f"significantly better/worse than its base (paired t-test over the {n_seeds} seeds, "
                    "95\\% CI excludes 0)."
                    + "".join(f" Not run: {_tex_escape(note)}." for note in not_run_notes(cells)))
    lines = [
        "% generated by lorarepro.tables; needs \\usepackage{booktabs}",
        "\\begin{table}[ht]", "\\centering", f"\\caption{{{full_caption}}}",
        f"\\label{{tab:{cells['table'].iloc[0]}}}",
        f"\\begin{{tabular}}{{l{'r' * (len(header) - 1)}}}", "\\toprule",
        " & ".join(_tex_escape(h) for h in header) + r" \\", "\\midrule",
    ]
    lines += [" & ".join([_tex_escape(row[0]), *row[1:]]) + r" \\" for row in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def render_csv(cells: pd.DataFrame) -> str:
    tidy = cells.assign(values=cells["values"].map(lambda vs: ";".join(str(v) for v in vs)))
    # the not-run columns only where a cell has one: the other tables' CSVs keep their columns
    columns = CSV_COLUMNS + (["n_not_run", "not_run"] if not_run_notes(cells) else [])
    return tidy[columns].round({"mean": 4, "std": 4}).to_csv(index=False)


# ----------------------------------------------------------------------------- entry points


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
