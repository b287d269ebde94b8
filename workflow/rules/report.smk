# What `snakemake --report results/report.html` shows, grouped as the paper groups it: one category
# per paper table holding the table as a page (HTML, readable in the report), its CSV, Markdown and
# LaTeX, and its significance and cost companions; the flatness table and the claims (those measured
# in wall-clock time beside them); the figures, PNG with the PDF beside it (a toggle). Each item's
# caption names its config and runs (rule report_captions; caption paths are relative to this file).
FORMATS = {"html": "HTML", "csv": "CSV", "md": "Markdown", "tex": "LaTeX", "json": "JSON", "png": "PNG", "pdf": "PDF"}
COMPANIONS = {"table_sharpness": "Flatness", "claims": "Claims", "claims_cost": "Claims"}
SUFFIXES = {"_significance": "Significance", "_cost": "Cost"}  # a paper table's companions, by their file's stem


def table_of(stem):
    """(the table a file's stem belongs to, which of its files it is): a paper table's own, or one of
    its companions (a table may itself end in "_cost", the paper's table7_cost)."""
    for suffix, kind in SUFFIXES.items():
        if stem not in TABLES and stem.endswith(suffix) and stem.removesuffix(suffix) in TABLES:
            return stem.removesuffix(suffix), kind
    return stem, "Table"


def report_group(path):
    """The report category and labels of one table or figure file (another config's claims files
    carry its name: claims.<config>)."""
    stem, ext = Path(path).stem, Path(path).suffix[1:]
    stem = stem.split(".")[0] if stem.split(".")[0] in COMPANIONS else stem
    if stem in FIGURES:
        return {"category": "Figures", "labels": {"figure": stem, "format": FORMATS[ext]}}
    table, kind = table_of(stem)
    paper = TABLES[table].get("paper_table", "") if table in TABLES else ""
    category = COMPANIONS.get(stem) or (f"Table {paper[5:]}: {table}" if paper.startswith("table") else table)
    return {"category": category, "subcategory": kind, "labels": {"table": stem, "format": FORMATS[ext]}}


def paper_report(files):
    """`files` marked for the report, each in its group with the caption of its table or figure."""
    return [report(f, caption=f"../../{paths.caption(Path(f).stem)}", **report_group(f)) for f in files]


def table_pages():
    """The HTML page the tables rule writes beside every table's CSV (lorarepro.reporting.tables; not the claims')."""
    claims = {str(paths.claims("csv", CONFIG_ID)), str(paths.claims_cost("csv", CONFIG_ID))}
    return [str(Path(f).with_suffix(".html")) for f in table_outputs() if f.endswith(".csv") and f not in claims]


rule tables:
    """Every paper table (csv, md, tex, html) with the paper's numbers beside ours, its significance
    companion and (`cost: true`) its cost companion, the sharpness table, the claims, index.json and
    the metrics summary."""
    input:
        runs=run_results(RUNS),
        sharpness=sharpness_outputs(),
        reference="workflow/configs/paper_reference.yaml",
        # the claims: what each asserts, the overhead benchmark (committed, run by hand) the scale-bound
        # ones are judged by, and the prepared data whose validation labels tell a collapsed run
        claims=[config["claims"]["reference"]] if config.get("claims") else [],
        benchmark=[str(p) for p in paths.OVERHEAD_BENCHMARKS if p.exists()],
        registration=[str(p) for p in [paths.REGISTRATION] if p.exists()],
        prepared=[str(paths.prepared_dir(t)) for t in sorted({t for c in claim_comparisons(config).values() for t in c["tasks"]})],
    output:
        tables=paper_report(table_outputs() + table_pages()),
        index=str(paths.tables_index(CONFIG_ID)),
        summary=str(paths.metrics_summary(CONFIG_ID)),
    params:
        tables=config["tables"],  # a changed caption or row list rebuilds the tables
        claims=config.get("claims"),  # so do changed comparisons
        config_id=CONFIG_ID,
    log:
        str(paths.log("tables")),
    script:
        "../scripts/job.py"


rule figures:
    """Training curves, the OOD-severity curve, the loss landscape and the ablations (png and pdf)."""
    input:
        runs=run_results(RUNS),
        sharpness=sharpness_outputs(),
    output:
        paper_report(figure_outputs()),
    params:
        figures=config.get("figures", []),
    log:
        str(paths.log("figures")),
    script:
        "../scripts/job.py"


rule report_captions:
    """The caption of every table, figure and the audit for `snakemake --report` (lorarepro.reporting.captions)."""
    input:
        index=str(paths.tables_index(CONFIG_ID)),
        audit=str(paths.audit_json(CONFIG_ID)),  # the audit rule (audit.smk, included after this file) writes it
    output:
        caption_outputs(),
    params:
        tables=config["tables"],
        figures=config.get("figures", []),
    log:
        str(paths.log("report_captions")),
    script:
        "../scripts/job.py"

