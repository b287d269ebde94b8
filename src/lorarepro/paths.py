"""Every output path of the pipeline, computed from (task, method, seed) in one place.

Paths are relative to the working directory (the repository root when Snakemake runs), so the
Snakefile and the Python entry points agree on them without passing strings around.
"""

from pathlib import Path

PARAMS = Path("params.yaml")  # the embedded default, the base every --configfile merges over
DATA = Path("data")
MODELS = Path("models")
CHECKPOINTS = Path("checkpoints")
RESULTS = Path("results")
LOGS = Path("logs")
RESUME = Path("resume")
JUDGE_CACHE = Path("judge_cache")  # judge replies by content (lorarepro.evaluation.judge): a rerun does not pay twice
JUDGE_PROMPTS = JUDGE_CACHE / "fastchat_judge_prompts.jsonl"  # FastChat's grading prompts, downloaded once (sha256-checked)
FASTCHAT = DATA / "fastchat"  # FastChat's MT-Bench files in its repository layout, downloaded once (lorarepro.pinned)
BACKBONE_MARKER = "lorarepro_backbone.json"


def prepared_dir(task: str) -> Path:
    return DATA / "prepared" / task


def manifest(task: str) -> Path:
    return prepared_dir(task) / "manifest.json"


def pretext_dir(backbone: str) -> Path:
    return DATA / "pretext" / backbone


def backbone_dir(backbone: str) -> Path:
    return MODELS / backbone


def backbone_done(backbone: str) -> Path:
    """Marker written last by the backbone rule: its presence means the directory is complete."""
    return backbone_dir(backbone) / BACKBONE_MARKER


def checkpoint_dir(task: str, method: str, seed: int) -> Path:
    return CHECKPOINTS / task / method / f"seed{seed}"


def resume_dir(task: str, method: str, seed: int) -> Path:
    """Step checkpoints for resuming an interrupted run: outside Snakemake's declared outputs and
    DVC's `checkpoints` (a half-finished run is not an artifact); deleted when the run finishes."""
    return RESUME / task / method / f"seed{seed}"


def run_result(task: str, method: str, seed: int) -> Path:
    return RESULTS / "runs" / task / method / f"seed{seed}.json"


def run_history(task: str, method: str, seed: int) -> Path:
    """Per-step training loss of one run (CSV), beside its result JSON."""
    return RESULTS / "runs" / task / method / f"seed{seed}.history.csv"


def run_sharpness(task: str, method: str, seed: int) -> Path:
    """Flatness measures of one run's merged model (lorarepro.sharpness), beside its result JSON."""
    return RESULTS / "runs" / task / method / f"seed{seed}.sharpness.json"


def pair_sharpness(task: str, method: str) -> Path:
    """Written last by sharpness.measure_pair: which runs of (task, method) were measured (a fixed output)."""
    return RESULTS / "runs" / task / method / "sharpness.json"


def table(table_id: str, ext: str) -> Path:
    return RESULTS / "tables" / f"{table_id}.{ext}"


def config_id(configfiles=()) -> str:
    """The name a config's own tables index, metrics summary and audit carry: "" for params.yaml
    alone (the embedded default, whose files DVC tracks), else the stems of its --configfile files
    joined by "+" (`--configfile workflow/configs/paper.yaml` -> "paper"), so that a run with another
    config never overwrites the default's. `--configfile params.yaml` names the default itself."""
    base = Path(PARAMS).resolve()
    return "+".join(Path(f).stem for f in configfiles if Path(f).resolve() != base)


def _per_config(path: Path, config: str) -> Path:
    return path.with_name(f"{path.stem}.{config}{path.suffix}") if config else path


def tables_index(config: str = "") -> Path:
    """Which run files each table was computed from (`config`: see config_id)."""
    return _per_config(RESULTS / "tables" / "index.json", config)


def figure(figure_id: str, ext: str) -> Path:
    return RESULTS / "figures" / f"{figure_id}.{ext}"


def claims(ext: str, config: str = "") -> Path:
    """The verdict on each claim of the paper (lorarepro.reporting.claims): md, csv or json; per config
    (`config`: see config_id), so that another config's claims never replace the default's."""
    return _per_config(RESULTS / f"claims.{ext}", config)


def claims_cost(ext: str, config: str = "") -> Path:
    """The claims on a measured cost (time, memory), apart from paths.claims (they vary between runs): md, csv or json."""
    return _per_config(RESULTS / f"claims_cost.{ext}", config)


def cost_table(table_id: str, ext: str) -> Path:
    """The measured cost (time, memory) of a `cost: true` table's methods, apart from the table itself."""
    return table(f"{table_id}_cost", ext)


REGISTRATION = RESULTS / "preregistration.json"  # the registered regime, claims and analysis (lorarepro register)
# The overhead benchmark's records (benchmarks/flat_overhead.py, run by hand and committed), the 7B
# GPU one first: the claims bound to the paper's scale are judged by the first that exists.
OVERHEAD_BENCHMARKS = (RESULTS / "benchmarks" / "flat_overhead_7b.json", RESULTS / "benchmarks" / "flat_overhead.json")


def measured_outputs() -> list[str]:
    """Glob patterns (from the repository root) of the results files holding measurements that vary between runs."""
    return [claims_cost("*").as_posix(), cost_table("*", "*").as_posix(),
            (RESULTS / "benchmarks" / "**").as_posix(), (RESULTS / "screenshots" / "**").as_posix()]


def metrics_summary(config: str = "") -> Path:
    return _per_config(RESULTS / "metrics.json", config)


def audit_report(config: str = "") -> Path:
    """The audit for people (lorarepro.audit): one line per check, failures first."""
    return _per_config(RESULTS / "audit" / "report.md", config)


def audit_json(config: str = "") -> Path:
    """The audit for machines: every record, the counts, the paper comparison."""
    return _per_config(RESULTS / "audit" / "audit.json", config)


def caption(item_id: str) -> Path:
    """The caption `snakemake --report` shows beside a table, figure or the audit (lorarepro.reporting.captions)."""
    return RESULTS / "report" / "captions" / f"{item_id}.rst"


def log(*parts: str) -> Path:
    return LOGS.joinpath(*parts[:-1], f"{parts[-1]}.log")
