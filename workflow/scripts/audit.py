"""Snakemake adapter: the audit (lorarepro.jobs.audit, started warm by lorarepro.warm)."""
from lorarepro.jobs import audit
from lorarepro.warm import run_job

run_job(snakemake, audit)
