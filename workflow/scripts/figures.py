"""Snakemake adapter: draw every figure (lorarepro.jobs.figures, started warm by lorarepro.warm)."""
from lorarepro.jobs import figures
from lorarepro.warm import run_job

run_job(snakemake, figures)
