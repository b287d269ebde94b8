"""Snakemake adapter: build and pretrain (or copy) one backbone (lorarepro.jobs.backbone, started warm by lorarepro.warm)."""
from lorarepro.jobs import backbone
from lorarepro.warm import run_job

run_job(snakemake, backbone)
