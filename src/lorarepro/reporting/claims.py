"""The verdict on each claim of the paper: results/claims.md|csv|json, from the run records; the
claims on measured cost (COST_MEASURES: time, memory) in results/claims_cost.md|csv|json, because a
measurement differs between runs and machines and claims.* must repeat bit for bit (paths.measured_outputs).

A claim (workflow/configs/claims.yaml) says what the paper asserts, the paper's number and where it
comes from, what is measured (`measure`) and how the number is read (`kind`: a gain, a bound, a
margin). A config's `claims.comparisons` maps it onto that config's methods and tasks. The analysis
is fixed before any run (lorarepro.reporting.stats):

- the effect of one seed is the measure of treatment against control, averaged over the
  comparison's pairs and tasks (seeds missing any of them are left out and counted);
- the primary test is the paired t-test of these per-seed effects against 0, with its 95% interval
  and the minimum detectable effect (80% power) beside it; the primary family (the primary claims
  judged on the runs) gets Holm-adjusted p-values and simultaneous (Bonferroni) intervals, which its
  verdicts read (stats.claim_verdict): reproduced, smaller than claimed, contradicted or inconclusive;
- a claim worded "each"/"every" (`quantifier: each`) is tested per pair, intersection-union;
- a claim mapped onto some of the paper's tasks (`cells`) reads the paper's cells for exactly the
  tasks the comparison mirrors: verified cells decide, unverified ones are judged beside the headline;
- the claims on cost at the paper's scale (`benchmark`) take their verdict from the committed overhead
  benchmark (results/benchmarks/), the runs' own cost shown "at this scale";
- a run whose validation accuracy is not significantly above the majority-class share is collapsed:
  kept, counted, and each verdict is given again without its pairs;
- a run whose loss went NaN/inf (diverged: no score) is left out with its seed, counted per method, and
  each verdict is given again with it included at its arm's worst on that task (STAND_IN);
- the secondary tests, one per pair and task, are Holm-corrected within the claim;
- a positive control (role `control`: a known effect) must come out reproduced, else the design is
  too weak to judge anything and every verdict says so.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps
from tabulate import tabulate

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.core.config import ConfigError, claim_comparisons, entry, read_claims, spec_seeds
from lorarepro.domain.families import FAMILIES
from lorarepro.core.hashing import sha256_file
from lorarepro.core.registry import Registry
from lorarepro.reporting import registration
from lorarepro.reporting.stats import ALPHA, POWER, VERDICT_RHO, claim_verdict, holm, paired_test, weakest

CLAIMS_ID = "claims"
COST_ID = "claims_cost"
# Measured cost: wall time per step and the profiler's peak step memory vary from run to run (the
# memory with the allocations a process made before the step), so their claims live in claims_cost.*
COST_MEASURES = ("time_overhead", "time_saving", "memory_overhead")
MIN_PRIMARY_SEEDS = 20
SEVERITIES = ("test", "ood_s1", "ood_s2", "ood_s3", "ood_s4", "ood_s5")  # severity 0 (clean) .. 5
UNITS = {"accuracy": "points", "severity_slope": "points per severity level", "sharpness": "loss",
         "time_overhead": "fraction of LoRA's time", "memory_overhead": "fraction of LoRA's memory",
         "time_saving": "fraction of the control's time"}
CSV_COLUMNS = ["claim", "role", "statement", "measure", "kind", "paper_value", "paper_source", "effect",
               "ci_lo", "ci_hi", "ci_sim_lo", "ci_sim_hi", "n", "p", "p_holm", "mde", "verdict", "paper_mirrored",
               "scale", "collapsed_pairs", "effect_without_collapsed", "verdict_without_collapsed",
               "diverged_runs", "effect_with_diverged", "verdict_with_diverged", "note"]
NOT_TESTABLE = "not testable at this scale"
DEPENDS = "depends on the paper number"
COLLAPSE_ALPHA = 0.05  # one-sided binomial test of a run's validation accuracy against the majority share
SCORE_MEASURES = ("accuracy", "severity_slope")  # measures of a task's score (its metric)
METRIC_NAMES = {"matthews_corrcoef": "MCC", "f1": "F1", "f1_macro": "macro F1", "exact_match": "exact match",
                "humaneval_pass_at_1": "pass@1", "lm_eval": "lm-eval score", "mt_bench": "MT-Bench score"}
# What a metric's number is (every one is recorded as a percentage, MCC x100 included, except a judge's grade).
METRIC_SCALES = {**dict.fromkeys(("accuracy", "f1", "f1_macro", "matthews_corrcoef", "exact_match",
                                  "humaneval_pass_at_1", "lm_eval"), "percent"), "mt_bench": "judge's grade 1-10"}


# ----------------------------------------------------------------------------- measures of one seed


def _metric(task: str, method: str, seed: int, split: str = "test") -> float | None:
    result = records.finished(task, method, seed)
    value = ((result or {}).get("metrics") or {}).get(split)
    return None if value is None else float(value)


def _cost(task: str, method: str, seed: int, key: str) -> float | None:
    value = ((records.finished(task, method, seed) or {}).get("resources") or {}).get(key)
    return None if value is None else float(value)


def _sharpness(task: str, method: str, seed: int, rho: float) -> float | None:
    measures = records.read_sharpness(task, method, seed)
    value = ((measures or {}).get("expected_sharpness") or {}).get(str(rho))
    return None if value is None else float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# A claim's `measure` names one of these: fn(claim, task, treatment, control, seed) -> the measure of
# treatment against control on one task and seed, oriented so that a positive value is what the
# claim asserts (None when a run or a value is missing). A new measure is one registered function
# (and its unit in UNITS).
MEASURES = Registry("claim measure")


@MEASURES.register("accuracy")
def _accuracy(claim: dict, task: str, treatment: str, control: str, seed: int) -> float | None:
    return _difference(_metric(task, treatment, seed), _metric(task, control, seed))


@MEASURES.register("severity_slope")
def _severity_slope(claim: dict, task: str, treatment: str, control: str, seed: int) -> float | None:
    """Slope of the gain over severity 0..5 (least squares)."""
    gains = [_difference(_metric(task, treatment, seed, s), _metric(task, control, seed, s)) for s in SEVERITIES]
    return None if None in gains else float(np.polyfit(np.arange(len(gains)), gains, 1)[0])


@MEASURES.register("sharpness")
def _flatter(claim: dict, task: str, treatment: str, control: str, seed: int) -> float | None:
    """Positive: the treatment is flatter (lower expected sharpness at the claim's radius)."""
    rho = claim.get("rho", VERDICT_RHO)
    return _difference(_sharpness(task, control, seed, rho), _sharpness(task, treatment, seed, rho))


@MEASURES.register("time_overhead")
def _time_overhead(claim: dict, task: str, treatment: str, control: str, seed: int) -> float | None:
    ratio = _ratio(_cost(task, treatment, seed, "seconds_per_step"), _cost(task, control, seed, "seconds_per_step"))
    return None if ratio is None else ratio - 1


@MEASURES.register("time_saving")
def _time_saving(claim: dict, task: str, treatment: str, control: str, seed: int) -> float | None:
    ratio = _ratio(_cost(task, treatment, seed, "seconds_per_step"), _cost(task, control, seed, "seconds_per_step"))
    return None if ratio is None else 1 - ratio


@MEASURES.register("memory_overhead")
def _memory_overhead(claim: dict, task: str, treatment: str, control: str, seed: int) -> float | None:
    ratio = _ratio(_cost(task, treatment, seed, "step_peak_mb"), _cost(task, control, seed, "step_peak_mb"))
    return None if ratio is None else ratio - 1


def measure(claim: dict, task: str, treatment: str, control: str, seed: int) -> float | None:
    """The claim's registered measure (MEASURES) of treatment against control on one task and seed."""
    return MEASURES[claim["measure"]](claim, task, treatment, control, seed)


# ----------------------------------------------------------------------------- what a claim measures


def task_metric(config: dict, task: str) -> str:
    """The metric a task scores: its own `metric`, else its family's default."""
    task_cfg = entry(config, "tasks", task)
    return task_cfg.get("metric") or FAMILIES[task_cfg["family"]].load_rules().METRIC


def _measures(config: dict, tasks: list[str]) -> list[str]:
    return list(dict.fromkeys(task_metric(config, t) for t in tasks))


def check_measures(config: dict) -> None:
    """Refuse (ConfigError, naming the claim) a claim averaging task metrics on different scales (a score
    in percent beside a judge's 1-10 score): their mean has no unit. (A table over such tasks shows no
    Avg: lorarepro.reporting.tables.cells.row_averages.)"""
    for what, tasks in [(f"claim '{name}'", c["tasks"]) for name, c in claim_comparisons(config).items()]:
        scales = {m: METRIC_SCALES[m] for m in _measures(config, tasks)}
        if len(set(scales.values())) > 1:
            raise ConfigError(f"{what} averages metrics on different scales: "
                              + ", ".join(f"{m} ({scale})" for m, scale in scales.items()))


def statement(claim: dict, metrics: list[str]) -> str:
    """The claim's statement naming what is averaged: with several metrics, "average score
    (accuracy, MCC, F1)" where the claims file says "accuracy"."""
    text = claim["statement"]
    if claim["measure"] not in SCORE_MEASURES or len(metrics) < 2:
        return text
    names = f"score ({', '.join(METRIC_NAMES.get(m, m) for m in metrics)})"
    return re.sub(r"\baccuracy\b", names, text, count=1) if re.search(r"\baccuracy\b", text) else f"{text} ({names})"


# ----------------------------------------------------------------------------- collapsed runs


def majority_rate(task: str) -> tuple[int, float] | None:
    """(validation size, majority-class share) of a prepared task: the run records hold the score but not
    the labels, so the labels come from the prepared validation split its manifest names."""
    manifest = paths.manifest(task)
    if not manifest.is_file():
        return None
    split = json.loads(manifest.read_text(encoding="utf-8"))["splits"]["validation"]
    labels = pd.read_parquet(paths.prepared_dir(task) / split["file"])
    if "label" not in labels:
        return None
    counts = labels["label"].value_counts()
    return int(counts.sum()), float(counts.max() / counts.sum())


def collapsed(task: str, method: str, seed: int, rate: tuple[int, float] | None) -> bool | None:
    """Whether a finished run's validation accuracy is not significantly above the majority-class rate
    (one-sided binomial test at the split's size, COLLAPSE_ALPHA); None where that cannot apply."""
    run = records.finished(task, method, seed) or {}
    score = (run.get("metrics") or {}).get("validation")
    if run.get("metric") != "accuracy" or score is None or rate is None:
        return None
    size, majority = rate
    hits = round(float(score) / 100 * size)
    return bool(sps.binomtest(hits, size, majority, alternative="greater").pvalue >= COLLAPSE_ALPHA)


# ----------------------------------------------------------------------------- diverged runs

# What a diverged run (its record holds no score) counts as where a claim includes it: its arm's worst on
# that task, in the claim's own measure. Unlike a chance level, this is defined for every measure and
# always counts against the arm (a treatment at chance on every severity would *gain* slope).
STAND_IN = ("its arm's worst on that task: a diverged treatment run takes the lowest effect its pair of methods "
            "showed on the task over the finished seeds, a diverged control run the highest, a pair where both "
            "diverged no difference (0)")


def diverged_pairs(cells: list, seeds: list[int]) -> dict:
    """{(cell, seed): (treatment diverged, control diverged)} for each pair holding a diverged run."""
    out = {}
    for cell in cells:
        for s in seeds:
            arms = tuple(records.is_diverged(records.read(cell[1], m, s)) for m in cell[0])
            if any(arms):
                out[(cell, s)] = arms
    return out


def with_diverged(values: dict, gone: dict) -> dict:
    """The per-seed values with each diverged run included at STAND_IN; a pair whose other run is missing
    (neither finished nor diverged) stays out, as it would had this one finished."""
    out = {cell: dict(by_seed) for cell, by_seed in values.items()}
    for (cell, s), (treatment, control) in gone.items():
        done = [v for v in values[cell].values() if v is not None]
        other = cell[0][1] if treatment else cell[0][0]
        if treatment and control:
            out[cell][s] = 0.0
        elif done and records.finished(cell[1], other, s) is not None:
            out[cell][s] = min(done) if treatment else max(done)
    return out


# ----------------------------------------------------------------------------- the paper's numbers


def _number(value) -> float:
    return float(value["value"] if isinstance(value, dict) else value)


def paper_cells(claim: dict, tasks: list[str], config: dict, reference: dict) -> dict | None:
    """The paper's cells for exactly the tasks the comparison's tasks mirror (claims file `cells`: a
    table of paper_reference.yaml and its [treatment, control] rows): the mean of their differences,
    how it was derived, the cells' provenance, and the tasks the paper has no cell for."""
    spec = claim.get("cells")
    if not spec:
        return None
    table = reference.get(spec["table"]) or {}
    treatment, control = ((table.get("rows") or {}).get(row) or {} for row in spec["rows"])
    cells, missing = [], []
    for task in tasks:
        mirror = entry(config, "tasks", task).get("mirrors")
        if mirror in treatment and mirror in control:
            a, b = _number(treatment[mirror]), _number(control[mirror])
            cells.append({"task": task, "mirrors": mirror, "treatment": a, "control": b, "difference": a - b})
        else:
            missing.append(f"{task} (mirrors {mirror or 'nothing'})")
    provenance = table.get("provenance") or {}
    value = float(np.mean([c["difference"] for c in cells])) if cells and not missing else None
    terms = " + ".join(f"({c['treatment']:g} − {c['control']:g})" for c in cells)
    return {"table": spec["table"], "rows": list(spec["rows"]), "cells": cells, "missing": missing,
            "value": value, "verified": bool(provenance.get("verified")), "source": provenance.get("source"),
            "derivation": f"mean over {', '.join(c['mirrors'] for c in cells)} of {spec['rows'][0]} − "
                          f"{spec['rows'][1]}: ({terms}) / {len(cells)} = {value:.4g}" if value is not None else None}


def _decide(tests: list[dict], claim: dict, cells: dict | None, alpha: float) -> tuple[str, dict]:
    """The verdict and the verdict against each paper number. Verified cells of the mirrored tasks decide;
    unverified ones are read beside the headline number, and where the two verdicts differ the verdict
    depends on which paper number applies. Several tests (one per pair: "each") give the weakest."""
    judge = lambda number: weakest([claim_verdict(t, claim["kind"], number, alpha) for t in tests])  # noqa: E731
    against = {"headline": judge((claim.get("paper") or {}).get("value"))}
    if cells is None or cells["value"] is None:
        return against["headline"], against
    against["mirrored"] = judge(cells["value"])
    if cells["verified"] or against["mirrored"] == against["headline"]:
        return against["mirrored"], against
    return DEPENDS, against


# ----------------------------------------------------------------------------- the overhead benchmark


def benchmark() -> tuple[Path, dict] | None:
    """The overhead benchmark the scale-bound claims read: the 7B GPU record where it exists, else the
    CPU one (both committed, run by hand: benchmarks/flat_overhead.py); None without either."""
    path = next((p for p in paths.OVERHEAD_BENCHMARKS if p.is_file()), None)
    return None if path is None else (path, json.loads(path.read_text(encoding="utf-8")))


def _orient(measure_name: str, ratio: float) -> float:
    return 1 - ratio if measure_name == "time_saving" else ratio - 1


def benchmark_test(claim: dict, data: dict) -> tuple[dict, str] | None:
    """The claim's measure at the benchmark's largest measured shape, as a test over its repeats (per-round
    ratios; older records keep medians only: the point ratio, no interval), and the scale it names."""
    spec = claim["benchmark"]
    pair = (spec["treatment"], spec["control"])
    if spec["resource"] == "memory":
        methods = (data.get("memory") or {}).get("methods") or {}
        if not all(m in methods for m in pair):
            return None
        repeats = [methods[m].get("repeats_mb") for m in pair]
        point = methods[pair[0]]["step_peak_mb"] / methods[pair[1]]["step_peak_mb"]
        where = f"{data['memory']['tokens']} tokens per micro-batch, peak step memory"
    else:
        accum = spec.get("accum", 1)
        points = {(p["tokens"], p["method"]): p for p in data["points"] if p["accum"] == accum}
        sizes = [t for t, m in points if m == pair[0] and (t, pair[1]) in points]
        if not sizes:
            return None
        a, b = points[(max(sizes), pair[0])], points[(max(sizes), pair[1])]
        repeats = [a.get("round_ms"), b.get("round_ms")]
        point = a["time_ratio"] / b["time_ratio"]
        where = f"{max(sizes)} tokens per micro-batch, accumulation {accum}, step time ({data['timing']['clock']})"
    shapes = data.get("shapes") or {}
    model = (f"linears {shapes['layers_in_out'][0][0]}↔{shapes['layers_in_out'][0][1]} ({shapes['scaled_from']}, "
             "scaled down)" if "layers_in_out" in shapes else data["model"])
    scale = f"{data['device']}, {data['dtype']}, {model}, {where}, {pair[0]} vs {pair[1]}"
    if None in repeats:
        value = _orient(claim["measure"], point)
        return {"n": 1, "mean_diff": value, "ci95": [value, value], "p": None, "mde": None, "sd": None,
                "zero_spread": False, "no_interval": True}, scale
    values = [_orient(claim["measure"], x / y) for x, y in zip(*repeats)]
    return {**paired_test(values, [0.0] * len(values)), "no_interval": False}, scale


# ----------------------------------------------------------------------------- one claim


def _runs(comparison: dict, seeds: list[int]) -> list[str]:
    return [str(paths.run_result(t, m, s)) for t in comparison["tasks"] for pair in comparison["pairs"] for m in pair
            for s in seeds if records.finished(t, m, s) is not None]


def _test_record(test: dict) -> dict:
    return {"n": test["n"], "effect": test["mean_diff"], "ci95": test["ci95"], "p": test["p"], "mde": test["mde"],
            "sd": test["sd"], "zero_spread": test["zero_spread"]}


def _per_seed(values: dict, cells: list, seeds: list[int], keep=lambda cell, seed: True) -> dict[int, float]:
    """{seed: the effect averaged over the cells kept}, over seeds complete in every cell and keeping one."""
    out = {}
    for s in seeds:
        if all(values[cell][s] is not None for cell in cells) and any(keep(cell, s) for cell in cells):
            out[s] = float(np.mean([values[cell][s] for cell in cells if keep(cell, s)]))
    return out


def _tests(values: dict, cells: list, seeds: list[int], each: bool, alpha: float, keep=lambda c, s: True) -> list[dict]:
    """The test(s) a verdict reads: one over the per-seed average of every cell, or with `each` one per
    pair (its tasks averaged), for an intersection-union test."""
    groups = [[c for c in cells if c[0] == pair] for pair in dict.fromkeys(c[0] for c in cells)] if each else [cells]
    out = []
    for group in groups:
        per_seed = list(_per_seed(values, group, seeds, keep).values())
        out.append(paired_test(per_seed, [0.0] * len(per_seed), alpha))
    return out


def _reading(values: dict, cells: list, seeds: list[int], claim: dict, mirrored: dict | None, alpha: float,
             keep=lambda c, s: True) -> dict:
    """The claim's estimate and verdict read again on other per-seed values or on the pairs `keep` holds:
    how a verdict depends on its collapsed or diverged runs."""
    kept = _per_seed(values, cells, seeds, keep)
    tests = _tests(values, cells, seeds, claim.get("quantifier") == "each", alpha, keep)
    return {**_test_record(paired_test(list(kept.values()), [0.0] * len(kept))),
            "verdict": _decide(tests, claim, mirrored, alpha)[0]}


def _diverged(values: dict, cells: list, seeds: list[int], claim: dict, mirrored: dict | None, alpha: float,
              verdict: str) -> dict:
    """The claim's diverged runs (left out: their result paths, the count per method, the pairs holding
    one) and its estimate and verdict with them included at STAND_IN, and whether that verdict differs."""
    gone = diverged_pairs(cells, seeds)
    runs = dict.fromkeys((cell[1], m, s) for (cell, s), arms in gone.items() for m, hit in zip(cell[0], arms) if hit)
    included = None
    if gone:
        included = _reading(with_diverged(values, gone), cells, seeds, claim, mirrored, alpha)
        included["changes"] = included["verdict"] != verdict
    return {"runs": [str(paths.run_result(*run)) for run in runs], "by_method": dict(Counter(m for _, m, _ in runs)),
            "pairs": len(gone), "of": len(cells) * len(seeds), "with": included}


def analyse(claim_id: str, claim: dict, comparison: dict, seeds: list[int], config: dict, reference: dict,
            rates: dict, alpha: float = ALPHA) -> dict:
    """One claim: the primary test (95%) and the test its verdict reads (at `alpha`: the simultaneous
    level within the primary family), the Holm-corrected secondary tests, the paper's cells for the
    mirrored tasks, the collapsed pairs and the verdict without them, the diverged runs and the verdict
    with them."""
    cells = [(tuple(pair), task) for pair in comparison["pairs"] for task in comparison["tasks"]]
    values = {cell: {s: measure(claim, cell[1], *cell[0], s) for s in seeds} for cell in cells}
    flags = {cell: {s: [collapsed(cell[1], m, s, rates.get(cell[1])) for m in cell[0]] for s in seeds} for cell in cells}
    per_seed = _per_seed(values, cells, seeds)
    primary = paired_test(list(per_seed.values()), [0.0] * len(per_seed))
    each = claim.get("quantifier") == "each"
    mirrored = paper_cells(claim, comparison["tasks"], config, reference)
    verdict, against = _decide(_tests(values, cells, seeds, each, alpha), claim, mirrored, alpha)
    applicable = any(f is not None for cell in cells for s in per_seed for f in flags[cell][s])
    bad = {(cell, s) for cell in cells for s in per_seed if any(flags[cell][s])}
    clean = _reading(values, cells, seeds, claim, mirrored, alpha, lambda c, s: (c, s) not in bad) if applicable else None
    secondary = []
    if len(cells) > 1:
        for (treatment, control), task in cells:
            have = [s for s in seeds if values[((treatment, control), task)][s] is not None]
            test = paired_test([values[((treatment, control), task)][s] for s in have], [0.0] * len(have))
            secondary.append({"treatment": treatment, "control": control, "task": task, **_test_record(test)})
        for row, adjusted in zip(secondary, holm([t["p"] for t in secondary])):
            row["p_holm"] = adjusted
    metrics = _measures(config, comparison["tasks"]) if claim["measure"] in SCORE_MEASURES else []
    return {
        "claim": claim_id, "role": comparison["role"], "statement": statement(claim, metrics), "metrics": metrics,
        "measure": claim["measure"], "unit": UNITS[claim["measure"]], "kind": claim["kind"], "paper": claim.get("paper"),
        "quantifier": claim.get("quantifier", "average"), "paper_cells": mirrored,
        "comparison": {"pairs": [list(p) for p in comparison["pairs"]], "tasks": list(comparison["tasks"]),
                       "seeds": seeds, "seeds_complete": list(per_seed)},
        **_test_record(primary),
        "alpha": alpha, "ci_simultaneous": paired_test(list(per_seed.values()), [0.0] * len(per_seed), alpha)["ci95"]
        if alpha < ALPHA else None, "p_holm": None,
        "verdict": verdict, "verdict_against": against,
        "collapsed": {"pairs": len(bad), "of": len(cells) * len(per_seed), "without": clean} if applicable else None,
        "diverged": _diverged(values, cells, seeds, claim, mirrored, alpha, verdict),
        "secondary": secondary,
        "runs": _runs(comparison, seeds),
    }


def at_scale(row: dict, claim: dict, found: tuple[Path, dict] | None) -> dict:
    """A scale-bound claim (time, memory): its verdict from the overhead benchmark at the largest shape it
    measured; the embedded runs' cost stays beside it, descriptive, "at this scale"."""
    here = {k: row[k] for k in ("n", "effect", "ci95", "p", "mde", "sd", "zero_spread")}
    row = {**row, "diverged": {**row["diverged"], "with": None}}  # the benchmark's verdict reads none of the runs
    measured = benchmark_test(claim, found[1]) if found else None
    if measured is None:
        return {**row, "at_this_scale": here, "scale": None, "no_interval": False, "verdict": NOT_TESTABLE,
                "verdict_against": {}, **dict.fromkeys(("n", "effect", "ci95", "p", "mde", "sd"))}
    test, scale = measured
    verdict, against = _decide([test], claim, None, ALPHA)
    return {**row, **_test_record(test), "at_this_scale": here, "scale": scale, "no_interval": test["no_interval"],
            "verdict": verdict, "verdict_against": against}


def _note(row: dict, design_ok: bool) -> str:
    """What limits a verdict: seeds, resolution (MDE against the paper's effect), scale, a failed control."""
    notes = []
    claimed = (row.get("paper") or {}).get("value")
    if row.get("at_this_scale") is not None:
        notes.append(f"judged by the overhead benchmark at {row['scale']}" if row["scale"] else
                     "no overhead benchmark record: not testable at the paper's scale")
        if row.get("no_interval"):
            notes.append("no interval: the benchmark record keeps medians only, so the verdict reads the point ratio")
    elif row["role"] == "secondary":
        notes.append(f"descriptive: {row['n']} seeds")
    if row["role"] == "primary" and row.get("at_this_scale") is None and row["n"] < MIN_PRIMARY_SEEDS:
        notes.append(f"only {row['n']} complete seeds (design: {MIN_PRIMARY_SEEDS})")
    if row["kind"] == "superior" and claimed is not None and row["mde"] is not None and row["mde"] > claimed:
        notes.append(f"MDE {row['mde']:.3g} > claimed {claimed:g}: an effect of the paper's size can hide "
                     f"({row['mde'] / claimed:.1f}x too coarse)")
    if row["zero_spread"]:
        notes.append("every seed gave the same effect: the sign test decides, no interval")
    if row["quantifier"] == "each":
        notes.append("tested as worded, for each pair (intersection-union: the weakest pair's verdict)")
    cells = row.get("paper_cells")
    if cells and cells["missing"]:
        notes.append(f"the paper has no cell for {', '.join(cells['missing'])} in {cells['table']}: "
                     "judged against the headline number")
    included = row["diverged"]["with"]
    if included and included["changes"]:
        notes.append(f"the verdict changes with its {_diverged_count(row)} included: {included['verdict']}")
    if not design_ok and row["role"] != "control":
        notes.append("positive control not reproduced: the design is too weak to judge this")
    return "; ".join(notes)


def analyse_all(config: dict, reference: dict | None = None) -> dict:
    """Every claim the config compares; {} when it has no `claims:` section. `reference`: the paper's
    numbers (paper_reference.yaml), for the cells of mirrored tasks."""
    comparisons = claim_comparisons(config)
    if not comparisons:
        return {}
    claims = read_claims(config["claims"]["reference"])
    found = benchmark()
    # The primary family: the primary claims judged on this profile's runs (scale-bound claims are
    # judged by the benchmark); Bonferroni over it for the intervals verdicts read, Holm for the p-values.
    family = [n for n, c in comparisons.items() if c["role"] == "primary" and "benchmark" not in claims[n]]
    rates = {t: majority_rate(t) for c in comparisons.values() for t in c["tasks"]}
    rows = []
    for name, comparison in comparisons.items():
        alpha = ALPHA / len(family) if name in family else ALPHA
        row = analyse(name, claims[name], comparison, spec_seeds(config, comparison), config, reference or {},
                      rates, alpha)
        rows.append(at_scale(row, claims[name], found) if "benchmark" in claims[name] else row)
    primaries = [r for r in rows if r["claim"] in family]
    for row, adjusted in zip(primaries, holm([r["p"] for r in primaries])):
        row["p_holm"] = adjusted
    controls = [r for r in rows if r["role"] == "control"]
    design_ok = all(r["verdict"] == "reproduced" for r in controls)
    for row in rows:
        row["note"] = _note(row, design_ok)
    return {"alpha": ALPHA, "power": POWER, "min_primary_seeds": MIN_PRIMARY_SEEDS, "primary_family": family,
            "collapse_test": {"alpha": COLLAPSE_ALPHA, "split": "validation", "alternative": "greater"},
            "diverged_stand_in": {"treatment": "min", "control": "max", "both": 0.0},  # STAND_IN, per cell
            "benchmark": {"path": str(found[0]), "sha256": sha256_file(found[0])} if found else None,
            "positive_controls": [r["claim"] for r in controls], "design_ok": design_ok if controls else None,
            "control_effects": {r["claim"]: {"effect": r["effect"], "mde": r["mde"]} for r in controls}, "claims": rows}


# ----------------------------------------------------------------------------- rendering


def _num(value, spec: str = "+.3g") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _interval(effect, ci) -> str:
    return f"{_num(effect)} [{_num(ci[0])}, {_num(ci[1])}]" if ci else _num(effect)


def _effect_text(row: dict) -> str:
    text = _interval(row["effect"], row["ci95"])
    if row.get("no_interval"):
        return f"{_num(row['effect'])} (no interval)"
    return text + (f"; simultaneous [{_num(row['ci_simultaneous'][0])}, {_num(row['ci_simultaneous'][1])}]"
                   if row.get("ci_simultaneous") else "")


def _paper_text(row: dict) -> str:
    paper = row.get("paper") or {}
    if paper.get("value") is None:
        return "direction only"
    bound = {"bound": "at most ", "non_inferior": "not worse than −"}.get(row["kind"], "")
    text = f"{bound}{paper['value']:g} ({paper.get('kind', '?')})"
    cells = row.get("paper_cells")
    if cells and cells["value"] is not None:
        text += (f"; mirrored tasks' cells {cells['value']:.3g} ({cells['table']}, "
                 f"{'verified' if cells['verified'] else 'unverified'})")
    return text


def _verdict_text(row: dict) -> str:
    text = f"**{row['verdict']}**"
    if row["verdict"] == DEPENDS:
        text += f" ({row['verdict_against']['headline']} against the headline number, " \
                f"{row['verdict_against']['mirrored']} against the mirrored tasks' cells)"
    included = row["diverged"]["with"]
    if included and included["changes"]:
        text += f"; **{included['verdict']}** with its {_diverged_count(row)} included"
    return text


def _pairs_text(config: dict, row: dict) -> str:
    label = lambda m: entry(config, "methods", m).get("label", m)  # noqa: E731
    pairs = "; ".join(f"{label(t)} vs {label(c)}" for t, c in row["comparison"]["pairs"])
    return f"{pairs} on {', '.join(row['comparison']['tasks'])}"


def _collapsed_text(row: dict) -> str:
    found = row.get("collapsed")
    if found is None:
        return "collapsed runs: not applicable (no accuracy with its validation labels)"
    clean = found["without"]
    return (f"{found['pairs']} of {found['of']} pairs (task × seed) have a collapsed run; without them "
            f"{_interval(clean['effect'], clean['ci95'])}, n {clean['n']}: {clean['verdict']}")


def _diverged_count(row: dict) -> str:
    k = len(row["diverged"]["runs"])
    return f"{k} diverged run{'s' * (k != 1)}"


def _diverged_text(row: dict) -> str:
    found, included = row["diverged"], row["diverged"]["with"]
    arms = ", ".join(f"{method} {k}" for method, k in found["by_method"].items())
    text = f"{_diverged_count(row)} ({arms}) in {found['pairs']} of {found['of']} pairs (task × seed), left out"
    if included is None:
        return text + "; the verdict reads the overhead benchmark, not these runs"
    return (text + f"; with them included {_interval(included['effect'], included['ci95'])}, n {included['n']}: "
            f"{included['verdict']}" + (" (the verdict changes)" if included["changes"] else ""))


TITLE = ("**Claims.** Each claim of the paper against this profile's runs (workflow/configs/claims.yaml; the "
         "comparisons are the config's `claims:`).")
COST_TITLE = (f"**Claims on training cost.** The claims of the paper whose measure is a measured cost (wall time per "
              f"step, peak step memory). Their verdict comes from the overhead benchmark (benchmarks/flat_overhead.py) "
              f"at the largest shape it measured, its scale named in each row; this profile's runs give the cost "
              f"\"at this scale\", descriptive. Those measurements vary between runs and machines, so they are kept "
              f"here, out of `{paths.claims('md')}` and its siblings (files that must repeat bit for bit).")
COST_POINTER = f" The claims on measured cost (time, memory) are in `{paths.claims_cost('md')}`."


def _method_text(analysis: dict) -> list[str]:
    family = analysis.get("primary_family") or []
    k = max(len(family), 1)
    collapse = analysis["collapse_test"]
    diverged = len({run for r in analysis["claims"] for run in r["diverged"]["runs"]})
    return [
        f"The effect of one seed is treatment minus control in the claim's unit, averaged over its pairs and tasks; "
        f"`n` seeds paired; paired t-test at α = {ALPHA} with its 95% interval; MDE = the smallest true effect "
        f"detected with {POWER:.0%} power at this n and spread. The primary family ({', '.join(family) or 'none'}) "
        f"is corrected for multiplicity: Holm-adjusted p-values, and simultaneous (Bonferroni, α = {ALPHA}/{k}) "
        "intervals beside the unadjusted ones, which its verdicts read. Verdicts read the interval: *reproduced* "
        "(beyond 0 in the claimed direction and reaching the claimed size), *smaller than claimed* (below the "
        "paper's effect), *contradicted* (beyond 0 the other way; for a bound: above it), *inconclusive* "
        "(holds both), *not testable at this scale* (a cost claim without a benchmark record at a larger scale). "
        "Where a claim maps onto some of the paper's tasks, the paper's cells for exactly those tasks are read: "
        "verified cells decide; unverified ones are judged beside the headline number, and where the two verdicts "
        "differ the verdict *depends on the paper number*. A claim worded \"each\"/\"every\" is tested for each "
        "pair (intersection-union: every pair must pass its own test; the weakest verdict decides). Claims marked "
        "secondary are descriptive at their seeds.", "",
        f"A run is *collapsed* when its validation accuracy is not significantly above the validation split's "
        f"majority-class share (one-sided exact binomial test at the split's size, α = {collapse['alpha']}; the "
        "labels are read from the prepared split, data/prepared/<task>/). Collapsed runs stay in the analysis; "
        "each claim gives how many of its pairs hold one and its estimate and verdict without those pairs.", "",
        "A run is *diverged* when its training loss went NaN/inf: its result JSON is FAILED at that step and holds "
        "no score. Diverged runs are left out, their seeds with them (as for a missing run); the audit holds each "
        "against the run's own loss history, checkpoint and MLflow run, and fails an exclusion it cannot re-derive. "
        "A claim with diverged runs gives how many (per method) and its estimate and verdict with them included, "
        f"each at {STAND_IN}; a verdict that changes with them says so beside it. "
        + (f"Of the runs these claims compare, {diverged} diverged." if diverged
           else "None of the runs these claims compare diverged."), "",
    ]


def render_markdown(config: dict, analysis: dict, title: str = TITLE) -> str:
    rows = analysis["claims"]
    table = [[r["claim"], r["role"], r["statement"], _paper_text(r), _effect_text(r), _num(r["n"], "d"),
              _num(r["mde"], ".3g"), _num(r["p_holm"], ".3g"), _verdict_text(r)] for r in rows]
    lines = [
        title, "",
        tabulate(table, headers=["claim", "role", "statement", "paper", "ours: effect [95% CI]", "n", "MDE",
                                 "p (Holm)", "verdict"], tablefmt="pipe", disable_numparse=True), "",
        *_method_text(analysis),
    ]
    if analysis.get("benchmark"):
        lines += [f"Overhead benchmark read: `{analysis['benchmark']['path']}` (sha256 "
                  f"{analysis['benchmark']['sha256']}).", ""]
    if analysis["positive_controls"]:
        if not analysis["design_ok"]:
            verdict = "NOT reproduced: the design is too weak to judge any claim"
        else:
            size = "; ".join(f"{_num(c['effect'])}, MDE {_num(c['mde'], '.3g')}" for c in analysis["control_effects"].values())
            verdict = (f"reproduced ({size}): the design detects an effect of that size. It says nothing of the "
                       "design's sensitivity at the size of the claims, which rests on each claim's MDE alone "
                       "(no control of a known size near it was run)")
        lines += [f"**Design check.** Positive control ({', '.join(analysis['positive_controls'])}): {verdict}.", ""]
    lines += ["**What each comparison is, and what limits it:**", ""]
    for r in rows:
        source = (r.get("paper") or {}).get("source", "")
        lines.append(f"- `{r['claim']}` ({r['unit']}): {_pairs_text(config, r)}, seeds "
                     f"{len(r['comparison']['seeds'])}. Paper: {source or 'no number'}."
                     + (f" *{r['note']}.*" if r["note"] else ""))
        cells = r.get("paper_cells")
        if cells and cells["value"] is not None:
            lines.append(f"  - paper's cells for the mirrored tasks: {cells['derivation']} ({cells['table']}: "
                         f"{cells['source']}; {'verified' if cells['verified'] else 'verified: false'})")
        if r.get("at_this_scale") is not None:
            here = r["at_this_scale"]
            lines.append(f"  - at this scale (this profile's runs, descriptive): {_interval(here['effect'], here['ci95'])}, "
                         f"n {here['n']}")
        lines.append(f"  - {_collapsed_text(r)}")
        if r["diverged"]["runs"]:
            lines.append(f"  - {_diverged_text(r)}")
        for s in r["secondary"]:
            lines.append(f"  - {s['treatment']} vs {s['control']} on {s['task']}: {_interval(s['effect'], s['ci95'])}, "
                         f"n {s['n']}, p {_num(s['p'], '.3g')}, Holm {_num(s['p_holm'], '.3g')}, MDE {_num(s['mde'], '.3g')}")
    return "\n".join(lines) + "\n"


def render_csv(analysis: dict) -> str:
    def csv_row(r: dict) -> dict:
        paper, cells, found = r.get("paper") or {}, r.get("paper_cells") or {}, r.get("collapsed") or {}
        included = r["diverged"]["with"] or {}
        ci, sim = r["ci95"] or [None, None], r.get("ci_simultaneous") or [None, None]
        return {"claim": r["claim"], "role": r["role"], "statement": r["statement"], "measure": r["measure"],
                "kind": r["kind"], "paper_value": paper.get("value"), "paper_source": paper.get("source"),
                "effect": r["effect"], "ci_lo": ci[0], "ci_hi": ci[1], "ci_sim_lo": sim[0], "ci_sim_hi": sim[1],
                "n": r["n"], "p": r["p"], "p_holm": r["p_holm"], "mde": r["mde"], "verdict": r["verdict"],
                "paper_mirrored": cells.get("value"), "scale": r.get("scale"), "collapsed_pairs": found.get("pairs"),
                "effect_without_collapsed": (found.get("without") or {}).get("effect"),
                "verdict_without_collapsed": (found.get("without") or {}).get("verdict"),
                "diverged_runs": len(r["diverged"]["runs"]), "effect_with_diverged": included.get("effect"),
                "verdict_with_diverged": included.get("verdict"), "note": r["note"]}
    numeric = ["effect", "ci_lo", "ci_hi", "ci_sim_lo", "ci_sim_hi", "p", "p_holm", "mde", "paper_mirrored",
               "effect_without_collapsed", "effect_with_diverged"]
    frame = pd.DataFrame([csv_row(r) for r in analysis["claims"]], columns=CSV_COLUMNS)
    return frame.astype({c: float for c in numeric}).round(6).to_csv(index=False)


def render_json(analysis: dict) -> str:
    return json.dumps(analysis, indent=2, sort_keys=True) + "\n"


def is_cost(claim: dict) -> bool:
    """Whether a claim (or its analysed row) is on a measured cost (time, memory): its files are claims_cost.*."""
    return claim["measure"] in COST_MEASURES


def cost_claims(config: dict) -> list[str]:
    """The claims this config compares that are on a measured cost (none: no claims_cost.*)."""
    comparisons = claim_comparisons(config)
    claims = read_claims(config["claims"]["reference"]) if comparisons else {}
    return [name for name in comparisons if is_cost(claims[name])]


def _parts(analysis: dict) -> dict[str, dict]:
    """The analysis split as the files hold it, each part with the design check made over every claim."""
    timing = [r for r in analysis["claims"] if is_cost(r)]
    parts = {CLAIMS_ID: {**analysis, "claims": [r for r in analysis["claims"] if not is_cost(r)]}}
    return parts | ({COST_ID: {**analysis, "claims": timing}} if timing else {})


_CAPTIONS = {CLAIMS_ID: "The verdict on each claim of the paper",
             COST_ID: "The verdict on each claim of the paper on a measured cost (time, memory)"}
_PATHS = {CLAIMS_ID: paths.claims, COST_ID: paths.claims_cost}


def _part_files(config: dict, part_id: str, part: dict, title: str, config_id: str) -> tuple[dict[Path, str], dict]:
    """One part's md|csv|json as {path: text} and its tables-index entry (the runs its claims read)."""
    files = {_PATHS[part_id](ext, config_id): render(part) for ext, render in
             (("md", lambda a: render_markdown(config, a, title)), ("csv", render_csv), ("json", render_json))}
    if part_id == CLAIMS_ID:  # whether these verdicts come from the registered regime, and every change since
        files[_PATHS[part_id]("md", config_id)] += "\n" + registration.markdown(registration.status(config, analysis=False))
    return files, {"id": part_id, "caption": _CAPTIONS[part_id], "rows": [r["claim"] for r in part["claims"]],
                   "columns": CSV_COLUMNS[7:], "runs": sorted({run for row in part["claims"] for run in row["runs"]}),
                   "files": [str(p) for p in files]}


def claims_files(config: dict, reference: dict | None = None, config_id: str = "") -> tuple[dict[Path, str], list[dict]]:
    """results/claims.md|csv|json and, when some claim is on a measured cost (time, memory),
    results/claims_cost.md|csv|json, as {path: text}, with their tables-index entries; nothing for
    a config without claims. `reference`: the paper's numbers (paper_reference.yaml); `config_id`
    (paths.config_id) names another config's files."""
    analysis = analyse_all(config, reference)
    if not analysis:
        return {}, []
    parts = _parts(analysis)
    titles = {CLAIMS_ID: TITLE + (COST_POINTER if COST_ID in parts else ""), COST_ID: COST_TITLE}
    built = [_part_files(config, part_id, part, titles[part_id], config_id) for part_id, part in parts.items()]
    return {path: text for files, _ in built for path, text in files.items()}, [entry for _, entry in built]
