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
from lorarepro.core.config import ConfigError, reported_pairs, reported_runs, resources
from lorarepro.domain.experiment import load, resolve_run, validate

PAPER = ROOT / "workflow" / "configs" / "paper.yaml"


def test_paper_config_validates_and_stands_alone():
    cfg = load(ROOT / "params.yaml", PAPER)  # standalone: params.yaml is dropped, not merged under
    assert set(cfg["tasks"]) == {"mnli", "sst2", "cola", "qnli", "mrpc", "cifar10", "cifar100", "cars", "svhn", "dtd",
                                 "metamath_gsm8k", "codefeedback_humaneval", "wizardlm_mtbench", "alpaca_instruct"}
    assert cfg["training"]["vision"]["flat"]["rho"] == 0.15 and cfg["training"]["vision"]["weight_decay"] == 0.1
    assert "sharpness" not in cfg and "full_ft" in cfg["methods"]
    assert cfg["methods"]["full_ft"]["training"]["lr"] == 1e-4
    assert cfg["training"]["nlu"]["lr"] == 5e-4 and cfg["training"]["nlu"]["max_length"] == 128
    assert cfg["tasks"]["mnli"]["training"]["epochs"] == 1 and cfg["training"]["nlu"]["epochs"] == 10
    assert resources(cfg, "train", "metamath_gsm8k")["mem_mb"] == 128000
    assert cfg["tasks"]["codefeedback_humaneval"]["metric"] == "humaneval_pass_at_1"
    assert "metric" not in cfg["tasks"]["metamath_gsm8k"]  # exact_match, the generation default, with no schema default
    assert cfg["evaluation"]["execute_generated_code"] is False  # running model-written code is opt-in
    assert "evaluation" not in resolve_run(cfg, "codefeedback_humaneval", "lora_r8").as_dict()  # changing it retrains nothing
    assert cfg["evaluation"]["judge"] == {"kind": "openai_chat", "model": "gpt-4-0613", "base_url": "https://api.openai.com/v1",
                                          "api_key_env": "OPENAI_API_KEY", "timeout": 120, "retries": 5}
    # Table 3 on 4 GPUs, 4 ranks: effective batch 32 = 4 per rank x 4 ranks x 2 accumulation steps
    llama = resolve_run(cfg, "metamath_gsm8k", "flat_lora_r8").training
    assert llama["distributed"]["processes"] == resources(cfg, "train", "metamath_gsm8k")["gpu"] == 4
    assert llama["batch_size"] == 32 and llama["batch_size"] // llama["grad_accum"] // 4 == 4
    assert resources(cfg, "train", "sst2") == {"gpu": 1, "mem_mb": 32000, "runtime": 720}


# The official code's inputs: "<instruction><text>\nresult: " and its label words (github
# nblt/Flat-LoRA, data.py), not T5's multitask prefixes.
GLUE_INPUTS = {
    "sst2": ("classify the sentiment of the text: {sentence}\nresult: ", ["negative", "positive"]),
    "cola": ("classify the grammaticality of the text: {sentence}\nresult: ", ["unacceptable", "acceptable"]),
    "mrpc": ("classify the semantic similarity of the text: {sentence1}\n{sentence2}\nresult: ", ["different", "equivalent"]),
    "mnli": ("classify the semantic similarity of the text: {premise}\n{hypothesis}\nresult: ", ["entailment", "neutral", "contradiction"]),
    "qnli": ("classify the semantic similarity of the question and the sentence: {question}\n{sentence}\nresult: ",
             ["entailment", "not_entailment"]),
}
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
          "### Instruction:\n{question}\n\n### Response:\n")


