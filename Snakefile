# lorarepro: data -> backbones -> train (task x method x seeds) -> tables, figures.
# Run: snakemake --cores 2        (the embedded default, params.yaml)
#      snakemake --cores 2 --configfile my_overrides.yaml   (deep-merged over params.yaml)
#      snakemake --profile workflow/profiles/slurm --configfile workflow/configs/paper.yaml
#          (a config with `standalone: true` is complete: params.yaml is not merged under it, and its
#          outputs go under outputs/<config id>/)
import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from lorarepro.core.config import read_yaml

min_version("9.0")

if Path("params.yaml").is_file():  # (a standalone --configfile runs without it)
    read_yaml("params.yaml")  # a YAML error names the file and line (Snakemake's own message names neither)


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # snakemake --report results/report.html


# Snakemake deep-merges --configfile over params.yaml, so the embedded default's tasks, methods and
# sharpness settings would leak into a complete config such as the paper's; `standalone: true` in the
# command-line config drops params.yaml (same as --replace-workflow-config).
if workflow.config_settings.overwrite_config.get("standalone"):
    import copy

    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))


validate(config, "workflow/schemas/params.schema.yaml")

from lorarepro.core import numerics

# Before anything imports torch: this process's environment reaches every job, the warm server and
# torchrun's ranks (a cluster job parses this file again and pins itself).
numerics.pin(config["numerics"], config["threads"])

from lorarepro.core import paths
from lorarepro.core.config import (backbone_seed, check_local, claim_comparisons, jobs_mode, own_experiment, reported_runs,
                              resources, sharpness_runs, specs, train_priorities)
from lorarepro.domain.experiment import check
from lorarepro.pipeline.checks import check_reporting, replaced_defaults

# This invocation's --configfile files: its tables index, metrics summary, claims and audit carry their
# names (lorarepro.core.paths.config_id), so that another config's run never overwrites the default's; a
# standalone config writes everything under outputs/<config id>/ (chosen here, once: jobs inherit it).
CONFIGFILES = [os.path.relpath(f) for f in workflow.overwrite_configfiles]
CONFIG_ID = paths.config_id(CONFIGFILES)
paths.select(CONFIG_ID, config["standalone"])
if config["standalone"] and paths.PARAMS.is_file():  # its MLflow runs apart from the default's too
    config["mlflow"]["experiment"] = own_experiment(config, CONFIG_ID, read_yaml(paths.PARAMS))

# cross-references (unknown task in a table, rank above a layer's size) before any job; every run's
# settings resolved once, here, and handed to its train job (workflow/rules/train.smk)
RUN_SPECS = check(config)
# A config merged over params.yaml shares the default's paths: say, once, which of the default's files
# its changed runs would replace (a cluster job parses this file again and says nothing).
if workflow.is_main_process and CONFIG_ID and not config["standalone"] and paths.PARAMS.is_file():
    notice = replaced_defaults(config, RUN_SPECS, CONFIG_ID)
    if notice:
        print(notice, file=sys.stderr, flush=True)
if workflow.local_exec and not workflow.output_settings.dryrun:  # a dry run (a GPU grid on a laptop) only lists jobs
    check_local(config, os.cpu_count())
check_reporting(config)  # every figure's drawer exists, before any job trains
# A dry run of a GPU grid says what it would cost (lorarepro estimate: GPU-hours per table, with sources)
if workflow.output_settings.dryrun and any(resources(config, "train", t)["gpu"] for t in config["tasks"]):
    from lorarepro.reporting.estimate import estimate, render

    print(render(estimate(config, "h100")))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/backbones.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sharpness.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/audit.smk"


rule all:
    input:
        final_outputs(),
