"""MLflow tracking: one MLflow run per training run, in a local SQLite store unless configured.

MLFLOW_TRACKING_URI in the environment overrides the config's tracking_uri, so a team server
needs no config change. The store and experiment are created once before jobs fan out (`init`),
because concurrent first use of one SQLite file races on schema creation.
"""

import contextlib
import os
import socket
import time
import warnings

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


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
    return experiment.experiment_id if experiment else _retry(client.create_experiment, name)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@contextlib.contextmanager
def run(config: dict, name: str, params: dict, tags: dict):
    """A tracked run; ends FAILED with the error message if the body raises."""
    client, _ = mlflow_client(config)
    experiment_id = init(config)
    tags = {k: str(v) for k, v in tags.items()}
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

    def artifact(self, path) -> None:
        _retry(self.client.log_artifact, self.run_id, str(path))

    def dict_artifact(self, values: dict, name: str) -> None:
        """A small JSON artifact (e.g. the resolved config) written straight from memory."""
        _retry(self.client.log_dict, self.run_id, values, name)


def start_parent(config: dict, name: str) -> str:
    """The run of one pipeline invocation; training runs become its children (via the environment).
    First, the runs a hard-killed invocation in this working directory left RUNNING are ended KILLED."""
    client, _ = mlflow_client(config)
    experiment_id = init(config)
    workdir = f"{socket.gethostname()}:{os.getcwd()}"
    end_orphans(client, experiment_id, workdir)
    tags = {"lorarepro.kind": "pipeline", "lorarepro.workdir": workdir}
    return _retry(client.create_run, experiment_id, run_name=name, tags=tags).info.run_id


def end_orphans(client, experiment_id: str, workdir: str) -> list[str]:
    """Snakemake holds a lock on its working directory, so when a new invocation starts, no other
    one runs there: pipeline runs of this directory still RUNNING, and their RUNNING children, were
    killed without a chance to end (SIGKILL, power loss). Returns the ids marked KILLED."""
    running = "attributes.status = 'RUNNING'"
    parents = [r for r in _retry(client.search_runs, [experiment_id], f"tags.`lorarepro.kind` = 'pipeline' and {running}")
               if r.data.tags.get("lorarepro.workdir") == workdir]
    ended = []
    for parent in parents:
        children = _retry(client.search_runs, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and {running}")
        for run in children + [parent]:
            _retry(client.set_tag, run.info.run_id, "error", "killed: its pipeline invocation ended without ending it")
            _retry(client.set_terminated, run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended


def end_parent(config: dict, run_id: str, status: str) -> None:
    _retry(mlflow_client(config)[0].set_terminated, run_id, status)


def log_metrics(config: dict, run_id: str, values: dict) -> bool:
    """Add metrics to an existing (possibly finished) run, e.g. flatness measured after training.

    A result JSON pulled from elsewhere (a clone, `dvc pull`) names a run of another store: warn
    and skip rather than fail the job; returns whether the metrics were logged."""
    client, _ = mlflow_client(config)
    try:
        _retry(client.get_run, run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        warnings.warn(f"MLflow run {run_id} is not in {client.tracking_uri}; metrics {sorted(values)} not logged")
        return False
    Tracker(client, run_id).metrics(values)
    return True
