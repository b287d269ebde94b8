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
JSONs), `figures` (drawn again), `artifacts` (params, content hashes, loss histories, safetensors
checkpoints, backbones), `mlflow_runs` (and their histories), `dvc_outs`, `rerun` (re-evaluation and
retraining); `report` writes report.md and audit.json.

Nothing the config did not ask for runs: model directories may run their own code only where the
config's backbone entry says trust_remote_code, and a run whose data, backbone or checkpoint failed
its content check is never loaded (its re-evaluation and retraining are skipped, with the reason).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields

from lorarepro import paths
from lorarepro.audit import artifacts, dvc_outs, figures, mlflow_runs, reference, rerun, tables
from lorarepro.audit.report import STATUSES, summary, write
from lorarepro.families.common import allow_remote_code


@dataclass
class Options:
    """What the audit samples and tolerates; the config's `audit:` section, then CLI flags, set them."""

    reevaluate: int | str = 1  # checkpoints re-evaluated per table (seeded sample), or "all"
    sample_seed: int = 0
    retrain: int = 0  # runs retrained in a temporary directory (0: none)
    gpu_tolerance: float = 0.5  # points of the metric a GPU retrain may differ by (CPU: exact)
    paper_tolerance: float | None = None  # None: paper values are shown, not judged
    strict: bool = False  # warn and skip fail too
    reference: str = "workflow/configs/paper_reference.yaml"

    def __post_init__(self):
        if isinstance(self.reevaluate, str) and self.reevaluate != "all":
            raise ValueError(f"audit option 'reevaluate' must be a number or 'all', got {self.reevaluate!r}")
        for name in ("reevaluate", "retrain", "gpu_tolerance", "paper_tolerance"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str) and value < 0:
                raise ValueError(f"audit option '{name}' must be >= 0, got {value}")

    @classmethod
    def from_config(cls, config: dict, **overrides) -> Options:
        known = {f.name for f in fields(cls)}
        settings = {**(config.get("audit") or {}), **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"config key 'audit': unknown settings {unknown} (known: {sorted(known)})")
        return cls(**settings)


def sample_runs(runs_by_table: dict[str, list], k: int | str, seed: int) -> list:
    """k runs per table (or "all"), drawn with one seeded generator in table order; a run drawn twice counts once."""
    rng = random.Random(seed)
    chosen = []
    for candidates in runs_by_table.values():
        for run in candidates if k == "all" else rng.sample(candidates, min(k, len(candidates))):
            if run not in chosen:
                chosen.append(run)
    return chosen


def run(config: dict, options: Options | None = None, configfiles=()) -> dict:
    """Every check, in the working directory (the repository root); returns the audit document.
    `configfiles`: the --configfile files the pipeline ran with (their tables index, and the fixes name them)."""
    options = options or Options.from_config(config)
    allow_remote_code(config)
    config_id = paths.config_id(configfiles)
    runs, records = artifacts.collect_runs(config, config_id)
    hashes = artifacts.Hashes()
    records += tables.check_tables(config, options.reference, config_id)
    paper_records, paper_rows = tables.paper_profile(config, options.reference, options.paper_tolerance)
    records += paper_records + figures.check_figures(config)
    records += artifacts.check_params(config, runs)
    lineage = artifacts.check_lineage(runs, hashes)
    content = lineage + artifacts.check_backbones(runs, hashes) + artifacts.check_data(runs, hashes)
    content += artifacts.check_checkpoints(runs)
    records += content + artifacts.check_histories(runs)
    records += mlflow_runs.check(config, runs)
    consistent = {r["file"] for r in lineage if r["status"] == "pass"}
    records += dvc_outs.check(runs, consistent)
    by_table = artifacts.runs_by_table(config, runs)
    records += artifacts.check_metrics(runs)
    made_under = next((r.result["lineage"].get("numerics") for r in runs if r.result and r.result.get("lineage")), None)
    records += reference.check(config, made_under)
    unverified = artifacts.unverified(runs, content)
    sample = sample_runs(by_table, options.reevaluate, options.sample_seed)
    records += rerun.reevaluate(sample, config.get("evaluation"), unverified)
    if options.retrain:
        pool = list(dict.fromkeys(r for table_runs in by_table.values() for r in table_runs))
        picked = sample_runs({"all": pool}, options.retrain, options.sample_seed)
        records += rerun.retrain(config, picked, options.gpu_tolerance, unverified)
    return summarize(name_configfiles(records, configfiles), paper_rows, options)


def name_configfiles(records: list[dict], configfiles) -> list[dict]:
    """Each fix's `snakemake --cores 2` as the pipeline ran: with its --configfile files."""
    if not configfiles:
        return records
    command = "snakemake --cores 2 --configfile " + " ".join(str(f) for f in configfiles)
    return [{**r, "fix": r["fix"].replace("snakemake --cores 2", command)} for r in records]


class AuditFailed(RuntimeError):
    """At least one check failed; the message lists every failing line."""


def run_and_write(config: dict, report=None, document=None, options: Options | None = None, configfiles=()) -> dict:
    """Run, write report.md and audit.json (this config's: paths.config_id), print the summary;
    raise AuditFailed unless it passed."""
    result = run(config, options, configfiles)
    config_id = paths.config_id(configfiles)
    report, document = write(result, report or paths.audit_report(config_id), document or paths.audit_json(config_id))
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
