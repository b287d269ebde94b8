"""Rendering of a table's cells as Markdown, LaTeX, HTML and CSV: the display grid (each task beside
its paper column, Avg), the cell text, and the notes under the table. Nothing measured (a table's
cost) is rendered here: these files must repeat bit for bit (lorarepro.reporting.cost has its own).

A paper column that is empty in every row (the paper has no number for it) is left out of every
rendering but the CSV. The LaTeX compiles as it is in a plain `article` with booktabs and graphicx:
mean and std sit in two columns joined by ±, a table of more than `_TEX_NARROW` columns is a
`table*` (both page columns of a two-column paper), and a table still wider than the line is
scaled down to it (never up)."""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tabulate import tabulate

from lorarepro.core.config import spec_seeds
from lorarepro.reporting.claims import COLLAPSE_ALPHA
from lorarepro.reporting.stats import flat_pairs
from lorarepro.reporting.tables.cells import is_complete, row_averages, table_spec

CSV_COLUMNS = [
    "table", "method", "label", "task", "mirrors", "n_seeds", "n_expected", "n_failed", "n_collapsed",
    "mean", "std", "values", "paper", "best",
]
_DAGGER = {"md": " †{}", "html": " †{}", "tex": r"$^{{\dagger {}}}$"}  # k runs of the cell collapsed
_MARK = {"md": {"better": " ↑", "worse": " ↓"}, "tex": {"better": r"$^\uparrow$", "worse": r"$^\downarrow$"},
         "html": {"better": " ↑", "worse": " ↓"}}
_PM = {"md": " ± ", "html": " ± "}
_DASH = {"md": "—", "tex": "--", "html": "—"}
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_TEX_NARROW = 7  # tabular columns that fit one column of a two-column page; wider: table*
_TEX_FIT = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"  # shrink to the line, never enlarge
_CODE = re.compile(r"`([^`]+)`")
_HTML_STYLE = [  # booktabs' look: rules above and below the header and at the bottom, no grid
    {"selector": "", "props": "border-collapse: collapse; border-top: 2px solid #000; border-bottom: 2px solid #000;"
                              " font-family: sans-serif; font-size: 0.9em;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; padding-bottom: 0.5em;"},
    {"selector": "thead th", "props": "border-bottom: 1px solid #000; padding: 0.3em 0.8em; text-align: right;"},
    {"selector": "td", "props": "padding: 0.2em 0.8em; text-align: right; white-space: nowrap;"},
    {"selector": "td.col0, th.col0", "props": "text-align: left;"},
]


@dataclass(frozen=True)
class _Column:
    header: str  # as Markdown and HTML show it
    kind: str  # "cell" (a task's mean ± std), "paper" or "avg" (plain numbers)
    task: str | None = None  # the task a cell or paper column belongs to
    mirrors: str | None = None  # a cell column's paper task (LaTeX heads the task with it)


def _tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(char, char) for char in str(text))


def _bold(text: str, style: str) -> str:
    return {"md": f"**{text}**", "tex": rf"\textbf{{{text}}}", "html": f"<strong>{text}</strong>"}[style]


def _cell_parts(cell, style: str) -> tuple[str, str | None, str]:
    """(mean, std with its seed note, ↑/↓ mark); (text, None, "") for a cell without a number."""
    failed = f"; {cell.n_failed} diverged" if getattr(cell, "n_failed", 0) else ""
    not_run = getattr(cell, "n_not_run", 0)
    if cell.n_seeds == 0 and not_run:  # never a number: the reason is under the table
        return "not run" + (f" ({not_run}/{cell.n_expected}{failed})" if not_run < cell.n_expected or failed else ""), None, ""
    failed += f"; {not_run} not run" if not_run else ""
    if cell.n_seeds == 0:
        return f"{_DASH[style]} (0/{cell.n_expected}{failed})", None, ""
    note = f" ({cell.n_seeds}/{cell.n_expected}{failed})" if cell.n_seeds < cell.n_expected else ""
    collapsed = _DAGGER[style].format(cell.n_collapsed) if getattr(cell, "n_collapsed", 0) else ""
    return f"{cell.mean:.2f}", f"{cell.std:.2f}{note}{collapsed}", _MARK[style].get(getattr(cell, "sig", ""), "")


