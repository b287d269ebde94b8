"""Evaluation: the family's metric on every evaluation split of a task (validation, test, OOD)."""

from pathlib import Path


class NotRun(Exception):
    """An evaluation that was deliberately not run (e.g. it needs code execution or a judge that is not configured)."""


class Score(float):
    """A metric (%) that carries details for the result JSON (e.g. HumanEval's per-problem outcomes)."""

    def __new__(cls, value: float, details: dict):
        score = super().__new__(cls, value)
        score.details = details
        return score


def eval_splits(manifest: dict) -> list[str]:
    return [s for s in manifest["splits"] if s != "train"]


def evaluate_splits(family, model, tokenizer, task_dir: Path, manifest: dict, max_length: int,
                    evaluation: dict | None = None, details: dict | None = None) -> dict:
    """{split: metric %} for validation, test and any ood_s* split, rounded for stable JSON.

    `evaluation`: the run's evaluation settings (resolve_run; e.g. the code-execution opt-in), seen
    by the family as manifest["evaluation"]. `details`, if given, receives each split's Score details."""
    from lorarepro.data import load_split

    if evaluation:
        manifest = {**manifest, "evaluation": evaluation}
    metrics = {}
    for split in eval_splits(manifest):
        score = family.evaluate(model, tokenizer, load_split(task_dir, split), manifest, max_length)
        metrics[split] = round(score, 4)
        if details is not None and getattr(score, "details", None) is not None:
            details[split] = score.details
    return metrics
