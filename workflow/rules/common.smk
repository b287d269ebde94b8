from pathlib import Path

from lorarepro.domain.data import verify_dataset


# Names only: letters, digits, '_' and '-' (the schema enforces the same for config keys).
wildcard_constraints:
    task="[A-Za-z0-9][A-Za-z0-9_-]*",
    method="[A-Za-z0-9][A-Za-z0-9_-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_-]*",
    seed="[0-9]+",


RUNS = reported_runs(config)  # {(task, method): the seeds some table, figure or claim reads}
# auto: one job per (task, method) locally (one process trains its seeds: start-up, model and data
# loading, MLflow set-up paid once); per seed on a cluster or with GPUs, where seeds run in parallel
JOBS = jobs_mode(config, workflow.local_exec)


def train_rule(task, method):
    """The name of the per_method train rule of (task, method)."""
    return f"train__{task}__{method}"


def rule_resources(rule):
    """Resources of `rule` from the config (lorarepro.core.config.resources), per job: a task may override its train job's."""
    keys = set(resources(config, rule))
    if rule == "train":
        keys |= {k for t in config["tasks"].values() for k in (t.get("resources") or {})}
    return {key: (lambda w, key=key: resources(config, rule, w.get("task")).get(key, 0)) for key in sorted(keys)}


TABLES = specs(config, "tables")
FIGURES = specs(config, "figures")


# {(task, method): seeds} the sharpness rule measures (none without a `sharpness:` section)
SHARPNESS_RUNS = sharpness_runs(config) if config.get("sharpness") is not None else {}


def sharpness_outputs():
    return [str(paths.pair_sharpness(t, m)) for t, m in SHARPNESS_RUNS]


def run_results(runs):
    """The result JSONs of {(task, method): seeds}."""
    return [str(paths.run_result(t, m, s)) for (t, m), seeds in runs.items() for s in seeds]


def checkpoint_dirs(runs):
    """Checkpoints of these runs, as inputs of the rules that load them: a checkpoint missing (a clone
    without `dvc pull`) reruns its train job even though the result JSON came with git. `ancient`:
    only their existence counts here (a pulled checkpoint is newer than everything from git); a
    retrained run still reruns its readers through its result JSON."""
    return [ancient(str(paths.checkpoint_dir(t, m, s))) for (t, m), seeds in runs.items() for s in seeds]


def check_prepared_data():
    """Every prepared dataset a run reads matches its manifest's sha256 (lorarepro.domain.data.verify_dataset),
    checked before any job: Snakemake cannot see a file changed inside a directory output, and a
    forced train job would delete its results before its own check (an error raised in an input
    function would not help: Snakemake then takes the existing outputs as source files)."""
    for task in sorted({task for task, _ in RUNS}):
        if paths.prepared_dir(task).exists():
            verify_dataset(paths.prepared_dir(task))


if workflow.is_main_process:  # a cluster job parses this file again: its own job checks its own data
    check_prepared_data()


def ancient_unless_ran_here(path, log):
    """`path` as an input whose mtime counts only where this checkout ran the job (its log, which
    neither git nor DVC carries, exists). After `git clone` + `dvc pull`, outputs and inputs carry
    checkout-time mtimes that say nothing about what was made from what: without this, every
    pulled checkpoint would look older than its data and be retrained. (`--rerun-triggers`
    without mtime does not help: Snakemake 9 compares mtimes regardless.)"""
    return path if Path(log).exists() else ancient(path)


def final_outputs():
    # The audit's report is a log of its rule (a failed audit keeps it), marked for `snakemake --report`
    # here, in rule all (so its caption path is relative to the Snakefile).
    audit = report(str(paths.audit_report(CONFIG_ID)), caption=str(paths.caption("audit")), category="Audit")
    return table_outputs() + figure_outputs() + [str(paths.tables_index(CONFIG_ID)), str(paths.metrics_summary(CONFIG_ID)),
                                                 audit, str(paths.audit_json(CONFIG_ID))] + caption_outputs()


def caption_outputs():
    """One caption per reported file (see `reported`) and one for the audit."""
    shown = [Path(f).stem for f in table_outputs() + figure_outputs() if f.endswith((".csv", ".png"))]
    return [str(paths.caption(i)) for i in shown + ["audit"]]


def reported(files, category):
    """`snakemake --report` shows CSV tables and PNG figures, each with the caption that names its
    config and runs (written by rule report_captions; caption paths are relative to this file)."""
    return [report(f, caption=f"../../{paths.caption(Path(f).stem)}", category=category)
            if f.endswith((".csv", ".png")) else f for f in files]


def table_outputs():
    """The tables rule's files but the HTML pages (report.smk's table_pages): measured wall times
    (cost companions, timing claims) in files of their own, apart from those that must repeat bit for bit."""
    from lorarepro.reporting.claims import cost_claims

    tables = [str(paths.table(t, ext)) for t in TABLES for ext in ("csv", "md", "tex")]
    tables += [str(paths.table(f"{t}_significance", ext)) for t in TABLES for ext in ("csv", "md")]
    tables += [str(paths.cost_table(t, ext)) for t, spec in TABLES.items() if spec.get("cost") for ext in ("csv", "md")]
    if SHARPNESS_RUNS:
        tables += [str(paths.table("table_sharpness", ext)) for ext in ("csv", "md")]
    if claim_comparisons(config):
        tables += [str(paths.claims(ext, CONFIG_ID)) for ext in ("md", "csv", "json")]
    if cost_claims(config):
        tables += [str(paths.claims_cost(ext, CONFIG_ID)) for ext in ("md", "csv", "json")]
    return tables


def figure_outputs():
    return [str(paths.figure(f, ext)) for f in FIGURES for ext in ("png", "pdf")]


def stop_warm_server():
    import os
    from lorarepro.pipeline import warm

    if os.environ.get(warm.ENV):
        warm.stop(os.environ.pop(warm.ENV), int(os.environ.pop(warm.ENV + "_PID")))


# One MLflow parent run per invocation that has work to do (onstart runs only then). Creating the
# store here, before jobs fan out, avoids concurrent SQLite schema creation. Local jobs start warm
# (lorarepro.pipeline.warm): the server's address reaches every job through the environment.
onstart:
    import os
    from lorarepro.core import tracking
    from lorarepro.pipeline import warm

    if config["warm_start"] and workflow.local_exec:
        os.environ[warm.ENV], pid = warm.start(paths.log("warm", "server"))
        os.environ[warm.ENV + "_PID"] = str(pid)
    os.environ["LORAREPRO_MLFLOW_PARENT"] = tracking.start_parent(config, "snakemake", CONFIG_ID, CONFIGFILES)


onsuccess:
    import os
    from lorarepro.core import tracking

    stop_warm_server()
    if os.environ.get("LORAREPRO_MLFLOW_PARENT"):
        try:  # the results on the pipeline's run; it ends even if logging them fails
            tracking.finish_parent(config, os.environ["LORAREPRO_MLFLOW_PARENT"], CONFIG_ID)
        finally:
            tracking.end_parent(config, os.environ["LORAREPRO_MLFLOW_PARENT"], "FINISHED")
    from lorarepro.pipeline.summary import closing_summary

    print(closing_summary(config, CONFIG_ID), flush=True)  # the audit verdict, the claims and where everything is


onerror:
    import os
    from lorarepro.core import tracking

    stop_warm_server()
    if os.environ.get("LORAREPRO_MLFLOW_PARENT"):
        tracking.end_parent(config, os.environ["LORAREPRO_MLFLOW_PARENT"], "FAILED")
