"""benchmarks/verdict_stability.py without pipeline runs: reading claims, the overrides, the comparison, the table."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("verdict_stability", ROOT / "benchmarks" / "verdict_stability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def claim(name: str, verdict: str, measure: str = "accuracy", **extra) -> dict:
    return {"claim": name, "verdict": verdict, "effect": 0.5, "ci95": [0.1, 0.9], "p": 0.01, "mde": 0.3,
            "role": "primary", "measure": measure, "statement": "...", "runs": [], **extra}


def ok(backbones: dict | None = None, **verdicts) -> dict:
    return {"status": "ok", "backbones": backbones or {"t5-tiny": "aa", "vit-tiny": "bb"},
            "claims": {c: {"verdict": v, "timing": c == "overhead_time"} for c, v in verdicts.items()}}


@pytest.fixture
def records():
    """reference; one condition skipped, one with one flip, one agreeing, one failed (its claims unread)."""
    return {
        "reference": ok(nlu_average="smaller than claimed", flatter="inconclusive", overhead_time="contradicted"),
        "native-avx512": {"status": "skipped", "reason": "this CPU lacks avx512f"},
        "native-avx2": ok({"t5-tiny": "aa", "vit-tiny": "cc"}, nlu_average="smaller than claimed", flatter="reproduced",
                          overhead_time="contradicted"),
        "portable-backbone-seed-1235": ok(nlu_average="smaller than claimed", flatter="inconclusive",
                                          overhead_time="contradicted"),
        "portable-backbone-seed-1236": {"status": "failed", "reason": "snakemake exited with status 1"},
    }


# ----------------------------------------------------------------------------- comparison


def test_compare_counts_flips_against_the_reference(vs, records):
    summary = vs.compare(records)
    assert summary["compared"] == ["native-avx2", "portable-backbone-seed-1235"]
    assert summary["verdicts_differing"] == 1
    assert summary["claims_flipping"] == ["flatter"]
    assert summary["differing_by_condition"] == {"native-avx2": 1, "portable-backbone-seed-1235": 0}
    flatter = summary["claims"]["flatter"]
    assert flatter == {"verdicts": {"reference": "inconclusive", "native-avx2": "reproduced",
                                    "portable-backbone-seed-1235": "inconclusive"},
                       "agree": False, "differs_in": ["native-avx2"]}
    assert summary["claims"]["nlu_average"]["agree"] is True
    assert summary["cost_claims"] == ["overhead_time"]
    assert summary["backbones_changed"] == {"native-avx2": ["vit-tiny"], "portable-backbone-seed-1235": []}


def test_failed_and_skipped_conditions_are_neither_agreement_nor_disagreement(vs, records):
    summary = vs.compare(records)
    assert summary["not_compared"] == {
        "native-avx512": {"status": "skipped", "reason": "this CPU lacks avx512f"},
        "portable-backbone-seed-1236": {"status": "failed", "reason": "snakemake exited with status 1"},
    }
    for entry in summary["claims"].values():
        assert not {"native-avx512", "portable-backbone-seed-1236"} & {*entry["verdicts"], *entry["differs_in"]}
    # every condition failing: nothing differs, and nothing is claimed to agree beyond the reference itself
    alone = vs.compare({"reference": records["reference"], "failed": records["portable-backbone-seed-1236"]})
    assert alone["compared"] == [] and alone["verdicts_differing"] == 0 and alone["claims_flipping"] == []
    assert all(entry["verdicts"] == {"reference": entry["verdicts"]["reference"]} for entry in alone["claims"].values())


def test_a_claim_missing_on_one_side_differs(vs):
    records = {"reference": ok(a="reproduced", b="inconclusive"), "other": ok(a="reproduced", c="reproduced")}
    summary = vs.compare(records)
    assert list(summary["claims"]) == ["a", "b", "c"]
    assert summary["claims"]["b"]["verdicts"] == {"reference": "inconclusive", "other": None}
    assert summary["claims"]["c"]["verdicts"] == {"reference": None, "other": "reproduced"}
    assert summary["claims_flipping"] == ["b", "c"] and summary["verdicts_differing"] == 2


# ----------------------------------------------------------------------------- reading claims


def test_read_claims_merges_the_timing_file(vs, tmp_path):
    (tmp_path / "claims.json").write_text(json.dumps({"alpha": 0.05, "claims": [
        claim("nlu_average", "smaller than claimed"), claim("overhead_memory", "reproduced", "memory_overhead")]}))
    (tmp_path / "claims_cost.json").write_text(json.dumps({"claims": [
        claim("overhead_time", "contradicted", "time_overhead", ci95=None)]}))
    claims = vs.read_claims(tmp_path)
    assert list(claims) == ["nlu_average", "overhead_memory", "overhead_time"]
    assert claims["nlu_average"] == {"verdict": "smaller than claimed", "effect": 0.5, "ci95": [0.1, 0.9], "p": 0.01,
                                     "mde": 0.3, "role": "primary", "timing": False}
    assert claims["overhead_time"]["timing"] is True and claims["overhead_time"]["ci95"] is None


def test_read_claims_cost_file_wins_and_a_list_is_accepted(vs, tmp_path):
    (tmp_path / "claims.json").write_text(json.dumps({"claims": [claim("sam_cost", "reproduced", "time_saving")]}))
    (tmp_path / "claims_cost.json").write_text(json.dumps([claim("sam_cost", "smaller than claimed", "time_saving")]))
    assert vs.read_claims(tmp_path)["sam_cost"]["verdict"] == "smaller than claimed"


def test_read_claims_without_the_timing_file(vs, tmp_path):
    """Before the split, the timing claims sit in claims.json: their measure marks them."""
    (tmp_path / "claims.json").write_text(json.dumps({"claims": [
        claim("flatter", "inconclusive", "sharpness"), claim("sam_cost", "smaller than claimed", "time_saving")]}))
    claims = vs.read_claims(tmp_path)
    assert {c: r["timing"] for c, r in claims.items()} == {"flatter": False, "sam_cost": True}
    assert vs.read_claims(tmp_path / "nowhere") is None


def test_the_committed_claims_read(vs):
    claims = vs.read_claims(ROOT / "results")
    assert "positive_control" in claims and claims["positive_control"]["role"] == "control"
    assert all(set(r) == {*vs.CLAIM_FIELDS, "timing"} for r in claims.values())


def test_backbones_from_markers_else_from_the_run_records(vs, tmp_path):
    run = tmp_path / "results" / "runs" / "sentiment" / "lora_r8" / "seed0.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"backbone": "t5-tiny", "lineage": {"backbone_sha256": "aa", "numerics": {"mode": "native"}}}))
    assert vs.backbone_hashes(tmp_path) == {"t5-tiny": "aa"}
    assert vs.numerics_fingerprint(tmp_path / "results") == {"mode": "native"}
    marker = tmp_path / "models" / "t5-tiny" / vs.BACKBONE_MARKER
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"sha256": "bb"}))
    assert vs.backbone_hashes(tmp_path) == {"t5-tiny": "bb"}
    run.write_text(json.dumps({"backbone": "t5-tiny", "lineage": {"backbone_sha256": "aa"}}))
    assert vs.numerics_fingerprint(tmp_path / "results") is None


# ----------------------------------------------------------------------------- conditions


def test_overrides_written_for_each_condition(vs, tmp_path):
    by_name = {c.name: c for c in vs.conditions([1235, 7])}
    assert list(by_name) == ["reference", "native-avx512", "native-avx2",
                             "portable-backbone-seed-1235", "portable-backbone-seed-7"]
    for name, expected in [("native-avx2", {"numerics": "native"}),
                           ("portable-backbone-seed-7", {"numerics": "portable", "backbone_seed": 7})]:
        path = vs.write_overrides(tmp_path, by_name[name])
        assert path == tmp_path / "stability.yaml" and yaml.safe_load(path.read_text()) == expected
    assert by_name["native-avx512"].env == {"ATEN_CPU_CAPABILITY": "avx512"}
    assert by_name["native-avx2"].env == {"ATEN_CPU_CAPABILITY": "avx2"}
    assert by_name["portable-backbone-seed-7"].env == {}


def test_settings_fill_the_schema_defaults(vs):
    native, seed = vs.conditions([9])[2], vs.conditions([9])[3]
    old = {"data_seed": 1234}  # a params.yaml from before numerics and backbone_seed
    assert vs.settings(old, native) == {"numerics": "native", "backbone_seed": 1234, "env": {"ATEN_CPU_CAPABILITY": "avx2"}}
    assert vs.settings({"data_seed": 1, "backbone_seed": 5}, seed) == {"numerics": "portable", "backbone_seed": 9, "env": {}}


def test_select_keeps_the_reference_and_the_order(vs):
    available = vs.conditions([1235])
    assert [c.name for c in vs.select(available, ["portable-backbone-seed-1235", "native-avx2"])] == [
        "reference", "native-avx2", "portable-backbone-seed-1235"]
    assert len(vs.select(available, None)) == 4
    with pytest.raises(ValueError, match="native-sse"):
        vs.select(available, ["native-sse"])


def test_skip_without_the_isa(vs, tmp_path):
    avx512 = vs.conditions([])[1]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: fpu sse2 avx2 fma\n")
    flags = vs.cpu_flags(cpuinfo)
    assert {"avx2", "fma"} <= flags and "avx512f" not in flags
    assert "avx512f" in vs.skip_reason(avx512, flags)
    assert vs.skip_reason(avx512, flags | {"avx512f"}) is None
    record = vs.measure(avx512, tmp_path, "abc", {"data_seed": 1234}, flags)  # skipped before any clone
    assert record["status"] == "skipped" and record["settings"]["numerics"] == "native"
    assert not (tmp_path / "native-avx512").exists()


def test_pipeline_env_isolates_the_condition(vs, tmp_path, monkeypatch):
    for name, value in {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "LORAREPRO_NUMERICS": "portable",
                        "MLFLOW_TRACKING_URI": "http://team:5000", "VIRTUAL_ENV": "/elsewhere", "PYTHONPATH": "/x"}.items():
        monkeypatch.setenv(name, value)
    env = vs.pipeline_env(tmp_path, vs.conditions([])[1])
    assert env["ATEN_CPU_CAPABILITY"] == "avx512"
    assert not {"MKL_CBWR", "LORAREPRO_NUMERICS", "VIRTUAL_ENV"} & set(env)
    assert env["PYTHONPATH"].split(":") == [str(tmp_path / "src"), "/x"]
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_first_error_finds_the_cause_before_the_dump(vs):
    log = "Using profile\nWorkflowError in file Snakefile, line 34:\nError validating config file.\n" + "schema\n" * 500
    assert vs.first_error(log, lines=2) == "WorkflowError in file Snakefile, line 34:\nError validating config file."
    assert vs.first_error("all fine\n") is None


# ----------------------------------------------------------------------------- table


def test_markdown_table(vs, records):
    table = vs.markdown(records, vs.compare(records))
    lines = table.splitlines()
    assert lines[0] == ("| claim | reference | native-avx512 | native-avx2 | portable-backbone-seed-1235 "
                        "| portable-backbone-seed-1236 |")
    assert lines[3] == "| flatter | inconclusive | *skipped* | **reproduced** | inconclusive | *failed* |"
    assert lines[4].startswith("| overhead_time † | contradicted |")
    assert lines[5] == "| differs from reference | — | *skipped* | 1 | 0 | *failed* |"
    assert "1 (claim, condition) pairs differ from the reference; claims flipping: flatter." in table
    assert "Not compared: native-avx512, skipped (this CPU lacks avx512f)." in table
    assert "Not compared: portable-backbone-seed-1236, failed (snakemake exited with status 1)." in table
    assert "† rests on a measured cost" in table



def test_measure_records_failed_and_finished_runs(vs, tmp_path, monkeypatch):
    """The clone and the pipeline stubbed: what is recorded when snakemake fails, finishes without
    claims, and finishes."""
    seed = vs.conditions([1235])[3]
    state = {}

    def fake_clone(commit, dest):
        (dest / "results").mkdir(parents=True)
        if state["claims"]:
            (dest / "results" / "claims.json").write_text(json.dumps({"claims": state["claims"]}))
        return commit

    def fake_run(dest, condition):
        failed = {"error": "WorkflowError", "log_tail": "..."} if state["returncode"] else {}
        return {"wall_seconds": 1.0, "returncode": state["returncode"], **failed}

    monkeypatch.setattr(vs, "clone", fake_clone)
    monkeypatch.setattr(vs, "run_pipeline", fake_run)

    def measure(returncode, claims):
        state.update(returncode=returncode, claims=claims)
        return vs.measure(seed, tmp_path / str(len(list(tmp_path.iterdir()))), "abc", {"data_seed": 1234}, set())

    failed = measure(1, None)
    assert failed["status"] == "failed" and failed["reason"] == "snakemake exited with status 1"
    assert failed["commit"] == "abc" and failed["log_tail"] == "..." and "claims" not in failed
    assert measure(0, None)["reason"] == "the pipeline finished without results/claims.json"
    done = measure(0, [claim("flatter", "reproduced", "sharpness")])
    assert done["status"] == "ok" and done["claims"]["flatter"]["verdict"] == "reproduced"
    assert done["settings"] == {"numerics": "portable", "backbone_seed": 1235, "env": {}}
    assert done["wall_seconds"] == 1.0 and done["backbones"] == {} and done["numerics"] is None
