"""lorarepro crate: a Workflow Run RO-Crate of a small fake finished checkout (no pipeline run)."""

import copy
import hashlib
import json
import time

import pytest

from conftest import ROOT

pytest.importorskip("rocrate")  # the optional extra `crate` (also in `test`)
from lorarepro.pipeline import crate as crating  # noqa: E402

TEMPLATE = ROOT / "results/runs/nli/lora_r8/seed0.json"
RUNS = [("nli", "lora_r8", 0), ("nli", "lora_r8", 1), ("nli", "flat_lora_r8", 0), ("nli", "flat_lora_r8", 1)]
PROFILE_IDS = set(crating.PROFILES)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    (root / "workflow/rules").mkdir(parents=True)
    (root / "workflow/schemas").mkdir()
    (root / "workflow/configs").mkdir()
    (root / "Snakefile").write_text("include: 'workflow/rules/train.smk'\n")
    (root / "workflow/rules/train.smk").write_text("rule train:\n    output: 'x'\n")
    (root / "workflow/schemas/params.schema.yaml").write_text("type: object\n")
    (root / "params.yaml").write_text("seeds: [0, 1]\n")
    (root / "workflow/configs/claims.yaml").write_text("{}\n")
    template = json.loads(TEMPLATE.read_text())
    for task, method, seed in RUNS:
        record = copy.deepcopy(template)
        record.update(task=task, method=method, seed=seed)
        path = root / f"results/runs/{task}/{method}/seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    unfinished = root / "results/runs/nli/lora_r8/seed2.json"
    unfinished.write_text(json.dumps({**template, "seed": 2, "status": "RUNNING"}))
    (root / "results/runs/nli/lora_r8/seed0.sharpness.json").write_text("{}")  # not a run record
    tables = root / "results/tables"
    tables.mkdir()
    runs = [f"results/runs/{t}/{m}/seed{s}.json" for t, m, s in RUNS]
    (tables / "index.json").write_text(json.dumps({"tables": [{"id": "table_nlu", "runs": runs}]}))
    (tables / "table_nlu.csv").write_text("method,nli\nlora_r8,61.8\n")
    (tables / "table_nlu_significance.md").write_text("| a |\n")
    (root / "results/figures").mkdir()
    (root / "results/figures/ood_curve.png").write_bytes(b"\x89PNG fake")
    (root / "results/claims.json").write_text(json.dumps({"claims": {}}))
    (root / "results/claims.md").write_text("# claims\n")
    (root / "results/audit").mkdir()
    (root / "results/audit/audit.json").write_text(json.dumps({"passed": True, "records": [{"status": "pass"}] * 3}))
    return root


CONFIG = {"seeds": [0, 1],
          "figures": [{"id": "ood_curve", "tasks": ["nli"], "methods": ["lora_r8"], "seeds": [0]}],
          "claims": {"comparisons": [{"claim": "nlu", "pairs": [["flat_lora_r8", "lora_r8"]], "tasks": ["nli"]}]}}


@pytest.fixture
def built(checkout, tmp_path):
    start = time.perf_counter()
    summary = crating.build(tmp_path / "crate", root=checkout, config=CONFIG)
    seconds = time.perf_counter() - start
    meta = json.loads((tmp_path / "crate/ro-crate-metadata.json").read_text())
    return summary, {e["@id"]: e for e in meta["@graph"]}, meta, tmp_path / "crate", seconds


def ids(value):
    return [v["@id"] for v in (value if isinstance(value, list) else [value])]


def test_every_output_is_present_with_its_hash(built, checkout):
    summary, graph, _, out, seconds = built
    assert seconds < 30
    wanted = [f"results/runs/{t}/{m}/seed{s}.json" for t, m, s in RUNS] + [
        "results/tables/index.json", "results/tables/table_nlu.csv", "results/tables/table_nlu_significance.md",
        "results/figures/ood_curve.png", "results/claims.json", "results/claims.md", "results/audit/audit.json",
        "Snakefile", "workflow/rules/train.smk", "workflow/schemas/params.schema.yaml", "params.yaml"]
    for rel in wanted:
        assert rel in graph, rel
        assert (out / rel).is_file(), rel
        assert graph[rel]["sha256"] == sha(checkout / rel) == sha(out / rel), rel
    assert "results/runs/nli/lora_r8/seed2.json" not in graph  # not FINISHED
    assert summary["skipped"] == ["results/runs/nli/lora_r8/seed2.json"] and summary["runs"] == len(RUNS)
    assert summary["audit"] == {"passed": True, "checks": {"pass": 3}}
    runs = set(f"results/runs/{t}/{m}/seed{s}.json" for t, m, s in RUNS)
    assert set(ids(graph["results/tables/table_nlu.csv"]["isBasedOn"])) == runs
    assert set(ids(graph["results/tables/table_nlu_significance.md"]["isBasedOn"])) == runs
    assert ids(graph["results/figures/ood_curve.png"]["isBasedOn"]) == ["results/runs/nli/lora_r8/seed0.json"]
    assert set(ids(graph["results/claims.json"]["isBasedOn"])) == runs


