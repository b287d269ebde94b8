rule train:
    """Fine-tune one (task, method) for every seed; writes checkpoints, result JSONs, loss histories."""
    input:
        data=lambda w: ancient_unless_ran_here(str(paths.prepared_dir(w.task)), paths.log("train", w.task, w.method)),
        backbone=lambda w: ancient_unless_ran_here(
            str(paths.backbone_dir(config["tasks"][w.task]["backbone"])), paths.log("train", w.task, w.method)
        ),
    output:
        results=[str(paths.run_result("{task}", "{method}", s)) for s in SEEDS],
        histories=[str(paths.run_history("{task}", "{method}", s)) for s in SEEDS],
        checkpoints=[directory(str(paths.checkpoint_dir("{task}", "{method}", s))) for s in SEEDS],
    params:
        # The resolved settings of this run: changing a method's entry reruns only its jobs.
        run=lambda w: resolve_run(config, w.task, w.method),
    threads: config["threads"]
    log:
        str(paths.log("train", "{task}", "{method}")),
    resources:
        **rule_resources("train"),
    script:
        "../scripts/job.py"
