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
  and the minimum detectable effect (80% power) beside it; the verdict reads the interval
  (stats.claim_verdict): reproduced, smaller than claimed, contradicted or inconclusive;
- the secondary tests, one per pair and task, are Holm-corrected within the claim;
- a positive control (role `control`: a known effect) must come out reproduced, else the design is
  too weak to judge anything and every verdict says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from lorarepro import paths, records
from lorarepro.config import claim_comparisons, entry, read_claims, spec_seeds
from lorarepro.registry import Registry
from lorarepro.reporting.stats import ALPHA, POWER, claim_verdict, holm, paired_test

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
               "ci_lo", "ci_hi", "n", "p", "mde", "verdict", "note"]


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
    rho = claim.get("rho", 0.05)
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


# ----------------------------------------------------------------------------- one claim


def _runs(comparison: dict, seeds: list[int]) -> list[str]:
    return [str(paths.run_result(t, m, s)) for t in comparison["tasks"] for pair in comparison["pairs"] for m in pair
            for s in seeds if records.finished(t, m, s) is not None]


def _test_record(test: dict) -> dict:
    ci = test["ci95"]
    return {"n": test["n"], "effect": test["mean_diff"], "ci95": ci, "p": test["p"], "mde": test["mde"],
            "sd": test["sd"], "zero_spread": test["zero_spread"]}


def analyse(claim_id: str, claim: dict, comparison: dict, seeds: list[int]) -> dict:
    """The primary test, the Holm-corrected secondary tests and the verdict of one claim."""
    cells = [(tuple(pair), task) for pair in comparison["pairs"] for task in comparison["tasks"]]
    values = {cell: {s: measure(claim, cell[1], *cell[0], s) for s in seeds} for cell in cells}
    complete = [s for s in seeds if all(values[cell][s] is not None for cell in cells)]
    per_seed = [float(np.mean([values[cell][s] for cell in cells])) for s in complete]
    primary = paired_test(per_seed, [0.0] * len(per_seed))
    claimed = (claim.get("paper") or {}).get("value")
    secondary = []
    if len(cells) > 1:
        tests = []
        for (treatment, control), task in cells:
            have = [s for s in seeds if values[((treatment, control), task)][s] is not None]
            tests.append(paired_test([values[((treatment, control), task)][s] for s in have], [0.0] * len(have)))
            secondary.append({"treatment": treatment, "control": control, "task": task, **_test_record(tests[-1])})
        for row, adjusted in zip(secondary, holm([t["p"] for t in tests])):
            row["p_holm"] = adjusted
    return {
        "claim": claim_id, "role": comparison["role"], "statement": claim["statement"], "measure": claim["measure"],
        "unit": UNITS[claim["measure"]], "kind": claim["kind"], "paper": claim.get("paper"),
        "comparison": {"pairs": [list(p) for p in comparison["pairs"]], "tasks": list(comparison["tasks"]),
                       "seeds": seeds, "seeds_complete": complete},
        **_test_record(primary),
        "verdict": claim_verdict(primary, claim["kind"], claimed),
        "secondary": secondary,
        "runs": _runs(comparison, seeds),
    }


def _note(row: dict, design_ok: bool) -> str:
    """What limits a verdict: seeds, resolution (MDE against the paper's effect), a failed control."""
    notes = []
    claimed = (row.get("paper") or {}).get("value")
    if row["role"] == "secondary":
        notes.append(f"descriptive: {row['n']} seeds")
    if row["role"] == "primary" and row["n"] < MIN_PRIMARY_SEEDS:
        notes.append(f"only {row['n']} complete seeds (design: {MIN_PRIMARY_SEEDS})")
    if row["kind"] == "superior" and claimed is not None and row["mde"] is not None and row["mde"] > claimed:
        notes.append(f"MDE {row['mde']:.3g} > claimed {claimed:g}: an effect of the paper's size can hide "
                     f"({row['mde'] / claimed:.1f}x too coarse)")
    if row["zero_spread"]:
        notes.append("every seed gave the same effect: the sign test decides, no interval")
    if not design_ok and row["role"] != "control":
        notes.append("positive control not reproduced: the design is too weak to judge this")
    return "; ".join(notes)


def analyse_all(config: dict) -> dict:
    """Every claim the config compares; {} when it has no `claims:` section."""
    comparisons = claim_comparisons(config)
    if not comparisons:
        return {}
    claims = read_claims(config["claims"]["reference"])
    rows = [analyse(name, claims[name], comparison, spec_seeds(config, comparison))
            for name, comparison in comparisons.items()]
    controls = [r for r in rows if r["role"] == "control"]
    design_ok = all(r["verdict"] == "reproduced" for r in controls)
    for row in rows:
        row["note"] = _note(row, design_ok)
    return {"alpha": ALPHA, "power": POWER, "min_primary_seeds": MIN_PRIMARY_SEEDS,
            "positive_controls": [r["claim"] for r in controls], "design_ok": design_ok if controls else None,
            "claims": rows}


# ----------------------------------------------------------------------------- rendering


def _num(value, spec: str = "+.3g") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _effect_text(row: dict) -> str:
    ci = row["ci95"]
    return f"{_num(row['effect'])} [{_num(ci[0])}, {_num(ci[1])}]" if ci else _num(row["effect"])


def _paper_text(row: dict) -> str:
    paper = row.get("paper") or {}
    if paper.get("value") is None:
        return "direction only"
    bound = {"bound": "at most ", "non_inferior": "not worse than −"}.get(row["kind"], "")
    return f"{bound}{paper['value']:g} ({paper.get('kind', '?')})"


