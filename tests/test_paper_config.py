"""The paper's grid (workflow/configs/paper.yaml): it validates, replaces the embedded default instead
of merging into it, and `snakemake -n` builds its whole DAG quickly and offline."""

import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT
from workspace import copy_repo
from lorarepro.config import ConfigError, reported_pairs, reported_runs, resources
from lorarepro.experiment import load, resolve_run, validate

PAPER = ROOT / "workflow" / "configs" / "paper.yaml"


def test_paper_config_validates_and_stands_alone():
    cfg = load(ROOT / "params.yaml", PAPER)  # standalone: params.yaml is dropped, not merged under
    assert set(cfg["tasks"]) == {"mnli", "sst2", "cola", "qnli", "mrpc", "cifar10", "cifar100", "cars", "svhn", "dtd",
                                 "metamath_gsm8k", "codefeedback_humaneval", "wizardlm_mtbench"}
    assert cfg["training"]["vision"]["flat"]["rho"] == 0.15 and cfg["training"]["vision"]["weight_decay"] == 0.1
    assert "sharpness" not in cfg and "full_ft" in cfg["methods"]
    assert cfg["methods"]["full_ft"]["training"]["lr"] == 1e-4
    assert cfg["training"]["nlu"]["lr"] == 5e-4 and cfg["training"]["nlu"]["max_length"] == 128
    assert cfg["tasks"]["mnli"]["training"]["epochs"] == 1 and cfg["training"]["nlu"]["epochs"] == 10
    assert resources(cfg, "train", "metamath_gsm8k")["mem_mb"] == 128000
    assert cfg["tasks"]["codefeedback_humaneval"]["metric"] == "humaneval_pass_at_1"
    assert "metric" not in cfg["tasks"]["metamath_gsm8k"]  # exact_match, the generation default, with no schema default
    assert cfg["evaluation"]["execute_generated_code"] is False  # running model-written code is opt-in
    assert "evaluation" not in resolve_run(cfg, "codefeedback_humaneval", "lora_r8")  # changing it retrains nothing
    chat = cfg["tasks"]["wizardlm_mtbench"]
    assert chat["metric"] == "mt_bench"
    assert chat["splits"]["test"]["fields"] == {"turns": "prompt", "category": "category", "reference": "reference"}
    assert cfg["evaluation"]["judge"] == {"kind": "openai_chat", "model": "gpt-4-0613", "base_url": "https://api.openai.com/v1",
                                          "api_key_env": "OPENAI_API_KEY", "timeout": 120, "retries": 5}
    # Table 3 on 4 GPUs, 4 ranks: effective batch 32 = 4 per rank x 4 ranks x 2 accumulation steps
    llama = resolve_run(cfg, "metamath_gsm8k", "flat_lora_r8")["training"]
    assert llama["distributed"]["processes"] == resources(cfg, "train", "metamath_gsm8k")["gpu"] == 4
    assert llama["batch_size"] == 32 and llama["batch_size"] // llama["grad_accum"] // 4 == 4
    assert resources(cfg, "train", "sst2") == {"gpu": 1, "mem_mb": 32000, "runtime": 720}


def test_missing_hub_keys_are_named(tmp_path):
    cfg = yaml.safe_load(PAPER.read_text())
    del cfg["tasks"]["sst2"]["dataset"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="tasks.sst2"):
        load(bad)
    cfg = yaml.safe_load(PAPER.read_text())
    del cfg["backbones"]["t5-base"]["model"]
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="backbones.t5-base.model"):
        load(bad)


def _job_counts(output: str) -> dict[str, int]:
    stats = output.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_dry_run_builds_the_whole_grid_offline(tmp_path):
    copy_repo(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(PAPER)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    counts = _job_counts(done.stdout + done.stderr)
    cfg = load(PAPER)
    table = {spec["id"]: spec for spec in cfg["tables"]}
    assert len(table["table1_glue"]["tasks"]) * len(table["table1_glue"]["methods"]) == 25
    assert len(table["table3_llama"]["tasks"]) * len(table["table3_llama"]["methods"]) == 6
    pairs = {tid: {(t, m) for t in spec["tasks"] for m in spec["methods"]} for tid, spec in table.items()}
    pairs |= {f["id"]: {(t, m) for t in f["tasks"] for m in f["methods"]} for f in cfg["figures"]}
    assert {k: len(v) for k, v in pairs.items()} == {
        "table1_glue": 25, "table2_clip": 25, "table3_llama": 6, "table5_variants": 28, "table6_sam": 8,
        "table7_cost": 2, "training_curves": 26, "ood_curve": 4, "rank_ablation": 10, "sigma_ablation": 6}
    assert not pairs["ood_curve"] - pairs["table2_clip"]  # Fig. 4 reuses Table 2's runs
    new = len(pairs["table5_variants"] - pairs["table1_glue"]) + len(pairs["table6_sam"] - pairs["table1_glue"])
    assert (new, len(pairs["table7_cost"] - pairs["table3_llama"])) == (28, 0)  # Table 7 reuses Table 3's runs
    assert len(pairs["rank_ablation"] - pairs["table1_glue"]) + len(pairs["sigma_ablation"] - pairs["table1_glue"]) == 10
    # one job per (task, method, seed): (25 + 25 + 6 + 28 + 10) pairs x 3 seeds
    assert len(reported_pairs(cfg)) == 94 and counts["train"] == sum(map(len, reported_runs(cfg).values())) == 282
    assert counts["prepare_data"] == 13 and counts["backbone"] == 3
    assert "prepare_pretext" not in counts and "sharpness" not in counts  # hub backbones; no sharpness key
    assert counts["tables"] == counts["figures"] == counts["all"] == 1
    assert seconds < 20, f"dry run took {seconds:.1f} s"  # ~4 s here; the brief's budget is 10 s on a free core


def test_cluster_profiles_have_the_keys_their_executors_read():
    slurm = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "profile.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["jobs"] >= 1
    assert {"slurm_partition", "runtime", "mem_mb"} <= set(slurm["default-resources"])
    local = yaml.safe_load((ROOT / "workflow" / "profiles" / "gpu-local" / "profile.yaml").read_text())
    assert local["resources"]["gpu"] >= 1  # caps concurrent GPU jobs; lorarepro.pipeline.gpus picks which GPU
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    for rule in ("prepare_data", "prepare_pretext", "backbone", "train", "sharpness"):
        assert f'rule_resources("{rule}")' in rules  # every job-running rule declares config resources


def test_roberta_glue_config_validates():
    cfg = load(ROOT / "params.yaml", ROOT / "workflow" / "configs" / "roberta_glue.yaml")
    assert list(cfg["backbones"]) == ["roberta-base"]  # standalone: params.yaml's backbones are gone
    assert cfg["backbones"]["roberta-base"] == {"arch": "encoder", "source": "hub", "model": "FacebookAI/roberta-base",
                                                "dtype": "float32", "trust_remote_code": False}  # + schema defaults
    assert len(reported_pairs(cfg)) == 10 and "text" not in str(cfg["tasks"]["mrpc"].get("prompt", ""))
    bad = {**cfg, "backbones": {"roberta-base": {"arch": "encoder", "source": "pretrain", "size": {}, "pretrain": {}}}}
    with pytest.raises(ConfigError, match="encoder backbones"):
        validate(bad)
