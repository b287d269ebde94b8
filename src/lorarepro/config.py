"""Experiment configuration: load, deep-merge, validate, and resolve one run's settings.

The JSON schema (workflow/schemas/params.schema.yaml) checks shapes and documents every key;
`check` adds the cross-references a schema cannot express (a table naming an unknown method, a
rank larger than the layer). Both run before any job starts: Snakemake calls them when it builds
the DAG, and every entry point calls `load` again so a job never trusts an unchecked file.
"""

import copy
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"
SAM_DEFAULTS = {"rho": 0.05, "space": "weight"}
FAMILY_ARCH = {"nlu": ("t5", "encoder"), "vision": ("vit", "clip"), "generation": ("llama",)}
GENERATED_SOURCES = ("synthetic", "sklearn_digits")
# What each rule declares unless `resources:` (or a task's `resources`, for its train job) says otherwise.
DEFAULT_RESOURCES = {
    "prepare_data": {"mem_mb": 1000, "runtime": 10},
    "prepare_pretext": {"mem_mb": 1000, "runtime": 10},
    "backbone": {"mem_mb": 4000, "runtime": 60},
    "train": {"mem_mb": 4000, "runtime": 120},
    "sharpness": {"mem_mb": 4000, "runtime": 60},
}


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def deep_merge(base: dict, override: dict) -> dict:
    """Merge `override` into a copy of `base`, recursing into dicts (a shallow merge would drop nested defaults)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load(*paths: str | Path) -> dict:
    """Read YAML files in order (later ones deep-merge over earlier), validate, and return the config.

    A file with `standalone: true` is complete: what came before it is dropped (as in the Snakefile).
    """
    config: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        config = copy.deepcopy(data) if data.get("standalone") else deep_merge(config, data)
    validate(config)
    # The schema's defaults, filled in by the same function the Snakefile calls, so a run's recorded
    # settings (resolved inside Snakemake) and this config agree (the audit compares them).
    from snakemake.utils import validate as snakemake_validate

    snakemake_validate(config, str(SCHEMA), set_default=True)
    return config


def validate(config: dict) -> None:
    """Schema validation plus cross-reference checks; raises ConfigError naming the offending key."""
    import jsonschema  # deferred: a training job only resolves its run (~0.3 s of its start-up)

    with open(SCHEMA) as fh:
        schema = yaml.safe_load(fh)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise ConfigError(f"config key '{key}': {error.message}")
    check(config)


def check(config: dict) -> None:
    """Cross-references the schema cannot express."""
    for kind in ("tables", "figures"):
        ids = [spec["id"] for spec in config.get(kind) or []]
        if len(ids) != len(set(ids)):
            raise ConfigError(f"config key '{kind}': duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
        for name, spec in specs(config, kind).items():
            for task in spec["tasks"]:
                if task not in config["tasks"]:
                    raise ConfigError(f"config key '{kind}.{name}.tasks': unknown task '{task}' (known: {sorted(config['tasks'])})")
            for method in spec["methods"]:
                if method not in config["methods"]:
                    raise ConfigError(f"config key '{kind}.{name}.methods': unknown method '{method}' (known: {sorted(config['methods'])})")
    for spec in config.get("tables") or []:
        baseline = spec.get("cost_baseline")
        if baseline is not None and (not spec.get("cost") or baseline not in spec["methods"]):
            raise ConfigError(f"config key 'tables.{spec['id']}.cost_baseline': '{baseline}' needs cost: true and must be one of the table's methods")
    _check_tasks(config)
    _check_methods(config)
    _check_distributed(config)
    from lorarepro import judge  # deferred, as the data checks

    try:
        judge.check((config.get("evaluation") or {}).get("judge"))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def specs(config: dict, kind: str) -> dict:
    """The `tables` or `figures` list as {id: spec}, in config order."""
    return {spec["id"]: spec for spec in config.get(kind) or []}


def sharpness_specs(config: dict) -> dict:
    """The tables whose runs get flatness measures (`sharpness: true`, the default), as {id: spec}."""
    return {k: spec for k, spec in specs(config, "tables").items() if spec.get("sharpness", True)}


def reported_pairs(config: dict) -> list[tuple[str, str]]:
    """(task, method) pairs some table or figure needs: only these are trained and checked."""
    pairs = set()
    for kind in ("tables", "figures"):
        for spec in specs(config, kind).values():
            pairs.update((t, m) for t in spec["tasks"] for m in spec["methods"])
    return sorted(pairs)


def _check_tasks(config: dict) -> None:
    from lorarepro.data import GENERATORS  # deferred: only needed when validating

    for name, task in config["tasks"].items():
        backbone = config["backbones"].get(task["backbone"])
        if backbone is None:
            raise ConfigError(f"config key 'tasks.{name}.backbone': unknown backbone '{task['backbone']}' (known: {sorted(config['backbones'])})")
        if backbone["arch"] not in FAMILY_ARCH[task["family"]]:
            raise ConfigError(f"config key 'tasks.{name}.backbone': family '{task['family']}' needs a {' or '.join(FAMILY_ARCH[task['family']])} backbone, '{task['backbone']}' is '{backbone['arch']}'")
        metric = task.get("metric", "exact_match")
        if metric != "exact_match" and (task["family"] != "generation" or task["source"] in GENERATED_SOURCES):
            raise ConfigError(f"config key 'tasks.{name}.metric': '{metric}' is for generation tasks with hub or local data")
        if task["source"] not in GENERATED_SOURCES:
            from lorarepro.data.external import check_task

            try:
                check_task(name, task)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        elif task["generator"] not in GENERATORS:
            raise ConfigError(f"config key 'tasks.{name}.generator': unknown generator '{task['generator']}' (known: {sorted(GENERATORS)})")
        if task["family"] not in config["training"]:
            raise ConfigError(f"config key 'training.{task['family']}': missing training defaults for family of task '{name}'")
    for name, backbone in config["backbones"].items():
        if backbone["source"] == "local" and "path" not in backbone:
            raise ConfigError(f"config key 'backbones.{name}.path': required when source is 'local'")
        if backbone["source"] == "hub" and "model" not in backbone:
            raise ConfigError(f"config key 'backbones.{name}.model': required when source is 'hub'")
        if backbone["source"] == "pretrain" and backbone["arch"] in ("encoder", "clip"):
            raise ConfigError(f"config key 'backbones.{name}.source': {backbone['arch']} backbones come from the hub or a local directory, not 'pretrain'")
        if backbone["source"] == "pretrain" and not {"size", "pretrain"} <= backbone.keys():
            raise ConfigError(f"config key 'backbones.{name}': source 'pretrain' needs 'size' and 'pretrain'")


def _check_methods(config: dict) -> None:
    from lorarepro.methods.lora import MUTATING_INITS, max_rank

    for name, method in config["methods"].items():
        if method["adapter"] is not None:
            _check_adapter(name, method["adapter"])
        if method.get("sam") is not None and method.get("flat") is not None:
            raise ConfigError(f"config key 'methods.{name}.sam': SAM and Flat-LoRA are two step strategies; choose one")
        if method.get("sam") is not None and method["adapter"] is None and method["sam"].get("space", SAM_DEFAULTS["space"]) != "trainable":
            raise ConfigError(f"config key 'methods.{name}.sam.space': full fine-tuning has no adapter; use space trainable")
    for task_name, name in reported_pairs(config):
        adapter, task = config["methods"][name]["adapter"], config["tasks"][task_name]
        if adapter is None:
            continue
        backbone = config["backbones"][task["backbone"]]
        smallest = _smallest_linear_dim(backbone)
        if smallest is not None and max_rank(adapter) > smallest:
            key = "adapter.adalora.init_r" if adapter["type"] == "adalora" else "adapter.r"
            raise ConfigError(
                f"config key 'methods.{name}.{key}': rank {max_rank(adapter)} exceeds the smallest "
                f"linear dimension {smallest} of backbone '{task['backbone']}' (task '{task_name}')"
            )
        flat = resolve_run(config, task_name, name)["flat"]
        if adapter.get("init") in MUTATING_INITS and flat is not None and flat["mode"] == "inplace":
            raise ConfigError(
                f"config key 'methods.{name}.flat.mode': inplace restores W from the saved backbone, which "
                f"init '{adapter['init']}' rewrote; use mode exact (task '{task_name}')"
            )


def _check_distributed(config: dict) -> None:
    """Data-parallel ranks need one GPU each (or none at all: CPU ranks with gloo)."""
    for task, method in reported_pairs(config):
        dp = resolve_run(config, task, method)["training"].get("distributed") or {}
        processes, backend = dp.get("processes", 1), dp.get("backend", "auto")
        gpu = resources(config, "train", task)["gpu"]
        where = f"tasks.{task}.resources.gpu" if "gpu" in (config["tasks"][task].get("resources") or {}) else "resources.train.gpu"
        if processes > 1 and gpu not in (0, processes):
            raise ConfigError(f"config key '{where}': {gpu} GPU(s) for training.distributed.processes = {processes} "
                              f"(task '{task}', method '{method}'); every rank needs its own GPU, so they must be equal")
        if processes > 1 and gpu == 0 and backend == "nccl":
            raise ConfigError(f"config key 'training.distributed.backend': nccl needs GPUs, but task '{task}' declares "
                              f"{where} = 0 (use gloo or auto for CPU ranks)")


def _check_adapter(name: str, adapter: dict) -> None:
    """Combinations the schema cannot express; each error names the offending key."""
    key = f"methods.{name}.adapter"
    if adapter["type"] == "adalora":
        for field in ("use_dora", "init", "init_batches", "loraplus_lr_ratio"):
            if adapter.get(field) not in (None, False, "default"):
                raise ConfigError(f"config key '{key}.{field}': not supported with type adalora")
        ada = adapter.get("adalora") or {}
        if ada.get("tinit", 0) + ada.get("tfinal", 0) >= 1:
            raise ConfigError(f"config key '{key}.adalora': tinit + tfinal must be below 1 (some steps must prune)")
        if ada.get("init_r", adapter["r"]) < adapter["r"]:
            raise ConfigError(f"config key '{key}.adalora.init_r': {ada['init_r']} is below the target rank r = {adapter['r']}")
        return
    if "adalora" in adapter:
        raise ConfigError(f"config key '{key}.adalora': only for type adalora")
    if adapter.get("use_dora") and adapter.get("init", "default") != "default":
        raise ConfigError(f"config key '{key}.init': '{adapter['init']}' is not supported with use_dora")
    if "init_batches" in adapter and adapter.get("init") != "lora_ga":
        raise ConfigError(f"config key '{key}.init_batches': only for init lora_ga")


def _smallest_linear_dim(backbone: dict) -> int | None:
    """Smallest in/out size of the backbone's linear layers, known before the model exists (pretrain only)."""
    if backbone["source"] != "pretrain":
        return None  # known only once a local model is loaded; checked at job start
    size = backbone["size"]
    dims = [v for k, v in size.items() if k in {"d_model", "d_ff", "hidden_size", "intermediate_size"}]
    if "d_kv" in size:
        dims.append(size["d_kv"] * size["num_heads"])
    return min(dims) if dims else None


