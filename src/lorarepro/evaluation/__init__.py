"""Evaluation: the family's metric on every evaluation split of a task (validation, test, OOD), or
lm-evaluation-harness's benchmarks (`harness`, a generation task with `metric: lm_eval`), and what
some metrics need beyond the model (`judge`: MT-Bench's judge model; `humaneval` and `sandbox`:
running model-written code).

An evaluation can be deliberately not run (it needs code execution, or a judge model that is not
configured): the family raises NotRun, the split's metric is recorded as null with the reason, and
the run still finishes, so its checkpoint can be evaluated later (lorarepro.reevaluate, the
`lorarepro evaluate` command) without training again.
"""


class NotRun(Exception):
    """An evaluation that was deliberately not run (e.g. it needs code execution or a judge that is not configured)."""


class Score(float):
    """A metric (%) that carries details for the result JSON (e.g. HumanEval's per-problem outcomes)."""

    def __new__(cls, value: float, details: dict):
        score = super().__new__(cls, value)
        score.details = details
        return score


def evaluate_splits(family, model, tokenizer, splits: dict, manifest: dict, max_length: int,
                    evaluation: dict | None = None, details: dict | None = None) -> tuple[dict, dict]:
    """({split: metric rounded for stable JSON, or None}, {split: reason} for the splits not run).

    `splits`: {name: DataFrame} (lorarepro.data.load_eval_splits). `evaluation`: the config's
    `evaluation` section (a judge, the code-execution opt-in), passed only to tasks whose metric
    needs it (the manifest's `metric`), so the other families keep their signature. `details`, if
    given, receives each split's Score details."""
    if manifest.get("metric") == "lm_eval":  # the harness's benchmarks replace the prepared splits
        from lorarepro.evaluation import harness  # deferred: harness imports this module

        jobs = {name: (lambda spec=spec, name=name: harness.evaluate(model, tokenizer, name, spec, evaluation))
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
