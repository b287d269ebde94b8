"""Snakemake adapter: prepare one task's data (lorarepro.jobs.prepare_data, started warm by lorarepro.warm)."""
from lorarepro.jobs import prepare_data
from lorarepro.warm import run_job

run_job(snakemake, prepare_data)
