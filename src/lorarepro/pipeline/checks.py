"""Config checks that need the reporting layer, which the domain's `experiment.check` may not
import: the Snakefile runs them before any job (so `snakemake -n` already fails), the CLI after
loading a config; and what a config merged over params.yaml would replace of the default's files."""

from lorarepro.core import paths
from lorarepro.core.config import ConfigError, column, read, reported_runs, specs
from lorarepro.domain import records
from lorarepro.domain.experiment import run_specs

SHOWN = 3  # paths named in the notice; the rest are counted


def check_reporting(config: dict) -> None:
    """No claim or table average mixes metrics on different scales (lorarepro.reporting.claims.check_measures);
    every figure names a registered drawer: its `kind`, by default its id (lorarepro.reporting.figures.FIGURES)."""
    from lorarepro.reporting.claims import check_measures  # deferred: pandas, scipy

    check_measures(config)
    figures = config.get("figures") or []
    if not figures:
        return
    from lorarepro.reporting.figures import FIGURES  # deferred: matplotlib, only when figures are configured

    for spec in figures:
        kind = spec.get("kind", spec["id"])
        if kind not in FIGURES:
            key = f"figures.{spec['id']}.kind" if "kind" in spec else f"figures.{spec['id']}"
            raise ConfigError(f"config key '{key}': no figure kind '{kind}' (known: {sorted(FIGURES)}); a figure is "
                              "drawn by its `kind`, which defaults to its id")


def replaced_defaults(config: dict, runs: dict, config_id: str) -> str | None:
    """One line naming the embedded default's files (params.yaml's runs, tables and figures) that this
    config, merged over params.yaml, would replace at the paths they share; None when it replaces none.
    `runs`: this config's resolved runs (experiment.check). A seed counts where its (task, method)
    resolves to other settings than the default's, or reads other inputs (the task's data, the
    backbone: their entries and seeds), and its result JSON holds the default's run now: its record,
    loss history, flatness and checkpoint, the prepared data and backbone it replaces, and the tables
    and figures of the same id as the default's that read it."""
    default = read(paths.PARAMS)
    theirs, seeds = run_specs(default), reported_runs(default)
    ours = reported_runs(config)
    changed, files = set(), []
    inputs = {pair: [_inputs(c, spec) for c, spec in ((config, runs[pair]), (default, theirs[pair]))]
              for pair in runs.keys() & theirs.keys()}
    for pair in sorted(inputs):
        if runs[pair].as_dict() == theirs[pair].as_dict() and inputs[pair][0] == inputs[pair][1]:
            continue
        for seed in sorted(set(ours[pair]) & set(seeds[pair])):
            if _recorded(*pair, seed) == theirs[pair].as_dict():  # the default's run, not yet replaced
                changed.add(pair)
                files += [p for p in (paths.run_result(*pair, seed), paths.run_history(*pair, seed),
                                      paths.run_sharpness(*pair, seed), paths.checkpoint_dir(*pair, seed)) if p.exists()]
    for task, backbone in sorted({(t, runs[t, m].backbone) for t, m in changed if inputs[t, m][0] != inputs[t, m][1]}):
        files += [p for p in (paths.prepared_dir(task), paths.backbone_dir(backbone)) if p.exists() and p not in files]
    shown = []
    for kind, where, variants in (("tables", paths.table, ("", "_significance", "_cost")), ("figures", paths.figure, ("",))):
        for name, spec in specs(config, kind).items():
            if name in specs(default, kind) and any((column(t)[0], m) in changed for t in spec["tasks"] for m in spec["methods"]):
                shown += [p for v in variants for p in sorted(where(name + v, "*").parent.glob(f"{name}{v}.*"))]
    files = shown + files  # the tables first: what a reader of the default looks at
    if not files:
        return None
    return (f"WARNING: config '{config_id}' changes {len(changed)} of the default's runs (params.yaml: "
            f"{_first([f'{t}/{m}' for t, m in sorted(changed)])}) and will replace {len(files)} of the default's files "
            f"at the paths they share: {_first(files)}; a complete config with `standalone: true` writes under "
            f"{paths.OUTPUTS / config_id}/ instead")


def _inputs(config: dict, spec) -> tuple:
    """What a run reads besides its own settings: its task's data entry and seed, its backbone's entry
    and seed (a change to either regenerates the data or the backbone, and every run on it)."""
    return (config["tasks"].get(spec.task), config.get("data_seed"), config["backbones"].get(spec.backbone),
            config.get("backbone_seed"))


def _first(items: list) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(str(i) for i in items[:SHOWN]) + more


def _recorded(task: str, method: str, seed: int) -> dict | None:
    """The run settings a result JSON records (its `config`), or None when it is absent or unreadable."""
    try:
        return (records.read(task, method, seed) or {}).get("config")
    except (OSError, ValueError, AttributeError):
        return None
