"""Snakemake adapter: draw every figure (logic in lorarepro.figures)."""
from lorarepro.workflow import logged

with logged(snakemake.log[0]):
    from lorarepro.figures import build_all_figures

    build_all_figures(snakemake.config)
