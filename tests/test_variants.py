"""The LoRA variants (rsLoRA, DoRA, PiSSA, LoRA-GA, AdaLoRA, LoRA+) with and without Flat-LoRA:
training on every family, PEFT-format checkpoints that reload on the pristine backbone to the same
metric, determinism, and what each variant changes (config fields, optimizer groups, base weights).
Any other PEFT tuner (VeRA, LoHa) by config alone, with Flat-LoRA on its delta weight, and a
CoLA-style local task scored with Matthews correlation."""

import copy
import json

import pytest
import torch

from lorarepro.core import paths
from lorarepro.domain import families
from lorarepro.core.config import ConfigError
from lorarepro.domain.experiment import resolve_run, validate
from lorarepro.domain.data import load_manifest, load_split
from lorarepro.stages.training.train import train_one
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


def reload(run, task: str, method: str):
    """The saved checkpoint loaded with PeftModel.from_pretrained on the pristine backbone."""
    from peft import PeftModel

    family = families.get(run.family)
    manifest = load_manifest(paths.prepared_dir(task))
    torch.manual_seed(12345)  # a different init of any new head: the saved one must override it
    base, tokenizer = family.load_for_task(paths.backbone_dir(run.backbone), manifest)
    return PeftModel.from_pretrained(base, str(paths.checkpoint_dir(task, method, 0))).eval(), tokenizer


@torch.no_grad()
def logits(model, run, task: str, tokenizer) -> torch.Tensor:
    family = families.get(run.family)
    manifest = load_manifest(paths.prepared_dir(task))
    test = load_split(paths.prepared_dir(task), "test").head(8)
    batch = family.encode(test, tokenizer, manifest, run.training["max_length"]).batch(list(range(len(test))))
    return model.eval()(**batch).logits


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("flat", [False, True])
def test_variant_trains_saves_peft_format_and_reloads_to_the_same_model(workspace, monkeypatch, variant, task, flat):
    """A few steps barely move the metric, so the reloaded model's logits are compared too."""
    import lorarepro.stages.training.train as train_module

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
    family = families.get(run.family)
    manifest = load_manifest(paths.prepared_dir(task))
    test = load_split(paths.prepared_dir(task), "test")
    assert family.evaluate(model, tokenizer, test, manifest, run.training["max_length"]) == pytest.approx(result["metrics"]["test"], abs=1e-4)
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

    from lorarepro.domain.methods import lora
    from lorarepro.stages.training.loop import make_optimizer

    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)), LoraConfig(r=2, target_modules=["0"]))
    groups = lora.kind(VARIANTS["loraplus"]).param_groups(model, 1e-3, 0.0)
    optimizer, _ = make_optimizer(model, 1e-3, 0.0, 10, 0.0, groups)
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

    from lorarepro.domain.methods.flat import FlatLoRA

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
    ({"type": "nope", "r": 8}, "methods.v.adapter.type"),
    ({"type": "prompt_tuning"}, "methods.v.adapter.type"),
    ({"type": "vera", "r": 8, "lora_alpha": 16}, "methods.v.adapter.lora_alpha"),
    ({"type": "loha", "r": 8, "modules_to_save": ["classifier"]}, "methods.v.adapter.modules_to_save"),
    ({"type": "lora", "r": 8, "target_modules": []}, "methods.v.adapter.target_modules"),
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


# ----------------------------------------------------------------------------- any PEFT tuner, by config alone

TUNERS = {"vera": {"type": "vera", "r": 16, "d_initial": 0.5}, "loha": {"type": "loha", "r": 4, "alpha": 8}}


def with_tuner(config: dict, tuner: str, flat: bool) -> tuple[dict, str]:
    cfg, name = copy.deepcopy(config), f"flat_{tuner}" if flat else tuner
    cfg["methods"][name] = {"adapter": copy.deepcopy(TUNERS[tuner]), **({"flat": {"rho": 0.5}} if flat else {})}
    cfg["tables"][0]["methods"].append(name)
    return cfg, name


def n_tuner_layers(model) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(module, BaseTunerLayer) for module in model.modules())


def checked(cfg: dict) -> dict:
    """`validate` (schema, cross-references; PEFT checks a tuner's fields), without the claims, whose
    file is the repository's."""
    validate({k: v for k, v in cfg.items() if k != "claims"})
    return cfg


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("tuner", list(TUNERS))
def test_any_peft_tuner_trains_by_config_and_reloads(workspace, tuner, flat):
    cfg, name = with_tuner(workspace, tuner, flat)
    run = resolve_run(checked(cfg), "sentiment", name)
    result = train_one(cfg, run, seed=0)
    assert _saved_config("sentiment", name)["peft_type"] == tuner.upper()
    model, tokenizer = reload(run, "sentiment", name)
    assert (result["flat"] or {}).get("layers", 0) == (n_tuner_layers(model) if flat else 0)  # Flat found every one
    test = load_split(paths.prepared_dir("sentiment"), "test")
    manifest = load_manifest(paths.prepared_dir("sentiment"))
    assert families.get("nlu").evaluate(model, tokenizer, test, manifest, 48) == pytest.approx(result["metrics"]["test"], abs=1e-4)


