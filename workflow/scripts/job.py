"""Snakemake's adapter of every rule: runs lorarepro.pipeline.jobs.<rule> with this script's
`snakemake` object, in a fork of the warm server when one is up (lorarepro.pipeline.warm)."""
from lorarepro.pipeline import jobs
from lorarepro.pipeline.warm import run_job

run_job(snakemake, jobs.for_rule(snakemake.rule))  # noqa: F821  (Snakemake defines `snakemake`)