def _format_cell(cell, style: str) -> str:
    mean, spread, mark = _cell_parts(cell, style)
    if spread is None:
        return mean
    text = f"{mean}{_PM[style]}{spread}"
    return (_bold(text, style) if cell.best else text) + mark


def _format_number(value, style: str, best: bool = False) -> str:
    if _empty(value):
        return ""
    text = f"{value:.2f}"
    return _bold(text, style) if best else text


def _empty(value) -> bool:
    return value is None or pd.isna(value)


def _grid(cells: pd.DataFrame) -> tuple[list[_Column], list[tuple[str, list]]]:
    """The display grid, format-free: columns, and rows of (label, values). Each task's cells (the
    cell tuples) then its paper numbers, then Avg; number columns empty in every row are left out."""
    tasks = list(dict.fromkeys(cells["task"]))
    first = cells.drop_duplicates("task").set_index("task")
    columns = []
    for task in tasks:
        mirrors = first.loc[task, "mirrors"] or None
        columns += [_Column(task, "cell", task, mirrors), _Column(f"paper: {mirrors or '?'}", "paper", task)]
    columns.append(_Column("Avg", "avg"))
    avg = row_averages(cells)
    rows = []
    for method, group in cells.groupby("method", sort=False):
        by_task = group.set_index("task")
        values = []
        for task in tasks:
            cell = next(by_task.loc[[task]].itertuples())
            values += [cell, cell.paper]
        values.append(avg[method])
        rows.append((by_task["label"].iloc[0], values))
    keep = [i for i, column in enumerate(columns)
            if column.kind == "cell" or not all(_empty(values[i]) for _, values in rows)]
    return [columns[i] for i in keep], [(label, [values[i] for i in keep]) for label, values in rows]


def _texts(columns: list[_Column], rows, style: str) -> list[list[str]]:
    """Each row as display strings: its label, then one string per column (the best Avg in bold;
    in LaTeX a task's cell is two tabular cells, mean & std)."""
    cell_text = _tex_cell if style == "tex" else (lambda cell: _format_cell(cell, style))
    avg_at = next((i for i, column in enumerate(columns) if column.kind == "avg"), None)
    best_avg = None if avg_at is None else max((values[avg_at] for _, values in rows if not _empty(values[avg_at])),
                                               default=None)
    return [[label] + [cell_text(value) if column.kind == "cell"
                       else _format_number(value, style, best=column.kind == "avg" and value == best_avg)
                       for column, value in zip(columns, values)]
            for label, values in rows]


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
        a, b = pair["mean"][flat].astype(float), pair["mean"][base].astype(float)
        # Means of the same rounded scores can differ by float error alone: that is a tie, not a win.
        diff = (a - b).mask(np.isclose(a, b, rtol=1e-9, atol=1e-9), 0.0)[comparable]
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


def _any_collapsed(cells: pd.DataFrame) -> bool:
    return "n_collapsed" in cells and bool(cells["n_collapsed"].any())


def not_run_notes(cells: pd.DataFrame) -> list[str]:
    """One note per (task, reason) of the cells not run: which methods, and why."""
    if "n_not_run" not in cells or not cells["n_not_run"].any():
        return []
    shown = cells[cells["n_not_run"] > 0]
    return [f"{task} ({', '.join(dict.fromkeys(group['label']))}): {reason}"
            for (task, reason), group in shown.groupby(["task", "not_run"], sort=False)]


