"""Evaluation: the family's metric on every evaluation split of a task (validation, test, OOD).

An evaluation can be deliberately not run (it needs code execution, or a judge model that is not
configured): the family raises NotRun, the split's metric is recorded as null with the reason, and
the run still finishes, so its checkpoint can be evaluated later (`evaluate_checkpoint`, the
`lorarepro evaluate` command) without training again.
"""

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
                    evaluation: dict | None = None, details: dict | None = None) -> tuple[dict, dict]:
    """({split: metric rounded for stable JSON, or None}, {split: reason} for the splits not run).

    `evaluation`: the config's `evaluation` section (a judge, the code-execution opt-in), passed
    only to tasks whose metric needs it (the manifest's `metric`), so the other families keep their
    signature. `details`, if given, receives each split's Score details."""
    from lorarepro.data import load_split

    options = {"evaluation": evaluation} if manifest.get("metric", "exact_match") != "exact_match" else {}
    metrics, not_run = {}, {}
    for split in eval_splits(manifest):
        try:
            score = family.evaluate(model, tokenizer, load_split(task_dir, split), manifest, max_length, **options)
        except NotRun as reason:
            metrics[split], not_run[split] = None, str(reason)
            continue
        metrics[split] = round(score, 4)
        if details is not None and getattr(score, "details", None) is not None:
            details[split] = score.details
    return metrics, not_run


def evaluate_checkpoint(config: dict, task: str, method: str, seed: int) -> dict:
    """Evaluate a FINISHED run again from its saved checkpoint, with the config's `evaluation` (e.g. a
    judge configured after training), and rewrite its result JSON and MLflow metrics; returns the result.

    The model is loaded as training evaluated it (lorarepro.audit.rerun.load_trained), under the
    same deterministic settings; nothing is trained."""
    import json

    from lorarepro import families, judge, paths, tracking
    from lorarepro.atomic import write_json
    from lorarepro.audit.rerun import _deterministic, load_trained

    path = paths.run_result(task, method, seed)
    if not path.is_file():
        raise FileNotFoundError(f"no result to evaluate again: {path} (train the run first)")
    result = json.loads(path.read_text(encoding="utf-8"))
    if result.get("status") != "FINISHED":
        raise ValueError(f"{path}: status {result.get('status')}, only a FINISHED run has a checkpoint to evaluate")
    run = result["config"]
    _deterministic(run.get("threads", 1))
    model, tokenizer, manifest = load_trained(run, seed)
    evaluation = config.get("evaluation")
    details: dict = {}
    metrics, not_run = evaluate_splits(families.get(run["family"]), model, tokenizer, paths.prepared_dir(task), manifest,
                                       run["training"]["max_length"], evaluation, details)
    stale = sorted(set(result.get("not_run") or {}) - set(not_run))
    updated = {**{k: v for k, v in result.items() if k not in ("not_run", "evaluation")}, "metrics": metrics,
               **({"not_run": not_run} if not_run else {}), **({"evaluation": details} if details else {})}
    if result.get("metric") == "mt_bench":
        updated["judge"] = judge.describe((evaluation or {}).get("judge"), metrics)
    write_json(path, updated)
    run_id = (result.get("lineage") or {}).get("mlflow_run_id")
    if run_id and tracking.log_metrics(config, run_id, {k: v for k, v in metrics.items() if v is not None}):
        client = tracking._client(config)[0]
        for split in stale:
            client.delete_tag(run_id, f"not_run.{split}")
        if not_run:
            tracking.Tracker(client, run_id).tags({f"not_run.{split}": reason for split, reason in not_run.items()})
    return updated
