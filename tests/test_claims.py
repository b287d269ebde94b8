"""The claims table from constructed run records: effects per seed, verdicts, the design check,
missing seeds, Holm within a claim, the files, and the audit recomputing them."""

import json
from pathlib import Path

import numpy as np
import pytest

from lorarepro.core import paths
from lorarepro.audit.tables import check_tables
from lorarepro.core.config import ConfigError, read_claims
from lorarepro.reporting import claims, tables

REPO = Path(__file__).resolve().parents[1]
REFERENCE = str(REPO / "workflow" / "configs" / "claims.yaml")
PAPER = REPO / "workflow" / "configs" / "paper_reference.yaml"
SEEDS = list(range(20))


def write_run(task, method, seed, metrics, resources=None):
    path = paths.run_result(task, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": task, "method": method, "seed": seed, "status": "FINISHED",
                                "metric": "accuracy", "metrics": metrics, "resources": resources or {}}))


def config(comparisons, seeds=SEEDS):
    return {"seeds": list(seeds), "tasks": {"a": {"family": "nlu", "mirrors": "A"}, "b": {"family": "nlu", "mirrors": "B"}},
            "methods": {m: {"label": m} for m in ("lora", "flat", "lora_small")},
            "tables": [{"id": "t", "caption": "t", "tasks": ["a", "b"], "methods": ["lora", "flat"]}],
            "claims": {"reference": REFERENCE, "comparisons": [{"claim": k, **v} for k, v in comparisons.items()]}}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def gains(rng, mean, sd, n=20):
    return mean + sd * rng.standard_normal(n)


def test_a_clear_gain_is_reproduced_and_its_numbers_are_the_seeds(workdir):
    rng = np.random.default_rng(0)
    effect = {"a": gains(rng, 1.0, 0.5), "b": gains(rng, 1.0, 0.5)}
    for task in ("a", "b"):
        for s in SEEDS:
            write_run(task, "lora", s, {"test": 70.0})
            write_run(task, "flat", s, {"test": 70.0 + effect[task][s]})
    out = claims.analyse_all(config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a", "b"]}}))
    row = out["claims"][0]
    per_seed = (effect["a"] + effect["b"]) / 2
    assert row["n"] == 20 and row["effect"] == pytest.approx(per_seed.mean())
    assert row["ci95"][0] > 0.48 and row["verdict"] == "reproduced" and row["mde"] < 0.48
    assert [s["task"] for s in row["secondary"]] == ["a", "b"]
    assert all(s["p_holm"] >= s["p"] for s in row["secondary"])
    assert row["note"] == ("the paper has no cell for a (mirrors A), b (mirrors B) in table1: judged against "
                           "the headline number") and out["design_ok"] is None


@pytest.mark.parametrize("mean, sd, verdict", [
    (0.1, 0.2, "smaller than claimed"), (-1.0, 0.3, "contradicted"), (0.3, 1.5, "inconclusive")])
def test_each_verdict_from_run_records(workdir, mean, sd, verdict):
    rng = np.random.default_rng(1)
    effect = gains(rng, mean, sd)
    for s in SEEDS:
        write_run("a", "lora", s, {"test": 50.0})
        write_run("a", "flat", s, {"test": 50.0 + effect[s]})
    row = claims.analyse_all(config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}}))["claims"][0]
    assert row["verdict"] == verdict


def test_missing_seeds_are_left_out_and_counted(workdir):
    for s in SEEDS:
        write_run("a", "lora", s, {"test": 50.0})
        if s % 2:
            write_run("a", "flat", s, {"test": 50.0 + 0.5 + 0.01 * s})
    row = claims.analyse_all(config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}}))["claims"][0]
    assert row["n"] == 10 and row["comparison"]["seeds_complete"] == [s for s in SEEDS if s % 2]
    assert "only 10 complete seeds" in row["note"]


