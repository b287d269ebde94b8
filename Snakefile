# lorarepro: data -> backbones -> train (task x method x seeds) -> tables, figures.
# Run: snakemake --cores 2        (the embedded default, params.yaml)
#      snakemake --cores 2 --configfile my_overrides.yaml   (deep-merged over params.yaml)
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # snakemake --report results/report.html


validate(config, "workflow/schemas/params.schema.yaml")

from lorarepro import paths
from lorarepro.config import check, reported_pairs, resolve_run, sharpness_specs, specs

check(config)  # cross-references (unknown task in a table, rank above a layer's size) before any job


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/backbones.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