def test_every_training_run_is_an_action_with_inputs_and_outputs(built):
    _, graph, _, out, _ = built
    template = json.loads(TEMPLATE.read_text())
    for task, method, seed in RUNS:
        action = graph[f"#run/{task}/{method}/seed{seed}"]
        assert action["@type"] == "CreateAction" and action["startTime"] <= action["endTime"]
        inputs, outputs = ids(action["object"]), ids(action["result"])
        assert f"#data/{task}" in inputs and "#backbone/t5-tiny" in inputs
        assert graph[f"#data/{task}"]["sha256"] == template["lineage"]["data_sha256"]
        params = next(graph[i] for i in inputs if i.startswith("#parameters/"))
        assert json.loads(params["value"]) == template["config"]
        checkpoint = graph[f"#checkpoint/{task}/{method}/seed{seed}"]
        assert checkpoint["sha256"] == template["lineage"]["checkpoint_sha256"]
        assert not (out / f"checkpoints/{task}/{method}/seed{seed}").exists()  # referenced, not bundled
        assert f"results/runs/{task}/{method}/seed{seed}.json" in outputs
        env = [json.loads(graph[i]["value"]) for i in ids(action["environment"])]
        assert template["lineage"]["numerics"] in env and template["versions"] in env
        tool = graph[action["instrument"]["@id"]]
        step = next(e for e in graph.values() if e.get("@type") == "HowToStep" and e["workExample"]["@id"] == tool["@id"])
        control = graph[f"#control/{task}/{method}/seed{seed}"]
        assert control["instrument"]["@id"] == step["@id"] and control["object"]["@id"] == action["@id"]


def test_structure_of_the_provenance_run_crate(built):
    """What the profiles require, checked here without the network (roc-validator's SHACL checks need the
    JSON-LD contexts from w3id.org)."""
    _, graph, meta, _, _ = built
    assert meta["@context"][0] == "https://w3id.org/ro/crate/1.1/context"
    root = graph["./"]
    assert PROFILE_IDS <= set(ids(root["conformsTo"])) and root.get("datePublished")
    workflow = graph[root["mainEntity"]["@id"]]
    assert workflow["@id"] == "Snakefile"
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"} <= set(workflow["@type"])
    assert "snakemake" in workflow["programmingLanguage"]["@id"]
    run = graph["#pipeline-run"]
    assert run["instrument"]["@id"] == "Snakefile" and "#pipeline-run" in ids(root["mentions"])
    assert "results/audit/audit.json" in ids(run["result"])
    organize = next(e for e in graph.values() if e.get("@type") == "OrganizeAction")
    assert organize["result"]["@id"] == "#pipeline-run" and len(ids(organize["object"])) == len(RUNS)
    for entity in graph.values():  # every local reference resolves
        for value in entity.values():
            for ref in (v for v in (value if isinstance(value, list) else [value]) if isinstance(v, dict) and "@id" in v):
                if not ref["@id"].startswith(("http://", "https://")):
                    assert ref["@id"] in graph, (entity["@id"], ref["@id"])


def test_roc_validator_offline(built):
    """roc-validator against the Provenance Run Crate profile with the network cut off: its checks that need
    the remote JSON-LD contexts (ro-crate-1.1_3.1, 3.2) are skipped, the rest must pass."""
    validator = pytest.importorskip("rocrate_validator", reason="roc-validator conflicts with import-linter's rich pin")
    from rocrate_validator import services
    from rocrate_validator.models import Severity, ValidationSettings

    _, _, _, out, _ = built
    for profile in ("ro-crate-1.1", "workflow-run-crate", "provenance-run-crate"):
        settings = ValidationSettings(rocrate_uri=str(out), profile_identifier=profile, offline=True,
                                      requirement_severity=Severity.REQUIRED, cache_path=out.parent / "http-cache",
                                      skip_checks=["ro-crate-1.1_3.1", "ro-crate-1.1_3.2"])
        result = services.validate(settings)
        assert result.passed(), [str(i.message) for i in result.get_issues()]
    assert validator


def test_bundle_checkpoints(checkout, tmp_path):
    ckpt = checkout / "checkpoints/nli/lora_r8/seed0"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter.safetensors").write_bytes(b"weights")
    crating.build(tmp_path / "crate", root=checkout, config=CONFIG, bundle_checkpoints=True)
    graph = {e["@id"]: e for e in json.loads((tmp_path / "crate/ro-crate-metadata.json").read_text())["@graph"]}
    assert (tmp_path / "crate/checkpoints/nli/lora_r8/seed0/adapter.safetensors").read_bytes() == b"weights"
    assert "checkpoints/nli/lora_r8/seed0/" in ids(graph["#run/nli/lora_r8/seed0"]["result"])
