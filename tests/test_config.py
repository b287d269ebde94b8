"""Config loading: deep merge, schema errors that name the key, cross-reference checks, run resolution."""

import copy

import pytest
import yaml

from lorarepro.core.config import ConfigError, deep_merge
from lorarepro.domain.experiment import load, resolve_run, validate


def test_params_yaml_is_valid(params):
    validate(copy.deepcopy(params))


def test_deep_merge_keeps_nested_defaults():
    base = {"training": {"nlu": {"lr": 1, "flat": {"rho": 0.05, "mode": "exact"}}}}
    merged = deep_merge(base, {"training": {"nlu": {"flat": {"rho": 0.1}}}})
    assert merged["training"]["nlu"] == {"lr": 1, "flat": {"rho": 0.1, "mode": "exact"}}
    assert base["training"]["nlu"]["flat"]["rho"] == 0.05  # input untouched


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["methods"]["lora_r8"].update(rnak=8), "methods.lora_r8"),
        (lambda c: c["methods"]["lora_r8"]["adapter"].update(r=0), "methods.lora_r8.adapter"),
        (lambda c: c["methods"]["lora_r8"]["adapter"].update(r=-4), "methods.lora_r8.adapter"),
        (lambda c: c["methods"]["flat_lora_r8"].update(flat={"rho": -0.1}), "methods.flat_lora_r8.flat.rho"),
        (lambda c: c.update(seeds=[0, "one"]), "seeds.1"),
        (lambda c: c.update(seeds=[0.5]), "seeds.0"),
        (lambda c: c["tasks"]["sentiment"].update(family="audio"), "tasks.sentiment.family"),
        (lambda c: c["tasks"].update({"bad;rm -rf": c["tasks"]["sentiment"]}), "tasks"),
        (lambda c: c["training"]["nlu"].update(lr="fast"), "training.nlu.lr"),
    ],
)
def test_schema_errors_name_the_key(params, mutate, key):
    cfg = copy.deepcopy(params)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert f"'{key}" in str(err.value)


@pytest.mark.parametrize(
    "mutate, key, word",
    [
        (lambda c: c["tables"][0]["methods"].append("dora"), "tables.table_nlu.methods", "dora"),
        (lambda c: c["tables"][0]["tasks"].append("cola"), "tables.table_nlu.tasks", "cola"),
        (lambda c: c["tables"].append(dict(c["tables"][0])), "tables", "table_nlu"),
        (lambda c: c["tasks"]["sentiment"].update(backbone="vit-tiny"), "tasks.sentiment.backbone", "vit"),
        (lambda c: c["tasks"]["sentiment"].update(generator="nope"), "tasks.sentiment.generator", "nope"),
        (lambda c: c["methods"]["lora_r8"]["adapter"].update(r=65), "methods.lora_r8.adapter.r", "65"),
    ],
)
def test_cross_reference_errors_name_the_key(params, mutate, key, word):
    cfg = copy.deepcopy(params)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value) and word in str(err.value)


def test_load_merges_override_files(tmp_path, params):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(params))
    override = tmp_path / "over.yaml"
    override.write_text(yaml.safe_dump({"methods": {"lora_r8": {"training": {"lr": 0.01}}}}))
    cfg = load(base, override)
    assert cfg["methods"]["lora_r8"]["adapter"]["r"] == 8  # nested default survives
    assert resolve_run(cfg, "sentiment", "lora_r8").training["lr"] == 0.01


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        load(tmp_path / "missing.yaml")


def test_resolve_run_merges_family_method_task(params):
    cfg = copy.deepcopy(params)
    cfg["tasks"]["sentiment"]["training"] = {"epochs": 7}
    run = resolve_run(cfg, "sentiment", "full_ft")
    assert run.training["epochs"] == 7
    assert run.training["lr"] == cfg["methods"]["full_ft"]["training"]["lr"]
    assert run.strategies["flat"] is None and run.adapter is None
    flat = resolve_run(cfg, "digits", "flat_lora_r8").strategies["flat"]
    assert flat == {"rho": 0.15, "mode": "exact", "scope": "lora"}  # the vision family's sigma
    assert "flat" not in resolve_run(cfg, "digits", "flat_lora_r8").training


def test_resolve_run_unknown_names(params):
    with pytest.raises(ConfigError, match="unknown task 'x'"):
        resolve_run(params, "x", "lora_r8")
    with pytest.raises(ConfigError, match="unknown method 'y'"):
        resolve_run(params, "sentiment", "y")


def test_sam_resolves_with_defaults_and_refuses_flat(params):
    cfg = copy.deepcopy(params)
    cfg["methods"]["sam_w_r8"]["sam"] = {"space": "lora"}
    assert resolve_run(cfg, "sentiment", "sam_w_r8").strategies["sam"] == {"rho": 0.05, "space": "lora"}
    assert resolve_run(cfg, "sentiment", "lora_r8").strategies["sam"] is None
    cfg["methods"]["sam_w_r8"]["flat"] = {}
    with pytest.raises(ConfigError, match="'methods.sam_w_r8.sam'"):
        validate(cfg)


def test_cost_baseline_must_be_a_row(params):
    cfg = copy.deepcopy(params)
    table = next(t for t in cfg["tables"] if t.get("cost"))
    table["cost_baseline"] = "full_ft"
    with pytest.raises(ConfigError, match=f"'tables.{table['id']}.cost_baseline'"):
        validate(cfg)
