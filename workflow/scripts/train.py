"""Snakemake adapter: fine-tune one (task, method) for every seed (logic in lorarepro.train)."""
from lorarepro.workflow import job_tags, logged

with logged(snakemake.log[0]):
    from lorarepro.train import run_task_method

    run_task_method(snakemake.config, snakemake.wildcards.task, snakemake.wildcards.method, job_tags(snakemake))