def test_paper_grid_follows_the_official_protocol():
    """The settings as the paper and the official code give them, where an earlier version deviated."""
    cfg = load(PAPER)
    tasks, methods = cfg["tasks"], cfg["methods"]
    for task, (prompt, words) in GLUE_INPUTS.items():
        assert (tasks[task]["prompt"], tasks[task]["label_words"]) == (prompt, words), task
    # checkpoint choice: GLUE restores the epoch of lowest dev loss; Llama evaluates the last step
    assert resolve_run(cfg, "cola", "lora_r8").training["checkpoint_selection"] == "best_validation_loss"
    assert resolve_run(cfg, "metamath_gsm8k", "lora_r8").training["checkpoint_selection"] == "last"
    # Table 6: the radii the paper's search chose, on the tasks it states
    assert methods["sam_w_r8"]["sam"] == {"rho": 0.05, "space": "weight"}
    assert methods["lora_sam_r8"]["sam"] == {"rho": 0.003, "space": "lora"}
    table = {spec["id"]: spec for spec in cfg["tables"]}
    assert table["table6_sam"]["tasks"] == ["cola", "mrpc"] and "assumed" not in table["table6_sam"]["caption"]
    # Table 3's data: MetaMathQA's GSM rows under 512 tokens, "Q: A:" prompts; CodeFeedback-Filtered-Instruction
    math, train = tasks["metamath_gsm8k"], tasks["metamath_gsm8k"]["splits"]["train"]
    assert math["prompt"] == "Q: {question}\nA: " and math["dataset"] == "meta-math/MetaMathQA"
    assert (train["where"], train["transforms"], train["max_tokens"], train["split"]) == (
        {"type": "GSM"}, {"solution": ["before_answer_is"]}, 512, "train[:100000]")
    assert math["splits"]["validation"]["where"] == {"type": "GSM"}  # held-out rows of the same filtered stream
    code = tasks["codefeedback_humaneval"]
    assert code["dataset"] == "m-a-p/CodeFeedback-Filtered-Instruction"
    assert {k: code["splits"]["train"][k] for k in ("where", "transforms", "max_tokens", "prompt")} == {
        "where": {"answer": "```"}, "transforms": {"solution": ["through_first_code_block"]}, "max_tokens": 1024, "prompt": ALPACA}
    chat = tasks["wizardlm_mtbench"]
    assert chat["mt_bench_turns"] == [1] and chat["splits"]["train"]["exclude"] == {"output": ["sorry", "as an ai"]}
    # variants: LoRA+ ratio 16, AdaLoRA with PEFT's tinit = tfinal = 0, rsLoRA labelled as ours
    assert methods["loraplus_r8"]["adapter"]["loraplus_lr_ratio"] == methods["flat_loraplus_r8"]["adapter"]["loraplus_lr_ratio"] == 16
    for name in ("adalora_r8", "flat_adalora_r8"):
        adalora = methods[name]["adapter"]["adalora"]
        assert {k: adalora[k] for k in ("init_r", "tinit", "tfinal")} == {"init_r": 12, "tinit": 0, "tfinal": 0}
    assert "ours" in methods["rslora_r8"]["label"] and "ours" in methods["flat_rslora_r8"]["label"]
    # Fig. 5 on MRPC and CIFAR-100, ranks {1, 4, 16, 64} (plus 8) at alpha 16
    figure = {spec["id"]: spec for spec in cfg["figures"]}
    ranks = figure["rank_ablation"]
    assert ranks["tasks"] == ["mrpc", "cifar100"]
    assert {methods[m]["adapter"]["r"] for m in ranks["methods"]} == {1, 4, 8, 16, 64}
    assert {methods[m]["adapter"]["alpha"] for m in ranks["methods"]} == {16}
    # Appendix D: sigma in {0, 0.01, 0.05, 0.10, 0.15, 0.20} on CIFAR-100 and GSM8K, no run trained twice
    for fid, task in (("sigma_ablation_cifar100", "cifar100"), ("sigma_ablation_gsm8k", "metamath_gsm8k")):
        runs = [resolve_run(cfg, task, m) for m in figure[fid]["methods"]]
        assert figure[fid]["kind"] == "sigma_ablation" and figure[fid]["tasks"] == [task]
        assert sorted((r.strategies["flat"] or {}).get("rho", 0.0) for r in runs) == [0.0, 0.01, 0.05, 0.10, 0.15, 0.20]
    # Table 4: Llama-2-13B on Alpaca, InstructEval's four benchmarks through lm-evaluation-harness
    instruct = tasks["alpaca_instruct"]
    assert cfg["backbones"][instruct["backbone"]]["model"] == "meta-llama/Llama-2-13b-hf"
    assert instruct["dataset"] == "tatsu-lab/alpaca" and instruct["metric"] == "lm_eval"
    assert {k: (v["task"], v["num_fewshot"]) for k, v in instruct["lm_eval"].items()} == {
        "mmlu": ("mmlu", 5), "bbh": ("bbh_fewshot", 3), "drop": ("drop", 3), "humaneval": ("humaneval", 0)}
    assert table["table4_instruct"]["tasks"] == [f"alpaca_instruct:{b}" for b in ("mmlu", "bbh", "drop", "humaneval")]


