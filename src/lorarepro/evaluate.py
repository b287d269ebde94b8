"""Evaluation: the family's metric on every evaluation split of a task (validation, test, OOD)."""

from pathlib import Path


def eval_splits(manifest: dict) -> list[str]:
    return [s for s in manifest["splits"] if s != "train"]


def evaluate_splits(family, model, tokenizer, task_dir: Path, manifest: dict, max_length: int) -> dict:
    """{split: metric %} for validation, test and any ood_s* split, rounded for stable JSON."""
    from lorarepro.data import load_split

    return {
        split: round(family.evaluate(model, tokenizer, load_split(task_dir, split), manifest, max_length), 4)
        for split in eval_splits(manifest)
    }
