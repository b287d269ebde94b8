"""The claims report's readings, from constructed records: the paper's cells for the
mirrored tasks, scale-bound claims judged by the overhead benchmark, multiplicity over the primary
family, collapsed runs, "each" tested per pair, and the measures a claim names."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lorarepro.core import paths
from lorarepro.core.config import ConfigError
from lorarepro.core.hashing import sha256_file
from lorarepro.reporting import claims
from test_claims import SEEDS, config, gains, write_run


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def claims_file(tmp_path, **entries):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(entries))
    return str(path)


def gain_runs(task, treatment, control, effect, base=70.0, validation=None):
    for s in SEEDS:
        write_run(task, control, s, {"test": base, **({"validation": validation} if validation else {})})
        write_run(task, treatment, s, {"test": base + effect[s], **({"validation": validation} if validation else {})})


def reference(verified):
    return {"t2": {"provenance": {"verified": verified, "source": "Table 2"},
                   "rows": {"F": {"CIFAR-10": 98.09, "SVHN": 97.59}, "L": {"CIFAR-10": 97.90, "SVHN": 97.49}}}}


@pytest.mark.parametrize("verified, verdict", [(False, "depends on the paper number"), (True, "reproduced")])
def test_the_mirrored_tasks_cells_are_read_beside_the_headline(workdir, verified, verdict):
    rng = np.random.default_rng(3)
    for task in ("a", "b"):
        gain_runs(task, "flat", "lora", gains(rng, 0.3, 0.05))
    cfg = config({"v": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["a", "b"]}})
    cfg["tasks"]["a"]["mirrors"], cfg["tasks"]["b"]["mirrors"] = "CIFAR-10", "SVHN"
    cfg["claims"]["reference"] = claims_file(workdir, v={"statement": "s", "measure": "accuracy", "kind": "superior",
                                                         "paper": {"value": 0.56}, "cells": {"table": "t2", "rows": ["F", "L"]}})
    row = claims.analyse_all(cfg, reference(verified))["claims"][0]
    assert row["paper_cells"]["value"] == pytest.approx(0.145) and "(98.09 − 97.9)" in row["paper_cells"]["derivation"]
    assert row["verdict_against"] == {"headline": "smaller than claimed", "mirrored": "reproduced"}
    assert row["verdict"] == verdict
    cfg["tasks"]["b"]["mirrors"] = "DTD"  # no cell in the paper for what b mirrors: the headline decides
    row = claims.analyse_all(cfg, reference(verified))["claims"][0]
    assert row["verdict"] == "smaller than claimed" and "no cell for b (mirrors DTD)" in row["note"]


def bench(tokens_ratio, rounds=True):
    """A benchmark record: lora and flat_exact at each tokens -> ratio, accumulation 1; memory too."""
    points = []
    for tokens, ratio in tokens_ratio.items():
        for method, r in (("lora", 1.0), ("flat_exact", ratio)):
            times = [100.0 * r + (i % 3) for i in range(20)]
            points.append({"tokens": tokens, "accum": 1, "method": method, "time_ratio": r, "step_ms": 100.0 * r,
                           **({"round_ms": times} if rounds else {})})
    methods = {m: {"step_peak_mb": mb, **({"repeats_mb": [mb - 0.1, mb, mb + 0.1]} if rounds else {})}
               for m, mb in (("lora", 100.0), ("flat_exact", 100.2))}
    return {"device": "cpu", "dtype": "float32", "model": "stack", "timing": {"clock": "process_cpu"},
            "shapes": {"layers_in_out": [[512, 1376]], "scaled_from": "Llama"}, "points": points,
            "memory": {"tokens": 2048, "methods": methods}}


@pytest.mark.parametrize("rounds", [True, False])
def test_scale_bound_claims_are_judged_by_the_benchmark_at_its_largest_shape(workdir, rounds):
    for s in SEEDS:  # the embedded runs: 30% slower, which the verdict must not read
        write_run("a", "lora", s, {"test": 70.0}, {"seconds_per_step": 0.010, "step_peak_mb": 100.0})
        write_run("a", "flat", s, {"test": 70.0}, {"seconds_per_step": 0.013 + 0.0001 * (s % 3), "step_peak_mb": 100.1})
    path = paths.RESULTS / "benchmarks" / "flat_overhead.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(bench({256: 1.5, 4096: 1.03}, rounds)))
    cfg = config({"overhead_time": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]},
                  "overhead_memory": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}})
    out = claims.analyse_all(cfg)
    time, memory = out["claims"]
    assert out["benchmark"] == {"path": str(path), "sha256": sha256_file(path)} and out["primary_family"] == []
    assert time["verdict"] == memory["verdict"] == "reproduced" and "4096 tokens" in time["scale"]
    assert time["at_this_scale"]["effect"] == pytest.approx(0.3, abs=0.01)
    assert memory["effect"] == pytest.approx(0.002, abs=1e-4)
    if rounds:
        assert time["ci95"][0] < time["effect"] < time["ci95"][1] < 0.1 and memory["ci95"] is not None
    else:
        assert time["no_interval"] and time["effect"] == pytest.approx(0.03) and "no interval" in time["note"]
    path.write_text(json.dumps(bench({4096: 1.25}, rounds)))  # 25% over: beyond the 10% bound
    assert claims.analyse_all(cfg)["claims"][0]["verdict"] == "contradicted"


def test_the_primary_family_is_corrected_and_its_verdicts_read_the_simultaneous_interval(workdir):
    rng = np.random.default_rng(4)
    effect = gains(rng, 0.25, 0.4)
    gain_runs("a", "flat", "lora", effect)
    single = claims.analyse_all(config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}}))
    cfg = config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]},
                  "vision_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]},
                  "ranks": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["a"]}})
    out = claims.analyse_all(cfg)
    alone, nlu, ranks = single["claims"][0], out["claims"][0], out["claims"][2]
    assert out["primary_family"] == ["nlu_average", "vision_average"] and ranks["p_holm"] is None
    assert nlu["ci95"] == alone["ci95"] and nlu["ci_simultaneous"][0] < nlu["ci95"][0]
    assert nlu["ci_simultaneous"][1] > nlu["ci95"][1] and nlu["p_holm"] == pytest.approx(min(1.0, 2 * nlu["p"]))
    # alone, the 95% interval lies above 0 and below 0.48; the simultaneous one reaches 0.48
    assert alone["verdict"] == "smaller than claimed" and nlu["ci_simultaneous"][1] >= 0.48
    assert nlu["verdict"] == "reproduced" if nlu["ci_simultaneous"][0] > 0 else nlu["verdict"] == "inconclusive"
    assert "Bonferroni, α = 0.05/2" in claims.render_markdown(cfg, out)


def prepared(task, labels):
    paths.prepared_dir(task).mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"label": labels}).to_parquet(paths.prepared_dir(task) / "validation.parquet")
    paths.manifest(task).write_text(json.dumps({"splits": {"validation": {"file": "validation.parquet", "rows": len(labels)}}}))


def test_collapsed_runs_are_counted_and_left_out_beside(workdir):
    prepared("a", [0] * 118 + [1] * 82)  # majority share 0.59
    for s in SEEDS:
        down = s < 5  # 60% is not significantly above 59% at n=200: collapsed; 0 gain there, 1 elsewhere
        write_run("a", "lora", s, {"test": 60.0 if down else 80.0, "validation": 60.0 if down else 80.0})
        write_run("a", "flat", s, {"test": 60.0 if down else 81.0 + 0.1 * (s % 3), "validation": 80.0})
    assert claims.majority_rate("a") == (200, 0.59)
    assert claims.collapsed("a", "lora", 0, (200, 0.59)) and not claims.collapsed("a", "lora", 9, (200, 0.59))
    row = claims.analyse_all(config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}}))["claims"][0]
    assert row["collapsed"]["pairs"] == 5 and row["collapsed"]["of"] == 20
    assert row["effect"] == pytest.approx(0.75 * 1.1, abs=0.01)
    assert row["collapsed"]["without"]["n"] == 15 and row["collapsed"]["without"]["effect"] == pytest.approx(1.1, abs=0.01)
    assert claims.collapsed("a", "lora", 0, None) is None  # no labels: not applicable


def test_every_is_tested_per_pair(workdir):
    rng = np.random.default_rng(5)
    gain_runs("a", "flat", "lora", gains(rng, 3.0, 0.3))
    gain_runs("a", "flat_small", "lora_small", gains(rng, -0.5, 0.3))  # the average still gains +1.25
    cfg = config({"ranks": {"role": "secondary", "pairs": [["flat", "lora"], ["flat_small", "lora_small"]], "tasks": ["a"]}})
    cfg["methods"].update({m: {"label": m} for m in ("flat_small", "lora_small")})
    row = claims.analyse_all(cfg)["claims"][0]
    assert row["effect"] > 1.0 and row["ci95"][0] > 0  # as an average it would gain
    assert row["quantifier"] == "each" and row["verdict"] == "contradicted" and "intersection-union" in row["note"]


def test_a_claim_over_three_metrics_names_them_and_mixed_scales_are_refused_or_not_averaged(workdir):
    rng = np.random.default_rng(6)
    cfg = config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a", "b", "c"]}})
    cfg["tasks"] = {"a": {"family": "nlu"}, "b": {"family": "nlu", "metric": "matthews_corrcoef"},
                    "c": {"family": "nlu", "metric": "f1"}}
    for task in cfg["tasks"]:
        gain_runs(task, "flat", "lora", gains(rng, 0.5, 0.5))
    row = claims.analyse_all(cfg)["claims"][0]
    assert "on the average score (accuracy, MCC, F1) of the GLUE tasks" in row["statement"]
    assert row["metrics"] == ["accuracy", "matthews_corrcoef", "f1"]
    claims.check_measures(cfg)  # percentages all: allowed
    cfg["tasks"]["c"] = {"family": "generation", "metric": "mt_bench"}
    with pytest.raises(ConfigError, match="claim 'nlu_average' averages metrics on different scales"):
        claims.check_measures(cfg)
    cfg["claims"]["comparisons"][0]["tasks"] = ["a", "b"]
    cfg["tables"][0]["tasks"] = ["a", "c"]
    claims.check_measures(cfg)  # a table over such tasks is allowed: it shows no Avg
    from lorarepro.reporting.tables.build import table_files

    md = table_files("t", cfg, None)[0][paths.table("t", "md")]
    assert "Avg" not in md.splitlines()[2] and "| a " in md.splitlines()[2]
    cfg["tables"][0]["tasks"] = ["a", "b"]
    assert "Avg" in table_files("t", cfg, None)[0][paths.table("t", "md")].splitlines()[2]


def test_a_table_cell_marks_its_collapsed_runs(workdir):
    from lorarepro.reporting.tables.build import table_files

    prepared("a", [0] * 118 + [1] * 82)  # majority share 0.59 at n=200
    prepared("b", [0] * 100 + [1] * 100)
    for s in SEEDS:
        for task in ("a", "b"):
            write_run(task, "lora", s, {"test": 80.0, "validation": 60.0 if (task == "a" and s < 2) else 80.0})
            write_run(task, "flat", s, {"test": 81.0, "validation": 80.0})
    files, _ = table_files("t", config({}), None)
    md, tex, csv = (files[paths.table("t", ext)] for ext in ("md", "tex", "csv"))
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| lora") or line.startswith("| flat")}
    assert "†2" in rows["lora"].split("|")[2] and "†" not in rows["lora"].split("|")[3] and "†" not in rows["flat"]
    assert "†k: k of the cell's runs collapsed" in md and r"$^{\dagger 2}$" in tex
    frame = pd.read_csv(__import__("io").StringIO(csv))
    assert frame.set_index(["method", "task"])["n_collapsed"].to_dict() == {("lora", "a"): 2, ("lora", "b"): 0,
                                                                           ("flat", "a"): 0, ("flat", "b"): 0}


def test_another_configs_claims_carry_its_name(workdir):
    rng = np.random.default_rng(7)
    gain_runs("a", "flat", "lora", gains(rng, 0.5, 0.5))
    cfg = config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}})
    files, entries = claims.claims_files(cfg, None, "my")
    assert set(files) == {paths.claims(ext, "my") for ext in ("md", "csv", "json")}
    assert {str(paths.claims(ext, "my")) for ext in ("md", "csv", "json")} == {"results/claims.my.md", "results/claims.my.csv",
                                                                               "results/claims.my.json"}
    assert entries[0]["files"] == [str(paths.claims(ext, "my")) for ext in ("md", "csv", "json")]
    assert set(claims.claims_files(cfg)[0]) == {paths.claims(ext) for ext in ("md", "csv", "json")}
