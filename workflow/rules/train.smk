rule train:
    """Fine-tune one (task, method) for every seed; writes checkpoints, result JSONs, loss histories."""
    input:
        # ancient: data and backbones restored by `dvc pull` carry fresh mtimes; Snakemake must not
        # retrain for that. Their settings are in params below, so a config change still retrains.
        data=ancient(str(paths.prepared_dir("{task}"))),
        backbone=lambda w: ancient(str(paths.backbone_dir(config["tasks"][w.task]["backbone"]))),
    output:
        results=[str(paths.run_result("{task}", "{method}", s)) for s in SEEDS],
        histories=[str(paths.run_history("{task}", "{method}", s)) for s in SEEDS],
        checkpoints=[directory(str(paths.checkpoint_dir("{task}", "{method}", s))) for s in SEEDS],
    params:
        # The resolved settings of this run: changing a method's entry reruns only its jobs.
        run=lambda w: resolve_run(config, w.task, w.method),
        upstream=lambda w: upstream_settings(w.task),
    threads: config["threads"]
    log:
        str(paths.log("train", "{task}", "{method}")),
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/train.py"
