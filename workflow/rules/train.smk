def train_inputs(w):
    """The task's data and backbone; `ancient` where this checkout never ran the job (see common.smk)."""
    log = train_log(w)
    backbone = paths.backbone_dir(config["tasks"][w.task]["backbone"])
    return {"data": ancient_unless_ran_here(str(paths.prepared_dir(w.task)), log),
            "backbone": ancient_unless_ran_here(str(backbone), log)}


if config["jobs"] == "per_seed":

    def train_log(w):
        return paths.log("train", w.task, w.method, f"seed{w.seed}")

    rule train:
        """Fine-tune one (task, method) for one seed: its checkpoint, result JSON and loss history."""
        input:
            unpack(train_inputs),
        output:
            result=str(paths.run_result("{task}", "{method}", "{seed}")),
            history=str(paths.run_history("{task}", "{method}", "{seed}")),
            checkpoint=directory(str(paths.checkpoint_dir("{task}", "{method}", "{seed}"))),
        params:
            # The resolved settings of this run: changing a method's entry reruns only its jobs.
            run=lambda w: resolve_run(config, w.task, w.method),
        threads: config["threads"]
        log:
            str(paths.log("train", "{task}", "{method}", "seed{seed}")),
        resources:
            **rule_resources("train"),
        script:
            "../scripts/job.py"

else:  # per_method: every seed of `seeds` in one job (experiment.check: no table, figure or claim has its own)

    def train_log(w):
        return paths.log("train", w.task, w.method)

    rule train:
        """Fine-tune one (task, method) for every seed: checkpoints, result JSONs, loss histories."""
        input:
            unpack(train_inputs),
        output:
            results=[str(paths.run_result("{task}", "{method}", s)) for s in SEEDS],
            histories=[str(paths.run_history("{task}", "{method}", s)) for s in SEEDS],
            checkpoints=[directory(str(paths.checkpoint_dir("{task}", "{method}", s))) for s in SEEDS],
        params:
            run=lambda w: resolve_run(config, w.task, w.method),
        threads: config["threads"]
        log:
            str(paths.log("train", "{task}", "{method}")),
        resources:
            **rule_resources("train"),
        script:
            "../scripts/job.py"
