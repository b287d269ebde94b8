"""Entry points: every configured table's files (plus the sharpness table and the claims), the
tables index and the metrics summary, as {path: text} for the audit, or written (atomically) for the tables rule.
Every table's CSV gets an HTML page beside it (`<id>.html`), the table as `snakemake --report` shows it.
Measured wall times (a table's cost, the timing claims) go to files of their own (paths.measured_outputs),
so that every other file repeats bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

from lorarepro.core import paths
from lorarepro.core.atomic import write_text
from lorarepro.core.config import spec_seeds, specs
from lorarepro.reporting import cost
from lorarepro.reporting.claims import claims_files
from lorarepro.reporting.tables.cells import is_complete, load_reference, row_averages, table_cells, table_spec
from lorarepro.reporting.tables.paired import attach_marks, render_significance_csv, render_significance_md, significance
from lorarepro.reporting.tables.render import html_from_csv, render_csv, render_html, render_latex, render_markdown
from lorarepro.reporting.tables.sharpness import sharpness_files


def table_files(table_id: str, config: dict, reference: dict | None) -> tuple[dict[Path, str], dict]:
    """The table's CSV/MD/TeX/HTML, its significance files and, with `cost: true`, its cost companion
    (measured, so kept out of the table's own files) as {path: text}, and its index entry with the
    exact runs it read; nothing is written (the audit recomputes with this too)."""
    spec = table_spec(config, table_id)
    sig = significance(table_id, config, reference)
    cells = attach_marks(table_cells(table_id, config, reference), sig)
    files = {
        paths.table(table_id, "csv"): render_csv(cells),
        paths.table(table_id, "md"): render_markdown(cells, spec["caption"], config),
        paths.table(table_id, "tex"): render_latex(cells, spec["caption"], config),
        paths.table(table_id, "html"): render_html(cells, spec["caption"], config),
    }
    files |= _with_pages({
        paths.table(f"{table_id}_significance", "csv"): render_significance_csv(sig),
        paths.table(f"{table_id}_significance", "md"): render_significance_md(sig, table_id, config),
    }, f"Flat variants of {table_id} against their base, per task, paired by seed")
    if spec.get("cost"):
        files |= _with_pages(cost.cost_files(table_id, spec, config, spec_seeds(config, spec)), cost.caption(table_id))
    entry = {
        "id": table_id, "caption": spec["caption"],
        "rows": list(spec["methods"]), "columns": list(spec["tasks"]),
        "runs": sorted(run for runs in cells["runs"] for run in runs),
        "files": [str(path) for path in files],
    }
    return files, entry


def _with_pages(files: dict[Path, str], caption: str) -> dict[Path, str]:
    """`files` and an HTML page of each CSV among them: the CSV's cells as written, under `caption`,
    with the paragraphs of its Markdown sibling (all but its title and table) beneath."""
    pages = {}
    for path, text in files.items():
        if path.suffix == ".csv":
            md = files.get(path.with_suffix(".md"), "")
            notes = [block for block in md.strip().split("\n\n")[1:] if block and not block.startswith("|")]
            pages[path.with_suffix(".html")] = html_from_csv(path.stem, caption, text, notes)
    return files | pages


def _paged(files: dict[Path, str], entry: dict) -> tuple[dict[Path, str], dict]:
    """A companion table's files with their HTML pages, and its index entry listing them."""
    files = _with_pages(files, entry["caption"])
    return files, {**entry, "files": [str(path) for path in files]}


def write(files: dict[Path, str]) -> None:
    for path, text in files.items():
        write_text(path, text)


def build_table(table_id: str, config: dict, reference: dict | None) -> dict:
    """Write one table's files; returns its index entry."""
    files, entry = table_files(table_id, config, reference)
    write(files)
    return entry


def sharpness_table(config: dict) -> dict:
    """Write table_sharpness.csv|md|html; returns its index entry."""
    files, entry = _paged(*sharpness_files(config))
    write(files)
    return entry


def index_text(entries: list[dict]) -> str:
    return json.dumps({"tables": entries}, indent=2) + "\n"


def metrics_text(config: dict) -> str:
    """Flat {"table/method/task": mean} for `dvc metrics show`; incomplete cells are left out."""
    summary = {}
    for table_id in specs(config, "tables"):
        cells = table_cells(table_id, config)
        for cell in cells[is_complete(cells)].itertuples():
            summary[f"{table_id}/{cell.method}/{cell.task}"] = round(float(cell.mean), 4)
        for method, avg in row_averages(cells).dropna().items():
            summary[f"{table_id}/{method}/Avg"] = round(float(avg), 4)
    return json.dumps(summary, indent=2) + "\n"


def all_files(config: dict, reference: dict | None, config_id: str = "") -> dict[Path, str]:
    """Every file the tables rule writes, as {path: text}: tables, index.json, metrics.json (those two
    named per config, `paths.config_id`, so that another config's run never overwrites them)."""
    files, entries = {}, []
    for table_id in specs(config, "tables"):
        texts, entry = table_files(table_id, config, reference)
        files.update(texts)
        entries.append(entry)
    if config.get("sharpness") is not None:
        texts, entry = _paged(*sharpness_files(config))
        files.update(texts)
        entries.append(entry)
    claims, claim_entries = claims_files(config, reference, config_id)
    files.update(claims)
    entries += claim_entries
    files[paths.tables_index(config_id)] = index_text(entries)
    files[paths.metrics_summary(config_id)] = metrics_text(config)
    return files


def build_all(config: dict, reference_path: str | Path, config_id: str = "") -> None:
    """Every configured table, the tables index and the metrics summary."""
    write(all_files(config, load_reference(reference_path), config_id))
