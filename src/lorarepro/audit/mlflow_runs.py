"""Audit check against MLflow: each result JSON's run exists, is active and FINISHED, and logged the
same params (the resolved run config, as lorarepro.tracking flattens it), final metrics (scores and cost,
as tracking.run_metrics names them) and lineage tags (a split not run: no metric, a `not_run.<split>`
tag with the reason). Histories too: the train_loss series equals the run's loss-history CSV step
by step, and no metric was ever logged with another value, unless `lorarepro evaluate` changed it (tracking.log_metrics tags which metrics it changed):
a metric rewritten after training leaves its first value in MLflow's history."""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lorarepro import records, tracking
from lorarepro.audit.report import record

FIX = ("retrain the run so that MLflow and the result JSON agree: delete the result JSON and "
       "rerun `snakemake --cores 2`")


def check(config: dict, runs: list) -> list[dict]:
    uri = tracking.mlflow_client(config)[0].tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():  # opening it would create an empty store
            return [record("mlflow", "fail", db, f"MLflow store not found ({uri}); {len(runs)} runs cannot be traced",
                           "run from the repository root, or set MLFLOW_TRACKING_URI to the store the pipeline used")]
        # absolute: MLflow caches stores by URI, and a relative one would follow the first working directory
        uri = f"sqlite:///{db.resolve()}"
    client = MlflowClient(tracking_uri=uri)
    checked = [_check_run(client, run) for run in runs]
    if runs and not any(found for _, found in checked):
        # not one run known: this store never tracked these results (a clone that pulled them)
        return [record("mlflow", "warn", uri.removeprefix("sqlite:///"), f"the store holds none of the {len(runs)} "
                       "runs the result JSONs name: they were tracked elsewhere",
                       "set MLFLOW_TRACKING_URI to the store that tracked them, or retrain here")]
    return [rec for rec, _ in checked]


def _check_run(client, run) -> tuple[dict, bool]:
    """(record, whether the store knows the run)."""
    result = run.result
    run_id = (result.get("lineage") or {}).get("mlflow_run_id")
    if not run_id:
        return record("mlflow", "fail", run.path, "no MLflow run id in lineage", FIX), False
    try:
        tracked = client.get_run(run_id)
    except MlflowException as err:
        return record("mlflow", "fail", run.path, f"run {run_id} not found ({err.error_code})", FIX), False
    problems = []
    if tracked.info.lifecycle_stage != "active":
        problems.append(f"run {run_id} is {tracked.info.lifecycle_stage}")
    if tracked.info.status != "FINISHED":
        problems.append(f"run {run_id} is {tracked.info.status}")
    params = {k: str(v) for k, v in tracking.flatten(result.get("config") or {}).items()}
    logged = tracked.data.params
    problems += [f"param {k}: result {v!r}, MLflow {logged.get(k)!r}" for k, v in sorted(params.items())
                 if logged.get(k) != v][:3]
    expected = {**tracking.run_metrics(result),
                "train_loss": float((result.get("train") or {}).get("final_loss", "nan"))}
    metrics = tracked.data.metrics
    problems += [f"metric {k}: result {v}, MLflow {metrics.get(k)}" for k, v in sorted(expected.items())
                 if metrics.get(k) != v][:3]
    lineage = result.get("lineage") or {}
    tags = {k: str(v) for k, v in lineage.items() if k not in ("mlflow_run_id", "numerics")}
    tags.update({f"numerics.{k}": str(v) for k, v in (lineage.get("numerics") or {}).items()})  # one tag per setting
    tags.update({f"not_run.{split}": reason for split, reason in (result.get("not_run") or {}).items()})
    problems += [f"tag {k}: result {v}, MLflow {tracked.data.tags.get(k)}" for k, v in sorted(tags.items())
                 if tracked.data.tags.get(k) != v][:3]
    problems += _history_problems(client, run, run_id, tracked.data.tags)
    if problems:
        return record("mlflow", "fail", run.path, "; ".join(problems), FIX), True
    return record("mlflow", "pass", run.path, f"run {run_id}: FINISHED, same params, metrics and lineage"), True


def _history_problems(client, run, run_id: str, tags: dict) -> list[str]:
    """Every value MLflow ever logged for the run's metrics agrees with its result JSON and loss history."""
    problems = []
    history = records.read_history(run.task, run.method, run.seed)
    if history is not None:  # a missing or broken CSV is the `history` check's finding
        logged = [f"{m.value:.6g}" for m in sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)]
        written = [f"{v:.6g}" for v in history["loss"]]
        if logged != written:
            step = next((i for i, (a, b) in enumerate(zip(logged, written)) if a != b), min(len(logged), len(written)))
            problems.append(f"train_loss series: {len(logged)} steps in MLflow, {len(written)} in the loss history, "
                            f"first difference at step {step}")
    changed = set(tags.get(tracking.EVALUATED_AGAIN, "").split(","))
    for key, value in sorted(tracking.run_metrics(run.result).items()):
        if key in changed:
            continue
        values = sorted({m.value for m in client.get_metric_history(run_id, key)})
        if values and values != [float(value)]:  # none at all: the final-metric comparison above says so
            problems.append(f"metric {key} was logged as {values} (result {value}): changed after training")
    return problems
