rule sharpness:
    """Flatness of every run of one (task, method) in the full weight space, from its checkpoints
    (never retrains)."""
    input:
        runs=lambda w: run_results({(w.task, w.method): SHARPNESS_RUNS[(w.task, w.method)]}),
        checkpoints=lambda w: checkpoint_dirs({(w.task, w.method): SHARPNESS_RUNS[(w.task, w.method)]}),
    output:
        str(paths.pair_sharpness("{task}", "{method}")),
    params:
        options=config.get("sharpness"),
    threads: config["threads"]
    log:
        str(paths.log("sharpness", "{task}", "{method}")),
    resources:
        **rule_resources("sharpness"),
    script:
        "../scripts/job.py"