def _pairs_text(config: dict, row: dict) -> str:
    label = lambda m: entry(config, "methods", m).get("label", m)  # noqa: E731
    pairs = "; ".join(f"{label(t)} vs {label(c)}" for t, c in row["comparison"]["pairs"])
    return f"{pairs} on {', '.join(row['comparison']['tasks'])}"


TITLE = ("**Claims.** Each claim of the paper against this profile's runs (workflow/configs/claims.yaml; the "
         "comparisons are the config's `claims:`).")
COST_TITLE = (f"**Claims on training cost.** The claims of the paper whose measure is a measured cost (wall time per "
              f"step, peak step memory), against this profile's runs: measurements vary between runs and machines, "
              f"so they are kept here, out of `{paths.claims('md')}` and its siblings (files that must repeat bit for bit).")
COST_POINTER = f" The claims on measured cost (time, memory) are in `{paths.claims_cost('md')}`."


def render_markdown(config: dict, analysis: dict, title: str = TITLE) -> str:
    rows = analysis["claims"]
    table = [[r["claim"], r["role"], r["statement"], _paper_text(r), _effect_text(r), r["n"], _num(r["mde"], ".3g"),
              f"**{r['verdict']}**"] for r in rows]
    lines = [
        title, "",
        tabulate(table, headers=["claim", "role", "statement", "paper", "ours: effect [95% CI]", "n", "MDE", "verdict"],
                 tablefmt="pipe", disable_numparse=True), "",
        f"The effect of one seed is treatment minus control in the claim's unit, averaged over its pairs and tasks; "
        f"`n` seeds paired; paired t-test at α = {ALPHA} with its 95% interval; MDE = the smallest true effect "
        f"detected with {POWER:.0%} power at this n and spread. Verdicts read the interval: *reproduced* "
        "(beyond 0 in the claimed direction and reaching the claimed size), *smaller than claimed* (below the "
        "paper's effect), *contradicted* (beyond 0 the other way; for a bound: above it), *inconclusive* "
        "(holds both). Claims marked secondary are descriptive at their seeds.", "",
    ]
    if analysis["positive_controls"]:
        verdict = ("reproduced: the design detects a known effect" if analysis["design_ok"] else
                   "NOT reproduced: the design is too weak to judge any claim")
        lines += [f"**Design check.** Positive control ({', '.join(analysis['positive_controls'])}): {verdict}.", ""]
    lines += ["**What each comparison is, and what limits it:**", ""]
    for r in rows:
        source = (r.get("paper") or {}).get("source", "")
        lines.append(f"- `{r['claim']}` ({r['unit']}): {_pairs_text(config, r)}, seeds "
                     f"{len(r['comparison']['seeds'])}. Paper: {source or 'no number'}."
                     + (f" *{r['note']}.*" if r["note"] else ""))
        for s in r["secondary"]:
            lines.append(f"  - {s['treatment']} vs {s['control']} on {s['task']}: {_effect_text(s)}, n {s['n']}, "
                         f"p {_num(s['p'], '.3g')}, Holm {_num(s['p_holm'], '.3g')}, MDE {_num(s['mde'], '.3g')}")
    return "\n".join(lines) + "\n"


def render_csv(analysis: dict) -> str:
    rows = [{"claim": r["claim"], "role": r["role"], "statement": r["statement"], "measure": r["measure"],
             "kind": r["kind"], "paper_value": (r.get("paper") or {}).get("value"),
             "paper_source": (r.get("paper") or {}).get("source"), "effect": r["effect"],
             "ci_lo": r["ci95"][0] if r["ci95"] else None, "ci_hi": r["ci95"][1] if r["ci95"] else None,
             "n": r["n"], "p": r["p"], "mde": r["mde"], "verdict": r["verdict"], "note": r["note"]}
            for r in analysis["claims"]]
    numeric = ["effect", "ci_lo", "ci_hi", "p", "mde"]
    return pd.DataFrame(rows, columns=CSV_COLUMNS).astype({c: float for c in numeric}).round(6).to_csv(index=False)


def render_json(analysis: dict) -> str:
    return json.dumps({k: v for k, v in analysis.items()}, indent=2, sort_keys=True) + "\n"


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


def _part_files(config: dict, part_id: str, part: dict, title: str) -> tuple[dict[Path, str], dict]:
    """One part's md|csv|json as {path: text} and its tables-index entry (the runs its claims read)."""
    files = {_PATHS[part_id](ext): render(part) for ext, render in
             (("md", lambda a: render_markdown(config, a, title)), ("csv", render_csv), ("json", render_json))}
    return files, {"id": part_id, "caption": _CAPTIONS[part_id], "rows": [r["claim"] for r in part["claims"]],
                   "columns": CSV_COLUMNS[7:], "runs": sorted({run for row in part["claims"] for run in row["runs"]}),
                   "files": [str(p) for p in files]}


def claims_files(config: dict) -> tuple[dict[Path, str], list[dict]]:
    """results/claims.md|csv|json and, when some claim is on a measured cost (time, memory),
    results/claims_cost.md|csv|json, as {path: text}, with their tables-index entries; nothing for
    a config without claims."""
    analysis = analyse_all(config)
    if not analysis:
        return {}, []
    parts = _parts(analysis)
    titles = {CLAIMS_ID: TITLE + (COST_POINTER if COST_ID in parts else ""), COST_ID: COST_TITLE}
    built = [_part_files(config, part_id, part, titles[part_id]) for part_id, part in parts.items()]
    return {path: text for files, _ in built for path, text in files.items()}, [entry for _, entry in built]
