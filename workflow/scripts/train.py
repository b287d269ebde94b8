"""Snakemake adapter: fine-tune one (task, method) for every seed (lorarepro.jobs.train, started warm by lorarepro.warm)."""
from lorarepro.jobs import train
from lorarepro.warm import run_job

run_job(snakemake, train)
