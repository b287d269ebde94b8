"""MLflow tracking: one MLflow run per training run, in a local SQLite store unless configured.

MLFLOW_TRACKING_URI in the environment overrides the config's tracking_uri, so a team server
needs no config change. The store and experiment are created once before jobs fan out (`init`),
because concurrent first use of one SQLite file races on schema creation.

MLflow stores artifact locations as absolute paths, so a copied or moved project would keep writing
into (and its UI showing) the original's mlruns/: `init` moves the locations of a project's own
store (mlflow.db in the working directory) to its mlruns/ (MLflow has no API for it: mlflow#3144).

Runs follow MLflow's own conventions, as its UI expects them: the experiment's kind (else the UI
opens on GenAI traces), the source/user/git tags mlflow.start_run would set, the prepared data as a
dataset input, and metric names that say what they measure (`run_metrics`, the one naming).
"""

import contextlib
import getpass
import json
import math
import os
import re
import socket
import time
import warnings
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils import mlflow_tags

from lorarepro.core import paths
from lorarepro.core.config import reported_runs, specs
from lorarepro.core.runinfo import git_state

# MLflow 3's UI opens an experiment without this tag on its GenAI traces page, not on its runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def mlflow_client(config: dict):
    """A client bound to the configured store; no global MLflow state (set_tracking_uri leaks
    into os.environ and so into every subprocess)."""
    settings = config.get("mlflow") or {}
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.get("tracking_uri", "sqlite:///mlflow.db")
    return MlflowClient(tracking_uri=uri), settings.get("experiment", "lorarepro")


def _retry(fn, *args, attempts: int = 8, **kwargs):
    """SQLite allows one writer at a time; parallel jobs retry briefly instead of failing."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # mlflow wraps sqlite's OperationalError in several types
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)


def init(config: dict) -> str:
    """Create the store and the experiment (idempotent); returns the experiment id."""
    client, name = mlflow_client(config)
    experiment = _retry(client.get_experiment_by_name, name)
    if experiment is None:
        try:
            return _retry(client.create_experiment, name, tags=EXPERIMENT_KIND)
        except MlflowException as exc:  # another process created it first
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = _retry(client.get_experiment_by_name, name)
    for key, value in EXPERIMENT_KIND.items():  # an experiment made before the tag was set
        if experiment.tags.get(key) != value:
            _retry(client.set_experiment_tag, experiment.experiment_id, key, value)
    if _moved(client.tracking_uri, experiment.artifact_location):
        _retry(relocate_artifacts, client.tracking_uri)
    return experiment.experiment_id


def _own_store(uri: str) -> Path | None:
    """The project directory of a SQLite store kept in the working directory (the default layout)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return db.parent if db.parent == Path.cwd().resolve() else None


def _moved(uri: str, location: str) -> bool:
    """The experiment's artifacts live in another project's mlruns/ than this store's."""
    root = _own_store(uri)
    where = Path(location)
    return root is not None and where.is_absolute() and where.parent.name == "mlruns" and where.parent != root / "mlruns"


