"""Rendering of a table's cells as Markdown, LaTeX and CSV: the display grid (each task beside its
paper column, Avg, optional cost columns), the cell text, and the notes under the table."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from lorarepro.reporting.stats import flat_pairs
from lorarepro.config import spec_seeds
from lorarepro.reporting.tables.cells import is_complete, row_averages, table_spec

CSV_COLUMNS = [
    "table", "method", "label", "task", "mirrors", "n_seeds", "n_expected", "n_failed",
    "mean", "std", "values", "paper", "best",
]
_MARK = {"md": {"better": " ↑", "worse": " ↓"}, "tex": {"better": r"$^\uparrow$", "worse": r"$^\downarrow$"}}
_PM = {"md": " ± ", "tex": r" $\pm$ "}
_DASH = {"md": "—", "tex": "--"}
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


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
    cells = cells.assign(complete=is_complete(cells))
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
    seeds = spec_seeds(config, table_spec(config, cells["table"].iloc[0]))
    pairs = flat_vs_lora(cells, config.get("methods") or {})
    lines = [
        f"**{cells['table'].iloc[0]}.** {caption}", "",
        tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True), "",
        f"Cells are mean ± std (sample std) of the test metric over {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}); `(k/{len(seeds)})` marks a cell with only k finished "
        "seeds (`; j diverged`: j runs failed with a NaN/inf loss), left out of Avg, of the bold best and of the comparison below. "
        "`paper:` columns are the paper's reported means for the mirrored task, empty where unknown. "
        "↑/↓ after a Flat cell: significantly better/worse than its base (paired by seed, p < 0.05, "
        "uncorrected; complete cells only; every test in "
        f"`{cells['table'].iloc[0]}_significance.md`, the pre-registered claims in `results/claims.md`).",
        "",
        "Flat-LoRA vs LoRA: " + ("; ".join(pairs) if pairs else "no Flat row with its base") + ".",
    ]
    lines += [f"\nNot run: {note}." for note in not_run_notes(cells)]
    return "\n".join(lines) + "\n"


def render_latex(cells: pd.DataFrame, caption: str, config: dict, extra=None) -> str:
    header, rows = _wide(cells, "tex", extra)
    n_seeds = len(spec_seeds(config, table_spec(config, cells["table"].iloc[0])))
    full_caption = (f"{_tex_escape(caption)}. Mean $\\pm$ std over {n_seeds} seeds; "
                    f"(k/{n_seeds}) marks incomplete cells; $^\\uparrow$/$^\\downarrow$: Flat variant "
                    f"significantly better/worse than its base (paired t-test over the {n_seeds} seeds, "
                    "95\\% CI excludes 0)."
                    + "".join(f" Not run: {_tex_escape(note)}." for note in not_run_notes(cells)))
    lines = [
        "% generated by lorarepro.reporting.tables; needs \\usepackage{booktabs}",
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
