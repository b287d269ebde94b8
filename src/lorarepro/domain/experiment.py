"""The experiment as the domain sees it: a config checked against the registries (families, data
generators, adapters, step strategies, the judge), and one run's resolved settings.

`lorarepro.core.config` reads and schema-validates the files; the cross-references here need the domain
(a table naming an unknown method, a rank larger than the layer, a family without training
defaults). Snakemake runs `check` when it builds the DAG, which resolves every run once
(`run_specs`) and hands each train job its own; every other entry point calls `load`, so a job
never trusts an unchecked file.

A resolved run is a `RunSpec`: typed and frozen. Snakemake carries it as `as_dict()` (the layout of
a result record's `config`, so a param compares equal across versions); a job, the audit or a
reader of records turns that back into a spec with `RunSpec.of`, which resolves nothing.
"""

import copy
import importlib.util
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lorarepro.domain import methods
from lorarepro.core.config import (
    ConfigError, claim_comparisons, column, deep_merge, read, read_claims, reported_pairs, resources, sharpness_runs,
    spec_seeds, specs, validate_schema,
)
from lorarepro.domain.data import CAPACITY, GENERATED_SOURCES, GENERATORS
from lorarepro.domain.data.external import check_task
from lorarepro.domain.evaluation import harness, judge
from lorarepro.domain.families import FAMILIES
from lorarepro.domain.methods.lora import LORA_TYPES, MUTATING_INITS, max_rank, tuner_config

DISTRIBUTED = {"processes": 1, "backend": "auto", "timeout_minutes": 60}  # training.<family>.distributed


@dataclass(frozen=True)
class RunSpec:
    """Everything one (task, method) run needs, resolved once (`resolve_run`). Frozen: its settings
    are copies no caller shares, so handing a spec on can never change it for another reader."""

    task: str
    method: str
    family: str
    backbone: str
    adapter: dict | None  # the method's `adapter:` entry; None: full fine-tuning
    training: dict  # family < method < task, without the step strategies' keys
    strategies: dict  # {key: settings or None} for every registered step strategy (methods.STRATEGIES)
    threads: int = 1
    numerics: str = "portable"
    backbone_dtype: str | None = None  # None: float32

    def __post_init__(self) -> None:
        for name in ("adapter", "training", "strategies"):
            object.__setattr__(self, name, copy.deepcopy(getattr(self, name)))

    def as_dict(self) -> dict:
        """The spec as a result record's `config` holds it (strategies at the top level; the dtype
        only when not float32), also the train jobs' Snakemake param."""
        out = {"task": self.task, "method": self.method, "family": self.family, "backbone": self.backbone,
               "adapter": copy.deepcopy(self.adapter), **copy.deepcopy(self.strategies),
               "training": copy.deepcopy(self.training), "threads": self.threads, "numerics": self.numerics}
        if self.backbone_dtype is not None:
            out["backbone_dtype"] = self.backbone_dtype
        return out

    @classmethod
    def of(cls, run: "RunSpec | Mapping") -> "RunSpec":
        """`run` itself, or the spec of its dict layout (a Snakemake param, a record's `config`)."""
        if isinstance(run, RunSpec):
            return run
        missing = [key for key in ("task", "method", "family", "backbone", "adapter", "training") if key not in run]
        if missing:
            raise ValueError(f"run settings without {missing} (of task {run.get('task')!r}, method {run.get('method')!r})")
        return cls(task=run["task"], method=run["method"], family=run["family"], backbone=run["backbone"],
                   adapter=run["adapter"], training=run["training"],
                   strategies={key: run.get(key) for key in methods.STRATEGIES},
                   threads=run.get("threads", 1), numerics=run.get("numerics", "portable"),
                   backbone_dtype=run.get("backbone_dtype"))


def load(*paths) -> dict:
    """Read, merge and schema-validate the config files (lorarepro.core.config.read), then `check` them."""
    config = read(*paths)
    check(config)
    return config


