"""Comparing a Flat variant with its base: paired significance tests, the rule that pairs the
methods, and the per-task flatness verdict of the sharpness table (pure functions, no I/O).

Runs of two methods that share a seed share the data order and the adapter init (see
`loop.step_plan`), so the per-seed differences are the natural unit: a paired test removes the
seed-to-seed variance that both methods share. With the 3-5 seeds a reproduction can afford, the
t-test leans on normality of the differences, so the exact (distribution-free) sign and sign-flip
permutation tests are reported beside it. Their smallest attainable two-sided p is 2 / 2^n, e.g.
0.25 for 3 seeds: they cannot reach 0.05 below 6 seeds, and saying so is part of the result.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

MAX_EXACT_N = 20  # 2^20 sign flips; beyond that the exact permutation p is left None
_NONFLAT_KEYS = ("label", "paper_row", "flat")  # keys ignored when matching a flat method to its base


def _differences(flat: list[float], base: list[float]) -> np.ndarray:
    if len(flat) != len(base):
        raise ValueError(f"paired_test: flat has {len(flat)} values, base has {len(base)}; pair them by seed first")
    diffs = np.asarray(flat, dtype=float) - np.asarray(base, dtype=float)
    if not np.all(np.isfinite(diffs)):
        raise ValueError(f"paired_test: non-finite values in flat={list(flat)} base={list(base)}")
    return diffs


def sign_test(diffs: np.ndarray) -> float:
    """Exact two-sided binomial sign test, ties (zero differences) dropped; 1.0 when all tie."""
    nonzero = diffs[diffs != 0]
    if nonzero.size == 0:
        return 1.0
    return float(sps.binomtest(int((nonzero > 0).sum()), int(nonzero.size), 0.5).pvalue)


def permutation_test(diffs: np.ndarray) -> float | None:
    """Exact two-sided sign-flip test on the mean: share of the 2^n flips with |mean| >= observed.

    Under H0 (no difference) each difference is as likely positive as negative, so all 2^n sign
    patterns are equally likely. Sums are built by doubling (8 bytes x 2^n); None above MAX_EXACT_N.
    """
    n = diffs.size
    if n > MAX_EXACT_N:
        return None
    sums = np.zeros(1)
    for d in diffs:
        sums = np.concatenate([sums + d, sums - d])
    observed = abs(diffs.sum())
    tol = 1e-9 * max(1.0, float(np.abs(diffs).sum()))  # flips that tie the observed sum count as extreme
    return float(np.count_nonzero(np.abs(sums) >= observed - tol) / sums.size)


def paired_test(flat: list[float], base: list[float]) -> dict:
    """Paired comparison of per-seed values (same position = same seed): mean difference flat - base,
    its 95% t-interval, and the paired t-test, exact sign test and exact permutation test p-values.

    Fewer than 2 pairs: CI, t and p are None (nothing can be estimated). All differences zero: p = 1
    and CI [0, 0] (t is undefined, None). Identical non-zero differences give a zero-width CI and
    p_ttest = 0; the exact tests then still show how little 3 seeds can prove.
    """
    diffs = _differences(flat, base)
    n = int(diffs.size)
    out = {"n": n, "mean_diff": float(diffs.mean()) if n else None, "ci95": None, "t": None,
           "p_ttest": None, "p_sign": None, "p_permutation": None}
    if n < 2:
        return out
    if not np.any(diffs):
        return {**out, "ci95": [0.0, 0.0], "p_ttest": 1.0, "p_sign": 1.0, "p_permutation": 1.0}
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    if sd == 0.0:
        t, p = math.copysign(math.inf, mean), 0.0
    else:
        t = mean / (sd / math.sqrt(n))
        p = float(2 * sps.t.sf(abs(t), n - 1))
    return {**out, "ci95": [mean - half, mean + half], "t": t, "p_ttest": p,
            "p_sign": sign_test(diffs), "p_permutation": permutation_test(diffs)}


def verdict(test: dict) -> str:
    """"better"/"worse" only when the 95% CI of the mean difference excludes 0, else "n.s."."""
    ci = test.get("ci95")
    if ci is None:
        return "n.s."
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "n.s."


# ----------------------------------------------------------------------------- pairing methods


def _stripped(method_cfg: dict) -> dict:
    return {k: v for k, v in method_cfg.items() if k not in _NONFLAT_KEYS}


def flat_pairs(methods_cfg: dict, methods: list[str]) -> list[tuple[str, str]]:
    """(flat, base) pairs among `methods`, in row order.

    Rule 1 (by name): `flat_X` pairs with `X`.
    Rule 2 (by config), for flat methods rule 1 leaves unpaired: a method with a non-null `flat:`
    pairs with the first method whose config is identical once `flat`, `label` and `paper_row` are
    dropped and whose `flat` is null, so `dora_flat` finds `dora` without a naming convention.
    """
    pairs = []
    for flat in methods:
        cfg = methods_cfg.get(flat) or {}
        base = flat.removeprefix("flat_") if flat.startswith("flat_") else None
        if base not in methods:
            base = None
            if cfg.get("flat") is not None:
                base = next((m for m in methods if m != flat and (methods_cfg.get(m) or {}).get("flat") is None
                             and _stripped(methods_cfg.get(m) or {}) == _stripped(cfg)), None)
        if base is not None:
            pairs.append((flat, base))
    return pairs


# ----------------------------------------------------------------------------- flatness summaries

VERDICT_RHO = 0.05  # the radius the verdict quotes (the largest measured if absent)


def method_summary(frame):
    """Per method: mean over seeds within a task, then over the tasks it was measured on."""
    numeric = [c for c in frame.columns if c.startswith("rho=")] + ["lambda_max", "test", "ood"]
    per_task = frame.groupby(["method", "task"], sort=False)[numeric].mean()
    summary = per_task.groupby(level="method", sort=False).mean()
    summary.insert(0, "n_runs", frame.groupby("method", sort=False).size())
    summary.insert(0, "n_tasks", per_task.groupby(level="method", sort=False).size())
    return summary.reset_index()


def _count_lower(frame, flat: str, base: str, column: str, higher: bool = False) -> tuple[int, int]:
    """(tasks where flat's seed-paired mean is lower (or higher), tasks comparable) for one column."""
    wins = total = 0
    for _, group in frame.groupby("task", sort=False):
        a = group[group["method"] == flat].set_index("seed")[column].dropna()
        b = group[group["method"] == base].set_index("seed")[column].dropna()
        common = a.index.intersection(b.index)
        if len(common):
            total += 1
            diff = a[common].mean() - b[common].mean()
            wins += bool(diff > 0 if higher else diff < 0)
    return wins, total


def flatness_verdicts(frame, config: dict, methods: list[str]) -> list[str]:
    """One sentence per (flat, base) pair, computed from the per-task numbers, honest either way."""
    radii = sorted(float(c.removeprefix("rho=")) for c in frame.columns if c.startswith("rho="))
    if not radii:
        return ["No sharpness measured yet."]
    rho = VERDICT_RHO if VERDICT_RHO in radii else radii[-1]
    label = lambda m: (config["methods"].get(m) or {}).get("label", m)  # noqa: E731
    lines = []
    for flat, base in flat_pairs(config["methods"], methods):
        k, m = _count_lower(frame, flat, base, f"rho={rho}")
        j, _ = _count_lower(frame, flat, base, "lambda_max")
        i, _ = _count_lower(frame, flat, base, "test", higher=True)
        o, mo = _count_lower(frame, flat, base, "ood", higher=True)
        if m == 0:
            lines.append(f"{label(flat)} vs {label(base)}: no task measured for both.")
            continue
        text = (f"{label(flat)} is flatter than {label(base)} on {k} of {m} task{'s' * (m != 1)} by expected "
                f"sharpness at ρ={rho} and by λ_max on {j} of {m}; test accuracy higher on {i} of {m}")
        text += f", OOD accuracy on {o} of {mo}" if mo else ""
        text += " (so it is not flatter by either measure on any task)." if k == j == 0 else "."
        lines.append(text)
    return lines
