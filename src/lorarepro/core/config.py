"""Experiment configuration: read, deep-merge and schema-validate the YAML files; the sections
every layer reads (tables, figures, the (task, method) pairs they report, each rule's resources).

The JSON schema (workflow/schemas/params.schema.yaml) checks shapes and documents every key. The
cross-references a schema cannot express (a table naming an unknown method, a rank larger than
the layer) need the registries of the domain: `lorarepro.domain.experiment` adds them, and resolves one
run's settings. Both run before any job starts: Snakemake calls them when it builds the DAG, and
every entry point loads the config again (`experiment.load`), so a job never trusts an unchecked file.
"""

import copy
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "params.schema.yaml"
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


def read(*paths: str | Path) -> dict:
    """Read YAML files in order (later ones deep-merge over earlier), validate them against the
    schema and fill in its defaults. A file with `standalone: true` is complete: what came before it
    is dropped (as in the Snakefile)."""
    config: dict = {}
    for path in paths:
        data = read_yaml(path)
        config = copy.deepcopy(data) if data.get("standalone") else deep_merge(config, data)
    validate_schema(config)
    # The schema's defaults, filled in by the same function the Snakefile calls, so a run's recorded
    # settings (resolved inside Snakemake) and this config agree (the audit compares them).
    from snakemake.utils import validate as snakemake_validate  # deferred: snakemake's import costs ~0.5 s

    snakemake_validate(config, str(SCHEMA), set_default=True)
    return config


def read_yaml(path: str | Path) -> dict:
    """One config file as a mapping; a missing file, a YAML error (with its line and column) or a
    top level that is not a mapping is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def validate_schema(config: dict) -> None:
    """The schema alone; raises ConfigError naming the offending key."""
    import jsonschema  # deferred: a training job only resolves its run (~0.3 s of its start-up)

    with open(SCHEMA) as fh:
        schema = yaml.safe_load(fh)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise ConfigError(f"config key '{key}': {error.message}")


CLAIM_MEASURES = ("accuracy", "severity_slope", "sharpness", "time_overhead", "memory_overhead", "time_saving")
CLAIM_KINDS = ("superior", "bound", "non_inferior")


def read_claims(path: str | Path) -> dict:
    """The paper's claims (workflow/configs/claims.yaml): {claim id: {statement, measure, kind, paper}};
    a wrong entry is an error naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"claims file not found: {path} (config key 'claims.reference')")
    with open(path, encoding="utf-8") as fh:
        claims = yaml.safe_load(fh) or {}
    if not isinstance(claims, dict):
        raise ConfigError(f"{path}: top level must map claim ids to claims")
    for name, claim in claims.items():
        where = f"{path}: claim '{name}'"
        if not isinstance(claim, dict) or not {"statement", "measure", "kind", "paper"} <= claim.keys():
            raise ConfigError(f"{where} needs statement, measure, kind and paper")
        if claim["measure"] not in CLAIM_MEASURES:
            raise ConfigError(f"{where}: measure '{claim['measure']}' (known: {', '.join(CLAIM_MEASURES)})")
        if claim["kind"] not in CLAIM_KINDS:
            raise ConfigError(f"{where}: kind '{claim['kind']}' (known: {', '.join(CLAIM_KINDS)})")
        paper = claim["paper"] or {}
        if claim["kind"] != "superior" and paper.get("value") is None:
            raise ConfigError(f"{where}: a {claim['kind']} claim needs paper.value (its bound or margin)")
    return claims


def entry(config: dict, section: str, key: str) -> dict:
    """config[section][key], or a KeyError naming both (a table, figure or claim refers to it)."""
    entries = config.get(section) or {}
    if key not in entries:
        raise KeyError(f"{section}: no entry {key!r} (a table or figure refers to it)")
    return entries[key]


def specs(config: dict, kind: str) -> dict:
    """The `tables` or `figures` list as {id: spec}, in config order."""
    return {spec["id"]: spec for spec in config.get(kind) or []}


def sharpness_specs(config: dict) -> dict:
    """The tables whose runs get flatness measures (`sharpness: true`, the default), as {id: spec}."""
    return {k: spec for k, spec in specs(config, "tables").items() if spec.get("sharpness", True)}


def spec_seeds(config: dict, spec: dict) -> list[int]:
    """The seeds a table, figure or claim reads: its own `seeds`, else the config's."""
    return list(spec.get("seeds") or config["seeds"])


def claim_comparisons(config: dict) -> dict:
    """The claims this config tests, {claim id: comparison} in config order (lorarepro.reporting.claims)."""
    return {entry["claim"]: entry for entry in (config.get("claims") or {}).get("comparisons") or []}