def resources(config: dict, rule: str, task: str | None = None) -> dict:
    """What one job of `rule` declares: defaults < config `resources.<rule>` < the task's `resources` (train only)."""
    out = {"gpu": 0, **DEFAULT_RESOURCES[rule], **((config.get("resources") or {}).get(rule) or {})}
    if rule == "train" and task is not None:
        out.update(config["tasks"][task].get("resources") or {})
    return out


def resolve_run(config: dict, task: str, method: str) -> dict:
    """Everything one (task, method) run needs, with defaults deep-merged: family < method < task."""
    if task not in config["tasks"]:
        raise ConfigError(f"unknown task '{task}' (known: {sorted(config['tasks'])})")
    if method not in config["methods"]:
        raise ConfigError(f"unknown method '{method}' (known: {sorted(config['methods'])})")
    task_cfg, method_cfg = config["tasks"][task], config["methods"][method]
    training = deep_merge(config["training"][task_cfg["family"]], method_cfg.get("training") or {})
    training = deep_merge(training, task_cfg.get("training") or {})
    flat_defaults = training.pop("flat", {}) or {}
    flat = None
    if method_cfg.get("flat") is not None:
        flat = deep_merge({"rho": 0.05, "mode": "exact", "scope": "lora"}, deep_merge(flat_defaults, method_cfg["flat"]))
    run = {
        "task": task,
        "method": method,
        "family": task_cfg["family"],
        "backbone": task_cfg["backbone"],
        "adapter": copy.deepcopy(method_cfg["adapter"]),
        "flat": flat,
        "sam": None if method_cfg.get("sam") is None else deep_merge(SAM_DEFAULTS, method_cfg["sam"]),
        "training": training,
        "seeds": list(config["seeds"]),
        "threads": config.get("threads", 1),
    }
    dtype = config["backbones"][task_cfg["backbone"]].get("dtype", "float32")
    if dtype != "float32":  # only then: float32 runs keep their settings (and Snakemake params) unchanged
        run["backbone_dtype"] = dtype
    return run