def test_paper_grid_offers_the_official_behaviour_and_says_which_it_runs():
    """Where the official code differs from the paper's definition: both are offered, the one run is named."""
    cfg = load(PAPER)
    methods, tables = cfg["methods"], {spec["id"]: spec for spec in cfg["tables"]}
    # Flat over AdaLoRA: as defined (noise on AdaLoRA's layers) runs in Table 5; the official (no noise) is offered
    assert resolve_run(cfg, "mrpc", "flat_adalora_r8").strategies["flat"].get("adalora_noise", True) is True
    official = resolve_run(cfg, "mrpc", "flat_adalora_r8_official")
    assert official.strategies["flat"]["adalora_noise"] is False
    assert official.adapter == resolve_run(cfg, "mrpc", "flat_adalora_r8").adapter
    assert "flat_adalora_r8" in tables["table5_variants"]["methods"]
    assert ("mrpc", "flat_adalora_r8_official") not in reported_runs(cfg)  # offered, not run
    # HumanEval: the official sampling (5 samples, T 0.8, top_p 0.95, pass@1 estimated); greedy the option
    assert cfg["evaluation"]["humaneval"] == {"decoding": "sample", "samples": 5, "temperature": 0.8, "top_p": 0.95, "seed": 0}
    assert "5 samples at T 0.8, top_p 0.95" in tables["table3_llama"]["caption"]
    # the documented residue: label padding, the epoch ambiguity, PiSSA/LoRA-GA assumed, SDXL not reproduced
    header = PAPER.read_text().split("\nstandalone: true", 1)[0]
    for phrase in ("ignore_masked_token=False", "which epoch", "PiSSA's and LoRA-GA's settings are assumed", "SDXL"):
        assert phrase in header, phrase


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
        "table1_glue": 25, "table2_clip": 25, "table3_llama": 6, "table4_instruct": 8, "table5_variants": 28, "table6_sam": 8,
        "table7_cost": 2, "training_curves": 28, "ood_curve": 4, "rank_ablation": 20, "sigma_ablation_cifar100": 6,
        "sigma_ablation_gsm8k": 6}
    assert not pairs["ood_curve"] - pairs["table2_clip"]  # Fig. 4 reuses Table 2's runs
    new = len(pairs["table5_variants"] - pairs["table1_glue"]) + len(pairs["table6_sam"] - pairs["table1_glue"])
    assert (new, len(pairs["table7_cost"] - pairs["table3_llama"])) == (28, 0)  # Table 7 reuses Table 3's runs
    ablations = pairs["rank_ablation"] | pairs["sigma_ablation_cifar100"] | pairs["sigma_ablation_gsm8k"]
    assert len(ablations - pairs["table1_glue"] - pairs["table2_clip"] - pairs["table3_llama"]) == 20
    # one job per (task, method, seed): 25 + 25 + 6 + 2 (Table 4's two runs score four columns) + 28 +
    # 20 ablation pairs, plus the positive control's arm, x 3 seeds
    assert len(reported_pairs(cfg)) == 107 and counts["train"] == sum(map(len, reported_runs(cfg).values())) == 321
    assert counts["prepare_data"] == 14 and counts["backbone"] == 4
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


