"""Task families: how a family's backbone is built and pretrained, how its data becomes batches,
and how its metric is computed. One module per family, registered by name.

Each family module provides:
    ARCH, METRIC                                   architecture key and metric name
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
                                                   evaluate.NotRun)
"""

from importlib import import_module

FAMILIES = ("nlu", "vision", "generation")


def get(name: str):
    """The family module for `name` (imported lazily: each pulls in a transformers architecture)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family '{name}' (known: {list(FAMILIES)})")
    return import_module(f"lorarepro.families.{name}")
