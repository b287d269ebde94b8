"""Scoring a model on a task's evaluation splits (or lm-evaluation-harness's benchmarks), and what
the run record holds about how a metric was scored."""

from lorarepro.domain.evaluation.harness import evaluate as evaluate_benchmark
from lorarepro.domain.evaluation.judge import describe as describe_judge
from lorarepro.domain.evaluation.outcome import NotRun


def evaluate_splits(family, model, tokenizer, splits: dict, manifest: dict, max_length: int,
                    evaluation: dict | None = None, details: dict | None = None) -> tuple[dict, dict]:
    """({split: metric rounded for stable JSON, or None}, {split: reason} for the splits not run).

    `splits`: {name: DataFrame} (lorarepro.domain.data.load_eval_splits). `evaluation`: the config's
    `evaluation` section (a judge, the code-execution opt-in), passed only to tasks whose metric
    needs it (the manifest's `metric`), so the other families keep their signature. `details`, if
    given, receives each split's Score details."""
    if manifest.get("metric") == "lm_eval":  # the harness's benchmarks replace the prepared splits
        jobs = {name: (lambda spec=spec, name=name: evaluate_benchmark(model, tokenizer, name, spec, evaluation))
                for name, spec in manifest["lm_eval"].items()}
    else:
        options = {"evaluation": evaluation} if manifest.get("metric", "exact_match") != "exact_match" else {}
        jobs = {split: (lambda frame=frame: family.evaluate(model, tokenizer, frame, manifest, max_length, **options))
                for split, frame in splits.items()}
    metrics, not_run = {}, {}
    for split, job in jobs.items():
        try:
            score = job()
        except NotRun as reason:
            metrics[split], not_run[split] = None, str(reason)
            continue
        metrics[split] = round(score, 4)
        if details is not None and getattr(score, "details", None) is not None:
            details[split] = score.details
    return metrics, not_run


def record_entries(metric: str, evaluation: dict | None, metrics: dict) -> dict:
    """What a run's result JSON holds about how `metric` was scored, beside the scores: MT-Bench's
    judge (`judge`); nothing for the other metrics, whose results keep their keys."""
    if metric != "mt_bench":
        return {}
    return {"judge": describe_judge((evaluation or {}).get("judge"), metrics)}
