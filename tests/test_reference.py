"""The committed reference (results/reference.json): a changed deterministic file is listed, a timing
file is not; a backbone that differs from the reference under an unchanged config fails the audit
and names the likely cause; under other numerics it says which settings differ instead."""

import json

import pytest

from lorarepro.core import paths
from lorarepro.audit import reference

FINGERPRINT = {"mode": "portable", "aten_cpu_capability": "AVX2", "mkl_cbwr": "COMPATIBLE", "onednn": "off", "threads": 1}


@pytest.fixture
def project(tmp_path, monkeypatch, params):
    """A finished pipeline in miniature: one run record, a table, a timing file, a backbone, a dataset."""
    monkeypatch.chdir(tmp_path)
    run = {"task": "sentiment", "method": "lora_r8", "seed": 0, "status": "FINISHED", "metrics": {"test": 71.5},
           "resources": {"seconds": 1.5, "cpu_model": "some CPU"}, "lineage": {"numerics": FINGERPRINT, "git_commit": "a"}}
    paths.run_result("sentiment", "lora_r8", 0).parent.mkdir(parents=True)
    paths.run_result("sentiment", "lora_r8", 0).write_text(json.dumps(run))
    paths.table("table_nlu", "md").parent.mkdir(parents=True)
    paths.table("table_nlu", "md").write_text("| a |\n")
    paths.claims_cost("md").write_text("overhead +25%\n")
    backbone = paths.backbone_dir("t5-tiny")
    backbone.mkdir(parents=True)
    (backbone / paths.BACKBONE_MARKER).write_text(json.dumps({"sha256": "aaaa" * 16, "cpu_model": "CPU A"}))
    data = paths.prepared_dir("sentiment")
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"sha256": "dddd" * 16}))
    reference.write(params)
    return tmp_path


def test_a_changed_deterministic_file_is_listed_and_timing_or_volatile_keys_are_not(project):
    committed = reference.load()
    assert "results/claims_cost.md" not in committed["results"] and committed["numerics"] == FINGERPRINT
    assert reference.compare_results(committed) == []
    paths.claims_cost("md").write_text("overhead +31%\n")  # measured time: exempt
    record = json.loads(paths.run_result("sentiment", "lora_r8", 0).read_text())
    record["resources"]["seconds"] = 9.9  # a volatile key
    paths.run_result("sentiment", "lora_r8", 0).write_text(json.dumps(record))
    assert reference.compare_results(committed) == []
    paths.table("table_nlu", "md").write_text("| b |\n")  # a stale table
    (project / "results" / "new.csv").write_text("x\n")
    assert reference.compare_results(committed) == ["differs: results/tables/table_nlu.md",
                                                    "not in the reference: results/new.csv"]


def _backbone_now(sha: str) -> None:
    marker = paths.backbone_dir("t5-tiny") / paths.BACKBONE_MARKER
    marker.write_text(json.dumps({"sha256": sha}))


def test_another_backbone_under_an_unchanged_config_fails_naming_the_cause(project, params):
    _backbone_now("bbbb" * 16)
    [failed] = [r for r in reference.check(params, FINGERPRINT) if r["file"].endswith("t5-tiny")]
    assert failed["status"] == "fail" and "although its config is unchanged" in failed["detail"]
    assert "pinning did not hold" in failed["detail"] and "CPU A" in failed["detail"]


def test_under_other_numerics_the_difference_names_the_settings_and_does_not_fail(project, params):
    _backbone_now("bbbb" * 16)
    native = {**FINGERPRINT, "mode": "native", "aten_cpu_capability": "AVX512"}
    [warned] = [r for r in reference.check(params, native) if r["file"].endswith("t5-tiny")]
    assert warned["status"] == "warn" and "aten_cpu_capability: AVX2 → AVX512" in warned["detail"]


def test_a_changed_config_is_not_compared(project, params):
    _backbone_now("bbbb" * 16)
    changed = {**params, "backbone_seed": 7}
    assert [r for r in reference.check(changed, FINGERPRINT) if r["file"].endswith("t5-tiny")] == []
    assert {r["status"] for r in reference.check(params, FINGERPRINT) if "sentiment" in r["file"]} == {"pass"}


def test_the_reference_command_exits_1_listing_a_stale_file(project, capsys):
    import shutil

    from conftest import ROOT
    from lorarepro.pipeline import cli

    shutil.copytree(ROOT / "workflow", project / "workflow")  # the claims file the default config names
    assert cli.main(["reference", "--check", "--params", str(ROOT / "params.yaml")]) == 0
    paths.table("table_nlu", "md").write_text("| hand-edited |\n")
    assert cli.main(["reference", "--check", "--params", str(ROOT / "params.yaml")]) == 1
    assert "differs: results/tables/table_nlu.md" in capsys.readouterr().out
