"""The flatness records (results/runs/<task>/<method>/seed<k>.sharpness.json) in the lineage.

Each measured run's record must be a regular file holding a JSON object that names its own task,
method and seed, and be byte for byte what the sharpness job wrote: its sha256 equals the one the
job put in the pair file (paths.pair_sharpness) and tagged on the run's MLflow run
(sharpness.SHARPNESS_SHA256); MLflow's flatness metrics equal its values (mlflow_runs). Under
re-evaluation the sampled runs are measured again (seeded, deterministic under equal numerics) and
compared exactly, timings aside (records.SHARPNESS_VOLATILE). So a halved value fails whether or
not the tables were rebuilt from it.
"""

from __future__ import annotations

import math

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.audit.inputs import BadInput, read_json
from lorarepro.audit.report import record
from lorarepro.core.config import sharpness_runs

FIX = ("the flatness record differs from what its job wrote: measure again (`snakemake --cores 2 --forcerun "
       "sharpness`), never edit it")
UNHASHED = "unhashed:"  # measured before the job hashed its records
TAG = "lorarepro.sharpness_sha256"
HESSIAN_RTOL = 1e-6  # λ_max re-measured: ARPACK's summation order (its own tol, 1e-3, bounds what the value means)  # lorarepro.stages.sharpness.SHARPNESS_SHA256 (not imported: it loads torch)


def measured(config: dict, runs: list) -> list:
    """The runs whose flatness the config measures (tables with `sharpness: true`)."""
    if config.get("sharpness") is None:
        return []
    wanted = sharpness_runs(config)
    return [r for r in runs if r.seed in wanted.get((r.task, r.method), ())]


def check(config: dict, runs: list, store=None) -> list[dict]:
    out = []
    pairs: dict[tuple[str, str], dict | str] = {}
    for run in measured(config, runs):
        path = paths.run_sharpness(run.task, run.method, run.seed)
        key = (run.task, run.method)
        if key not in pairs:
            try:
                pairs[key] = read_json(paths.pair_sharpness(*key))
            except BadInput as bad:
                pairs[key] = str(bad)
        problems = _problems(run, path, pairs[key], store)
        unhashed = [p for p in problems if p.startswith(UNHASHED)]
        if len(unhashed) < len(problems):
            out.append(record("sharpness", "fail", path, "; ".join(problems), FIX))
        elif unhashed:  # values still held against MLflow's metrics (mlflow_runs), and re-measured when sampled
            out.append(record("sharpness", "warn", path, "; ".join(problems), "measure again to hash it: "
                              "`snakemake --cores 2 --forcerun sharpness`"))
        else:
            out.append(record("sharpness", "pass", path, "the record its job wrote (sha256 in the pair file and MLflow)"))
    return out


def _problems(run, path, pair, store) -> list[str]:
    try:
        measures = read_json(path)
    except BadInput as bad:
        return [bad.problem]
    problems = [f"names {k} {measures.get(k)!r}, path says {v!r}" for k, v in
                (("task", run.task), ("method", run.method), ("seed", run.seed)) if measures.get(k) != v]
    content = records.sharpness_digest(measures)
    if isinstance(pair, str):
        problems.append(f"pair file {pair}")
    else:
        written = (pair.get("sha256") or {}).get(str(path))
        if str(path) not in (pair.get("measured") or []):
            problems.append(f"not listed as measured in {paths.pair_sharpness(run.task, run.method)}")
        elif written is None:
            problems.append(f"{UNHASHED} {paths.pair_sharpness(run.task, run.method)} records no sha256 for it "
                            "(measured before records were hashed)")
        elif written != content:
            problems.append(f"content {content[:12]} ≠ written {written[:12]} "
                            f"({paths.pair_sharpness(run.task, run.method)})")
    run_id = (run.result.get("lineage") or {}).get("mlflow_run_id")
    tracked = store.get(run_id) if store is not None and run_id else None
    if tracked is not None and tracked.tags.get(TAG) not in (None, content):
        problems.append(f"content {content[:12]} ≠ MLflow tag {TAG} {tracked.tags[TAG][:12]}")
    elif tracked is not None and TAG not in tracked.tags:
        problems.append(f"{UNHASHED} MLflow run {run_id} has no {TAG} tag")
    return problems


def remeasure(config: dict, runs: list, unverified: dict | None = None) -> list[dict]:
    """Measure the sampled runs' flatness again, without writing, and compare with their records:
    exactly (timings aside) under equal numerics; skipped, with the settings, under others."""
    from lorarepro.audit.rerun import other_numerics, skipped  # deferred: torch, only under --reevaluate
    from lorarepro.stages.sharpness import measure_run  # deferred: torch, transformers, PEFT

    options = dict(config.get("sharpness") or {})
    detail_seeds = options.pop("detail_seeds", None)
    out = []
    for run in measured(config, runs):
        path = paths.run_sharpness(run.task, run.method, run.seed)
        if run in (unverified or {}):
            out.append({**skipped("remeasure", run, unverified[run]), "file": str(path)})
            continue
        try:
            recorded = read_json(path)
        except BadInput as bad:
            out.append(record("remeasure", "skip", path, f"nothing to compare: {bad.problem} (see `sharpness`)"))
            continue
        if (skip := other_numerics("remeasure", run)) is not None:
            out.append({**skip, "file": str(path)})
            continue
        detail = detail_seeds is None or run.seed in detail_seeds
        again = measure_run(config, run.task, run.method, run.seed, detail=detail, write=False, **options)
        a = records.stable(recorded, records.SHARPNESS_VOLATILE)
        b = records.stable(again, records.SHARPNESS_VOLATILE)
        differ = sorted(k for k in a.keys() | b.keys() if not records.json_equal(a.get(k), b.get(k)) and not _lanczos_noise(a.get(k), b.get(k)))
        out.append(record("remeasure", "fail", path, "recorded vs measured again differ in " + ", ".join(
            f"{k} ({_show(a.get(k))} vs {_show(b.get(k))})" for k in differ[:3]), FIX) if differ else
            record("remeasure", "pass", path, "measured again: identical (timings aside)"))
    return out


def _lanczos_noise(a, b) -> bool:
    """λ_max agrees to HESSIAN_RTOL, everything else of the Hessian entry exactly: ARPACK's restarts
    sum in an order that varies in the last bits between processes (seen: 1e-11 relative), while
    every other measure is seeded and bit-exact under equal numerics."""
    if not (isinstance(a, dict) and isinstance(b, dict) and "eigenvalue" in a and "eigenvalue" in b):
        return False
    x, y = a["eigenvalue"], b["eigenvalue"]
    close = isinstance(x, float) and isinstance(y, float) and math.isclose(x, y, rel_tol=HESSIAN_RTOL)
    return close and {k: v for k, v in a.items() if k != "eigenvalue"} == {k: v for k, v in b.items() if k != "eigenvalue"}


def _show(value) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "…"