def test_paper_columns_are_filled_wherever_the_paper_gives_a_number(tmp_path, monkeypatch):
    from lorarepro.reporting.tables.cells import load_reference, table_cells
    from lorarepro.reporting.tables.paired import paper_gain

    cfg, ref = load(PAPER), load_reference(ROOT / "workflow" / "configs" / "paper_reference.yaml")
    monkeypatch.chdir(tmp_path)  # no runs: only the paper's side of each cell
    table1 = table_cells("table1_glue", cfg, ref)
    assert table1["paper"].notna().all() and len(table1) == 25
    table2 = table_cells("table2_clip", cfg, ref)
    assert table2[table2["method"] != "full_ft"]["paper"].notna().all()  # no Full FT cell survives, only its Avg
    table3 = table_cells("table3_llama", cfg, ref).set_index(["method", "task"])["paper"]
    assert (table3["lora_r8", "metamath_gsm8k"], table3["flat_lora_r8", "metamath_gsm8k"]) == (57.47, 60.65)
    spec = {s["id"]: s for s in cfg["tables"]}
    gains = {(tid, task): paper_gain(ref, spec[tid], cfg, "flat_lora_r8", "lora_r8", task)
             for tid, task in [("table3_llama", "wizardlm_mtbench"), ("table3_llama", "codefeedback_humaneval"),
                               ("table4_instruct", "alpaca_instruct:drop"), ("table4_instruct", "alpaca_instruct:humaneval"),
                               ("table4_instruct", "alpaca_instruct:mmlu"), ("table1_glue", "cola")]}
    assert gains == {("table3_llama", "wizardlm_mtbench"): 0.20, ("table3_llama", "codefeedback_humaneval"): 3.08,
                     ("table4_instruct", "alpaca_instruct:drop"): 0.71, ("table4_instruct", "alpaca_instruct:humaneval"): 1.83,
                     ("table4_instruct", "alpaca_instruct:mmlu"): None, ("table1_glue", "cola"): 0.74}


def test_adalora_noise_off_is_the_official_no_noise(one_thread):
    """flat: {adalora_noise: false}: AdaLoRA's linears get no noise (the official trainer's behaviour), so the
    step is exactly the plain model's; as defined (the default) they are perturbed."""
    import torch
    from peft import AdaLoraConfig, get_peft_model
    from torch import nn

    from lorarepro.domain.methods.flat import FlatLoRA, from_run

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    config = AdaLoraConfig(r=2, init_r=3, lora_alpha=4, target_modules=["0"], total_step=10, init_lora_weights=False)
    model = get_peft_model(base, config)
    x = torch.randn(5, 8)
    plain = model(x).detach()
    defined = FlatLoRA(model, rho=0.5, total_steps=2, seed=0)
    assert defined.target_names and defined.finish(lambda names: {}) == {"mode": "exact", "layers": 1}
    defined.begin_step(2)
    assert not torch.equal(model(x), plain)  # AdaLoRA's layer perturbed
    defined.close()
    official = from_run(model, {"rho": 0.5, "mode": "exact", "scope": "lora", "adalora_noise": False}, 2, 0)
    assert official.target_names == [] and official.finish(lambda names: {}) == {
        "mode": "exact", "layers": 0, "excluded_adalora": 1}
    official.begin_step(2)
    assert torch.equal(model(x), plain)  # no noise at all
    official.close()
    with pytest.raises(ValueError, match="adalora_noise"):
        FlatLoRA(model, rho=0.5, total_steps=2, seed=0, adalora_noise="no")
