"""The MLflow store, opened read-only: the audit never creates or changes state.

MlflowClient on a SQLite URI creates the database (and mlruns/) when it is absent and may migrate
it, so the audit reads a SQLite store through sqlite3 in read-only mode (`mode=ro`: every write
fails) and MLflow's own tables (runs, params, tags, latest_metrics, metrics). Any other store (a
tracking server, MLFLOW_TRACKING_URI=http://…) is read through MlflowClient, which creates nothing
there. A run's artifacts (the result JSON and config.json that training logged) are read from the
store's own mlruns/ (where a copied project's are: lorarepro.core.tracking.relocate_artifacts) or the
run's local artifact URI.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from lorarepro.core import tracking
from lorarepro.audit.inputs import problem


@dataclass
class TrackedRun:
    run_id: str
    name: str
    status: str
    lifecycle_stage: str
    experiment_id: str
    artifact_uri: str
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each
    tags: dict[str, str] = field(default_factory=dict)


class StoreAbsent(Exception):
    """No store to read (its message says why, naming it); `where` is what was looked for."""

    def __init__(self, where: str, why: str):
        self.where, self.why = where, why
        super().__init__(f"{where}: {why}")


def uri_of(config: dict) -> str:
    settings = config.get("mlflow") or {}
    return os.environ.get("MLFLOW_TRACKING_URI") or settings.get("tracking_uri", "sqlite:///mlflow.db")


def open_store(config: dict):
    """The configured store, read-only; StoreAbsent when there is none (nothing is created)."""
    uri = uri_of(config)
    if uri.startswith("sqlite:///"):
        return SqliteStore(Path(uri.removeprefix("sqlite:///")))
    if uri.startswith("file:") or "://" not in uri:
        root = Path(unquote(urlparse(uri).path) if uri.startswith("file:") else uri)
        if not root.is_dir():
            raise StoreAbsent(str(root), "MLflow file store not found")
    return ClientStore(uri)


def local_path(uri: str) -> Path | None:
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri) if "://" not in uri else None


class SqliteStore:
    """MLflow's SQLite database, opened with sqlite3 read-only."""

    def __init__(self, db: Path):
        self.where = str(db)
        why = problem(db)
        if why is not None:
            raise StoreAbsent(self.where, f"MLflow store {why}" if why != "missing" else "MLflow store not found")
        if db.stat().st_size == 0:
            raise StoreAbsent(self.where, "MLflow store is empty (0 bytes)")
        self.root = db.resolve().parent
        try:
            self.db = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
            self.db.execute("select count(*) from runs").fetchone()
        except sqlite3.DatabaseError as err:
            raise StoreAbsent(self.where, f"not an MLflow SQLite store ({err})") from None

    def count(self) -> int:
        return self.db.execute("select count(*) from runs").fetchone()[0]

    def get(self, run_id: str) -> TrackedRun | None:
        row = self.db.execute("select run_uuid, name, status, lifecycle_stage, experiment_id, artifact_uri, end_time "
                              "from runs where run_uuid = ?", (run_id,)).fetchone()
        if row is None:
            return None
        run = TrackedRun(row[0], row[1] or "", row[2], row[3], str(row[4]), row[5] or "", row[6])
        run.params = dict(self.db.execute("select key, value from params where run_uuid = ?", (run_id,)))
        run.tags = dict(self.db.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        run.metrics = {k: (float("nan") if nan else v) for k, v, nan in
                       self.db.execute("select key, value, is_nan from latest_metrics where run_uuid = ?", (run_id,))}
        return run

    def history(self, run_id: str, key: str) -> list[tuple[int, float, int]]:
        """(step, value, timestamp) of every value logged for `key`, by step then time."""
        rows = self.db.execute("select step, value, is_nan, timestamp from metrics where run_uuid = ? and key = ? "
                               "order by step, timestamp", (run_id, key))
        return [(s, float("nan") if nan else v, t) for s, v, nan, t in rows]

    def artifacts(self, run: TrackedRun) -> Path | None:
        """The run's local artifact directory: this store's own mlruns/ first (a copied project),
        then the artifact URI the store records."""
        own = self.root / "mlruns" / run.experiment_id / run.run_id / "artifacts"
        if own.is_dir():
            return own
        recorded = local_path(run.artifact_uri)
        return recorded if recorded is not None and recorded.is_dir() else None

    def local_artifacts_of(self, run_ids) -> list[str]:
        return local_artifacts(self.root, run_ids)


def local_artifacts(root: Path, run_ids) -> list[str]:
    """The ids among `run_ids` whose artifacts lie under root/mlruns/<experiment>/<run id>/."""
    base = Path(root) / "mlruns"
    if not base.is_dir():
        return []
    return [r for r in run_ids if r and any(p.is_dir() for p in base.glob(f"*/{r}"))]


class ClientStore:
    """Any store MlflowClient reads without creating it (a tracking server, an existing file store)."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient  # deferred: only a non-SQLite store needs it

        self.where, self.client = uri, MlflowClient(tracking_uri=uri)
        self.root = Path.cwd()

    def count(self) -> int:
        return -1  # unknown without listing every experiment: callers treat it as "some"

    def get(self, run_id: str) -> TrackedRun | None:
        from mlflow.exceptions import MlflowException  # deferred: as above

        try:
            tracked = tracking._retry(self.client.get_run, run_id)
        except MlflowException:
            return None
        info = tracked.info
        return TrackedRun(info.run_id, info.run_name or "", info.status, info.lifecycle_stage, str(info.experiment_id),
                          info.artifact_uri or "", info.end_time, dict(tracked.data.params),
                          dict(tracked.data.metrics), dict(tracked.data.tags))

    def history(self, run_id: str, key: str) -> list[tuple[int, float, int]]:
        return sorted((m.step, m.value, m.timestamp) for m in self.client.get_metric_history(run_id, key))

    def artifacts(self, run: TrackedRun) -> Path | None:
        recorded = local_path(run.artifact_uri)
        return recorded if recorded is not None and recorded.is_dir() else None

    def local_artifacts_of(self, run_ids) -> list[str]:
        return local_artifacts(self.root, run_ids)
