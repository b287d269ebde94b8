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

Modules: `cells` (runs collected into cells, best cell, row averages), `paired` (significance
tables and ↑/↓ marks), `render` (Markdown, LaTeX, CSV), `sharpness` (the flatness table), `build`
(each table's files, index.json, metrics.json, and writing them). This package re-exports their
public names.
"""

from lorarepro.reporting.tables.build import (
    all_files, build_all, build_table, index_text, metrics_text, sharpness_table, table_files,
)
from lorarepro.reporting.tables.cells import (
    collect_cell, load_reference, paper_value, row_averages, table_cells,
)
from lorarepro.reporting.tables.paired import (
    SIG_COLUMNS, paper_gain, render_significance_csv, render_significance_md, seed_values, significance,
)
from lorarepro.reporting.tables.render import (
    CSV_COLUMNS, flat_vs_lora, not_run_notes, render_csv, render_latex, render_markdown,
)
from lorarepro.reporting.tables.sharpness import SHARPNESS_CAPTION, SHARPNESS_ID, sharpness_files

__all__ = [
    "CSV_COLUMNS", "SHARPNESS_CAPTION", "SHARPNESS_ID", "SIG_COLUMNS", "all_files", "build_all",
    "build_table", "collect_cell", "flat_vs_lora", "index_text", "load_reference",
    "metrics_text", "not_run_notes", "paper_gain", "paper_value", "render_csv", "render_latex",
    "render_markdown", "render_significance_csv", "render_significance_md", "row_averages", "seed_values",
    "sharpness_files", "sharpness_table", "significance", "table_cells", "table_files",
]
