"""Snakemake adapter: sharpness of every run of one task (lorarepro.jobs.sharpness, started warm by lorarepro.warm)."""
from lorarepro.jobs import sharpness
from lorarepro.warm import run_job

run_job(snakemake, sharpness)
