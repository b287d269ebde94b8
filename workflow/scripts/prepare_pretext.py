"""Snakemake adapter: the pretext corpus of one backbone (lorarepro.jobs.prepare_pretext, started warm by lorarepro.warm)."""
from lorarepro.jobs import prepare_pretext
from lorarepro.warm import run_job

run_job(snakemake, prepare_pretext)
