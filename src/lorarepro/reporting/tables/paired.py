"""Significance of each table's Flat variants against their base (pairing rule in
`stats.flat_pairs`), per task, paired by seed: the `{id}_significance.csv|md` files and the ↑/↓
marks of the main table."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.reporting.stats import direction, flat_pairs, paired_test
from lorarepro.core.config import column, spec_seeds
from lorarepro.reporting.tables.cells import column_mirrors, is_complete, paper_value, seed_metric, table_spec

SIG_COLUMNS = [
    "table", "task", "flat_method", "base_method", "n", "mean_diff", "paper_gain",
    "ci_lo", "ci_hi", "mde", "p_ttest", "p_sign", "p_permutation", "significant", "seeds",
]


def seed_values(name: str, method: str, seeds: list[int]) -> dict[int, float]:
    """{seed: metric of the table column `name`} of the FINISHED runs, so two methods can be paired
    seed by seed."""
    task, split = column(name)
    values = {}
    for seed in seeds:
        path = paths.run_result(task, method, seed)
        run = records.load_finished(path)
        if run is not None and (value := seed_metric(run, path, split)) is not None:
            values[seed] = value
    return values


def paper_gain(reference: dict | None, spec: dict, config: dict, flat: str, base: str,
               task: str) -> float | None:
    """The paper's gain of `flat` over `base` on the mirrored task: an explicit claim under
    `{paper_table}_gains` ("<flat row> - <base row>"), else paper flat − paper base, else None."""
    methods, mirrors = config["methods"], column_mirrors(config, task)
    rows = [methods[m].get("paper_row") for m in (flat, base)]
    claimed = paper_value(reference, f"{spec.get('paper_table')}_gains", f"{rows[0]} - {rows[1]}", mirrors)
    if claimed is not None:
        return claimed
    values = [paper_value(reference, spec.get("paper_table"), row, mirrors) for row in rows]
    return None if None in values else round(values[0] - values[1], 4)


def significance(table_id: str, config: dict, reference: dict | None = None) -> pd.DataFrame:
    """One row per (flat, base, task): paired tests over the seeds finished for both methods."""
    spec = table_spec(config, table_id)
    seeds = spec_seeds(config, spec)
    rows = []
    for flat, base in flat_pairs(config.get("methods") or {}, list(spec["methods"])):
        for task in spec["tasks"]:
            a, b = seed_values(task, flat, seeds), seed_values(task, base, seeds)
            common = [s for s in seeds if s in a and s in b]
            test = paired_test([a[s] for s in common], [b[s] for s in common])
            lo, hi = test["ci95"] or (None, None)
            rows.append({
                "table": table_id, "task": task, "flat_method": flat, "base_method": base,
                "n": test["n"], "mean_diff": test["mean_diff"],
                "paper_gain": paper_gain(reference, spec, config, flat, base, task),
                "ci_lo": lo, "ci_hi": hi, "mde": test["mde"], "p_ttest": test["p_ttest"], "p_sign": test["p_sign"],
                "p_permutation": test["p_permutation"], "significant": direction(test),
                "seeds": ";".join(map(str, common)),
            })
    return pd.DataFrame.from_records(rows, columns=SIG_COLUMNS)


def attach_marks(cells: pd.DataFrame, sig: pd.DataFrame) -> pd.DataFrame:
    """`sig` column for the Flat cells to mark; only when both cells are complete, like every comparison."""
    cells = cells.assign(sig="")
    complete = cells[is_complete(cells)].set_index(["method", "task"]).index
    for row in sig.itertuples():
        if row.significant in ("better", "worse") and {(row.flat_method, row.task),
                                                        (row.base_method, row.task)} <= set(complete):
            cells.loc[(cells["method"] == row.flat_method) & (cells["task"] == row.task), "sig"] = row.significant
    return cells


def _sig_text(value, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def render_significance_md(sig: pd.DataFrame, table_id: str, config: dict) -> str:
    seeds = spec_seeds(config, table_spec(config, table_id))
    digits = {"mean_diff": ".2f", "paper_gain": ".2f", "ci_lo": ".2f", "ci_hi": ".2f", "mde": ".2f",
              "p_ttest": ".3g", "p_sign": ".3g", "p_permutation": ".3g"}
    rows = [[_sig_text(getattr(r, c), digits[c]) if c in digits else str(getattr(r, c))
             for c in SIG_COLUMNS[1:]] for r in sig.itertuples()]
    body = (tabulate(rows, headers=SIG_COLUMNS[1:], tablefmt="pipe", disable_numparse=True)
            if rows else "No Flat variant with its base among this table's rows.")
    lines = [
        f"**{table_id}: significance.** Flat variants against their base, per task, paired by seed.", "",
        body, "",
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); `n` = seeds finished for both methods (`seeds` "
        "lists them). `mean_diff` = flat − base in points of the test metric, with its 95% t-interval "
        "`ci_lo`..`ci_hi` (paired t-test, `p_ttest`); `mde` = the smallest true difference this test "
        "detects with 80% power at this n and spread. The exact sign test and the sign-flip permutation "
        f"test are reported beside it (with n pairs they cannot give p below 2/2^n, {2 ** (1 - len(seeds)):.3g} "
        f"for {len(seeds)} seeds); where every seed gives the same difference the t-test is undefined "
        "and the sign test decides. `significant` is better/worse when p < 0.05, else n.s.; these are "
        "per-cell tests, uncorrected for the table's many cells: the claims (results/claims.md) are "
        "the pre-registered tests. `paper_gain` = the paper's gain for the mirrored task, empty where unknown.",
    ]
    return "\n".join(lines) + "\n"


def render_significance_csv(sig: pd.DataFrame) -> str:
    numeric = ["mean_diff", "paper_gain", "ci_lo", "ci_hi", "mde", "p_ttest", "p_sign", "p_permutation"]
    return sig.astype({c: float for c in numeric}).round(6).to_csv(index=False)
