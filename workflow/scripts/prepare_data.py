"""Snakemake adapter: prepare one task's data (logic in lorarepro.data)."""
from pathlib import Path

from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro.data import prepare_task

    prepare_task(snakemake.wildcards.task, snakemake.params.task, snakemake.params.data_seed, Path(snakemake.output[0]))
