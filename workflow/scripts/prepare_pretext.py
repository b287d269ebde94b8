"""Snakemake adapter: the pretext corpus of one backbone (logic in lorarepro.data)."""
from pathlib import Path

from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro.backbone import FAMILY_OF_ARCH
    from lorarepro.data import prepare_pretext

    cfg = snakemake.params.backbone
    prepare_pretext(FAMILY_OF_ARCH[cfg["arch"]], snakemake.params.data_seed, cfg["pretrain"]["examples"], Path(snakemake.output[0]))
