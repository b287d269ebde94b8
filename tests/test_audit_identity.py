"""Run identity end to end, exclusions with evidence, and the flatness records in the lineage."""

import json

import pytest

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.audit import exclusions, identity, sharpness_records
from lorarepro.audit.artifacts import Run
from conftest import failing, run_audit

CARD = """---
library_name: peft
tags:
- lorarepro
- lorarepro-lora_r8
- task-digits
- lora
---

# digits / lora_r8 (seed 0)

- seed: 0
"""


def test_model_card_and_record_name_the_run(tmp_path):
    card = tmp_path / "README.md"
    card.write_text(CARD)
    assert identity.card_problems(card, "digits", "lora_r8", 0) == []
    assert identity.card_problems(card, "digits", "lora_r8", 1) == ["model card seed 0, path says 1",
                                                                    "model card seed line 0, path says 1"]
    assert identity.card_problems(tmp_path / "absent.md", "digits", "lora_r8", 0) == ["model card missing"]
    record = {"task": "digits", "method": "lora_r8", "seed": 1, "config": {"task": "digits", "method": "full_ft"}}
    assert identity.record_problems(record, "digits", "lora_r8", 0) == [
        "result JSON seed 1, path says 0", "result JSON config.method 'full_ft', path says 'lora_r8'"]


def _diverged(root, steps: int, failed_step: int, weights: bool = False) -> dict:
    result = {"task": "t", "method": "m", "seed": 0, "status": "FAILED", "failed_step": failed_step,
              "error": f"task=t method=m seed=0 loss is nan at step {failed_step}", "config": {}}
    history = paths.run_history("t", "m", 0)
    history.parent.mkdir(parents=True, exist_ok=True)
    history.write_text("step,loss,lr\n" + "".join(f"{s},{1.0 / (s + 1):.6g},0.001\n" for s in range(steps)))
    ckpt = paths.checkpoint_dir("t", "m", 0)
    ckpt.mkdir(parents=True)
    (ckpt / "status.json").write_text(json.dumps({k: result[k] for k in ("status", "error", "failed_step")}))
    if weights:
        (ckpt / "adapter_model.safetensors").write_bytes(b"x")
    return result


def test_a_divergence_shown_by_its_own_files_is_an_exclusion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert exclusions.evidence("t", "m", 0, _diverged(tmp_path, steps=3, failed_step=3)) == []


def test_a_relabelled_finished_run_is_no_exclusion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _diverged(tmp_path, steps=8, failed_step=3, weights=True)  # a full history and weights
    problems = exclusions.evidence("t", "m", 0, result)
    assert any("loss history has 8 steps" in p for p in problems)
    assert any("a diverged run leaves only status.json" in p for p in problems)
    assert exclusions.evidence("t", "m", 0, {**result, "error": "edited by hand", "failed_step": 8})


# ----------------------------------------------------------------------------- sharpness records

def _sharpness_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"sharpness": {}, "seeds": [0], "tasks": {"t": {}}, "methods": {"m": {}},
              "tables": [{"id": "x", "tasks": ["t"], "methods": ["m"], "sharpness": True}]}
    path = paths.run_sharpness("t", "m", 0)
    path.parent.mkdir(parents=True)
    record = {"task": "t", "method": "m", "seed": 0, "expected_sharpness": {"0.05": 0.2}, "seconds": 1.5}
    path.write_text(json.dumps(record))
    digest = records.sharpness_digest(record)  # timings aside
    assert digest == records.sharpness_digest({**record, "seconds": 9.9})
    paths.pair_sharpness("t", "m").write_text(json.dumps({"measured": [str(path)], "sha256": {str(path): digest}}))
    return config, path, Run("t", "m", 0, {"lineage": {}})


def test_sharpness_record_as_written_passes_and_an_edited_one_fails(tmp_path, monkeypatch):
    config, path, run = _sharpness_setup(tmp_path, monkeypatch)
    monkeypatch.setattr(sharpness_records, "sharpness_runs", lambda config: {("t", "m"): [0]})
    assert [r["status"] for r in sharpness_records.check(config, [run])] == ["pass"]
    measures = json.loads(path.read_text())
    measures["expected_sharpness"]["0.05"] /= 2  # halved
    path.write_text(json.dumps(measures))
    (rec,) = sharpness_records.check(config, [run])
    assert rec["status"] == "fail" and rec["file"] == str(path) and "≠ written" in rec["detail"]


# ----------------------------------------------------------------------------- on a finished pipeline



@pytest.mark.slow
def test_two_seeds_swapped_with_their_records_fail_identity_and_mlflow(repo):
    lora = repo / "results/runs/digits/lora_r8"
    ckpts = repo / "checkpoints/digits/lora_r8"
    for a, b in ((ckpts / "seed0", ckpts / "seed1"), *((lora / f"seed0.{e}", lora / f"seed1.{e}") for e in ("json", "history.csv"))):
        a.rename(repo / "swap")
        b.rename(a)
        (repo / "swap").rename(b)
    found = failing(run_audit())
    for seed, other in ((0, 1), (1, 0)):
        run = f"results/runs/digits/lora_r8/seed{seed}.json"
        assert f"result JSON seed {other}, path says {seed}" in found[("identity", run)]
        assert f"model card seed {other}, path says {seed}" in found[("identity", run)]
        assert f"MLflow run name 'digits/lora_r8/seed{other}'" in found[("mlflow", run)]


@pytest.mark.slow
def test_finished_run_relabelled_as_diverged_fails_exclusion(repo):
    run = "results/runs/digits/lora_r8/seed1.json"
    result = json.loads((repo / run).read_text())
    result.update(status="FAILED", failed_step=1, error="loss is nan at step 1")
    (repo / run).write_text(json.dumps(result))
    detail = failing(run_audit())[("exclusion", run)]
    assert "recorded as diverged, but its own files do not show it" in detail and "is FINISHED, not FAILED" in detail