def _notes(cells: pd.DataFrame, config: dict) -> list[str]:
    """The paragraphs under the table (Markdown, with `code` spans), shared by Markdown and HTML."""
    table_id = cells["table"].iloc[0]
    seeds = spec_seeds(config, table_spec(config, table_id))
    pairs = flat_vs_lora(cells, config.get("methods") or {})
    return [
        f"Cells are mean ± std (sample std) of the test metric over {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}); `(k/{len(seeds)})` marks a cell with only k finished "
        "seeds (`; j diverged`: j runs failed with a NaN/inf loss), left out of Avg, of the bold best and of the comparison below. "
        "`paper:` columns are the paper's reported means for the mirrored task, empty where unknown "
        "(left out where the paper reports none of the column). "
        "↑/↓ after a Flat cell: significantly better/worse than its base (paired by seed, p < 0.05, "
        "uncorrected; complete cells only; every test in "
        f"`{table_id}_significance.md`, the pre-registered claims in `results/claims.md`)."
        + (f" †k: k of the cell's runs collapsed (validation accuracy not significantly above the majority-class "
           f"share: one-sided binomial test at the validation split's size, α = {COLLAPSE_ALPHA}); they stay in the mean."
           if _any_collapsed(cells) else ""),
        "Flat-LoRA vs LoRA: " + ("; ".join(pairs) if pairs else "no Flat row with its base") + ".",
    ]


def render_markdown(cells: pd.DataFrame, caption: str, config: dict) -> str:
    columns, rows = _grid(cells)
    table = tabulate(_texts(columns, rows, "md"), headers=["Method"] + [c.header for c in columns],
                     tablefmt="pipe", disable_numparse=True)
    lines = [f"**{cells['table'].iloc[0]}.** {caption}", "", table, ""]
    lines += "\n\n".join(_notes(cells, config)).splitlines()
    lines += [f"\nNot run: {note}." for note in not_run_notes(cells)]
    return "\n".join(lines) + "\n"


def render_html(cells: pd.DataFrame, caption: str, config: dict) -> str:
    """A standalone page (the table readable in `snakemake --report`): pandas' Styler, with the
    Markdown's notes under it."""
    table_id = cells["table"].iloc[0]
    columns, rows = _grid(cells)
    body = [[html.escape(row[0]), *row[1:]] for row in _texts(columns, rows, "html")]
    frame = pd.DataFrame(body, columns=["Method"] + [html.escape(c.header) for c in columns])
    paragraphs = _notes(cells, config) + [f"Not run: {note}." for note in not_run_notes(cells)]
    return _page(table_id, f"{table_id}. {caption}", frame, paragraphs)


def html_from_csv(table_id: str, caption: str, csv_text: str, notes: list[str] = ()) -> str:
    """A CSV table (significance, cost, sharpness) as a page, its cells as the CSV has them, with
    `notes` (Markdown paragraphs) under it."""
    frame = pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False).map(html.escape)
    return _page(table_id, f"{table_id}. {caption}", frame.rename(columns=html.escape), list(notes))


def _page(table_id: str, caption: str, frame: pd.DataFrame, paragraphs: list[str]) -> str:
    """A complete HTML document: the table (Styler with a fixed uuid, so the page is deterministic),
    then the paragraphs with their `code` spans."""
    styler = frame.style.hide(axis="index").set_uuid(table_id).set_caption(html.escape(caption))
    table = styler.set_table_styles(_HTML_STYLE).to_html()
    code = r"<code>\1</code>"
    notes = "".join(f"<p>{_CODE.sub(code, html.escape(p, quote=False))}</p>\n" for p in paragraphs)
    return (f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{html.escape(table_id)}</title>\n'
            f"</head>\n<body>\n{table}{notes}</body>\n</html>\n")


