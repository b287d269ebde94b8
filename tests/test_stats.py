"""Paired comparisons: scipy's tests against hand-computed values, the zero-spread case, the minimum
detectable effect, Holm's correction, every claim verdict on constructed data, and the rule that
pairs a Flat variant with its base."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from lorarepro.reporting.stats import (
    claim_verdict, direction, flat_pairs, holm, mde, paired_test, permutation_test, sign_test,
)


def test_paired_t_test_by_hand():
    # diffs [1, 2, 3, 4]: mean 2.5, sd sqrt(5/3) = 1.290994, se 0.645497, t = 3.872983 on 3 df
    out = paired_test([11.0, 12.0, 13.0, 14.0], [10.0, 10.0, 10.0, 10.0])
    assert out["n"] == 4 and out["mean_diff"] == pytest.approx(2.5) and out["sd"] == pytest.approx(1.290994, abs=1e-6)
    assert out["t"] == pytest.approx(3.872983, abs=1e-6)
    assert out["p_ttest"] == pytest.approx(0.030466, abs=1e-5) and out["p"] == out["p_ttest"]
    half = 3.182446 * 1.290994 / 2  # t_{0.975,3} * sd / sqrt(4)
    assert out["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-5)
    # all 4 positive: sign test 2 * (1/2)^4; only the all-plus and all-minus flips reach |sum| = 10
    assert out["p_sign"] == pytest.approx(0.125)
    assert out["p_permutation"] == pytest.approx(2 / 16)
    assert direction(out) == "better" and not out["zero_spread"]


def test_sign_test_drops_ties():
    # diffs [1, 2, 0, -3, 4]: the tie is dropped -> 3 of 4 positive -> 2 * P(X >= 3 | 4, 1/2) = 10/16
    assert sign_test(np.array([1.0, 2.0, 0.0, -3.0, 4.0])) == pytest.approx(10 / 16)
    assert sign_test(np.array([0.0, 0.0])) == 1.0


def test_permutation_test_by_hand_and_beyond_the_exact_range():
    # diffs [1, 2, 3, -0.5], observed sum 5.5: flips with |sum| >= 5.5 are (+,+,+,±) and (-,-,-,±): 4 of 16
    assert permutation_test(np.array([1.0, 2.0, 3.0, -0.5])) == pytest.approx(4 / 16)
    assert permutation_test(np.array([1.0, -1.0])) == 1.0
    # 20 seeds: a seeded Monte Carlo sample, the same p every time, close to the exact 2/2^20
    twenty = np.ones(20)
    assert permutation_test(twenty) == permutation_test(twenty) < 1e-3


def test_noise_is_not_significant_and_a_clear_loss_is():
    out = paired_test([81.0, 79.0, 80.5], [80.0, 80.0, 80.0])
    assert out["ci95"][0] < 0 < out["ci95"][1]
    assert direction(out) == "n.s."
    assert direction(paired_test([70.0, 71.0, 69.0], [80.0, 80.5, 79.0])) == "worse"


def test_fewer_than_two_pairs_gives_no_numbers():
    for treatment, control in (([], []), ([90.0], [80.0])):
        out = paired_test(treatment, control)
        assert all(out[k] is None for k in ("ci95", "t", "p_ttest", "p_sign", "p_permutation", "p", "mde"))
        assert direction(out) == "n.s."
    assert paired_test([90.0], [80.0])["mean_diff"] == 10.0
    assert paired_test([], [])["mean_diff"] is None


def test_zero_spread_is_never_certainty():
    # identical differences: the t-test is undefined (no interval, no t), the exact sign test decides
    same = paired_test([81.0, 82.0, 83.0], [80.0, 81.0, 82.0])
    assert same["zero_spread"] and same["t"] is None and same["ci95"] is None and same["mde"] is None
    assert same["p"] == same["p_sign"] == pytest.approx(0.25)
    assert direction(same) == "n.s."  # three seeds cannot show anything, however equal
    ten = paired_test([1.0] * 10, [0.0] * 10)
    assert ten["p"] == pytest.approx(2 / 2**10) and direction(ten) == "better"
    zero = paired_test([80.0, 81.0, 82.0], [80.0, 81.0, 82.0])
    assert zero["zero_spread"] and zero["p"] == 1.0 and direction(zero) == "n.s."


def test_mde_has_the_stated_power():
    n, sd = 20, 1.0
    delta = mde(n, sd)
    crit = sps.t.ppf(0.975, n - 1)
    ncp = delta * math.sqrt(n) / sd
    assert sps.nct.sf(crit, n - 1, ncp) + sps.nct.cdf(-crit, n - 1, ncp) == pytest.approx(0.8, abs=1e-6)
    assert delta == pytest.approx(0.6604, abs=1e-3)  # the textbook value for a paired design, d = 0.66
    assert mde(3, 1.0) > 3 * mde(20, 1.0)  # three seeds resolve a five times coarser effect
    assert mde(1, 1.0) is None and mde(5, 0.0) is None


def test_holm_by_hand():
    # sorted p 0.01, 0.03, 0.04 (m = 3): 0.03, max(0.03, 0.06), max(0.06, 0.04) -> 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def _ci(lo, hi):
    return {"ci95": [lo, hi], "p": 0.01, "zero_spread": False, "mean_diff": (lo + hi) / 2}


@pytest.mark.parametrize("ci, claimed, expected", [
    ((0.5, 1.5), 0.48, "reproduced"),
    ((0.1, 0.3), 0.48, "smaller than claimed"),   # a real gain, below the paper's
    ((-0.2, 0.3), 0.48, "smaller than claimed"),  # the interval excludes the paper's size from above
    ((-1.0, -0.2), 0.48, "contradicted"),
    ((-0.2, 0.9), 0.48, "inconclusive"),          # holds both 0 and the paper's size
    ((0.1, 0.5), None, "reproduced"),             # a direction-only claim
    ((-0.1, 0.5), None, "inconclusive"),
])
def test_every_verdict_of_a_gain(ci, claimed, expected):
    assert claim_verdict(_ci(*ci), "superior", claimed) == expected


@pytest.mark.parametrize("kind, ci, claimed, expected", [
    ("bound", (0.02, 0.08), 0.1, "reproduced"),
    ("bound", (0.12, 0.30), 0.1, "contradicted"),
    ("bound", (0.05, 0.15), 0.1, "inconclusive"),
    ("non_inferior", (-0.3, 0.4), 0.5, "reproduced"),
    ("non_inferior", (-1.2, -0.6), 0.5, "contradicted"),
    ("non_inferior", (-0.8, 0.1), 0.5, "inconclusive"),
])
def test_every_verdict_of_a_bound_and_a_margin(kind, ci, claimed, expected):
    assert claim_verdict(_ci(*ci), kind, claimed) == expected


def test_verdicts_with_zero_spread():
    assert claim_verdict(paired_test([1.0] * 10, [0.0] * 10), "superior", 0.48) == "reproduced"
    assert claim_verdict(paired_test([0.2] * 10, [0.0] * 10), "superior", 0.48) == "smaller than claimed"
    assert claim_verdict(paired_test([1.0] * 3, [0.0] * 3), "superior", 0.48) == "inconclusive"
    with pytest.raises(ValueError, match="unknown claim kind"):
        claim_verdict(_ci(0.1, 0.2), "bigger", 1.0)


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_test([1.0, 2.0], [1.0])


def test_flat_pairs_by_name_and_by_config():
    adapter = {"type": "lora", "r": 8}
    methods = {
        "lora_r8": {"adapter": adapter}, "flat_lora_r8": {"adapter": adapter, "flat": {}},
        "dora": {"adapter": {"type": "lora", "r": 4}, "label": "D"},
        "dora_flat": {"adapter": {"type": "lora", "r": 4}, "flat": {"rho": 0.1}, "label": "D+flat"},
        "orphan_flat": {"adapter": {"type": "lora", "r": 2}, "flat": {}},
    }
    order = ["lora_r8", "flat_lora_r8", "dora", "dora_flat", "orphan_flat"]
    assert flat_pairs(methods, order) == [("flat_lora_r8", "lora_r8"), ("dora_flat", "dora")]
    assert flat_pairs(methods, ["flat_lora_r8"]) == []  # the base must be a row of the same table
    # name rule needs no config (as in tables' tests, where methods carry only labels)
    assert flat_pairs({"flat_x": {}, "x": {}}, ["x", "flat_x"]) == [("flat_x", "x")]
