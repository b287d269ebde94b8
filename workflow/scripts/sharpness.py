"""Snakemake adapter: sharpness of every run of one task (logic in lorarepro.sharpness)."""
from lorarepro.gpus import claim
from lorarepro.workflow import logged

# claim: this job's own GPUs (Snakemake never sets CUDA_VISIBLE_DEVICES locally)
with logged(snakemake.log[0]), claim(snakemake.resources.get("gpu", 0)):
    from lorarepro.sharpness import measure_task

    measure_task(snakemake.config, snakemake.wildcards.task, **snakemake.params.options)
