"""Snakemake adapter: the audit (logic in lorarepro.audit); the job fails when a check fails."""
from pathlib import Path

from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro import audit

    audit.run_and_write(snakemake.config, Path(snakemake.output.report), Path(snakemake.output.json))
