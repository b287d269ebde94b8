"""Every output path of the pipeline, computed from (task, method, seed) in one place.

Paths are relative to the working directory (the repository root when Snakemake runs), so the
Snakefile and the Python entry points agree on them without passing strings around.

Where a config's outputs live is chosen once per invocation (`select`, by the Snakefile and the
`lorarepro` command): the repository root for the embedded default and every config merged over it,
`outputs/<config id>/` for a standalone config, so that it never replaces the default's files. The
choice lives in the environment, so every job Snakemake starts (and the warm server's forks) sees
it; DATA, MODELS, CHECKPOINTS, RESULTS, LOGS and RESUME are read under it at each use (module
`__getattr__`). Importing this module changes nothing.
"""

import os
from pathlib import Path

PARAMS = Path("params.yaml")  # the embedded default, the base every --configfile merges over
JUDGE_CACHE = Path("judge_cache")  # judge replies by content (lorarepro.domain.evaluation.judge): a rerun does not pay twice
JUDGE_PROMPTS = JUDGE_CACHE / "fastchat_judge_prompts.jsonl"  # FastChat's grading prompts, downloaded once (sha256-checked)
FASTCHAT = Path("data") / "fastchat"  # FastChat's MT-Bench files in its repository layout, downloaded once (lorarepro.core.pinned)
BACKBONE_MARKER = "lorarepro_backbone.json"
OUTPUTS = Path("outputs")  # a standalone config's outputs: outputs/<config id>/{data,models,checkpoints,results,logs}
ROOT_ENV = "LORAREPRO_OUTPUTS"  # the selected root (`select`), inherited by every job
_FOLDERS = {"DATA": "data", "MODELS": "models", "CHECKPOINTS": "checkpoints", "RESULTS": "results", "LOGS": "logs",
            "RESUME": "resume"}


def select(config_id: str, standalone: bool) -> Path:
    """Choose where this config's outputs go, before any path is computed; returns the root. A
    standalone config is complete and apart from the default, so its data, backbones, checkpoints,
    results and logs go under outputs/<config id>/; a config merged over params.yaml shares the
    default's paths (a run it changes replaces the default's: the Snakefile says which files)."""
    chosen = OUTPUTS / config_id if standalone and config_id else Path(".")
    os.environ[ROOT_ENV] = str(chosen)
    return chosen


def root() -> Path:
    """The selected root (`select`); the working directory when none was selected."""
    return Path(os.environ.get(ROOT_ENV) or ".")


def _folder(name: str) -> Path:
    """One of the selected root's folders (_FOLDERS), at the time of the call."""
    return root() / _FOLDERS[name]


