rule tables:
    """Every paper table (csv, md, tex) with the paper's numbers beside ours, index.json, metrics summary."""
    input:
        runs=run_results(reported_pairs(config)),
        reference="workflow/configs/paper_reference.yaml",
    output:
        tables=table_outputs(),
        index=str(paths.tables_index()),
        summary=str(paths.metrics_summary()),
    params:
        tables=config["tables"],  # a changed caption or row list rebuilds the tables
    log:
        str(paths.log("tables")),
    script:
        "../scripts/tables.py"


rule figures:
    """Training curves and the OOD-severity curve."""
    input:
        runs=run_results(reported_pairs(config)),
    output:
        figure_outputs(),
    params:
        figures=config.get("figures", []),
    log:
        str(paths.log("figures")),
    script:
        "../scripts/figures.py"