def relocate_artifacts(uri: str) -> int:
    """Point every experiment and run of this project's store that names another directory's mlruns/
    at this project's mlruns/ (MLflow's own tables, through its SQLAlchemy models); returns how many
    locations moved. The files themselves came with the copy."""
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun  # deferred: only a moved store needs them
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # deferred: as above

    root = str(_own_store(uri) / "mlruns")
    moved = 0
    with SqlAlchemyStore(uri, root).ManagedSessionMaker(read_only=False) as session:
        for experiment in session.query(SqlExperiment).all():
            if not _moved(uri, experiment.artifact_location):
                continue
            old = str(Path(experiment.artifact_location).parent)
            experiment.artifact_location = root + experiment.artifact_location[len(old):]
            for run in session.query(SqlRun).filter(SqlRun.experiment_id == experiment.experiment_id).all():
                if run.artifact_uri.startswith(old + "/"):
                    run.artifact_uri = root + run.artifact_uri[len(old):]
                    moved += 1
            moved += 1
    return moved


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def system_tags(source: str) -> dict:
    """The tags mlflow.start_run adds and client.create_run does not (the UI's Source, User and
    commit): who ran it, from what, at which commit."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = str(os.getuid())
    tags = {mlflow_tags.MLFLOW_USER: user, mlflow_tags.MLFLOW_SOURCE_TYPE: "LOCAL",
            mlflow_tags.MLFLOW_SOURCE_NAME: source}
    git = git_state()
    if git["commit"]:
        tags[mlflow_tags.MLFLOW_GIT_COMMIT] = git["commit"]
        tags[mlflow_tags.MLFLOW_GIT_DIRTY] = str(git["dirty"]).lower()
    return tags


COST = {"seconds_per_step": ("resources", "seconds_per_step"), "step_peak_mb": ("resources", "step_peak_mb"),
        "peak_rss_mb": ("resources", "peak_rss_mb"), "train_seconds": ("resources", "seconds"),
        "trainable_params": ("train", "trainable_params"), "total_params": ("train", "total_params")}


def run_metrics(result: dict | None = None, sharpness: dict | None = None) -> dict[str, float]:
    """MLflow's name and value for each number of a run record (the one naming, for every writer and
    the audit): a split's score says its metric (`test_accuracy`), then the cost the paper's Table 6
    compares; with `sharpness` (lorarepro.stages.sharpness.measure_run), the flatness measured on the run."""
    out = {}
    if result is not None:
        metric = result.get("metric") or "score"
        out.update({f"{split}_{metric}": v for split, v in (result.get("metrics") or {}).items()})
        out.update({name: (result.get(section) or {}).get(key) for name, (section, key) in COST.items()})
    if sharpness is not None:
        out.update({f"expected_sharpness_rho{rho}": v for rho, v in sharpness["expected_sharpness"].items()})
        out["hessian_top_eigenvalue"] = (sharpness.get("hessian_top") or {}).get("eigenvalue")
    return {_safe(k): float(v) for k, v in out.items() if v is not None}


def _safe(name: str) -> str:
    """MLflow allows letters, digits and _-. :/ in a metric name (lm_eval's "pass@1,create_test" fails)."""
    return re.sub(r"[^\w\-. :/]", "_", name)


@contextlib.contextmanager
def run(config: dict, name: str, params: dict, tags: dict, source: str = "lorarepro.stages.training.train"):
    """A tracked run; ends FAILED with the error message if the body raises."""
    client, _ = mlflow_client(config)
    experiment_id = init(config)
    tags = {**system_tags(source), **{k: str(v) for k, v in tags.items()}}
    parent = os.environ.get("LORAREPRO_MLFLOW_PARENT")
    if parent:
        tags["mlflow.parentRunId"] = parent
    created = _retry(client.create_run, experiment_id, run_name=name, tags=tags)
    run_id = created.info.run_id
    params = {k: str(v) for k, v in flatten(params).items()}
    _retry(client.log_batch, run_id, params=[Param(k, v) for k, v in params.items()])
    tracker = Tracker(client, run_id)
    try:
        yield tracker
    except BaseException as exc:
        _retry(client.set_tag, run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        _retry(client.set_terminated, run_id, "FAILED")
        raise
    _retry(client.set_terminated, run_id, "FINISHED")


class Tracker:
    """Batched logging into one run (one write per call keeps SQLite contention low)."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def metrics(self, values: dict, step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        _retry(self.client.log_batch, self.run_id, metrics=batch)

    def series(self, key: str, values: list[float]) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, float(v), now, i) for i, v in enumerate(values)]
        for start in range(0, len(batch), 1000):  # MLflow caps a batch at 1000 metrics
            _retry(self.client.log_batch, self.run_id, metrics=batch[start : start + 1000])

    def tags(self, values: dict) -> None:
        _retry(self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def artifact(self, path, folder: str | None = None) -> None:
        _retry(self.client.log_artifact, self.run_id, str(path), folder)

    def dataset(self, task: str, sha256: str, source) -> None:
        """The prepared data as the run's input (the UI's Dataset column). MLflow's digest column holds
        36 characters: the full sha256 goes in the profile."""
        data = Dataset(name=task, digest=sha256[:16], source_type="local", source=str(Path(source).resolve()),
                       profile=f'{{"sha256": "{sha256}"}}')
        context = InputTag(key=mlflow_tags.MLFLOW_DATASET_CONTEXT, value="train")
        for attempt in range(3):
            try:
                return _retry(self.client.log_inputs, self.run_id, [DatasetInput(data, [context])])
            except MlflowException as exc:  # parallel jobs adding the same dataset: the loser finds it next time
                if "unique constraint" not in str(exc).lower() or attempt == 2:
                    raise

    def dict_artifact(self, values: dict, name: str) -> None:
        """A small JSON artifact (e.g. the resolved config) written straight from memory."""
        _retry(self.client.log_dict, self.run_id, values, name)


CHILD_KILLED = "killed: its job's process died without ending the run (kill -9, the out-of-memory killer)"


def start_parent(config: dict, name: str, config_id: str = "", configfiles=()) -> str:
    """The run of one pipeline invocation; training runs become its children (via the environment).
    Its params: the config's id and --configfile files ("params.yaml" when none), seeds, and how many
    tasks, methods and training runs it covers. First, the runs a hard-killed invocation in this
    working directory left RUNNING are ended KILLED."""
    client, _ = mlflow_client(config)
    experiment_id = init(config)
    workdir = f"{socket.gethostname()}:{os.getcwd()}"
    end_orphans(client, experiment_id, workdir)
    tags = {**system_tags("Snakefile"), "lorarepro.kind": "pipeline", "lorarepro.workdir": workdir}
    run_id = _retry(client.create_run, experiment_id, run_name=name, tags=tags).info.run_id
    runs = reported_runs(config)
    params = {"config_id": config_id or "default", "configfiles": ",".join(configfiles) or "params.yaml",
              "seeds": ",".join(map(str, config.get("seeds") or [])), "tasks": len({t for t, _ in runs}),
              "methods": len({m for _, m in runs}), "runs": sum(len(s) for s in runs.values())}
    _retry(client.log_batch, run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run_id


def end_orphans(client, experiment_id: str, workdir: str) -> list[str]:
    """Snakemake holds a lock on its working directory, so when a new invocation starts, no other
    one runs there: every run of this directory still RUNNING was killed without a chance to end,
    a pipeline run (Snakemake SIGKILLed, power loss) or a training run whose own process died while
    its pipeline went on (kill -9, the out-of-memory killer). Returns the ids marked KILLED."""
    here: dict[str, bool] = {}

    def pipeline_here(run_id: str) -> bool:
        if run_id not in here:
            try:
                tags = _retry(client.get_run, run_id).data.tags
            except MlflowException:
                tags = {}
            here[run_id] = tags.get("lorarepro.kind") == "pipeline" and tags.get("lorarepro.workdir") == workdir
        return here[run_id]

    ended = []
    for run in _retry(client.search_runs, [experiment_id], "attributes.status = 'RUNNING'"):
        pipeline = run.data.tags.get("lorarepro.kind") == "pipeline"
        owner = run.info.run_id if pipeline else run.data.tags.get("mlflow.parentRunId")
        if owner and pipeline_here(owner):
            _end_killed(client, run.info.run_id, "killed: its pipeline invocation ended without ending it" if pipeline
                        else CHILD_KILLED)
            ended.append(run.info.run_id)
    return ended


def _end_killed(client, run_id: str, why: str) -> None:
    _retry(client.set_tag, run_id, "error", why)
    _retry(client.set_terminated, run_id, "KILLED")


def end_parent(config: dict, run_id: str, status: str) -> list[str]:
    """End a pipeline run once every job has ended; a child still RUNNING then lost its process
    (kill -9 or the out-of-memory killer on the training job alone) and is ended KILLED. Returns
    the ids of those children."""
    client = mlflow_client(config)[0]
    experiment_id = _retry(client.get_run, run_id).info.experiment_id
    running = _retry(client.search_runs, [experiment_id],
                     f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'RUNNING'")
    for child in running:
        _end_killed(client, child.info.run_id, CHILD_KILLED)
    _retry(client.set_terminated, run_id, status)
    return [child.info.run_id for child in running]


def finish_parent(config: dict, run_id: str, config_id: str = "") -> None:
    """What a successful invocation made, on its pipeline run: the tables, figures, claims, audit and
    report (when `snakemake --report` made one) as artifacts, the headline numbers (the metrics
    summary, `table/method/column`) as metrics."""
    tracker = Tracker(mlflow_client(config)[0], run_id)
    for folder, files in _parent_artifacts(config, config_id).items():
        for path in files:
            if path.is_file():
                tracker.artifact(path, folder)
    summary = paths.metrics_summary(config_id)
    if summary.is_file():
        values = {_safe(k): v for k, v in json.loads(summary.read_text()).items()
                  if isinstance(v, int | float) and math.isfinite(v)}
        for start in range(0, len(values), 1000):  # MLflow caps a batch at 1000 metrics
            tracker.metrics(dict(list(values.items())[start : start + 1000]))


def _parent_artifacts(config: dict, config_id: str) -> dict[str, list[Path]]:
    index = paths.tables_index(config_id)
    listed = [Path(f) for t in json.loads(index.read_text())["tables"] for f in t["files"]] if index.is_file() else []
    tables = [f for f in listed if f.parent == index.parent]  # the index also lists claims: once, below
    figures = [paths.figure(f, ext) for f in specs(config, "figures") for ext in ("png", "pdf")]
    return {"tables": [*tables, paths.tables_index(config_id), paths.metrics_summary(config_id)],
            "figures": figures, "claims": [where(ext, config_id) for where in (paths.claims, paths.claims_cost)
                                           for ext in ("md", "csv", "json")],
            "audit": [paths.audit_report(config_id), paths.audit_json(config_id)],
            "report": [paths.RESULTS / "report.html"]}


EVALUATED_AGAIN = "lorarepro.evaluated_again"  # metrics a later evaluation changed, comma-separated


def log_metrics(config: dict, run_id: str, values: dict, evaluated: bool = False) -> bool:
    """Add metrics to an existing (possibly finished) run, e.g. flatness measured after training.

    A result JSON pulled from elsewhere (a clone, `dvc pull`) names a run of another store: warn
    and skip rather than fail the job; returns whether the metrics were logged."""
    client, _ = mlflow_client(config)
    try:
        tracked = _retry(client.get_run, run_id).data
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        warnings.warn(f"MLflow run {run_id} is not in {client.tracking_uri}; metrics {sorted(values)} not logged")
        return False
    # `evaluated` (lorarepro evaluate): a split scored now for the first time changed the record too
    changed = {k for k, v in values.items() if (k in tracked.metrics and tracked.metrics[k] != float(v))
               or (evaluated and k not in tracked.metrics)}
    if changed:  # the audit accepts a metric's earlier values only for these (lorarepro evaluate)
        before = set(filter(None, tracked.tags.get(EVALUATED_AGAIN, "").split(",")))
        Tracker(client, run_id).tags({EVALUATED_AGAIN: ",".join(sorted(before | changed))})
    Tracker(client, run_id).metrics(values)
    return True
