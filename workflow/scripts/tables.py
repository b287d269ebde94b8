"""Snakemake adapter: build every table, the index and the metrics summary (logic in lorarepro.tables)."""
from pathlib import Path

from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro.tables import build_all

    build_all(snakemake.config, Path(snakemake.input.reference))