@pytest.mark.parametrize("n_in, n_out", [(16, 12), (12, 16)])  # D's factors: I D, or D I
@pytest.mark.parametrize("tuner", list(TUNERS))
def test_flat_sigma_of_a_tuner_is_taken_from_its_delta_weight(tuner, n_in, n_out):
    """sigma_i = rho/sqrt(n) * ||(W + D)_i|| at f(T) = 1, D the tuner's own get_delta_weight."""
    from peft import get_peft_model

    from lorarepro.domain.methods.flat import FlatLoRA
    from lorarepro.domain.methods.lora import tuner_config

    torch.manual_seed(0)
    adapter = tuner_config({**TUNERS[tuner], "init_weights": False}, ["0"], None)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(n_in, n_out)), adapter)
    layer = model.base_model.model[0]
    flat = FlatLoRA(model, rho=0.3, total_steps=2, seed=7)
    flat.begin_step(2)
    flat.end_step()
    delta = layer.get_delta_weight("default")
    assert delta.abs().sum() > 0  # not the zero init: the delta counts
    expected = 0.3 / n_in**0.5 * torch.linalg.norm(layer.base_layer.weight + delta, dim=1)
    torch.testing.assert_close(flat.sigma(0), expected.detach(), rtol=1e-5, atol=1e-7)


def test_flat_refuses_a_tuner_without_a_delta_weight():
    from peft import IA3Config, get_peft_model

    from lorarepro.domain.methods.flat import FlatLoRA

    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(16, 12)), IA3Config(target_modules=["0"], feedforward_modules=[]))
    flat = FlatLoRA(model, rho=0.3, total_steps=2, seed=7)
    with pytest.raises(TypeError, match="ia3.*get_delta_weight"):
        flat.begin_step(1)


def test_target_modules_are_the_configs(workspace):
    cfg = copy.deepcopy(workspace)
    cfg["methods"]["qv"] = {"adapter": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["q", "v"]}}
    cfg["tables"][0]["methods"].append("qv")
    checked(cfg)
    train_one(cfg, resolve_run(cfg, "sentiment", "qv"), seed=0)
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in _saved_tensors("sentiment", "qv") if "lora_A" in k}
    assert adapted == {"q", "v"}


def cola_like(config: dict) -> dict:
    """A local CSV task in CoLA's shape (sentences, acceptable or not, scored by Matthews correlation)
    from the sentiment split's sentences, its training split a seeded sample of the file's rows."""
    source = paths.prepared_dir("sentiment")
    manifest = load_manifest(source)
    folder = paths.prepared_dir("sentiment").parent.parent / "cola_source"
    folder.mkdir(exist_ok=True)
    for split in ("train", "test"):
        frame = load_split(source, split)
        frame[["text", "label"]].rename(columns={"text": "sentence"}).to_csv(folder / f"{split}.csv", index=False)
    return {"family": "nlu", "backbone": "t5-tiny", "source": "local", "path": str(folder), "format": "csv",
            "fields": {"text": ["sentence"], "label": "label"}, "label_words": manifest["label_words"],
            "metric": "matthews_corrcoef", "mirrors": "CoLA",
            "splits": {"train": {"split": "train.csv", "sample": 48}, "validation": "test.csv[:16]", "test": "test.csv[16:]"}}


def test_cola_like_task_scored_by_matthews_correlation_with_a_tuner_by_config(workspace):
    from sklearn.metrics import matthews_corrcoef

    from lorarepro.domain.data import prepare_task

    cfg, name = with_tuner(workspace, "vera", flat=True)
    cfg["tasks"]["cola"] = cola_like(cfg)
    checked(cfg)
    manifest = prepare_task("cola", cfg["tasks"]["cola"], cfg["data_seed"], paths.prepared_dir("cola"))
    assert manifest["metric"] == "matthews_corrcoef" and manifest["sources"]["train"]["sample"] == 48
    assert manifest["splits"]["train"]["rows"] == 48
    run = resolve_run(cfg, "cola", name)
    result = train_one(cfg, run, seed=0)
    model, tokenizer = reload(run, "cola", name)
    assert result["metric"] == "matthews_corrcoef" and result["flat"]["layers"] == n_tuner_layers(model)
    test = load_split(paths.prepared_dir("cola"), "test")
    nlu = families.get("nlu")
    predicted = nlu._label_word_predictions(model, tokenizer, test, manifest, 48, 256)
    assert result["metrics"]["test"] == pytest.approx(100 * matthews_corrcoef(test["label"], predicted), abs=1e-4)
