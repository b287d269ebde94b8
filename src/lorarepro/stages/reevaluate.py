"""`lorarepro evaluate`: score a finished run's saved checkpoint again with the config's current
`evaluation` section (e.g. an MT-Bench judge configured after training), without training again;
its result JSON and MLflow metrics are rewritten."""

from lorarepro.core import paths, tracking
from lorarepro.domain import checkpoints, records
from lorarepro.domain.evaluation import judge


def evaluate_checkpoint(config: dict, task: str, method: str, seed: int) -> dict:
    """Evaluate a FINISHED run again from its checkpoint and rewrite its record; returns the record."""
    result = records.read(task, method, seed)
    path = paths.run_result(task, method, seed)
    if result is None:
        raise FileNotFoundError(f"no result to evaluate again: {path} (train the run first)")
    if result.get("status") != records.FINISHED:
        raise ValueError(f"{path}: status {result.get('status')}, only a FINISHED run has a checkpoint to evaluate")
    evaluation = config.get("evaluation")
    details: dict = {}
    metrics, not_run, _ = checkpoints.evaluate_saved(result["config"], seed, evaluation, details)
    stale = sorted(set(result.get("not_run") or {}) - set(not_run))
    updated = {**{k: v for k, v in result.items() if k not in ("not_run", "evaluation")}, "metrics": metrics,
               **({"not_run": not_run} if not_run else {}), **({"evaluation": details} if details else {})}
    if result.get("metric") == "mt_bench":
        updated["judge"] = judge.describe((evaluation or {}).get("judge"), metrics)
    records.write(updated)
    run_id = (result.get("lineage") or {}).get("mlflow_run_id")
    if run_id and tracking.log_metrics(config, run_id, tracking.run_metrics(updated), evaluated=True):
        client = tracking.mlflow_client(config)[0]
        for split in stale:
            client.delete_tag(run_id, f"not_run.{split}")
        if not_run:
            tracking.Tracker(client, run_id).tags({f"not_run.{split}": reason for split, reason in not_run.items()})
    return updated
