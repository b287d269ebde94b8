"""Paired comparisons of methods (pure functions, no I/O): the tests, the minimum detectable effect,
Holm's correction, the verdict of a claim, the rule that pairs a Flat variant with its base, and the
per-task flatness summary of the sharpness table.

Runs of two methods that share a seed share the data order and the adapter init (see
`training.loop.step_plan`), so the per-seed differences are the unit of analysis: a paired test removes
the seed-to-seed variance both methods share. The paired t-test (scipy.stats.ttest_rel, with its
95% interval) is the primary test; the exact sign test (scipy.stats.binomtest) and the sign-flip
permutation test (scipy.stats.permutation_test) are reported beside it, distribution-free, and
decide alone where the t-test is undefined: when every seed gives the same difference (zero
spread), which says nothing about the size of the spread and so never passes for certainty.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

ALPHA = 0.05  # two-sided level of every test
POWER = 0.8  # the power the minimum detectable effect (MDE) is computed for
EXACT_PERMUTATIONS = 16  # up to 2^16 sign flips enumerated; beyond, a seeded Monte Carlo sample
MONTE_CARLO = 20_000
ZERO_SPREAD = 1e-9  # differences whose sd is below this share of their size count as identical
_NONFLAT_KEYS = ("label", "paper_row", "flat")  # keys ignored when matching a flat method to its base


def _differences(treatment, control) -> np.ndarray:
    if len(treatment) != len(control):
        raise ValueError(f"paired_test: {len(treatment)} treatment values, {len(control)} control values; "
                         "pair them by seed first")
    diffs = np.asarray(treatment, dtype=float) - np.asarray(control, dtype=float)
    if not np.all(np.isfinite(diffs)):
        raise ValueError(f"paired_test: non-finite values in treatment={list(treatment)} control={list(control)}")
    return diffs


def sign_test(diffs: np.ndarray) -> float:
    """Exact two-sided binomial sign test, ties (zero differences) dropped; 1.0 when all tie."""
    nonzero = diffs[diffs != 0]
    if nonzero.size == 0:
        return 1.0
    return float(sps.binomtest(int((nonzero > 0).sum()), int(nonzero.size), 0.5).pvalue)


def permutation_test(diffs: np.ndarray) -> float:
    """Two-sided sign-flip test on the mean difference: exact up to 2^EXACT_PERMUTATIONS flips, else a
    Monte Carlo sample from a fixed seed (so the same data give the same p)."""
    if not np.any(diffs):
        return 1.0
    exact = diffs.size <= EXACT_PERMUTATIONS
    result = sps.permutation_test((diffs, np.zeros_like(diffs)), lambda x, y, axis: np.mean(x - y, axis=axis),
                                  permutation_type="samples", vectorized=True, alternative="two-sided",
                                  n_resamples=np.inf if exact else MONTE_CARLO, rng=np.random.default_rng(0))
    return float(min(1.0, result.pvalue))


def mde(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference the two-sided paired t-test at `alpha` detects with
    probability `power`, for n pairs whose differences have standard deviation `sd` (noncentral t)."""
    if n < 2 or not sd > 0:
        return None
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)

    def shortfall(delta: float) -> float:
        ncp = delta * math.sqrt(n) / sd
        upper, lower = sps.nct.sf(crit, df, ncp), sps.nct.cdf(-crit, df, ncp)
        # far in the tail (few degrees of freedom, a large ncp) the noncentral t gives NaN: there the
        # upper tail is all but certain and the lower one empty
        return float(np.nan_to_num(upper, nan=1.0) + np.nan_to_num(lower, nan=0.0)) - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10 * sd))


