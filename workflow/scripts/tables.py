"""Snakemake adapter: build every table, the index and the metrics summary (lorarepro.jobs.tables, started warm by lorarepro.warm)."""
from lorarepro.jobs import tables
from lorarepro.warm import run_job

run_job(snakemake, tables)
