"""Snakemake adapter: build and pretrain (or copy) one backbone (logic in lorarepro.backbone)."""
from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro.backbone import build

    print(build(snakemake.wildcards.backbone, snakemake.config))
