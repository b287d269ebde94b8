"""Task families: how a family's backbone is built and pretrained, how its data becomes batches,
and how its metric is computed. One module per family (the model side), its task rules beside it in
lorarepro.domain.families.rules (the metrics its tasks may score, what an external task configures, how
source rows become its prepared columns; light, for the config check and the data jobs); its facts
are registered here, once.

Each family module provides:
    METRIC                                         default metric name (its rules' METRIC; a task's
                                                   `metric` may choose another)
    TEXT                                           has a tokenizer
    build_backbone(size, vocab) -> (model, tokenizer | None)
    pretext_batch(tokenizer, rows, rng, max_length) -> dict   one pretraining batch from pretext rows
    load_for_task(backbone_dir, manifest) -> (model, tokenizer | None)
    head_modules() -> list[str]                    modules never wrapped by LoRA (heads)
    trained_heads(model) -> list[str]              heads trained in full beside an adapter (a new head per task)
    encode(df, tokenizer, manifest, max_length) -> Encoded     tensors for training
    evaluate(model, tokenizer, df, manifest, max_length) -> float   metric in percent (generation's also
                                                   takes `evaluation=`, the config's judge, for a task
                                                   whose manifest `metric` needs one; it may raise
                                                   lorarepro.domain.evaluation.NotRun)
"""

from dataclasses import dataclass
from importlib import import_module

from lorarepro.core.registry import Registry


@dataclass(frozen=True)
class Family:
    """A family's facts, known without importing its modules (the model side pulls in a
    transformers architecture)."""

    archs: tuple[str, ...]  # backbone architectures its tasks run on; `source: pretrain` builds the first
    module: str  # the model side: build, load, encode, evaluate (this package)
    data: str  # the data side: generators, pretext corpus (`pretext`), vocabulary (lorarepro.domain.data)
    key: str  # the prepared column that identifies an example (no two splits may share one)
    pretext_source: str  # where its pretext corpus comes from (recorded in the pretext manifest)
    rules: str  # its task rules: metrics, external data's fields, keys and conversion (lorarepro.domain.families.rules)

    def load_rules(self):
        """The rules module (imported on first use; pandas, no torch)."""
        return import_module(self.rules)


FAMILIES = Registry("task family")
FAMILIES.register("nlu", Family(("t5", "encoder"), "lorarepro.domain.families.nlu", "lorarepro.domain.data.nlu", "text", "synthetic",
                                "lorarepro.domain.families.rules.nlu"))
FAMILIES.register("vision", Family(("vit", "clip"), "lorarepro.domain.families.vision", "lorarepro.domain.data.vision", "pixels",
                                   "sklearn_digits", "lorarepro.domain.families.rules.vision"))
FAMILIES.register("generation", Family(("llama",), "lorarepro.domain.families.generation", "lorarepro.domain.data.generation",
                                       "question", "synthetic", "lorarepro.domain.families.rules.generation"))


def get(name: str):
    """The family module for `name` (imported on first use)."""
    return import_module(FAMILIES[name].module)


def of_arch(arch: str) -> str:
    """The family a pipeline-built backbone of architecture `arch` serves (t5 -> nlu, ...)."""
    for name, family in FAMILIES.items():
        if family.archs[0] == arch:
            return name
    raise ValueError(f"no family builds backbones of architecture {arch!r} "
                     f"(known: {sorted(f.archs[0] for f in FAMILIES.values())})")
