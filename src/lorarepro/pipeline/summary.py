"""The few lines a successful pipeline run ends with (the Snakefile's `onsuccess`): the audit's
verdict, the claims' verdicts, where the tables, figures and report are, and how to build the report.

Reads only the files the run wrote (audit.json, claims.json, claims_cost.json: the claims measured
on measured cost live apart); a file missing is said, never raised: a closing message must not
turn a finished run into a failed one.
"""

import json
from collections import Counter
from pathlib import Path

from lorarepro.core import paths
from lorarepro.reporting.claims import cost_claims


def closing_summary(config: dict, config_id: str = "") -> str:
    """The closing lines for the config whose outputs are named by `config_id` (paths.config_id)."""
    flag = " with the same --configfile" if config_id else ""
    lines = [
        "lorarepro: pipeline finished.",
        f"  audit:   {_audit(paths.audit_json(config_id), paths.audit_report(config_id))}",
        f"  claims:  {_claims(paths.claims('json', config_id), paths.claims('md', config_id)) if config.get('claims') else 'none in this config'}",
    ]
    if cost_claims(config):  # on a measured cost (time, memory): in a file of their own
        lines.append(f"  cost:    {_claims(paths.claims_cost('json', config_id), paths.claims_cost('md', config_id))}")
    lines.append(f"  tables:  {paths.table('*', 'md').parent}/ (which runs each used: {paths.tables_index(config_id)})")
    if config.get("figures"):
        lines.append(f"  figures: {paths.figure('*', 'png').parent}/")
    lines.append(f"  report:  snakemake --report results/report.html{flag}  (one HTML file of all of it)")
    return "\n".join(lines)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _audit(document: Path, report: Path) -> str:
    audit = _read(document)
    if audit is None:
        return f"not found ({document}); run `lorarepro audit`"
    counts = ", ".join(f"{n} {status}" for status, n in (audit.get("counts") or {}).items() if n)
    return f"{'passed' if audit.get('passed') else 'FAILED'} ({counts or 'no checks'}); {report}"


def _claims(document: Path, report: Path) -> str:
    analysis = _read(document)
    if analysis is None:
        return f"not found ({document})"
    verdicts = Counter(row.get("verdict") for row in analysis.get("claims", []))
    design = "" if analysis.get("design_ok", True) else "; positive control NOT detected: the design cannot judge"
    return (", ".join(f"{n} {verdict}" for verdict, n in verdicts.most_common()) or "none") + f"{design}; {report}"