def test_a_failed_positive_control_marks_every_claim(workdir):
    for s in SEEDS:
        write_run("a", "lora", s, {"test": 60.0 + (s % 3)})
        write_run("a", "lora_small", s, {"test": 60.0 + ((s + 1) % 3)})  # no effect of data size
        write_run("a", "flat", s, {"test": 61.0 + (s % 3)})
    out = claims.analyse_all(config({
        "positive_control": {"role": "control", "pairs": [["lora", "lora_small"]], "tasks": ["a"]},
        "nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}}))
    assert out["design_ok"] is False
    control, claim = out["claims"]
    assert control["verdict"] != "reproduced" and "design is too weak" in claim["note"]
    assert "NOT reproduced" in claims.render_markdown(config({}), out)


def test_zero_spread_and_cost_and_slope_measures(workdir):
    for s in range(3):
        severities = {"test": 80.0, **{f"ood_s{k}": 80.0 - 5 * k for k in range(1, 6)}}
        write_run("a", "lora", s, severities, {"seconds_per_step": 0.010, "step_peak_mb": 100.0})
        write_run("a", "flat", s, {k: v + 0.5 * int(k[-1] if k != "test" else 0) for k, v in severities.items()},
                  {"seconds_per_step": 0.012, "step_peak_mb": 100.5})
    cfg = config({
        "ood_severity": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["a"]},
        "overhead_time": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["a"]},
        "overhead_memory": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["a"]}}, seeds=[0, 1, 2])
    slope, time, memory = claims.analyse_all(cfg)["claims"]
    assert slope["effect"] == pytest.approx(0.5) and slope["zero_spread"] and slope["ci95"] is None
    assert slope["verdict"] == "inconclusive"  # three identical seeds cannot tell
    # no overhead benchmark here: the runs' cost is descriptive, the claim not testable at the paper's scale
    assert time["at_this_scale"]["effect"] == pytest.approx(0.2) and memory["at_this_scale"]["effect"] == pytest.approx(0.005)
    assert time["verdict"] == memory["verdict"] == "not testable at this scale" and time["effect"] is None


def test_claims_files_index_and_audit(workdir):
    rng = np.random.default_rng(2)
    for task in ("a", "b"):
        for s in SEEDS:
            write_run(task, "lora", s, {"test": 70.0})
            write_run(task, "flat", s, {"test": 70.0 + gains(rng, 0.2, 1.0, 1)[0]})
    cfg = config({"nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a", "b"]}})
    files = tables.all_files(cfg, tables.load_reference(PAPER))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    index = json.loads(paths.tables_index().read_text())
    entry = next(e for e in index["tables"] if e["id"] == "claims")
    assert len(entry["runs"]) == 80 and entry["files"] == [str(paths.claims(e)) for e in ("md", "csv", "json")]
    document = json.loads(paths.claims("json").read_text())
    assert document["claims"][0]["claim"] == "nlu_average" and "nlu_average" in paths.claims("csv").read_text()
    assert all(r["status"] == "pass" for r in check_tables(cfg, REPO / "workflow/configs/paper_reference.yaml")
               if r["check"] == "tables")
    paths.claims("md").write_text(paths.claims("md").read_text().replace("**", "__"), encoding="utf-8")
    failed = [r for r in check_tables(cfg, REPO / "workflow/configs/paper_reference.yaml") if r["status"] == "fail"]
    assert [r["file"] for r in failed] == [str(paths.claims("md"))]
    assert not paths.claims_cost("md").exists() and "claims_cost" not in paths.claims("md").read_text()