def paired_test(treatment, control, alpha: float = ALPHA) -> dict:
    """Paired comparison of per-seed values (same position = same seed).

    Returns n, the mean difference treatment − control and its spread (sd), the paired t-test (t,
    p_ttest, ci95), the exact sign test (p_sign), the sign-flip permutation test (p_permutation),
    `zero_spread`, `p` (the deciding p: the t-test's, or the exact sign test's where the t-test is
    undefined) and `mde` (the 80%-power minimum detectable effect at this n and spread). Fewer than
    2 pairs: nothing but n and the mean can be estimated."""
    diffs = _differences(treatment, control)
    n = int(diffs.size)
    out = {"n": n, "mean_diff": float(diffs.mean()) if n else None, "sd": None, "t": None, "p_ttest": None,
           "ci95": None, "p_sign": None, "p_permutation": None, "zero_spread": False, "p": None, "mde": None}
    if n < 2:
        return out
    sd = float(diffs.std(ddof=1))
    out.update(sd=sd, p_sign=sign_test(diffs), p_permutation=permutation_test(diffs))
    # Every seed gave the same difference (up to rounding in averages and fits): no t-test; the
    # exact sign test decides.
    if sd <= ZERO_SPREAD * max(1.0, float(np.abs(diffs).max())):
        return {**out, "sd": 0.0, "zero_spread": True, "p": out["p_sign"]}
    result = sps.ttest_rel(np.asarray(treatment, dtype=float), np.asarray(control, dtype=float))
    interval = result.confidence_interval(1 - alpha)
    return {**out, "t": float(result.statistic), "p_ttest": float(result.pvalue), "p": float(result.pvalue),
            "ci95": [float(interval.low), float(interval.high)], "mde": mde(n, sd, alpha)}


def interval(test: dict, alpha: float = ALPHA) -> list[float] | None:
    """The interval a verdict reads: the t-interval; with zero spread, the exact difference itself
    when the sign test finds it significant (every seed agrees, and enough seeds to say so)."""
    if test.get("zero_spread"):
        return [test["mean_diff"]] * 2 if test["p"] is not None and test["p"] < alpha else None
    return test.get("ci95")


def direction(test: dict, alpha: float = ALPHA) -> str:
    """"better" / "worse" when the difference is significant at `alpha` (two-sided), else "n.s."."""
    ci = interval(test, alpha)
    if ci is None or test["p"] is None or test["p"] >= alpha:
        return "n.s."
    return "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "n.s."


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of one family of tests (None stays None, not counted).
    scipy.stats offers Benjamini-Hochberg (false_discovery_control) but not Holm's family-wise
    control, hence these lines."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted


# From least to most support for the claim: an intersection-union test ("each", "every") takes the
# weakest of its pairs' verdicts. "not testable at this scale" is given by the claims report alone.
VERDICTS = ("contradicted", "smaller than claimed", "inconclusive", "reproduced", "not testable at this scale")


def weakest(verdicts: list[str]) -> str:
    """The verdict of an intersection-union test: the claim holds for each pair only if every pair's
    own test says so, so the least supportive verdict decides."""
    return min(verdicts, key=VERDICTS.index)


def claim_verdict(test: dict, kind: str, claimed: float | None = None, alpha: float = ALPHA) -> str:
    """The verdict of a claim from its primary test; effects are oriented so that positive is the
    claimed direction.

    kind "superior" (a gain, of size `claimed` where the paper gives one): contradicted when the
    interval lies below 0; smaller than claimed when it lies below the claimed size; reproduced when
    it lies above 0 and reaches the claimed size; inconclusive when it holds both 0 and the claimed
    size. kind "bound" (the effect is at most `claimed`, e.g. a time ratio): reproduced when the
    interval lies at or below the bound, contradicted when it lies above it. kind "non_inferior" (the
    effect is at least -`claimed`, a margin): reproduced above it, contradicted below it."""
    ci = interval(test, alpha)
    if ci is None:
        return "inconclusive"
    lo, hi = ci
    if kind == "superior":
        if hi < 0:
            return "contradicted"
        if claimed is not None and hi < claimed:
            return "smaller than claimed"
        return "reproduced" if lo > 0 else "inconclusive"
    if kind == "bound":
        return "reproduced" if hi <= claimed else "contradicted" if lo > claimed else "inconclusive"
    if kind == "non_inferior":
        return "reproduced" if lo > -claimed else "contradicted" if hi < -claimed else "inconclusive"
    raise ValueError(f"unknown claim kind {kind!r} (known: superior, bound, non_inferior)")


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
