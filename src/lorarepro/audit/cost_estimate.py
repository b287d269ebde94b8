"""Audit check `estimate`: what `lorarepro estimate` forecasts for a config's training, against the
training time its finished runs recorded (`resources.seconds`, the optimizer steps, times the ranks of
a data-parallel run).

Information, never a failure: an estimate is a forecast with a stated uncertainty, not a result. The
record says whether the recorded time fell inside that uncertainty, so the next estimate of a grid like
this one can be trusted, or corrected. The estimate is for the device the runs recorded: `cpu`, or the
GPU kind named in `resources.gpu_model`; runs on several kinds, or on a GPU the estimate has no rate
for, are said so and not compared."""

from __future__ import annotations

from lorarepro.audit.report import record
from lorarepro.core import paths
from lorarepro.reporting import estimate

GPU_KINDS = {"H100": "h100", "H200": "h200", "A100": "a100", "4090": "4090"}  # a substring of the GPU's name


def device_kind(resources: dict) -> str | None:
    """The estimate's kind for the device a run recorded (None: a GPU without a rate)."""
    if resources.get("device", "cpu") == "cpu":
        return "cpu"
    name = str(resources.get("gpu_model", ""))
    return next((kind for key, kind in GPU_KINDS.items() if key in name), None)


def check(config: dict, runs: list) -> list[dict]:
    timed = [r for r in runs if r.result.get("status") == "FINISHED" and (r.result.get("resources") or {}).get("seconds")]
    where = paths.RESULTS / "runs"
    if not timed:
        return [record("estimate", "info", where, "no finished run records its training time")]
    kinds = {device_kind(r.result["resources"]) for r in timed}
    if len(kinds) != 1 or None in kinds:
        devices = sorted({str(r.result["resources"].get("gpu_model") or r.result["resources"].get("device")) for r in timed})
        return [record("estimate", "info", where, f"runs on {', '.join(devices)}: no one estimate to compare with")]
    kind = kinds.pop()
    try:
        forecast = estimate.estimate(config, kind)["runs"]
    except (OSError, ValueError, KeyError) as err:  # no committed benchmark to price this device from
        return [record("estimate", "info", where, f"no estimate to compare with: {err}")]
    predicted = recorded = 0.0
    bound = 1.0
    for run in timed:
        planned = forecast.get(f"{run.task}/{run.method}")
        if planned is None:
            continue
        ranks = ((run.result.get("train") or {}).get("distributed") or {}).get("processes") or 1
        predicted += planned["seconds_per_seed"]
        recorded += run.result["resources"]["seconds"] * ranks
        bound = max(bound, planned["uncertainty"])
    if not predicted:
        return [record("estimate", "info", where, "the estimate plans none of the finished runs")]
    ratio = recorded / predicted
    inside = 1 / bound <= ratio <= bound
    unit = "core-hours" if kind == "cpu" else f"{kind} GPU-hours"
    return [record("estimate", "info", where,
                   f"training of {len(timed)} runs: estimated {predicted / 3600:.3g} {unit}, recorded "
                   f"{recorded / 3600:.3g} (x{ratio:.2f}), {'inside' if inside else 'outside'} the estimate's "
                   f"stated uncertainty (x/÷{bound:g})",
                   "" if inside else "the estimate's rates for this device are off: see `lorarepro estimate "
                   "--runs` for each run's rate and its source")]
