"""The Snakemake jobs: one function per rule, named as the rule, taking the `snakemake` object of
the rule's script adapter (workflow/scripts/job.py, the same ten lines for every rule).

A job runs either in a warm, pre-imported process (lorarepro.pipeline.warm) or in the adapter's own
process. Each job imports its body inside the function: the adapter that hands a job to the warm
server imports this module and must start in tens of milliseconds, without torch.
"""

import contextlib
import importlib
import sys
import warnings
from pathlib import Path

from lorarepro.domain.families import of_arch
from lorarepro.pipeline.gpus import claim

# What the warm server imports once for all jobs ("module" or "module:attribute": transformers and
# lorarepro import model classes lazily, on first use, so the classes the families load are named).
PRELOAD = (
    "lorarepro.stages.training.train", "lorarepro.stages.sharpness", "lorarepro.stages.backbone", "lorarepro.domain.data",
    "lorarepro.reporting.tables", "lorarepro.reporting.figures", "lorarepro.reporting.captions", "lorarepro.audit",
    "lorarepro.core.tracking", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "peft", "peft.optimizers",
    "matplotlib.pyplot", "transformers:T5ForConditionalGeneration", "transformers:LlamaForCausalLM",
    "transformers:ViTForImageClassification", "transformers:PreTrainedTokenizerFast",
    "transformers:get_cosine_schedule_with_warmup",
)


def for_rule(rule: str):
    """The job function of a rule, named as the rule; the per_method train rules, one per (task,
    method) and named `train__<task>__<method>`, run `train`."""
    return globals()[rule.split("__")[0]]


def preload() -> None:
    """The warm server's imports (lorarepro.pipeline.warm.serve), before it forks any job."""
    for name in PRELOAD:
        module, _, attribute = name.partition(":")
        loaded = importlib.import_module(module)
        if attribute:
            getattr(loaded, attribute)
    from sqlalchemy.orm import configure_mappers  # deferred: MLflow's ORM, imported by the preload above

    configure_mappers()  # MLflow's store otherwise configures its ORM mappers in every job (~0.6 s)


@contextlib.contextmanager
def logged(log_path: str):
    """Send the job's stdout/stderr (progress bars included) to its log file; errors, and warnings
    of lorarepro's own (e.g. a task's text outside its tokenizer's vocabulary), go to both."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)

    def show(message, category, filename, lineno, file=None, line=None):
        log.write(warnings.formatwarning(message, category, filename, lineno, line))
        if category.__module__.startswith("lorarepro."):
            print(f"WARNING ({log_path}): {message}", file=sys.__stderr__, flush=True)

    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
            warnings.catch_warnings():
        warnings.showwarning = show
        try:
            yield
        except BaseException as exc:
            print(f"ERROR: {type(exc).__name__}: {exc}", file=log, flush=True)
            print(f"ERROR ({log_path}): {type(exc).__name__}: {exc}", file=sys.__stderr__, flush=True)
            raise


def allow_remote_code(config: dict) -> None:
    """Which model directories may run their own code: the config's backbone entries decide, alone."""
    from lorarepro.domain.families.common import allow_remote_code as allow  # deferred: transformers

    allow(config)


def job_tags(smk) -> dict:
    """The Snakemake job behind a tracked run: its rule and what it trains (the script object has no
    job id). A per_method train rule (train__<task>__<method>) is tagged as rule train, like a per-seed one."""
    rule = smk.rule.split("__")[0]
    named = dict(smk.wildcards.items()) or {"task": smk.params.run["task"], "method": smk.params.run["method"]}
    return {"rule": rule, "job": f"{rule}[{','.join(f'{k}={v}' for k, v in named.items())}]"}


def train(smk):
    # claim: this job's own GPUs (Snakemake never sets CUDA_VISIBLE_DEVICES locally)
    with logged(smk.log[0]), claim(smk.resources.get("gpu", 0)):
        from lorarepro.domain.experiment import RunSpec  # deferred: torch, transformers, PEFT
        from lorarepro.pipeline.launcher import train_job

        allow_remote_code(smk.config)
        train_job(smk.config, RunSpec.of(smk.params.run), smk.params.seeds, job_tags(smk))  # as the DAG resolved it


def sharpness(smk):
    with logged(smk.log[0]), claim(smk.resources.get("gpu", 0)):
        from lorarepro.stages.sharpness import measure_pair  # deferred: torch, transformers, PEFT

        allow_remote_code(smk.config)
        measure_pair(smk.config, smk.wildcards.task, smk.wildcards.method, **smk.params.options)


def prepare_data(smk):
    with logged(smk.log[0]):
        from lorarepro.domain.data import prepare_task  # deferred: pandas, pyarrow
        from lorarepro.domain.families.common import load_tokenizer  # deferred: transformers

        # a split filtered by token count (`max_tokens`) counts in the backbone's tokens
        allow_remote_code(smk.config)
        tokenizer = load_tokenizer(Path(smk.input.backbone)) if "backbone" in smk.input.keys() else None
        prepare_task(smk.wildcards.task, smk.params.task, smk.params.data_seed, Path(smk.output[0]), tokenizer)


def prepare_pretext(smk):
    with logged(smk.log[0]):
        from lorarepro.domain.data import prepare_pretext  # deferred: pandas, pyarrow

        cfg = smk.params.backbone
        prepare_pretext(of_arch(cfg["arch"]), smk.params.data_seed, cfg["pretrain"]["examples"], Path(smk.output[0]))


def backbone(smk):
    with logged(smk.log[0]):
        from lorarepro.stages.backbone import build  # deferred: torch, transformers

        print(build(smk.wildcards.backbone, smk.config))


def tables(smk):
    with logged(smk.log[0]):
        from lorarepro.reporting.tables import build_all  # deferred: pandas, scipy

        build_all(smk.config, Path(smk.input.reference), smk.params.config_id)


def figures(smk):
    with logged(smk.log[0]):
        from lorarepro.reporting.figures import build_all_figures  # deferred: matplotlib

        build_all_figures(smk.config)


def audit(smk):
    """Fails the job when a check fails; its report is a log of the rule, which Snakemake keeps."""
    with logged(smk.log[0]):
        from lorarepro.audit import run_and_write  # deferred: torch, MLflow, DVC

        run_and_write(smk.config, Path(smk.log.report), Path(smk.output.json), configfiles=smk.params.configfiles)


def report_captions(smk):
    with logged(smk.log[0]):
        from lorarepro.reporting.captions import write_all  # deferred: pandas

        write_all(smk.config, smk.input.index, smk.input.audit)


def crate(smk):
    with logged(smk.log[0]):
        from lorarepro.pipeline.crate import build  # deferred: rocrate, the optional extra `crate`

        summary = build(Path(smk.output[0]), config=smk.config, configfiles=smk.params.configfiles)
        print(f"wrote {summary['path']}: {summary['runs']} training runs, {len(summary['files'])} files")
