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
        report=report(str(paths.audit_report()), caption=f"../../{paths.caption('audit')}", category="Audit"),
        json=str(paths.audit_json()),
    params:
        audit=config.get("audit"),  # a changed setting reruns the audit
    threads: config["threads"]
    log:
        str(paths.log("audit")),
    script:
        "../scripts/job.py"
