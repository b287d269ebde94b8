"""Audit check against MLflow, read-only (audit.stores): each result JSON's run exists, is active and
FINISHED, and logged the same params (the resolved run config with its seed, as lorarepro.core.tracking
flattens it), final metrics (scores and cost, as tracking.run_metrics names them; the flatness
measures beside its sharpness record) and tags (lineage, identity: task, method, seed, run name; a
split not run: no metric, a `not_run.<split>` tag with the reason).

What MLflow's API can change after a run finished (a tag, a new metric value) is held against what
the run logged at the end of training: its artifacts, the result JSON as it was then and
config.json. Every field of the result JSON must equal the logged one, except those `lorarepro
evaluate` rewrites (EVALUABLE); a run whose metrics changed after training in any way (the artifact,
a metric's history, the evaluated-again tag) is returned as `changed`: the audit re-evaluates it
whatever its sample, so only a checkpoint that gives the new numbers passes.

Histories too: the train_loss series equals the run's loss-history CSV step by step, and no metric
was ever logged with another value, unless `lorarepro evaluate` changed it (tracking.log_metrics
tags which metrics it changed).

A missing or empty store, or one that holds none of the runs, is never a plain pass: when this
checkout's mlruns/ holds artifacts of the runs the store that tracked them here is gone and that
fails; otherwise (a clone that pulled the results) the verdict says "MLflow not checked" and
`--strict` fails (record key `not_checked`).
"""

from __future__ import annotations


from lorarepro.core import paths, tracking
from lorarepro.domain import records
from lorarepro.audit.inputs import BadInput, problem, read_json
from lorarepro.audit.report import record
from lorarepro.audit.stores import StoreAbsent, local_artifacts, open_store

FIX = ("retrain the run so that MLflow and the result JSON agree: delete the result JSON and "
       "rerun `snakemake --cores 2`")
EVALUABLE = ("metrics", "not_run", "evaluation", "judge")  # what `lorarepro evaluate` may rewrite after training
LIMIT = 4  # differences named per kind


def open_or_absent(config: dict, run_ids: list[str]):
    """(store, None) or (None, records saying why nothing was checked, failing where evidence says
    the store was here)."""
    try:
        store = open_store(config)
    except StoreAbsent as absent:
        return None, _absent(absent.where, absent.why, run_ids)
    if store.count() == 0:
        return None, _absent(store.where, "MLflow store holds no runs", run_ids, store.root)
    return store, None


def _absent(where: str, why: str, run_ids: list[str], root=None) -> list[dict]:

    here = local_artifacts(root or ".", run_ids)
    if here:
        return [record("mlflow", "fail", where, f"{why}, but mlruns/ holds the artifacts of {len(here)} of the "
                       f"{len(run_ids)} runs: the store that tracked them in this checkout is gone",
                       "restore mlflow.db (from a backup), or retrain: delete results/runs and rerun "
                       "`snakemake --cores 2`")]
    return [{**record("mlflow", "warn", where, f"{why}: the {len(run_ids)} runs are not held against MLflow "
                      "(a clone that pulled the results has no store)",
                      "set MLFLOW_TRACKING_URI to the store that tracked them, or retrain here"),
             "not_checked": "MLflow not checked (store absent)"}]


def check(config: dict, runs: list) -> tuple[list[dict], set]:
    """(records, runs whose metrics changed after training: they must be re-evaluated)."""
    ids = [(r.result.get("lineage") or {}).get("mlflow_run_id") for r in runs]
    store, absent = open_or_absent(config, [i for i in ids if i])
    if store is None:
        return (absent if runs else []), set()
    checked = [_check_run(store, run) for run in runs]
    if runs and not any(found for _, found, _ in checked):
        # not one run known: this store never tracked these results (a clone that pulled them)
        return _absent(store.where, f"the store holds none of the {len(runs)} runs the result JSONs name",
                       [i for i in ids if i], store.root), set()
    return [rec for rec, _, _ in checked], {run for run, (_, _, changed) in zip(runs, checked) if changed}


def identity_problems(tracked, task: str, method: str, seed: int) -> list[str]:
    """What MLflow says of the run's task, method and seed that differs from its path."""
    want = {"task": task, "method": method, "seed": str(seed)}
    problems = [f"MLflow {kind} {k}={where.get(k)!r}, path says {v!r}" for kind, where in
                (("param", tracked.params), ("tag", tracked.tags)) for k, v in want.items() if where.get(k) != v]
    name = f"{task}/{method}/seed{seed}"
    if tracked.name != name:
        problems.append(f"MLflow run name {tracked.name!r}, path says {name!r}")
    return problems


