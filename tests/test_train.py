"""Training under each method on each family: result JSON, checkpoints, determinism, failures.

A method x task matrix on tiny models (the reduced config's data and backbones).
"""

import copy
import json

import pytest
import torch

from lorarepro import families, paths
from lorarepro.experiment import resolve_run
from lorarepro.data import load_manifest, load_split
from lorarepro.training.loop import NonFiniteLoss
from lorarepro.records import VOLATILE
from lorarepro.training.train import train_one

TASKS = ["sentiment", "digits", "arithmetic"]
METHODS = ["full_ft", "lora_r8", "flat_lora_r8"]


def _stable(result: dict) -> dict:
    """The result without the keys that legitimately vary between identical runs."""
    out = copy.deepcopy(result)
    for key in VOLATILE:
        head, _, leaf = key.partition(".")
        if leaf:
            out[head].pop(leaf, None)
        else:
            out.pop(head, None)
    return out


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_records_everything(workspace, task, method):
    run = resolve_run(workspace, task, method)
    result = train_one(workspace, run, seed=0)
    on_disk = json.loads(paths.run_result(task, method, 0).read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert result["status"] == "FINISHED" and result["config"] == run
    assert {"validation", "test"} <= result["metrics"].keys()
    assert all(0.0 <= v <= 100.0 for v in result["metrics"].values())
    if task == "digits":
        assert {f"ood_s{s}" for s in range(1, 6)} <= result["metrics"].keys()
    lineage = result["lineage"]
    assert lineage["data_sha256"] == load_manifest(paths.prepared_dir(task))["sha256"]
    assert len(lineage["backbone_sha256"]) == len(lineage["checkpoint_sha256"]) == 64
    assert result["versions"]["torch"] and result["versions"]["peft"]
    ckpt = paths.checkpoint_dir(task, method, 0)
    train = result["train"]
    if method == "full_ft":
        assert (ckpt / "model.safetensors").is_file()
        assert train["trainable_params"] == train["total_params"]
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in ckpt.iterdir()}
        targets = json.loads((ckpt / "adapter_config.json").read_text())["target_modules"]
        assert targets == sorted(targets)  # not in set order, which varies with the hash seed
        assert 0 < train["trainable_params"] < train["total_params"] / 2
    assert not list(ckpt.glob("*.bin"))
    history = paths.run_history(task, method, 0).read_text().splitlines()
    assert history[0] == "step,loss,lr" and len(history) == train["steps"] + 1
    assert (result["flat"] is not None) == method.startswith("flat")


def test_same_seed_gives_identical_result_and_adapter(workspace):
    run = resolve_run(workspace, "sentiment", "flat_lora_r8")
    first = _stable(train_one(workspace, run, seed=1))
    adapter = (paths.checkpoint_dir("sentiment", "flat_lora_r8", 1) / "adapter_model.safetensors").read_bytes()
    second = _stable(train_one(workspace, run, seed=1))
    assert first == second
    assert adapter == (paths.checkpoint_dir("sentiment", "flat_lora_r8", 1) / "adapter_model.safetensors").read_bytes()


def test_other_seed_gives_other_adapter(workspace):
    run = resolve_run(workspace, "sentiment", "lora_r8")
    a = train_one(workspace, run, seed=0)["lineage"]["checkpoint_sha256"]
    b = train_one(workspace, run, seed=1)["lineage"]["checkpoint_sha256"]
    assert a != b


@pytest.mark.parametrize("task", TASKS)
def test_saved_adapter_reloads_to_the_same_metric(workspace, task):
    """PEFT format round trip: PeftModel.from_pretrained on the backbone reproduces the metric."""
    from peft import PeftModel

    run = resolve_run(workspace, task, "flat_lora_r8")
    result = train_one(workspace, run, seed=0)
    family = families.get(run["family"])
    manifest = load_manifest(paths.prepared_dir(task))
    torch.manual_seed(12345)  # a different init of any new head: the saved one must override it
    base, tokenizer = family.load_for_task(paths.backbone_dir(run["backbone"]), manifest)
    model = PeftModel.from_pretrained(base, str(paths.checkpoint_dir(task, "flat_lora_r8", 0)))
    test = load_split(paths.prepared_dir(task), "test")
    assert family.evaluate(model, tokenizer, test, manifest, run["training"]["max_length"]) == pytest.approx(result["metrics"]["test"], abs=1e-4)


@pytest.mark.parametrize("task", ["sentiment", "digits"])  # digits: transformers renames ViT's checkpoint keys
def test_inplace_flat_measures_drift_and_restores_pristine_weights(workspace, task):
    cfg = copy.deepcopy(workspace)
    cfg["methods"]["flat_lora_r8"]["flat"] = {"mode": "inplace", "rho": 0.5}
    run = resolve_run(cfg, task, "flat_lora_r8")
    result = train_one(cfg, run, seed=0)
    assert result["flat"]["mode"] == "inplace"
    assert result["flat"]["drift_max_abs"] > 0  # add-then-subtract does not round-trip in float
    assert 0 < result["flat"]["drift_frac_changed"] <= 1
    # The evaluated model was pristine base + adapter: reloading reproduces the metric exactly.
    from peft import PeftModel

    family = families.get(run["family"])
    manifest = load_manifest(paths.prepared_dir(task))
    base, tok = family.load_for_task(paths.backbone_dir(run["backbone"]), manifest)
    model = PeftModel.from_pretrained(base, str(paths.checkpoint_dir(task, "flat_lora_r8", 0)))
    test = load_split(paths.prepared_dir(task), "test")
    max_length = run["training"]["max_length"]
    assert family.evaluate(model, tok, test, manifest, max_length) == pytest.approx(result["metrics"]["test"], abs=1e-4)


def test_nan_loss_fails_naming_the_run_and_step(workspace):
    cfg = copy.deepcopy(workspace)
    cfg["methods"]["lora_r8"]["training"] = {"lr": 1e30}
    cfg["training"]["nlu"]["epochs"] = 3
    run = resolve_run(cfg, "sentiment", "lora_r8")
    with pytest.raises(NonFiniteLoss, match=r"task=sentiment method=lora_r8 seed=0: loss is .* at step \d+"):
        train_one(cfg, run, seed=0)


def test_rank_above_layer_size_is_refused(workspace):
    cfg = copy.deepcopy(workspace)
    cfg["methods"]["lora_r8"]["adapter"]["r"] = 4096
    with pytest.raises(ValueError, match="adapter.r = 4096"):
        train_one(cfg, resolve_run(cfg, "digits", "lora_r8"), seed=0)