def __getattr__(name: str) -> Path:
    if name in _FOLDERS:  # read at each use: a module that imported paths before `select` still sees the choice
        return _folder(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def prepared_dir(task: str) -> Path:
    return _folder("DATA") / "prepared" / task


def manifest(task: str) -> Path:
    return prepared_dir(task) / "manifest.json"


def pretext_dir(backbone: str) -> Path:
    return _folder("DATA") / "pretext" / backbone


def backbone_dir(backbone: str) -> Path:
    return _folder("MODELS") / backbone


def backbone_done(backbone: str) -> Path:
    """Marker written last by the backbone rule: its presence means the directory is complete."""
    return backbone_dir(backbone) / BACKBONE_MARKER


def checkpoint_dir(task: str, method: str, seed: int) -> Path:
    return _folder("CHECKPOINTS") / task / method / f"seed{seed}"


def resume_dir(task: str, method: str, seed: int) -> Path:
    """Step checkpoints for resuming an interrupted run: outside Snakemake's declared outputs and
    DVC's `checkpoints` (a half-finished run is not an artifact); deleted when the run finishes."""
    return _folder("RESUME") / task / method / f"seed{seed}"


def run_result(task: str, method: str, seed: int) -> Path:
    return _folder("RESULTS") / "runs" / task / method / f"seed{seed}.json"


def run_history(task: str, method: str, seed: int) -> Path:
    """Per-step training loss of one run (CSV), beside its result JSON."""
    return _folder("RESULTS") / "runs" / task / method / f"seed{seed}.history.csv"


def run_sharpness(task: str, method: str, seed: int) -> Path:
    """Flatness measures of one run's merged model (lorarepro.stages.sharpness), beside its result JSON."""
    return _folder("RESULTS") / "runs" / task / method / f"seed{seed}.sharpness.json"


def pair_sharpness(task: str, method: str) -> Path:
    """Written last by sharpness.measure_pair: which runs of (task, method) were measured (a fixed output)."""
    return _folder("RESULTS") / "runs" / task / method / "sharpness.json"


def table(table_id: str, ext: str) -> Path:
    return _folder("RESULTS") / "tables" / f"{table_id}.{ext}"


def config_id(configfiles=()) -> str:
    """The name a config's own tables index, metrics summary and audit carry: "" for params.yaml
    alone (the embedded default, whose files DVC tracks), else the stems of its --configfile files
    joined by "+" (`--configfile workflow/configs/paper.yaml` -> "paper"), so that a run with another
    config never overwrites the default's (a standalone config's whole folder: `select`).
    `--configfile params.yaml` names the default itself."""
    base = Path(PARAMS).resolve()
    return "+".join(Path(f).stem for f in configfiles if Path(f).resolve() != base)


def _per_config(path: Path, config: str) -> Path:
    return path.with_name(f"{path.stem}.{config}{path.suffix}") if config else path


def tables_index(config: str = "") -> Path:
    """Which run files each table was computed from (`config`: see config_id)."""
    return _per_config(_folder("RESULTS") / "tables" / "index.json", config)


def figure(figure_id: str, ext: str) -> Path:
    return _folder("RESULTS") / "figures" / f"{figure_id}.{ext}"


def claims(ext: str, config: str = "") -> Path:
    """The verdict on each claim of the paper (lorarepro.reporting.claims): md, csv or json; per config
    (`config`: see config_id), so that another config's claims never replace the default's."""
    return _per_config(_folder("RESULTS") / f"claims.{ext}", config)


def claims_cost(ext: str, config: str = "") -> Path:
    """The claims on a measured cost (time, memory), apart from paths.claims (they vary between runs): md, csv or json."""
    return _per_config(_folder("RESULTS") / f"claims_cost.{ext}", config)


def cost_table(table_id: str, ext: str) -> Path:
    """The measured cost (time, memory) of a `cost: true` table's methods, apart from the table itself."""
    return table(f"{table_id}_cost", ext)


# The embedded default's committed records that every config reads, at the repository root whichever root is selected.
COMMITTED = Path("results")
REGISTRATION = COMMITTED / "preregistration.json"  # the registered regime, claims and analysis (lorarepro register)
BENCHMARKS = COMMITTED / "benchmarks"  # benchmarks/*.py, run by hand and committed
# The overhead benchmark's records (benchmarks/flat_overhead.py), the 7B GPU one first: the claims
# bound to the paper's scale are judged by the first that exists.
OVERHEAD_BENCHMARKS = (BENCHMARKS / "flat_overhead_7b.json", BENCHMARKS / "flat_overhead.json")


def measured_outputs() -> list[str]:
    """Glob patterns (from the repository root) of the committed results files holding measurements that vary between runs."""
    return [(COMMITTED / "claims_cost.*").as_posix(), (COMMITTED / "tables" / "*_cost.*").as_posix(),
            (BENCHMARKS / "**").as_posix(), (COMMITTED / "screenshots" / "**").as_posix()]


def metrics_summary(config: str = "") -> Path:
    return _per_config(_folder("RESULTS") / "metrics.json", config)


def audit_report(config: str = "") -> Path:
    """The audit for people (lorarepro.audit): one line per check, failures first; written by the
    pipeline's audit rule only (a manual `lorarepro audit` writes manual_audit_report)."""
    return _per_config(_folder("RESULTS") / "audit" / "report.md", config)


def audit_json(config: str = "") -> Path:
    """The audit for machines: every record, the counts, the paper comparison."""
    return _per_config(_folder("RESULTS") / "audit" / "audit.json", config)


def manual_audit_report(config: str = "") -> Path:
    """`lorarepro audit`'s report, apart from the pipeline's (audit_report): Snakemake decides whether
    its audit rule runs from the rule's own files, so a manual audit must never write them."""
    return _per_config(_folder("RESULTS") / "audit" / "manual" / "report.md", config)


def manual_audit_json(config: str = "") -> Path:
    """`lorarepro audit`'s JSON, apart from the pipeline's (audit_json; see manual_audit_report)."""
    return _per_config(_folder("RESULTS") / "audit" / "manual" / "audit.json", config)


def caption(item_id: str) -> Path:
    """The caption `snakemake --report` shows beside a table, figure or the audit (lorarepro.reporting.captions)."""
    return _folder("RESULTS") / "report" / "captions" / f"{item_id}.rst"


def log(*parts: str) -> Path:
    return _folder("LOGS").joinpath(*parts[:-1], f"{parts[-1]}.log")
