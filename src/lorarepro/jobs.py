"""The Snakemake jobs: one function per script adapter in workflow/scripts/, taking the script's
`snakemake` object. They run either in a warm, pre-imported process (lorarepro.warm) or in the
adapter's own process; each imports what it needs inside, so that importing this module is cheap.
"""

from pathlib import Path

from lorarepro.workflow import job_tags, logged

# What the warm server imports once for all jobs ("module" or "module:attribute": transformers and
# lorarepro import model classes lazily, on first use, so the classes the families load are named).
PRELOAD = (
    "lorarepro.train", "lorarepro.sharpness", "lorarepro.backbone", "lorarepro.data", "lorarepro.tables",
    "lorarepro.figures", "lorarepro.audit", "lorarepro.captions", "lorarepro.tracking",
    "mlflow", "mlflow.store.tracking.sqlalchemy_store", "peft", "peft.optimizers", "matplotlib.pyplot",
    "transformers:T5ForConditionalGeneration", "transformers:LlamaForCausalLM",
    "transformers:ViTForImageClassification", "transformers:PreTrainedTokenizerFast",
    "transformers:get_cosine_schedule_with_warmup",
)


def preload() -> None:
    import importlib

    for name in PRELOAD:
        module, _, attribute = name.partition(":")
        loaded = importlib.import_module(module)
        if attribute:
            getattr(loaded, attribute)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # MLflow's store otherwise configures its ORM mappers in every job (~0.6 s)


def train(smk):
    from lorarepro.gpus import claim

    # claim: this job's own GPUs (Snakemake never sets CUDA_VISIBLE_DEVICES locally)
    with logged(smk.log[0]), claim(smk.resources.get("gpu", 0)):
        from lorarepro.train import run_task_method

        run_task_method(smk.config, smk.wildcards.task, smk.wildcards.method, job_tags(smk))


def sharpness(smk):
    from lorarepro.gpus import claim

    with logged(smk.log[0]), claim(smk.resources.get("gpu", 0)):
        from lorarepro.sharpness import measure_task

        measure_task(smk.config, smk.wildcards.task, **smk.params.options)


def prepare_data(smk):
    with logged(smk.log[0]):
        from lorarepro.data import prepare_task

        prepare_task(smk.wildcards.task, smk.params.task, smk.params.data_seed, Path(smk.output[0]))


def prepare_pretext(smk):
    with logged(smk.log[0]):
        from lorarepro.backbone import FAMILY_OF_ARCH
        from lorarepro.data import prepare_pretext

        cfg = smk.params.backbone
        prepare_pretext(FAMILY_OF_ARCH[cfg["arch"]], smk.params.data_seed, cfg["pretrain"]["examples"], Path(smk.output[0]))


def backbone(smk):
    with logged(smk.log[0]):
        from lorarepro.backbone import build

        print(build(smk.wildcards.backbone, smk.config))


def tables(smk):
    with logged(smk.log[0]):
        from lorarepro.tables import build_all

        build_all(smk.config, Path(smk.input.reference))


def figures(smk):
    with logged(smk.log[0]):
        from lorarepro.figures import build_all_figures

        build_all_figures(smk.config)


def audit(smk):
    """Fails the job when a check fails."""
    with logged(smk.log[0]):
        from lorarepro import audit

        audit.run_and_write(smk.config, Path(smk.output.report), Path(smk.output.json))


def report_captions(smk):
    with logged(smk.log[0]):
        from lorarepro.captions import write_all

        write_all(smk.config, smk.input.index, smk.input.audit)