def _tex_header(columns: list[_Column]) -> tuple[str, list[str]]:
    """The tabular's column spec and header lines. A task heads its mean, ± and std columns (and its
    paper column); with a paper column anywhere, a second row names ours and the paper's, and the
    Method and Avg heads sit on it, as booktabs sets column heads."""
    papers = {column.task for column in columns if column.kind == "paper"}
    spec, heads, rules, at = "l", [], [], 2
    for column in columns:
        if column.kind == "cell":
            width = 2 + (column.task in papers)
            name = column.header + (f" ({column.mirrors})" if column.mirrors else "")
            heads.append((rf"\multicolumn{{{width}}}{{c}}{{{_tex_escape(name)}}}", r"\multicolumn{2}{c}{ours}"))
            rules.append(rf"\cmidrule(lr){{{at}-{at + width - 1}}}")
            spec, at = spec + r"r@{\,$\pm$\,}l", at + width
        elif column.kind == "paper":
            heads.append((None, "paper"))  # under its task's \multicolumn
            spec += "r"
        else:
            heads.append(("", _tex_escape(column.header)))
            spec, at = spec + "r", at + 1
    if not papers:
        return spec, [" & ".join(["Method"] + [top or bottom for top, bottom in heads]) + r" \\"]
    top = " & ".join([""] + [top for top, _ in heads if top is not None]) + r" \\"
    return spec, [top, " ".join(rules), " & ".join(["Method"] + [bottom for _, bottom in heads]) + r" \\"]


def _tex_cell(cell) -> str:
    """A task's cell as its two tabular cells: mean & std (joined by the column spec's ±)."""
    mean, spread, mark = _cell_parts(cell, "tex")
    if spread is None:
        return rf"\multicolumn{{2}}{{c}}{{{mean}}}"
    return f"{_bold(mean, 'tex')} & {_bold(spread, 'tex')}{mark}" if cell.best else f"{mean} & {spread}{mark}"


def render_latex(cells: pd.DataFrame, caption: str, config: dict) -> str:
    table_id = cells["table"].iloc[0]
    columns, rows = _grid(cells)
    spec, header = _tex_header(columns)
    n_seeds = len(spec_seeds(config, table_spec(config, table_id)))
    full_caption = (f"{_tex_escape(caption.rstrip('. '))}. Mean $\\pm$ std over {n_seeds} seeds; "
                    f"(k/{n_seeds}) marks incomplete cells; $^\\uparrow$/$^\\downarrow$: Flat variant "
                    f"significantly better/worse than its base (paired t-test over the {n_seeds} seeds, "
                    "95\\% CI excludes 0)."
                    + (" $^{\\dagger k}$: k runs collapsed (validation accuracy not significantly above the "
                       "majority-class share, one-sided binomial test), kept in the mean." if _any_collapsed(cells) else "")
                    + "".join(f" Not run: {_tex_escape(note)}." for note in not_run_notes(cells)))
    environment = "table*" if 1 + sum(2 if c.kind == "cell" else 1 for c in columns) > _TEX_NARROW else "table"
    body = [" & ".join([_tex_escape(row[0]), *row[1:]]) + r" \\" for row in _texts(columns, rows, "tex")]
    lines = [
        "% generated by lorarepro.reporting.tables; needs \\usepackage{booktabs} and \\usepackage{graphicx}",
        f"\\begin{{{environment}}}[ht]", "\\centering", f"\\caption{{{full_caption}}}",
        f"\\label{{tab:{table_id}}}", _TEX_FIT, f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
        *header, "\\midrule", *body, "\\bottomrule", "\\end{tabular}}", f"\\end{{{environment}}}",
    ]
    return "\n".join(lines) + "\n"


def render_csv(cells: pd.DataFrame) -> str:
    tidy = cells.assign(values=cells["values"].map(lambda vs: ";".join(str(v) for v in vs)))
    # the not-run columns only where a cell has one: the other tables' CSVs keep their columns
    columns = CSV_COLUMNS + (["n_not_run", "not_run"] if not_run_notes(cells) else [])
    return tidy[columns].round({"mean": 4, "std": 4}).to_csv(index=False)
