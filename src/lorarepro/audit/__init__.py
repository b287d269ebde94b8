"""`lorarepro audit`: every table cell traced to its runs, every artifact verified.

Run it from the repository root (`lorarepro audit`, or the Snakemake rule `audit` at the end of the
pipeline). Each check is a small function returning records {check, status, file, detail, fix}:

    fail   the evidence contradicts a result: the audit exits non-zero
    warn   passed on the evidence available, with a caveat (DVC has not recorded a freshly
           regenerated output yet: `dvc commit`)
    skip   not applicable in this checkout, with the reason (no DVC project)
    info   shown for people, never fails (the paper comparison without a tolerance)
    pass   checked and consistent

The checks live in one module per source of truth (each record made by `report.record`): `tables` (cells recomputed from the result
JSONs), `artifacts` (params, content hashes, safetensors checkpoints, backbones), `mlflow_runs`,
`dvc_outs`, `rerun` (re-evaluation and retraining); `report` writes report.md and audit.json.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields

from lorarepro.audit import artifacts, dvc_outs, mlflow_runs, rerun, tables
from lorarepro.audit.report import STATUSES, summary, write

@dataclass
class Options:
    """What the audit samples and tolerates; the config's `audit:` section, then CLI flags, set them."""

    reevaluate: int = 1  # checkpoints re-evaluated per table (seeded sample)
    sample_seed: int = 0
    retrain: int = 0  # runs retrained in a temporary directory (0: none)
    gpu_tolerance: float = 0.5  # points of the metric a GPU retrain may differ by (CPU: exact)
    paper_tolerance: float | None = None  # None: paper values are shown, not judged
    strict: bool = False  # warn and skip fail too
    reference: str = "workflow/configs/paper_reference.yaml"

    def __post_init__(self):
        for name in ("reevaluate", "retrain", "gpu_tolerance", "paper_tolerance"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"audit option '{name}' must be >= 0, got {value}")

    @classmethod
    def from_config(cls, config: dict, **overrides) -> Options:
        known = {f.name for f in fields(cls)}
        settings = {**(config.get("audit") or {}), **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"config key 'audit': unknown settings {unknown} (known: {sorted(known)})")
        return cls(**settings)


def sample_runs(runs_by_table: dict[str, list], k: int, seed: int) -> list:
    """k runs per table, drawn with one seeded generator in table order; a run drawn twice counts once."""
    rng = random.Random(seed)
    chosen = []
    for candidates in runs_by_table.values():
        for run in rng.sample(candidates, min(k, len(candidates))):
            if run not in chosen:
                chosen.append(run)
    return chosen


def run(config: dict, options: Options | None = None) -> dict:
    """Every check, in the working directory (the repository root); returns the audit document."""
    options = options or Options.from_config(config)
    runs, records = artifacts.collect_runs(config)
    hashes = artifacts.Hashes()
    records += tables.check_tables(config, options.reference)
    paper_records, paper_rows = tables.paper_profile(config, options.reference, options.paper_tolerance)
    records += paper_records
    records += artifacts.check_params(config, runs)
    lineage = artifacts.check_lineage(runs, hashes)
    records += lineage + artifacts.check_backbones(runs, hashes) + artifacts.check_data(runs, hashes)
    records += artifacts.check_checkpoints(runs)
    records += mlflow_runs.check(config, runs)
    consistent = {r["file"] for r in lineage if r["status"] == "pass"}
    records += dvc_outs.check(runs, consistent)
    by_table = artifacts.runs_by_table(config, runs)
    records += artifacts.check_metrics(runs)
    records += rerun.reevaluate(sample_runs(by_table, options.reevaluate, options.sample_seed), config.get("evaluation"))
    if options.retrain:
        pool = list(dict.fromkeys(r for table_runs in by_table.values() for r in table_runs))
        picked = sample_runs({"all": pool}, options.retrain, options.sample_seed)
        records += rerun.retrain(config, picked, options.gpu_tolerance)
    return summarize(records, paper_rows, options)


class AuditFailed(RuntimeError):
    """At least one check failed; the message lists every failing line."""


def run_and_write(config: dict, report=None, document=None, options: Options | None = None) -> dict:
    """Run, write report.md and audit.json, print the summary; raise AuditFailed unless it passed."""
    result = run(config, options)
    report, document = write(result, report, document)
    text = summary(result, report, document)
    print(text)
    if not result["passed"]:
        raise AuditFailed(text)
    return result


def summarize(records: list[dict], paper_rows: list[dict], options: Options) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    failing = ("fail", "warn", "skip") if options.strict else ("fail",)
    order = {s: i for i, s in enumerate(STATUSES)}
    records = sorted(records, key=lambda r: (order[r["status"]], r["check"], r["file"]))
    return {
        "passed": not any(counts[s] for s in failing), "counts": counts, "options": asdict(options),
        "records": records, "paper": paper_rows,
    }
