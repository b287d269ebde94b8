rule sharpness:
    """Flatness of every run of one task in the full weight space, from its checkpoint (never retrains)."""
    input:
        runs=lambda w: [str(paths.run_result(w.task, m, s)) for t, m in table_pairs() if t == w.task for s in SEEDS],
        checkpoints=lambda w: checkpoint_dirs([(t, m) for t, m in table_pairs() if t == w.task]),
    output:
        str(paths.task_sharpness("{task}")),
    params:
        options=config.get("sharpness"),
    threads: config["threads"]
    log:
        str(paths.log("sharpness", "{task}")),
    resources:
        **rule_resources("sharpness"),
    script:
        "../scripts/sharpness.py"


rule tables:
    """Every paper table (csv, md, tex) with the paper's numbers beside ours and its significance
    companion, the sharpness table, index.json and the metrics summary."""
    input:
        runs=run_results(reported_pairs(config)),
        sharpness=sharpness_outputs(),
        reference="workflow/configs/paper_reference.yaml",
    output:
        tables=reported(table_outputs(), "Tables"),
        index=str(paths.tables_index()),
        summary=str(paths.metrics_summary()),
    params:
        tables=config["tables"],  # a changed caption or row list rebuilds the tables
    log:
        str(paths.log("tables")),
    script:
        "../scripts/tables.py"


rule figures:
    """Training curves, the OOD-severity curve and the loss landscape."""
    input:
        runs=run_results(reported_pairs(config)),
        sharpness=sharpness_outputs(),
    output:
        reported(figure_outputs(), "Figures"),
    params:
        figures=config.get("figures", []),
    log:
        str(paths.log("figures")),
    script:
        "../scripts/figures.py"


rule audit:
    """Trace every table cell to its runs and verify every artifact (lorarepro.audit): fails the
    pipeline when a check fails, with every failing line in its log."""
    input:
        rules.tables.output,
        rules.figures.output,
        # The checkpoints it loads: in a clone with results from git but no `dvc pull`, these are
        # missing, so their train jobs rerun instead of the audit failing on absent files.
        checkpoint_dirs(reported_pairs(config)),
    output:
        report=report(str(paths.audit_report()), caption=f"../../{paths.caption('audit')}", category="Audit"),
        json=str(paths.audit_json()),
    params:
        audit=config.get("audit"),  # a changed setting reruns the audit
    threads: config["threads"]
    log:
        str(paths.log("audit")),
    script:
        "../scripts/audit.py"


rule report_captions:
    """The caption of every table, figure and the audit for `snakemake --report` (lorarepro.captions)."""
    input:
        index=str(paths.tables_index()),
        audit=rules.audit.output.json,
    output:
        caption_outputs(),
    params:
        tables=config["tables"],
        figures=config.get("figures", []),
    log:
        str(paths.log("report_captions")),
    script:
        "../scripts/report_captions.py"
