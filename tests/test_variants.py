"""The LoRA variants (rsLoRA, DoRA, PiSSA, LoRA-GA, AdaLoRA, LoRA+) with and without Flat-LoRA:
training on every family, PEFT-format checkpoints that reload on the pristine backbone to the same
metric, determinism, and what each variant changes (config fields, optimizer groups, base weights)."""

import copy
import json

import pytest
import torch

from lorarepro import families, paths
from lorarepro.config import ConfigError
from lorarepro.experiment import resolve_run, validate
from lorarepro.data import load_manifest, load_split
from lorarepro.training.train import train_one
from test_train import _stable

VARIANTS = {
    "rslora": {"type": "lora", "r": 8, "alpha": 16, "use_rslora": True},
    "dora": {"type": "lora", "r": 8, "alpha": 16, "use_dora": True},
    "pissa": {"type": "lora", "r": 8, "alpha": 16, "init": "pissa"},
    "lora_ga": {"type": "lora", "r": 8, "alpha": 16, "init": "lora_ga", "init_batches": 1},
    "adalora": {"type": "adalora", "r": 4, "alpha": 16, "adalora": {"init_r": 6}},
    "loraplus": {"type": "lora", "r": 8, "alpha": 16, "loraplus_lr_ratio": 16},
}
TASKS = ["sentiment", "digits", "arithmetic"]


def with_variants(config: dict) -> dict:
    cfg = copy.deepcopy(config)
    for name, adapter in VARIANTS.items():
        cfg["methods"][name] = {"adapter": copy.deepcopy(adapter)}
        cfg["methods"][f"flat_{name}"] = {"adapter": copy.deepcopy(adapter), "flat": {"rho": 0.5}}
    return cfg


def reload(run: dict, task: str, method: str):
    """The saved checkpoint loaded with PeftModel.from_pretrained on the pristine backbone."""
    from peft import PeftModel

    family = families.get(run["family"])
    manifest = load_manifest(paths.prepared_dir(task))
    torch.manual_seed(12345)  # a different init of any new head: the saved one must override it
    base, tokenizer = family.load_for_task(paths.backbone_dir(run["backbone"]), manifest)
    return PeftModel.from_pretrained(base, str(paths.checkpoint_dir(task, method, 0))).eval(), tokenizer


