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
        "../scripts/job.py"
