rule audit:
    """Trace every table cell to its runs and verify every artifact (lorarepro.audit): fails the
    pipeline when a check fails, with every failing line in its log."""
    input:
        rules.tables.output,
        rules.figures.output,
        # The checkpoints it loads: in a clone with results from git but no `dvc pull`, these are
        # missing, so their train jobs rerun instead of the audit failing on absent files.
        checkpoint_dirs(RUNS),
    output:
        # Written by this job only (a manual `lorarepro audit` writes results/audit/manual/): its age
        # against the inputs alone decides whether the audit runs again.
        json=str(paths.audit_json(CONFIG_ID)),
    params:
        audit=config.get("audit"),  # a changed setting reruns the audit
        configfiles=CONFIGFILES,  # the config it audits; its fixes name them
    threads: config["threads"]
    log:
        str(paths.log("audit")),
        # A log, not an output: Snakemake deletes the outputs of a failed job but keeps its logs, and
        # the error message points here. audit.json is deleted, so the next invocation audits again.
        report=str(paths.audit_report(CONFIG_ID)),
    script:
        "../scripts/job.py"


rule crate:
    """On demand, after the pipeline (`snakemake --cores 1 crate`): a Workflow Run RO-Crate of the
    finished run (lorarepro crate: the workflow, every training run, the tables, figures, claims and
    the audit's verdict); built, not committed."""
    input:
        rules.audit.output,
    output:
        directory("build/crate"),
    params:
        configfiles=CONFIGFILES,
    localrule: True
    log:
        str(paths.log("crate")),
    script:
        "../scripts/job.py"
