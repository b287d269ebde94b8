"""Snakemake adapter: fine-tune one (task, method) for every seed (logic in lorarepro.train)."""
from lorarepro.gpus import claim
from lorarepro.workflow import job_tags, logged

# claim: this job's own GPUs (Snakemake never sets CUDA_VISIBLE_DEVICES locally)
with logged(snakemake.log[0]), claim(snakemake.resources.get("gpu", 0)):
    from lorarepro.train import run_task_method

    run_task_method(snakemake.config, snakemake.wildcards.task, snakemake.wildcards.method, job_tags(snakemake))
