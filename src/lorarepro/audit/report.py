"""The audit's records (`record`: one per check and file, with its status) and its outputs:
results/audit/report.md for people (one line per check, failures first, each naming the file and
the fix) and results/audit/audit.json for machines. Both are deterministic (no timings or dates),
so an unchanged audit rewrites identical files."""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from lorarepro.core import paths
from lorarepro.core.atomic import write_text

STATUSES = ("fail", "warn", "skip", "info", "pass")  # report order: failures first


def record(check: str, status: str, file, detail: str = "", fix: str = "") -> dict:
    if status not in STATUSES:
        raise ValueError(f"unknown audit status {status!r} (known: {STATUSES})")
    return {"check": check, "status": status, "file": str(file), "detail": detail, "fix": fix}


def verdict(audit: dict) -> str:
    """PASSED or FAILED; a pass says what it could not check (`not_checked`: a store absent, nothing
    re-evaluated), so a missing source of evidence never reads as a plain pass."""
    if not audit["passed"]:
        return "FAILED"
    missing = audit.get("not_checked") or []
    return "PASSED" + (" — " + "; ".join(missing) if missing else "")


def render_markdown(audit: dict) -> str:
    counts = audit["counts"]
    verdict_ = verdict(audit)
    checks = sorted({r["check"] for r in audit["records"]})
    per_check = [[c, *(sum(r["check"] == c and r["status"] == s for r in audit["records"]) for s in STATUSES)]
                 for c in checks]
    lines = [
        f"# Audit: {verdict_}", "",
        f"{sum(counts.values())} checks: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES) + "."
        + (" Strict: warn and skip count as failures." if audit["options"]["strict"] else ""),
        "Exit status 0 only when nothing failed. `lorarepro audit --help` lists the options.", "",
        tabulate(per_check, headers=["check", *STATUSES], tablefmt="pipe"), "",
        "## Every check (failures first)", "",
    ]
    for r in audit["records"]:
        line = f"- **{r['status'].upper()}** `{r['check']}` `{r['file']}`"
        line += f": {r['detail']}" if r["detail"] else ""
        line += f" — fix: {r['fix']}" if r["fix"] and r["status"] not in ("pass", "info") else ""
        lines.append(line)
    lines += ["", "## Paper vs reproduced", "", _paper_table(audit)]
    return "\n".join(lines) + "\n"


def _paper_table(audit: dict) -> str:
    tol = audit["options"]["paper_tolerance"]
    rows = [[r["table"], r["method"], f"{r['task']} ({r['mirrors'] or '?'})", _num(r["reproduced"]),
             _num(r["paper"]), _num(r["diff"]),
             "" if r["within_tolerance"] is None else ("yes" if r["within_tolerance"] else "NO")]
            for r in audit["paper"]]
    if not rows:
        return "No tables configured."
    note = (f"Tolerance ±{tol} points." if tol is not None else
            "No tolerance set (`audit.paper_tolerance` or `--paper-tolerance`): shown, not judged; the "
            "embedded default's tasks are tiny stand-ins for the paper's.")
    headers = ["table", "method", "task (paper column)", "reproduced", "paper", "diff", "within"]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True) + "\n\n" + note


def _num(value) -> str:
    return "" if value is None else f"{value:.2f}"


def summary(audit: dict, report, document) -> str:
    """The verdict, the counts and every fail/warn/skip line, for the terminal and the job log."""
    counts = ", ".join(f"{n} {s}" for s, n in audit["counts"].items())
    lines = [f"audit {verdict(audit)}: {counts} (report: {report}, {document})"]
    lines += [f"  {r['status'].upper()} {r['check']} {r['file']}: {r['detail']}" + (f" -- fix: {r['fix']}" if r["fix"] else "")
              for r in audit["records"] if r["status"] in ("fail", "warn", "skip")]
    return "\n".join(lines)


def write(audit: dict, report: Path | None = None, document: Path | None = None) -> tuple[Path, Path]:
    report, document = report or paths.audit_report(), document or paths.audit_json()
    write_text(document, json.dumps(audit, indent=2, sort_keys=True) + "\n")
    write_text(report, render_markdown(audit))
    return report, document


def write_crash(report: Path, line: str, details: str) -> Path:
    """The report of an audit that crashed: FAILED, with the error and its traceback for a bug report."""
    return write_text(report, f"# Audit: FAILED\n\n{line}\n\nNo verdict: the audit did not finish.\n\n"
                              f"```\n{details}```\n")
