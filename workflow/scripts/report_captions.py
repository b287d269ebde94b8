"""Snakemake adapter: captions for `snakemake --report` (lorarepro.jobs.report_captions, started warm by lorarepro.warm)."""
from lorarepro.jobs import report_captions
from lorarepro.warm import run_job

run_job(snakemake, report_captions)
