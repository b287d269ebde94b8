"""Evaluation: the family's metric on every evaluation split of a task (validation, test, OOD).

An evaluation can be deliberately not run (it needs code execution, or a judge model that is not
configured): the family raises NotRun, the split's metric is recorded as null with the reason, and
the run still finishes, so its checkpoint can be evaluated later.
"""

from pathlib import Path


class NotRun(Exception):
    """An evaluation that was deliberately not run (e.g. it needs code execution or a judge that is not configured)."""


def eval_splits(manifest: dict) -> list[str]:
    return [s for s in manifest["splits"] if s != "train"]


def evaluate_splits(family, model, tokenizer, task_dir: Path, manifest: dict, max_length: int,
                    evaluation: dict | None = None) -> tuple[dict, dict]:
    """({split: metric rounded for stable JSON, or None}, {split: reason} for the splits not run).

    `evaluation`: the config's `evaluation` section (a judge), passed only to tasks whose metric
    needs it (the manifest's `metric`), so the other families keep their signature."""
    from lorarepro.data import load_split

    options = {"evaluation": evaluation} if manifest.get("metric", "exact_match") != "exact_match" else {}
    metrics, not_run = {}, {}
    for split in eval_splits(manifest):
        try:
            metrics[split] = round(family.evaluate(model, tokenizer, load_split(task_dir, split), manifest,
                                                   max_length, **options), 4)
        except NotRun as reason:
            metrics[split], not_run[split] = None, str(reason)
    return metrics, not_run
