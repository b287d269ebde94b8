"""`lorarepro audit` end to end: a small pipeline is run once (Snakemake, with its audit rule, in a
temporary DVC project), then each tampering case is made in a copy of that finished repository and
must be caught; the untampered copy passes with exit status 0."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import finished_config, run_audit
from workspace import run_as_user

pytestmark = pytest.mark.slow




def failures(result: dict) -> set[tuple[str, str]]:
    return {(r["check"], r["file"]) for r in result["records"] if r["status"] == "fail"}


def flip_byte(path: Path, offset: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


RUN = "results/runs/digits/lora_r8/seed0.json"


def cli_audit(*args: str) -> int:
    """`lorarepro audit --configfile small.yaml ...` in process (the pipeline ran the real command)."""
    from lorarepro.pipeline.cli import main

    return main(["audit", "--configfile", "small.yaml", *args])


def test_untampered_repository_passes_with_exit_0(repo, capsys):
    assert cli_audit("--reevaluate", "2", "--retrain", "1", "--strict") == 0, capsys.readouterr().out
    result = json.loads((repo / "results" / "audit" / "manual" / "audit.small.json").read_text())
    checks = {r["check"] for r in result["records"] if r["status"] == "pass"}
    assert {"tables", "tables.runs", "params", "hashes", "mlflow", "dvc", "checkpoint", "backbone",
            "data", "reevaluate", "retrain"} <= checks
    assert result["counts"]["fail"] == result["counts"]["warn"] == result["counts"]["skip"] == 0
    report = (repo / "results" / "audit" / "manual" / "report.small.md").read_text()
    assert report.startswith("# Audit: PASSED")
    assert "Paper vs reproduced" in report
    paper = next(r for r in result["paper"] if r["method"] == "lora_r8")
    assert paper["paper"] == 97.9 and paper["reproduced"] is not None and paper["within_tolerance"] is None


def test_changed_checkpoint_byte_fails_with_exit_1(repo, capsys):
    flip_byte(repo / "checkpoints/digits/lora_r8/seed0/adapter_model.safetensors")
    assert cli_audit() == 1
    out = capsys.readouterr().out
    assert f"FAIL hashes {RUN}" in out and f"FAIL dvc {RUN}" in out
    report = (repo / "results" / "audit" / "manual" / "report.small.md").read_text()
    first = report.split("## Every check (failures first)")[1].strip().splitlines()[0]
    assert first.startswith("- **FAIL**") and "fix:" in first


def test_edited_metric_in_result_json(repo):
    path = repo / RUN
    result = json.loads(path.read_text())
    result["metrics"]["test"] += 1.0
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    found = failures(run_audit(reevaluate=10))
    assert {("mlflow", RUN), ("reevaluate", RUN), ("tables", "results/tables/table_small.csv")} <= found


def test_edited_table_cell(repo):
    path = repo / "results/tables/table_small.csv"
    lines = path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("table_small,lora_r8,") and ",digits," in line)
    fields = lines[row].split(",")
    mean = lines[0].split(",").index("mean")
    fields[mean] = str(float(fields[mean]) + 0.5)  # the cell's mean
    lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    result = run_audit()
    record = next(r for r in result["records"] if r["file"] == "results/tables/table_small.csv")
    assert record["status"] == "fail" and "lora_r8/digits mean" in record["detail"]


def test_data_regenerated_with_another_seed(repo, params):
    from lorarepro.core import paths
    from lorarepro.domain.data import prepare_task

    cfg = finished_config(params)
    prepare_task("digits", cfg["tasks"]["digits"], cfg["data_seed"] + 1, paths.prepared_dir("digits"))
    found = failures(run_audit())
    assert ("hashes", RUN) in found and ("dvc", RUN) in found and ("data", "data/prepared/digits/manifest.json") not in found


def test_params_changed_after_training(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["methods"]["lora_r8"]["training"] = {"lr": 0.004}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_audit()
    stale = {r["file"] for r in result["records"] if r["check"] == "params" and r["status"] == "fail"}
    assert stale == {f"results/runs/{t}/lora_r8/seed{s}.json" for t in ("digits", "sentiment") for s in (0, 1)}
    assert "training.lr: 0.005 vs 0.004" in next(r["detail"] for r in result["records"]
                                                 if r["check"] == "params" and r["file"] == RUN)


def test_deleted_mlflow_run(repo):
    from mlflow.tracking import MlflowClient

    run_id = json.loads((repo / RUN).read_text())["lineage"]["mlflow_run_id"]
    MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}").delete_run(run_id)
    result = run_audit()
    assert failures(result) == {("mlflow", RUN)}
    assert "deleted" in next(r["detail"] for r in result["records"] if r["check"] == "mlflow" and r["file"] == RUN)


def test_modified_backbone(repo):
    flip_byte(repo / "models/vit-tiny/model.safetensors")
    found = failures(run_audit())
    assert ("backbone", "models/vit-tiny/model.safetensors") in found
    assert ("hashes", RUN) in found and ("dvc", RUN) in found
    assert ("hashes", "results/runs/digits/full_ft/seed0.json") in found  # fine-tuned from that backbone
    assert ("checkpoint", "checkpoints/digits/full_ft/seed0") not in found


def test_snakemake_report_holds_every_table_figure_caption_and_the_audit(repo):
    done = run_as_user(repo, sys.executable, "-m", "snakemake", "--configfile", "small.yaml",
                "--report", "results/report.html")
    assert done.returncode == 0, done.stderr[-3000:]
    html = (repo / "results" / "report.html").read_text()
    for shown in ("table_small.csv", "table_small_significance.csv", "report.small.md"):
        assert f"Adding {shown}" in done.stdout + done.stderr
    # captions name the config entry and every run with its MLflow id, and carry the audit verdict
    run_id = json.loads((repo / RUN).read_text())["lineage"]["mlflow_run_id"]
    assert "table_small" in html and RUN in html and run_id in html and "Audit PASSED" in html
    assert 'src="http' not in html  # self-contained


def test_outputs_regenerated_after_dvc_commit_warn_rather_than_fail(repo):
    """DVC's record is stale but the result JSON agrees with the content: `dvc commit`, not tampering."""
    from lorarepro.core.hashing import sha256_dir

    ckpt = repo / "checkpoints/digits/lora_r8/seed0"
    flip_byte(ckpt / "adapter_model.safetensors")
    result = json.loads((repo / RUN).read_text())
    result["lineage"]["checkpoint_sha256"] = sha256_dir(ckpt)  # as a retrain would record it
    (repo / RUN).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    dvc = next(r for r in run_audit()["records"] if r["check"] == "dvc" and r["file"] == RUN)
    assert dvc["status"] == "warn" and "dvc commit" in dvc["fix"]