def column(name: str) -> tuple[str, str]:
    """A table column, `task` (its test metric) or `task:metric` (another metric of the same runs, e.g.
    the benchmarks of an lm_eval task: `alpaca:mmlu`), as (task, metric name)."""
    task, _, split = name.partition(":")
    return task, split or "test"


def reported_runs(config: dict) -> dict[tuple[str, str], list[int]]:
    """{(task, method): seeds} of every run some table, figure or claim reads: only these are trained
    and checked, each with the union of the seeds that read it."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for kind in ("tables", "figures"):
        for spec in specs(config, kind).values():
            for pair in ((column(t)[0], m) for t in spec["tasks"] for m in spec["methods"]):
                wanted.setdefault(pair, set()).update(spec_seeds(config, spec))
    for comparison in claim_comparisons(config).values():
        for pair in ((t, m) for t in comparison["tasks"] for ms in comparison["pairs"] for m in ms):
            wanted.setdefault(pair, set()).update(spec_seeds(config, comparison))
    return {pair: sorted(seeds) for pair, seeds in sorted(wanted.items())}


def sharpness_runs(config: dict) -> dict[tuple[str, str], list[int]]:
    """{(task, method): seeds} whose flatness is measured (where the config has a `sharpness:`
    section): the runs of the tables with `sharpness: true`."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for spec in sharpness_specs(config).values():
        for pair in ((column(t)[0], m) for t in spec["tasks"] for m in spec["methods"]):
            wanted.setdefault(pair, set()).update(spec_seeds(config, spec))
    return {pair: sorted(seeds) for pair, seeds in sorted(wanted.items())}


def reported_pairs(config: dict) -> list[tuple[str, str]]:
    """(task, method) pairs some table, figure or claim needs, sorted."""
    return list(reported_runs(config))


def resources(config: dict, rule: str, task: str | None = None) -> dict:
    """What one job of `rule` declares: defaults < config `resources.<rule>` < the task's `resources` (train only)."""
    out = {"gpu": 0, **DEFAULT_RESOURCES[rule], **((config.get("resources") or {}).get(rule) or {})}
    if rule == "train" and task is not None:
        out.update(config["tasks"][task].get("resources") or {})
    return out


def own_experiment(config: dict, config_id: str, default: dict) -> str:
    """A standalone config's MLflow experiment: its own name, or, where it names the embedded default's
    (`default`: params.yaml as read; e.g. a copy of it made standalone), that name with its config id
    appended, so that its runs never join the default's experiment."""
    name = config["mlflow"]["experiment"]
    return f"{name}-{config_id}" if name == (default.get("mlflow") or {}).get("experiment") else name


def backbone_seed(config: dict) -> int:
    """The backbones' own draw; data_seed's value where a config does not set one (older configs)."""
    return config.get("backbone_seed", config["data_seed"])


def jobs_mode(config: dict, local: bool) -> str:
    """How training is split into jobs: `jobs: auto` (the default) is per_method for local execution
    without GPUs, per_seed on a cluster or with GPUs (where seeds run in parallel on their own)."""
    mode = config.get("jobs", "auto")
    if mode != "auto":
        return mode
    gpus = any(resources(config, "train", task)["gpu"] for task in config["tasks"])
    return "per_method" if local and not gpus else "per_seed"


def check_local(config: dict, cpus: int | None) -> None:
    """Settings beyond this machine, for local execution only (a cluster profile may ask for more)."""
    if cpus and config.get("threads", 1) > cpus:
        raise ConfigError(f"config key 'threads': {config['threads']} threads per job, but this machine has {cpus} CPUs")


def train_priorities(config: dict, specs: dict, runs: dict) -> dict:
    """{(task, method): Snakemake priority 1..9} of the per_method train jobs: the longest first
    (optimizer steps over all their seeds; a task without declared sizes counts 1,000 examples), so
    that short jobs fill the cores at the end instead of one long job running alone. Below the
    data and backbone rules' 10: those gate every train job of their task."""
    def steps(task: str, method: str) -> int:
        training = specs[(task, method)].training
        examples = ((config["tasks"][task].get("sizes") or {}).get("train")) or 1000
        examples = max(1, round(examples * training.get("train_fraction", 1.0)))
        return len(runs[(task, method)]) * training["epochs"] * -(-examples // training["batch_size"])

    cost = {pair: steps(*pair) for pair in runs}
    most = max(cost.values(), default=1)
    return {pair: 1 + round(8 * c / most) for pair, c in cost.items()}
