"""Paired significance tests against hand-computed values, edge cases, and the flat/base pairing rule."""

import math

import numpy as np
import pytest

from lorarepro.reporting.stats import MAX_EXACT_N, flat_pairs, paired_test, permutation_test, sign_test, verdict


def test_paired_t_test_by_hand():
    # diffs [1, 2, 3, 4]: mean 2.5, sd sqrt(5/3) = 1.290994, se 0.645497, t = 3.872983 on 3 df
    out = paired_test([11.0, 12.0, 13.0, 14.0], [10.0, 10.0, 10.0, 10.0])
    assert out["n"] == 4 and out["mean_diff"] == pytest.approx(2.5)
    assert out["t"] == pytest.approx(3.872983, abs=1e-6)
    assert out["p_ttest"] == pytest.approx(0.030466, abs=1e-5)
    half = 3.182446 * 1.290994 / 2  # t_{0.975,3} * sd / sqrt(4)
    assert out["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-5)
    # all 4 positive: sign test 2 * (1/2)^4; only the all-plus and all-minus flips reach |sum| = 10
    assert out["p_sign"] == pytest.approx(0.125)
    assert out["p_permutation"] == pytest.approx(2 / 16)
    assert verdict(out) == "better"


def test_sign_test_drops_ties():
    # diffs [1, 2, 0, -3, 4]: the tie is dropped -> 3 of 4 positive -> 2 * P(X >= 3 | 4, 1/2) = 10/16
    assert sign_test(np.array([1.0, 2.0, 0.0, -3.0, 4.0])) == pytest.approx(10 / 16)
    assert sign_test(np.array([0.0, 0.0])) == 1.0


def test_permutation_test_by_hand():
    # diffs [1, 2, 3, -0.5], observed sum 5.5: flips with |sum| >= 5.5 are (+,+,+,±) and (-,-,-,±): 4 of 16
    assert permutation_test(np.array([1.0, 2.0, 3.0, -0.5])) == pytest.approx(4 / 16)
    # diffs [1, -1]: every flip has |sum| >= 0
    assert permutation_test(np.array([1.0, -1.0])) == 1.0
    assert permutation_test(np.ones(MAX_EXACT_N + 1)) is None  # not faked beyond the exact range


def test_noise_is_not_significant():
    out = paired_test([81.0, 79.0, 80.5], [80.0, 80.0, 80.0])
    assert out["ci95"][0] < 0 < out["ci95"][1]
    assert verdict(out) == "n.s."
    assert verdict(paired_test([70.0, 71.0, 69.0], [80.0, 80.5, 79.0])) == "worse"


def test_fewer_than_two_pairs_gives_no_numbers():
    for flat, base in (([], []), ([90.0], [80.0])):
        out = paired_test(flat, base)
        assert all(out[k] is None for k in ("ci95", "t", "p_ttest", "p_sign", "p_permutation"))
        assert verdict(out) == "n.s."
    assert paired_test([90.0], [80.0])["mean_diff"] == 10.0
    assert paired_test([], [])["mean_diff"] is None


def test_all_zero_differences():
    out = paired_test([80.0, 81.0, 82.0], [80.0, 81.0, 82.0])
    assert (out["p_ttest"], out["p_sign"], out["p_permutation"]) == (1.0, 1.0, 1.0)
    assert out["ci95"] == [0.0, 0.0] and out["mean_diff"] == 0.0
    assert verdict(out) == "n.s."


def test_constant_nonzero_differences_keep_the_exact_tests_honest():
    out = paired_test([81.0, 82.0, 83.0], [80.0, 81.0, 82.0])
    assert out["ci95"] == [1.0, 1.0] and out["p_ttest"] == 0.0 and math.isinf(out["t"])
    assert out["p_sign"] == pytest.approx(0.25) and out["p_permutation"] == pytest.approx(0.25)


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