def test_cost_claims_have_files_of_their_own(workdir):
    for s in SEEDS:
        for task in ("a", "b"):
            write_run(task, "lora", s, {"test": 70.0 + (s % 3)},
                      {"seconds_per_step": 0.010 + 0.001 * (s % 4), "step_peak_mb": 100.0})
            write_run(task, "lora_small", s, {"test": 60.0 + (s % 2)})
            write_run(task, "flat", s, {"test": 71.0 + (s % 3)}, {"seconds_per_step": 0.011, "step_peak_mb": 100.5})
    cfg = config({
        "positive_control": {"role": "control", "pairs": [["lora", "lora_small"]], "tasks": ["a"]},
        "nlu_average": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a", "b"]},
        "overhead_time": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["a"]},
        "overhead_memory": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["a"]},
        "sam_cost": {"role": "secondary", "pairs": [["flat", "lora"]], "tasks": ["b"]}})
    assert claims.cost_claims(cfg) == ["overhead_time", "overhead_memory", "sam_cost"]
    files = tables.all_files(cfg, tables.load_reference(PAPER))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    kept = {"positive_control", "nlu_average"}
    for where, names in ((paths.claims, kept), (paths.claims_cost, {"overhead_time", "overhead_memory", "sam_cost"})):
        document = json.loads(where("json").read_text())
        assert {r["claim"] for r in document["claims"]} == names
        assert document["design_ok"] is True and document["positive_controls"] == ["positive_control"]
        csv_claims = {line.split(",")[0] for line in where("csv").read_text().splitlines()[1:]}
        assert csv_claims == names
        md = where("md").read_text()
        assert all(f"`{name}`" in md for name in names) and "Design check.** Positive control" in md
        assert not any(f"`{name}`" in md for name in {"positive_control", "nlu_average", "overhead_memory",
                                                      "overhead_time", "sam_cost"} - names)
    assert "measurements vary between runs and machines" in paths.claims_cost("md").read_text()
    assert str(paths.claims_cost("md")) in paths.claims("md").read_text()  # where the cost claims went
    index = {e["id"]: e for e in json.loads(paths.tables_index().read_text())["tables"]}
    assert index["claims_cost"]["files"] == [str(paths.claims_cost(e)) for e in ("md", "csv", "json")]
    assert index["claims_cost"]["rows"] == ["overhead_time", "overhead_memory", "sam_cost"]
    assert all(r["status"] == "pass" for r in check_tables(cfg, REPO / "workflow/configs/paper_reference.yaml")
               if r["check"] == "tables")


def test_a_failed_control_marks_the_cost_claims_too(workdir):
    for s in SEEDS:
        write_run("a", "lora", s, {"test": 60.0 + (s % 3)}, {"seconds_per_step": 0.010 + 0.001 * (s % 3)})
        write_run("a", "lora_small", s, {"test": 60.0 + ((s + 1) % 3)})
        write_run("a", "flat", s, {"test": 61.0}, {"seconds_per_step": 0.011})
    cfg = config({"positive_control": {"role": "control", "pairs": [["lora", "lora_small"]], "tasks": ["a"]},
                  "overhead_time": {"role": "primary", "pairs": [["flat", "lora"]], "tasks": ["a"]}})
    files, entries = claims.claims_files(cfg)
    timing = json.loads(files[paths.claims_cost("json")])
    assert timing["design_ok"] is False and "design is too weak" in timing["claims"][0]["note"]
    assert "NOT reproduced" in files[paths.claims_cost("md")]
    assert [e["id"] for e in entries] == ["claims", "claims_cost"]


def test_the_claims_file_is_checked(tmp_path):
    claims_file = tmp_path / "claims.yaml"
    claims_file.write_text("x: {statement: s, measure: accuracy, kind: bound, paper: {value: null}}\n")
    with pytest.raises(ConfigError, match="bound claim needs paper.value"):
        read_claims(claims_file)
    claims_file.write_text("x: {statement: s, measure: loss, kind: superior, paper: null}\n")
    with pytest.raises(ConfigError, match="measure 'loss'"):
        read_claims(claims_file)
    assert "positive_control" in read_claims(REFERENCE)


def test_every_claim_measure_the_claims_file_accepts_is_registered():
    """A claims file's `measure` is checked against config.CLAIM_MEASURES before any run (the
    foundation cannot import reporting); each must have its registered function and its unit."""
    from lorarepro.core.config import CLAIM_MEASURES
    from lorarepro.reporting.claims import MEASURES, UNITS

    assert set(MEASURES) == set(CLAIM_MEASURES) == set(UNITS)
