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
import traceback
from pathlib import Path
from dataclasses import asdict, dataclass, fields

from lorarepro.core import paths
from lorarepro.audit import (artifacts, cost_estimate, dvc_outs, exclusions, figures, identity, inputs, mlflow_runs,
                             reference, rerun, sharpness_records, stores, tables)
from lorarepro.audit.report import STATUSES, record, summary, write, write_crash
from lorarepro.domain.families.common import allow_remote_code


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
    `configfiles`: the --configfile files the pipeline ran with (their tables index, and the fixes name them).

    Every file is checked for type before anything opens it (inputs.special_files: a FIFO would
    block a hash or DVC for ever) and every check runs guarded: a file that breaks one is a failure
    naming it, never a traceback."""
    options = options or Options.from_config(config)
    allow_remote_code(config)
    config_id = paths.config_id(configfiles)
    special = inputs.special_files(*_read_trees(config))
    records = [record("input", "fail", path, f"{why}: the audit never opens it",
                      "replace it with the file it stands for (`dvc checkout`, `git checkout`) or rerun "
                      "`snakemake --cores 2`") for path, why in sorted(special.items())]
    collected = _guarded("result", artifacts.collect_runs, config, config_id)
    runs, found = collected if isinstance(collected, tuple) else ([], collected)
    records += found
    hashes = artifacts.Hashes()
    records += _guarded("tables", tables.check_tables, config, options.reference, config_id)
    paper = _guarded("paper", tables.paper_profile, config, options.reference, options.paper_tolerance)
    paper_records, paper_rows = paper if isinstance(paper, tuple) else (paper, [])
    records += paper_records + _guarded("figures", figures.check_figures, config)
    records += _guarded("params", artifacts.check_params, config, runs)
    records += _guarded("identity", identity.check, runs)
    lineage = _guarded("hashes", artifacts.check_lineage, runs, hashes)
    content = lineage + _guarded("backbone", artifacts.check_backbones, runs, hashes)
    content += _guarded("data", artifacts.check_data, runs, hashes)
    content += _guarded("checkpoint", artifacts.check_checkpoints, runs)
    records += content + _guarded("history", artifacts.check_histories, runs)
    checked = _guarded("mlflow", mlflow_runs.check, config, runs)
    mlflow_records, changed = checked if isinstance(checked, tuple) else (checked, set())
    records += mlflow_records
    store = _store(config)
    records += _guarded("exclusion", exclusions.diverged_records, config, store)
    records += _guarded("sharpness", sharpness_records.check, config, runs, store)
    consistent = {r["file"] for r in lineage if r["status"] == "pass"}
    if special:
        records.append(record("dvc", "fail", "dvc.lock", f"not run: {len(special)} input(s) are not regular files "
                              "(see `input`), and DVC would open them", "replace them, then audit again"))
    else:
        records += _guarded("dvc", dvc_outs.check, runs, consistent, config_id)
    by_table = artifacts.runs_by_table(config, runs)
    records += _guarded("metrics", artifacts.check_metrics, runs)
    records += _guarded("estimate", cost_estimate.check, config, runs)
    made_under = next((r.result["lineage"].get("numerics") for r in runs if r.result and r.result.get("lineage")), None)
    if not special:
        records += _guarded("reference", reference.check, config, made_under)
    unverified = artifacts.unverified(runs, content)
    unverified.update({run: "one of its files is not a regular file" for run in runs if run not in unverified
                       and any(_within(p, d) for p in special for d in _run_dirs(run))})
    sample = sample_runs(by_table, options.reevaluate, options.sample_seed)
    sample += [run for run in runs if run in changed and run not in sample]  # metrics changed after training: always
    if options.reevaluate == 0:
        records.append({**record("reevaluate", "warn", "checkpoints", "reevaluate 0: no sampled checkpoint was "
                                 f"re-evaluated ({len(sample)} whose metrics changed after training were)",
                                 "audit with `--reevaluate 1` or more (the default is 1 per table)"),
                        "not_checked": "checkpoints not re-evaluated (reevaluate 0)"})
    records += _guarded("reevaluate", rerun.reevaluate, sample, config.get("evaluation"), unverified)
    records += _guarded("remeasure", sharpness_records.remeasure, config, sample, unverified)
    if options.retrain:
        pool = list(dict.fromkeys(r for table_runs in by_table.values() for r in table_runs))
        picked = sample_runs({"all": pool}, options.retrain, options.sample_seed)
        records += _guarded("retrain", rerun.retrain, config, picked, options.gpu_tolerance, unverified)
    return summarize(name_configfiles(records, configfiles), paper_rows, options)


def _read_trees(config: dict) -> list:
    """Everything the audit (and DVC, the hashes, the re-evaluation) may open."""
    return [paths.RESULTS, paths.DATA / "prepared", paths.MODELS, paths.CHECKPOINTS, "mlruns", "mlflow.db", "dvc.lock",
            "dvc.yaml"]


def _run_dirs(run) -> list:
    return [paths.prepared_dir(run.task), paths.backbone_dir(run.result.get("backbone", "")), run.checkpoint,
            run.path.parent]


def _within(path, folder) -> bool:
    return str(path) == str(folder) or str(path).startswith(str(folder).rstrip("/") + "/")


def _store(config: dict):
    try:
        return stores.open_store(config)
    except stores.StoreAbsent:
        return None  # the `mlflow` check says so


def _guarded(check: str, fn, *args):
    """`fn(*args)`, or one failure record naming the file that broke it (never a traceback)."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 -- a broken input is a finding; a bug shows its type
        file = getattr(err, "path", None) or _named_file(str(err)) or "-"
        detail = " ".join(str(err).split())[:300]
        return [record(check, "fail", file, f"could not check: {type(err).__name__}: {detail}",
                       "fix or restore the file named, then audit again")]


def _named_file(message: str) -> str | None:
    head = message.split(": ", 1)[0]
    return head if ("/" in head or "." in head) and " " not in head else None


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
    config_id = paths.config_id(configfiles)
    report, document = report or paths.audit_report(config_id), document or paths.audit_json(config_id)
    for old in (report, document):  # a verdict of an earlier audit must never outlive a crash of this one
        Path(old).unlink(missing_ok=True)
    try:
        result = run(config, options, configfiles)
    except Exception as err:
        line = f"audit FAILED: it crashed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        write_crash(report, line, traceback.format_exc())
        print(line + f" (report: {report})")
        raise AuditFailed(line) from err
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
    not_checked = sorted({r["not_checked"] for r in records if r.get("not_checked")})
    return {
        "passed": not any(counts[s] for s in failing), "counts": counts, "options": asdict(options),
        "records": records, "paper": paper_rows, "not_checked": not_checked,
    }
