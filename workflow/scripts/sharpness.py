"""Snakemake adapter: sharpness of every run of one task (logic in lorarepro.sharpness)."""
from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro.sharpness import measure_task

    measure_task(snakemake.config, snakemake.wildcards.task, **snakemake.params.options)