def _check_run(store, run) -> tuple[dict, bool, bool]:
    """(record, whether the store knows the run, whether its metrics changed after training)."""
    result = run.result
    run_id = (result.get("lineage") or {}).get("mlflow_run_id")
    if not run_id:
        return record("mlflow", "fail", run.path, "no MLflow run id in lineage", FIX), False, False
    tracked = store.get(run_id)
    if tracked is None:
        return record("mlflow", "fail", run.path, f"run {run_id} not found in {store.where}", FIX), False, False
    problems = []
    if tracked.lifecycle_stage != "active":
        problems.append(f"run {run_id} is {tracked.lifecycle_stage}")
    if tracked.status != "FINISHED":
        problems.append(f"run {run_id} is {tracked.status}")
    problems += identity_problems(tracked, run.task, run.method, run.seed)
    params = {k: str(v) for k, v in tracking.flatten({**(result.get("config") or {}), "seed": run.seed}).items()}
    logged = tracked.params
    problems += [f"param {k}: result {params.get(k, '<absent>')!r}, MLflow {logged.get(k, '<absent>')!r}"
                 for k in sorted(params.keys() | logged.keys()) if logged.get(k) != params.get(k)][:LIMIT]
    expected = {**tracking.run_metrics(result),
                "train_loss": float((result.get("train") or {}).get("final_loss", "nan"))}
    sharpness = _sharpness(run)
    if sharpness is not None:
        expected.update(tracking.run_metrics(sharpness=sharpness))
    metrics = tracked.metrics
    problems += [f"metric {k}: result {v}, MLflow {metrics.get(k)}" for k, v in sorted(expected.items())
                 if not records.json_equal(metrics.get(k), v)][:LIMIT]
    lineage = result.get("lineage") or {}
    tags = {k: str(v) for k, v in lineage.items() if k not in ("mlflow_run_id", "numerics")}
    tags.update({f"numerics.{k}": str(v) for k, v in (lineage.get("numerics") or {}).items()})  # one tag per setting
    tags.update({f"not_run.{split}": reason for split, reason in (result.get("not_run") or {}).items()})
    extra = sorted(k for k in tracked.tags if k.startswith("not_run.") and k not in tags)
    problems += [f"tag {k}: result {v}, MLflow {tracked.tags.get(k)}" for k, v in sorted(tags.items())
                 if tracked.tags.get(k) != v][:LIMIT]
    problems += [f"tag {k}: MLflow says a split was not run, the result JSON does not" for k in extra][:LIMIT]
    history, changed = _history_problems(store, run, run_id, tracked.tags)
    problems += history
    logged_problems, evaluated = _artifact_problems(store, tracked, run)
    problems += logged_problems
    changed = changed or evaluated
    if problems:
        return record("mlflow", "fail", run.path, "; ".join(problems), FIX), True, changed
    return (record("mlflow", "pass", run.path, f"run {run_id}: FINISHED, same identity, params, metrics, tags and "
                   "artifacts" + (" (metrics evaluated again: re-evaluated below)" if changed else "")), True, changed)


def _sharpness(run) -> dict | None:
    """The run's sharpness record, where one exists (its form is the `sharpness` check's finding)."""
    path = paths.run_sharpness(run.task, run.method, run.seed)
    if problem(path) is not None:
        return None
    try:
        return read_json(path)
    except BadInput:
        return None


def _history_problems(store, run, run_id: str, tags: dict) -> tuple[list[str], bool]:
    """Every value MLflow ever logged for the run's metrics agrees with its result JSON and loss
    history; (problems, whether a metric was legitimately evaluated again)."""
    problems = []
    try:
        history = records.read_history(run.task, run.method, run.seed)
    except (ValueError, OSError):
        history = None  # a broken CSV is the `history` check's finding
    if history is not None:
        logged = [f"{v:.6g}" for _, v, _ in store.history(run_id, "train_loss")]
        written = [f"{v:.6g}" for v in history["loss"]]
        if logged != written:
            step = next((i for i, (a, b) in enumerate(zip(logged, written)) if a != b), min(len(logged), len(written)))
            problems.append(f"train_loss series: {len(logged)} steps in MLflow, {len(written)} in the loss history, "
                            f"first difference at step {step}")
    changed = set(filter(None, tags.get(tracking.EVALUATED_AGAIN, "").split(",")))
    again = False
    for key, value in sorted(tracking.run_metrics(run.result).items()):
        values = sorted({v for _, v, _ in store.history(run_id, key)})
        if not values or values == [float(value)]:  # none at all: the final-metric comparison says so
            continue
        if key in changed:
            again = True
        else:
            problems.append(f"metric {key} was logged as {values} (result {value}): changed after training")
    return problems, again or bool(changed)


def _artifact_problems(store, tracked, run) -> tuple[list[str], bool]:
    """The result JSON and config.json that training logged as artifacts, against the files now:
    (problems, whether the evaluable part differs, i.e. metrics were rewritten after training)."""
    folder = store.artifacts(tracked)
    if folder is None:
        return [f"artifacts of run {tracked.run_id} not found (mlruns/)"], False
    problems = []
    try:
        logged = read_json(folder / run.path.name)
    except BadInput as bad:
        return [f"logged result JSON artifact {bad}"], False
    current = run.result
    keys = sorted((logged.keys() | current.keys()) - set(EVALUABLE))
    differ = [k for k in keys if not records.json_equal(logged.get(k, "<absent>"), current.get(k, "<absent>"))]
    for key in differ[:LIMIT]:
        problems.append(f"field {key!r} differs from the result JSON training logged ({_short(_diff(logged.get(key), current.get(key)))})")
    evaluated = any(not records.json_equal(logged.get(k), current.get(k)) for k in EVALUABLE)
    if evaluated:
        named = set(filter(None, tracked.tags.get(tracking.EVALUATED_AGAIN, "").split(",")))
        moved = {k for k, v in tracking.run_metrics(current).items() if not records.json_equal(tracking.run_metrics(logged).get(k), v)}
        unnamed = sorted(moved - named)
        if unnamed:
            problems.append(f"metrics {unnamed} differ from the result JSON training logged, and no "
                            "`lorarepro evaluate` changed them")
    try:
        config = read_json(folder / "config.json")
    except BadInput as bad:
        problems.append(f"logged config artifact {bad}")
    else:
        expected = {**(current.get("config") or {}), "seed": run.seed}
        if config != expected:
            problems.append(f"config.json training logged differs from the result JSON's config and seed "
                            f"({_short(_diff(config, expected))})")
    return problems, evaluated


def _diff(a, b) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        a, b = tracking.flatten(a), tracking.flatten(b)
        keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))
        return "; ".join(f"{k}: logged {a.get(k, '<absent>')!r}, now {b.get(k, '<absent>')!r}" for k in keys[:3])
    return f"logged {a!r}, now {b!r}"


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
