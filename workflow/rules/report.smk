rule tables:
    """Every paper table (csv, md, tex) with the paper's numbers beside ours and its significance
    companion, the sharpness table, index.json and the metrics summary."""
    input:
        runs=run_results(RUNS),
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
        "../scripts/job.py"


rule figures:
    """Training curves, the OOD-severity curve and the loss landscape."""
    input:
        runs=run_results(RUNS),
        sharpness=sharpness_outputs(),
    output:
        reported(figure_outputs(), "Figures"),
    params:
        figures=config.get("figures", []),
    log:
        str(paths.log("figures")),
    script:
        "../scripts/job.py"


rule report_captions:
    """The caption of every table, figure and the audit for `snakemake --report` (lorarepro.reporting.captions)."""
    input:
        index=str(paths.tables_index()),
        audit=str(paths.audit_json()),  # the audit rule (audit.smk, included after this file) writes it
    output:
        caption_outputs(),
    params:
        tables=config["tables"],
        figures=config.get("figures", []),
    log:
        str(paths.log("report_captions")),
    script:
        "../scripts/job.py"
