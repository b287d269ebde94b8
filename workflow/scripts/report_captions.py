"""Snakemake adapter: captions for `snakemake --report` (logic in lorarepro.captions)."""
from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro.captions import write_all

    write_all(snakemake.config, snakemake.input.index, snakemake.input.audit)
