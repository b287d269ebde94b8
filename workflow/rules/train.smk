def train_inputs(task, log):
    """The task's data and backbone; `ancient` where this checkout never ran the job (see common.smk)."""
    backbone = paths.backbone_dir(config["tasks"][task]["backbone"])
    return {"data": ancient_unless_ran_here(str(paths.prepared_dir(task)), log),
            "backbone": ancient_unless_ran_here(str(backbone), log)}


# Each job gets its resolved run spec (RUN_SPECS, resolved once when the Snakefile was read) as a
# param, in the layout of a record's `config`: the job trains from it, and a changed spec reruns
# only that method's jobs (params trigger).
if JOBS == "per_seed":

    rule train:
        """Fine-tune one (task, method) for one seed: its checkpoint, result JSON and loss history."""
        input:
            unpack(lambda w: train_inputs(w.task, paths.log("train", w.task, w.method, f"seed{w.seed}"))),
        output:
            result=str(paths.run_result("{task}", "{method}", "{seed}")),
            history=str(paths.run_history("{task}", "{method}", "{seed}")),
            checkpoint=directory(str(paths.checkpoint_dir("{task}", "{method}", "{seed}"))),
        params:
            run=lambda w: RUN_SPECS[(w.task, w.method)].as_dict(),
            seeds=lambda w: [int(w.seed)],
        threads: config["threads"]
        log:
            str(paths.log("train", "{task}", "{method}", "seed{seed}")),
        resources:
            **rule_resources("train"),
        script:
            "../scripts/job.py"

else:  # per_method: one job trains the union of the seeds its tables, figures and claims read, in one process
    PRIORITY = train_priorities(config, RUN_SPECS, RUNS)

    for (task, method), seeds in RUNS.items():

        rule:
            name: train_rule(task, method)
            input:
                **train_inputs(task, paths.log("train", task, method)),
            output:
                results=[str(paths.run_result(task, method, s)) for s in seeds],
                histories=[str(paths.run_history(task, method, s)) for s in seeds],
                checkpoints=[directory(str(paths.checkpoint_dir(task, method, s))) for s in seeds],
            params:
                run=RUN_SPECS[(task, method)].as_dict(),
                seeds=seeds,
            threads: config["threads"]
            priority: PRIORITY[(task, method)]
            log:
                str(paths.log("train", task, method)),
            resources:
                **resources(config, "train", task),
            script:
                "../scripts/job.py"

    rule train:
        """Every per_method train job (`snakemake --until train` works in either mode); runs nothing itself."""
        input:
            run_results(RUNS),
        localrule: True