@torch.no_grad()
def logits(model, run: dict, task: str, tokenizer) -> torch.Tensor:
    family = families.get(run["family"])
    manifest = load_manifest(paths.prepared_dir(task))
    test = load_split(paths.prepared_dir(task), "test").head(8)
    batch = family.encode(test, tokenizer, manifest, run["training"]["max_length"]).batch(list(range(len(test))))
    return model.eval()(**batch).logits


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("flat", [False, True])
def test_variant_trains_saves_peft_format_and_reloads_to_the_same_model(workspace, monkeypatch, variant, task, flat):
    """A few steps barely move the metric, so the reloaded model's logits are compared too."""
    import lorarepro.training.train as train_module

    trained = {}
    evaluate = train_module.evaluate_splits
    monkeypatch.setattr(train_module, "evaluate_splits",
                        lambda family, model, *a, **k: trained.setdefault("model", model) and evaluate(family, model, *a, **k))
    cfg = with_variants(workspace)
    method = f"flat_{variant}" if flat else variant
    run = resolve_run(cfg, task, method)
    result = train_one(cfg, run, seed=0)
    ckpt = paths.checkpoint_dir(task, method, 0)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in ckpt.iterdir()}
    assert (result["flat"] is not None) == flat
    assert result["resources"]["step_peak_mb"] > 0  # every run's middle step is profiled
    model, tokenizer = reload(run, task, method)
    family = families.get(run["family"])
    manifest = load_manifest(paths.prepared_dir(task))
    test = load_split(paths.prepared_dir(task), "test")
    assert family.evaluate(model, tokenizer, test, manifest, run["training"]["max_length"]) == pytest.approx(result["metrics"]["test"], abs=1e-4)
    torch.testing.assert_close(logits(model, run, task, tokenizer), logits(trained["model"], run, task, tokenizer),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_is_deterministic(workspace, variant):
    cfg = with_variants(workspace)
    run = resolve_run(cfg, "sentiment", f"flat_{variant}")
    ckpt = paths.checkpoint_dir("sentiment", f"flat_{variant}", 1) / "adapter_model.safetensors"
    first = _stable(train_one(cfg, run, seed=1))
    weights = ckpt.read_bytes()
    assert _stable(train_one(cfg, run, seed=1)) == first
    assert ckpt.read_bytes() == weights


def _saved_config(task: str, method: str) -> dict:
    return json.loads((paths.checkpoint_dir(task, method, 0) / "adapter_config.json").read_text())


def _saved_tensors(task: str, method: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(paths.checkpoint_dir(task, method, 0) / "adapter_model.safetensors"))


@pytest.mark.parametrize("variant, field, value", [
    ("rslora", "use_rslora", True), ("dora", "use_dora", True), ("adalora", "peft_type", "ADALORA"),
    ("adalora", "target_r", 4), ("adalora", "init_r", 6),
])
def test_variant_reaches_peft_config(workspace, variant, field, value):
    cfg = with_variants(workspace)
    train_one(cfg, resolve_run(cfg, "sentiment", variant), seed=0)
    assert _saved_config("sentiment", variant)[field] == value


@pytest.mark.parametrize("variant", ["pissa", "lora_ga"])
def test_mutating_init_is_saved_as_a_delta_against_the_original_backbone(workspace, variant):
    """PEFT's conversion: rank 2r (trained and initial factors side by side), init_lora_weights True;
    the trained head of a vision task survives it."""
    cfg = with_variants(workspace)
    train_one(cfg, resolve_run(cfg, "digits", variant), seed=0)
    saved = _saved_config("digits", variant)
    assert saved["r"] == 16 and saved["lora_alpha"] == 32 and saved["init_lora_weights"] is True
    tensors = _saved_tensors("digits", variant)
    assert any("lora_A" in k and v.shape[0] == 16 for k, v in tensors.items())
    assert any("classifier" in k for k in tensors)


def test_plain_lora_init_leaves_a_plain_checkpoint(workspace):
    cfg = with_variants(workspace)
    train_one(cfg, resolve_run(cfg, "sentiment", "rslora"), seed=0)
    assert _saved_config("sentiment", "rslora")["r"] == 8


def test_loraplus_gives_b_a_larger_learning_rate():
    from peft import LoraConfig, get_peft_model

    from lorarepro.training.loop import make_optimizer

    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)), LoraConfig(r=2, target_modules=["0"]))
    optimizer, _ = make_optimizer(model, 1e-3, 0.0, 10, 0.0, loraplus_lr_ratio=16)
    lr_of = {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if "lora_A" in name:
            assert lr_of[id(p)] == pytest.approx(1e-3)
        if "lora_B" in name:
            assert lr_of[id(p)] == pytest.approx(16e-3)


def test_adalora_allocates_its_budget_every_step(workspace, monkeypatch):
    """update_and_allocate runs once per optimizer step, after the update (PEFT's protocol)."""
    from peft.tuners.adalora import AdaLoraModel

    calls = []
    original = AdaLoraModel.update_and_allocate
    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", lambda self, step: calls.append(step) or original(self, step))
    cfg = with_variants(workspace)
    result = train_one(cfg, resolve_run(cfg, "sentiment", "adalora"), seed=0)
    assert calls == list(range(result["train"]["steps"]))


def test_dora_flat_noise_is_flat_lora_in_the_effective_weight_space():
    """With DoRA, W_eff = m·(W + sBA)/||W + sBA||_row. Flat's sigma is computed from W + sBA and the
    noise enters through the base layer, which DoRA rescales by m/||W + sBA||: the effective weight
    moves by diag(m/||.||)·eps, i.e. row i has std rho/sqrt(n)·||W_eff,i|| — Flat-LoRA on W_eff."""
    from peft import LoraConfig, get_peft_model

    from lorarepro.methods.flat import FlatLoRA

    torch.manual_seed(0)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(16, 12)), LoraConfig(r=4, target_modules=["0"], use_dora=True))
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
        layer.lora_magnitude_vector["default"].weight.mul_(torch.linspace(0.5, 2.0, 12))
    x = torch.randn(5, 16)
    clean = model(x)
    flat = FlatLoRA(model, rho=0.3, total_steps=2, seed=7)
    flat.begin_step(2)
    noisy = model(x)
    eps = flat.noise(0)
    flat.end_step()
    w_dir = layer.base_layer.weight + layer.get_delta_weight("default")
    scale = layer.lora_magnitude_vector["default"].weight / torch.linalg.norm(w_dir, dim=1)
    torch.testing.assert_close(noisy - clean, x @ (scale[:, None] * eps).T, rtol=1e-4, atol=1e-5)
    w_eff = scale[:, None] * w_dir
    torch.testing.assert_close(scale * flat.sigma(0), 0.3 / 16**0.5 * torch.linalg.norm(w_eff, dim=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("adapter, key", [
    ({"type": "lora", "r": 8, "init": "svd"}, "methods.v.adapter.init"),
    ({"type": "lora", "r": 8, "use_dora": "yes"}, "methods.v.adapter.use_dora"),
    ({"type": "lora", "r": 8, "loraplus_lr_ratio": 0.5}, "methods.v.adapter.loraplus_lr_ratio"),
    ({"type": "lora", "r": 8, "use_rslor": True}, "methods.v.adapter"),
    ({"type": "vera", "r": 8}, "methods.v.adapter.type"),
    ({"type": "adalora", "r": 8, "adalora": {"tinit": 2}}, "methods.v.adapter.adalora.tinit"),
    ({"type": "adalora", "r": 8, "use_dora": True}, "methods.v.adapter.use_dora"),
    ({"type": "adalora", "r": 8, "loraplus_lr_ratio": 4}, "methods.v.adapter.loraplus_lr_ratio"),
    ({"type": "adalora", "r": 8, "adalora": {"tinit": 0.6, "tfinal": 0.5}}, "methods.v.adapter.adalora"),
    ({"type": "adalora", "r": 8, "adalora": {"init_r": 4}}, "methods.v.adapter.adalora.init_r"),
    ({"type": "adalora", "r": 8, "adalora": {"init_r": 80}}, "methods.v.adapter.adalora.init_r"),
    ({"type": "lora", "r": 8, "adalora": {"init_r": 12}}, "methods.v.adapter.adalora"),
    ({"type": "lora", "r": 8, "use_dora": True, "init": "pissa"}, "methods.v.adapter.init"),
    ({"type": "lora", "r": 8, "init_batches": 4}, "methods.v.adapter.init_batches"),
])
def test_bad_variant_keys_are_refused_naming_the_key(params, adapter, key):
    cfg = copy.deepcopy(params)
    cfg["methods"]["v"] = {"adapter": adapter}
    cfg["tables"][0]["methods"].append("v")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert f"'{key}'" in str(err.value)


def test_inplace_flat_with_a_weight_rewriting_init_is_refused(params):
    cfg = copy.deepcopy(params)
    cfg["methods"]["v"] = {"adapter": {"type": "lora", "r": 8, "init": "pissa"}, "flat": {"mode": "inplace"}}
    cfg["tables"][0]["methods"].append("v")
    with pytest.raises(ConfigError, match="'methods.v.flat.mode'"):
        validate(cfg)


@pytest.mark.parametrize("space", ["weight", "lora"])
def test_sam_baselines_train_record_cost_and_reload(workspace, space):
    """SAM-W / LoRA-SAM through the trainer: two passes per step, a plain LoRA checkpoint."""
    cfg = copy.deepcopy(workspace)
    cfg["methods"]["sam"] = {"adapter": {"type": "lora", "r": 8, "alpha": 16}, "sam": {"rho": 0.5, "space": space}}
    cfg["tables"].append({"id": "table_cost", "caption": "cost", "paper_table": "table6", "tasks": ["sentiment"],
                          "methods": ["sam"], "cost": True})
    run = resolve_run(cfg, "sentiment", "sam")
    result = train_one(cfg, run, seed=0)
    assert result["config"]["sam"] == {"rho": 0.5, "space": space}
    assert result["resources"]["step_peak_mb"] > 0 and result["resources"]["seconds_per_step"] > 0
    model, tokenizer = reload(run, "sentiment", "sam")
    family = families.get("nlu")
    manifest = load_manifest(paths.prepared_dir("sentiment"))
    test = load_split(paths.prepared_dir("sentiment"), "test")
    assert family.evaluate(model, tokenizer, test, manifest, 48) == pytest.approx(result["metrics"]["test"], abs=1e-4)
    base = train_one(cfg, resolve_run(cfg, "sentiment", "lora_r8"), seed=0)
    assert result["train"]["final_loss"] != base["train"]["final_loss"]  # the perturbed pass changed the update