def validate(config: dict) -> None:
    """Schema validation plus cross-reference checks; raises ConfigError naming the offending key."""
    validate_schema(config)
    check(config)


def check(config: dict) -> dict[tuple[str, str], RunSpec]:
    """Cross-references the schema cannot express; returns the resolved run spec of every (task,
    method) some table, figure or claim reads, each resolved once here (`run_specs`) and handed on:
    Snakemake gives each train job its own as a param, and nothing downstream resolves it again."""
    _check_values(config)
    for kind in ("tables", "figures"):
        ids = [spec["id"] for spec in config.get(kind) or []]
        if len(ids) != len(set(ids)):
            raise ConfigError(f"config key '{kind}': duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
        for name, spec in specs(config, kind).items():
            for task in spec["tasks"]:
                _check_column(config, f"{kind}.{name}.tasks", task, split_ok=kind == "tables")
            for method in spec["methods"]:
                if method not in config["methods"]:
                    raise ConfigError(f"config key '{kind}.{name}.methods': unknown method '{method}' (known: {sorted(config['methods'])})")
    for spec in config.get("tables") or []:
        baseline = spec.get("cost_baseline")
        if baseline is not None and (not spec.get("cost") or baseline not in spec["methods"]):
            raise ConfigError(f"config key 'tables.{spec['id']}.cost_baseline': '{baseline}' needs cost: true and must be one of the table's methods")
    _check_families(config)
    _check_claims(config)
    _check_tasks(config)
    runs = run_specs(config)
    _check_methods(config, runs)
    _check_distributed(config, runs)
    try:
        judge.check((config.get("evaluation") or {}).get("judge"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return runs


def _check_claims(config: dict) -> None:
    """Each comparison names a claim of the claims file, known tasks and methods, and a measure it can read."""
    comparisons = claim_comparisons(config)
    if not comparisons:
        return
    names = [entry["claim"] for entry in config["claims"]["comparisons"]]
    if len(names) != len(comparisons):
        raise ConfigError(f"config key 'claims.comparisons': claims compared twice: {sorted({n for n in names if names.count(n) > 1})}")
    claims = read_claims(config["claims"]["reference"])
    for name, comparison in comparisons.items():
        key = f"claims.comparisons[{name}]"
        if name not in claims:
            raise ConfigError(f"config key '{key}': no claim '{name}' in {config['claims']['reference']} "
                              f"(known: {sorted(claims)})")
        for task in comparison["tasks"]:
            if task not in config["tasks"]:
                raise ConfigError(f"config key '{key}.tasks': unknown task '{task}' (known: {sorted(config['tasks'])})")
        for method in (m for pair in comparison["pairs"] for m in pair):
            if method not in config["methods"]:
                raise ConfigError(f"config key '{key}.pairs': unknown method '{method}' (known: {sorted(config['methods'])})")
        if claims[name]["measure"] == "sharpness":
            measured = sharpness_runs(config) if config.get("sharpness") is not None else {}
            lacking = [f"{t}/{m}" for t in comparison["tasks"] for pair in comparison["pairs"] for m in pair
                       if not set(spec_seeds(config, comparison)) <= set(measured.get((t, m), []))]
            if lacking:
                raise ConfigError(f"config key '{key}': measure sharpness needs these runs in a table with sharpness "
                                  f"true (and a `sharpness:` section), with the comparison's seeds: {lacking[:4]}")


def _check_column(config: dict, key: str, name: str, split_ok: bool) -> None:
    """A table column is a task (its test metric) or `task:benchmark` of an lm_eval task."""
    task, split = column(name)
    if task not in config["tasks"]:
        raise ConfigError(f"config key '{key}': unknown task '{task}' (known: {sorted(config['tasks'])})")
    benchmarks = config["tasks"][task].get("lm_eval") or {}
    if ":" in name and not (split_ok and split in benchmarks):
        known = [f"{task}:{b}" for b in benchmarks] if split_ok else []
        raise ConfigError(f"config key '{key}': '{name}' is no metric column (tables only; known: {known})")
    if split_ok and ":" not in name and benchmarks and "test" not in benchmarks:
        raise ConfigError(f"config key '{key}': '{task}' has no test metric; name a benchmark column "
                          f"({[f'{task}:{b}' for b in benchmarks]})")


def _check_families(config: dict) -> None:
    """Family names and architectures are the registry's (lorarepro.domain.families.FAMILIES), not the schema's."""
    for family in config["training"]:
        if family not in FAMILIES:
            raise ConfigError(f"config key 'training.{family}': unknown task family '{family}' (known: {sorted(FAMILIES)})")
    for name, task in config["tasks"].items():
        if task["family"] not in FAMILIES:
            raise ConfigError(f"config key 'tasks.{name}.family': unknown task family '{task['family']}' (known: {sorted(FAMILIES)})")
    archs = [arch for family in FAMILIES.values() for arch in family.archs]
    built = [family.archs[0] for family in FAMILIES.values()]
    for name, backbone in config["backbones"].items():
        if backbone["arch"] not in archs:
            raise ConfigError(f"config key 'backbones.{name}.arch': unknown architecture '{backbone['arch']}' (known: {archs})")
        if backbone["source"] == "pretrain" and backbone["arch"] not in built:
            raise ConfigError(f"config key 'backbones.{name}.source': {backbone['arch']} backbones come from the hub or a "
                              f"local directory; the pipeline pretrains {built} only")


def _check_tasks(config: dict) -> None:
    for name, task in config["tasks"].items():
        backbone = config["backbones"].get(task["backbone"])
        if backbone is None:
            raise ConfigError(f"config key 'tasks.{name}.backbone': unknown backbone '{task['backbone']}' (known: {sorted(config['backbones'])})")
        archs = FAMILIES[task["family"]].archs
        if backbone["arch"] not in archs:
            raise ConfigError(f"config key 'tasks.{name}.backbone': family '{task['family']}' needs a {' or '.join(archs)} backbone, '{task['backbone']}' is '{backbone['arch']}'")
        _check_metric(name, task)
        if task["source"] not in GENERATED_SOURCES:
            try:
                check_task(name, task)
                _check_lm_eval(name, task, config)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        elif task["generator"] not in GENERATORS:
            raise ConfigError(f"config key 'tasks.{name}.generator': unknown generator '{task['generator']}' (known: {sorted(GENERATORS)})")
        elif task["generator"] in CAPACITY and "sizes" in task:
            available, asked = CAPACITY[task["generator"]](config["data_seed"]), sum(task["sizes"].values())
            if asked > available:
                raise ConfigError(f"config key 'tasks.{name}.sizes': {asked} examples asked, generator "
                                  f"'{task['generator']}' has {available} at data_seed {config['data_seed']}")
        if task["family"] not in config["training"]:
            raise ConfigError(f"config key 'training.{task['family']}': missing training defaults for family of task '{name}'")
    for name, backbone in config["backbones"].items():
        if backbone["source"] == "local" and "path" not in backbone:
            raise ConfigError(f"config key 'backbones.{name}.path': required when source is 'local'")
        if backbone["source"] == "hub" and "model" not in backbone:
            raise ConfigError(f"config key 'backbones.{name}.model': required when source is 'hub'")
        if backbone["source"] == "pretrain" and not {"size", "pretrain"} <= backbone.keys():
            raise ConfigError(f"config key 'backbones.{name}': source 'pretrain' needs 'size' and 'pretrain'")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # the schema's name pattern, matched whole (its `$` lets a final newline through)


def _check_values(config: dict) -> None:
    """What the schema lets through: a number that is not finite (YAML's .nan, .inf) anywhere, and a
    name (of a task, method or backbone, a table or figure id) with anything beyond its pattern."""
    def walk(value, key: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}': {value} is not a finite number")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}")

    walk(config, "")
    names = [(f"{kind}.{name!r}", name) for kind in ("tasks", "methods", "backbones") for name in config.get(kind) or {}]
    names += [(f"{kind}.{i}.id", spec.get("id")) for kind in ("tables", "figures") for i, spec in enumerate(config.get(kind) or [])]
    for key, name in names:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ConfigError(f"config key '{key}': {name!r} is not a name (letters, digits, '_' and '-', "
                              "starting with a letter or digit)")


def _check_metric(name: str, task: dict) -> None:
    """A task scores one of its family's metrics (its rules' METRICS, lorarepro.domain.families.rules); any but
    the family's default reaches the scorer through the manifest of hub or local data (lorarepro.domain.data.external)."""
    metric = task.get("metric")
    if metric is None:
        return
    rules = FAMILIES[task["family"]].load_rules()
    if metric not in rules.METRICS:
        raise ConfigError(f"config key 'tasks.{name}.metric': family {task['family']} scores one of "
                          f"{', '.join(rules.METRICS)}, not '{metric}'")
    if metric != rules.METRIC and task["source"] in GENERATED_SOURCES:
        raise ConfigError(f"config key 'tasks.{name}.metric': '{metric}' is for tasks with hub or local data "
                          "(a generated task scores its family's default)")
    extra, modules = getattr(rules, "EXTRAS", {}).get(metric, (None, ()))
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"config key 'tasks.{name}.metric': '{metric}' needs {', '.join(missing)}, not installed "
                          f"here: pip install -c constraints.txt -e \".[{extra}]\"")


def _check_lm_eval(name: str, task: dict, config: dict) -> None:
    """`metric: lm_eval` and the `lm_eval` benchmarks go together; their names become metrics of the
    run, so they may not be data splits, and nothing selects a checkpoint by a metric never computed."""
    benchmarks = task.get("lm_eval")
    if (task.get("metric") == "lm_eval") != bool(benchmarks):
        raise ValueError(f"config key 'tasks.{name}.lm_eval': give benchmarks exactly when metric is lm_eval")
    if not benchmarks:
        return
    harness.check(name, benchmarks)
    clash = sorted(set(benchmarks) & set(task["splits"]))
    if clash:
        raise ValueError(f"config key 'tasks.{name}.lm_eval': names {clash} are also data splits")
    selection = {**config["training"][task["family"]], **(task.get("training") or {})}.get("checkpoint_selection")
    if selection == "best_validation_metric":
        raise ValueError(f"config key 'tasks.{name}.training.checkpoint_selection': lm_eval tasks have no "
                         "validation metric (best_validation_loss uses the validation split)")


def _check_methods(config: dict, runs: dict) -> None:
    for name, method in config["methods"].items():
        if method["adapter"] is not None:
            _check_adapter(name, method["adapter"])
        keys = [key for key in methods.STRATEGIES if method.get(key) is not None]
        if len(keys) > 1:
            raise ConfigError(f"config key 'methods.{name}.{keys[1]}': {' and '.join(keys)} are step strategies; choose one")
        sam = method.get("sam")
        if sam is not None and method["adapter"] is None and methods.settings("sam", None, sam)["space"] != "trainable":
            raise ConfigError(f"config key 'methods.{name}.sam.space': full fine-tuning has no adapter; use space trainable")
    for task_name, name in reported_pairs(config):
        adapter, task = config["methods"][name]["adapter"], config["tasks"][task_name]
        if adapter is None:
            continue
        backbone = config["backbones"][task["backbone"]]
        smallest = _smallest_linear_dim(backbone)
        if smallest is not None and max_rank(adapter) is not None and max_rank(adapter) > smallest:
            key = "adapter.adalora.init_r" if adapter["type"] == "adalora" else "adapter.r"
            raise ConfigError(
                f"config key 'methods.{name}.{key}': rank {max_rank(adapter)} exceeds the smallest "
                f"linear dimension {smallest} of backbone '{task['backbone']}' (task '{task_name}')"
            )
        flat = runs[(task_name, name)].strategies["flat"]
        if adapter.get("init") in MUTATING_INITS and flat is not None and flat["mode"] == "inplace":
            raise ConfigError(
                f"config key 'methods.{name}.flat.mode': inplace restores W from the saved backbone, which "
                f"init '{adapter['init']}' rewrote; use mode exact (task '{task_name}')"
            )


def _check_distributed(config: dict, runs: dict) -> None:
    """Data-parallel ranks need one GPU each (or none at all: CPU ranks with gloo)."""
    for (task, method), run in runs.items():
        dp = distributed(run)
        processes, backend = dp["processes"], dp["backend"]
        gpu = resources(config, "train", task)["gpu"]
        where = f"tasks.{task}.resources.gpu" if "gpu" in (config["tasks"][task].get("resources") or {}) else "resources.train.gpu"
        if processes > 1 and gpu not in (0, processes):
            raise ConfigError(f"config key '{where}': {gpu} GPU(s) for training.distributed.processes = {processes} "
                              f"(task '{task}', method '{method}'); every rank needs its own GPU, so they must be equal")
        if processes > 1 and gpu == 0 and backend == "nccl":
            raise ConfigError(f"config key 'training.distributed.backend': nccl needs GPUs, but task '{task}' declares "
                              f"{where} = 0 (use gloo or auto for CPU ranks)")


def _check_adapter(name: str, adapter: dict) -> None:
    """Combinations the schema cannot express; each error names the offending key. A tuner outside
    the LoRA family is checked by PEFT itself: its config class built from the entry."""
    key = f"methods.{name}.adapter"
    if adapter["type"] not in LORA_TYPES:
        try:
            tuner_config(adapter, adapter.get("target_modules"), None)  # imports PEFT: only for such a tuner
        except ValueError as err:
            field, _, why = str(err).partition(": ")
            raise ConfigError(f"config key 'methods.{name}.{field}': {why}") from None
        return
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


def run_specs(config: dict) -> dict[tuple[str, str], RunSpec]:
    """{(task, method): resolved run} of every run some table, figure or claim reads."""
    return {pair: resolve_run(config, *pair) for pair in reported_pairs(config)}


def resolve_run(config: dict, task: str, method: str) -> RunSpec:
    """Everything one (task, method) run needs, with defaults deep-merged: family < method < task;
    a step strategy's settings: its defaults < the family's `training.<key>` < the method's entry."""
    if task not in config["tasks"]:
        raise ConfigError(f"unknown task '{task}' (known: {sorted(config['tasks'])})")
    if method not in config["methods"]:
        raise ConfigError(f"unknown method '{method}' (known: {sorted(config['methods'])})")
    task_cfg, method_cfg = config["tasks"][task], config["methods"][method]
    training = deep_merge(config["training"][task_cfg["family"]], method_cfg.get("training") or {})
    training = deep_merge(training, task_cfg.get("training") or {})
    strategies = {}
    for key in methods.STRATEGIES:
        family_defaults = training.pop(key, None)
        entry = method_cfg.get(key)
        strategies[key] = None if entry is None else methods.settings(key, family_defaults, entry)
    dtype = config["backbones"][task_cfg["backbone"]].get("dtype", "float32")
    return RunSpec(task=task, method=method, family=task_cfg["family"], backbone=task_cfg["backbone"],
                   adapter=method_cfg["adapter"], training=training, strategies=strategies,
                   threads=config.get("threads", 1), numerics=config.get("numerics", "portable"),
                   backbone_dtype=None if dtype == "float32" else dtype)


def distributed(run: RunSpec) -> dict:
    """A resolved run's data-parallel settings with defaults (processes 1: the plain single-process path)."""
    return {**DISTRIBUTED, **(run.training.get("distributed") or {})}
