"""Audit checks on the tables: every file the tables rule wrote is recomputed from the result JSONs
(with lorarepro.reporting.tables itself, so there is one formula) and compared byte for byte; the runs each
table read equal the runs index.json lists for it; the paper's numbers sit beside ours."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from lorarepro.core import paths
from lorarepro.reporting import tables
from lorarepro.audit.report import record
from lorarepro.core.config import specs

REBUILD = "rebuild the tables from the result JSONs: `snakemake --cores 2 --forcerun tables`"


def check_tables(config: dict, reference_path: str | Path, config_id: str = "") -> list[dict]:
    index = paths.tables_index(config_id)
    if not index.is_file():
        return [record("tables", "fail", index, "missing", REBUILD)]
    try:
        listed = {e["id"]: e for e in json.loads(index.read_text(encoding="utf-8"))["tables"]}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return [record("tables", "fail", index, f"not a tables index ({err!r})", REBUILD)]
    expected = tables.all_files(config, tables.load_reference(reference_path), config_id)
    out = [_runs_record(entry, listed.get(entry["id"]), index)
           for entry in json.loads(expected[index])["tables"]]
    for path, text in expected.items():
        if path == index:
            continue
        out.append(_file_record(path, text))
    return out


def _runs_record(entry: dict, listed: dict | None, index: Path) -> dict:
    """The cells of `entry` were recomputed from exactly the runs index.json lists for the table."""
    file = f"{index}#{entry['id']}"
    if listed is None:
        return record("tables.runs", "fail", file, "table not in the index", REBUILD)
    read, named = set(entry["runs"]), set(listed.get("runs", []))
    if read != named:
        detail = (f"index lists {len(named - read)} run(s) the cells do not come from "
                  f"{sorted(named - read)[:3]}; cells read {len(read - named)} unlisted {sorted(read - named)[:3]}")
        return record("tables.runs", "fail", file, detail, REBUILD)
    if any(listed.get(k) != entry[k] for k in ("caption", "rows", "columns")):
        return record("tables.runs", "fail", file, "caption, rows or columns differ from the config", REBUILD)
    return record("tables.runs", "pass", file, f"{len(read)} runs, as listed")


def _file_record(path: Path, text: str) -> dict:
    if not path.is_file():
        return record("tables", "fail", path, "missing", REBUILD)
    written = path.read_text(encoding="utf-8")
    if written == text:
        return record("tables", "pass", path, "recomputes exactly from the result JSONs")
    detail = _cell_diff(written, text) if path.suffix == ".csv" else ""
    return record("tables", "fail", path, detail or _line_diff(written, text), REBUILD)


def _cell_diff(written: str, expected: str, limit: int = 4) -> str:
    """Which cells of a table CSV differ (method/task: recorded vs recomputed)."""
    try:
        a, b = pd.read_csv(io.StringIO(written)), pd.read_csv(io.StringIO(expected))
        keys = [k for k in ("method", "task") if k in b.columns] or [b.columns[0]]
        merged = a.merge(b, on=keys, how="outer", suffixes=("_recorded", "_recomputed"), indicator=True)
    except (pd.errors.ParserError, KeyError, ValueError, IndexError):
        return ""
    cells = []
    for row in merged.to_dict("records"):
        name = "/".join(str(row[k]) for k in keys)
        for col in (c for c in b.columns if c not in keys):
            x, y = row.get(f"{col}_recorded"), row.get(f"{col}_recomputed")
            if not (pd.isna(x) and pd.isna(y)) and str(x) != str(y):
                cells.append(f"{name} {col}: recorded {x}, recomputed {y}")
    return "; ".join(cells[:limit]) + (f"; ... {len(cells) - limit} more" if len(cells) > limit else "")


def _line_diff(written: str, expected: str) -> str:
    a, b = written.splitlines(), expected.splitlines()
    for number, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            return f"line {number}: recorded {x[:80]!r}, recomputed {y[:80]!r}"
    return f"{len(a)} lines recorded, {len(b)} recomputed"


def paper_profile(config: dict, reference_path: str | Path, tolerance: float | None) -> tuple[list[dict], list[dict]]:
    """Reproduced vs paper, cell by cell. Judged only with a tolerance: the embedded default's tasks are
    tiny stand-ins, so there the comparison is shown (info) rather than failed."""
    reference = tables.load_reference(reference_path)
    rows, out = [], []
    for table_id in specs(config, "tables"):
        cells = tables.table_cells(table_id, config, reference)
        for cell in cells.itertuples():
            known = cell.paper is not None and not pd.isna(cell.paper) and cell.n_seeds > 0
            diff = round(float(cell.mean) - float(cell.paper), 4) if known else None
            within = None if tolerance is None or diff is None else abs(diff) <= tolerance
            rows.append({"table": table_id, "method": cell.method, "task": cell.task, "mirrors": cell.mirrors,
                         "reproduced": None if cell.n_seeds == 0 else round(float(cell.mean), 4),
                         "paper": None if cell.paper is None or pd.isna(cell.paper) else float(cell.paper),
                         "diff": diff, "within_tolerance": within})
        judged = [r for r in rows if r["table"] == table_id and r["within_tolerance"] is not None]
        file = paths.table(table_id, "md")
        if tolerance is None:
            n = sum(r["diff"] is not None for r in rows if r["table"] == table_id)
            out.append(record("paper", "info", file, f"{n} cells beside the paper's numbers; not judged "
                              "(no audit.paper_tolerance)"))
        elif bad := [r for r in judged if not r["within_tolerance"]]:
            detail = "; ".join(f"{r['method']}/{r['task']}: {r['reproduced']} vs paper {r['paper']}" for r in bad[:4])
            out.append(record("paper", "fail", file, f"{len(bad)}/{len(judged)} cells beyond ±{tolerance}: {detail}",
                              "a reproduction gap: check the profile's data, model and budget against the paper"))
        else:
            out.append(record("paper", "pass", file, f"{len(judged)} cells within ±{tolerance} of the paper"))
    return out, rows
