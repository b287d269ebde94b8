"""MLflow tracking: runs end FINISHED or FAILED (with the error), params and metrics land, parents link."""

import pytest

from lorarepro import tracking


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LORAREPRO_MLFLOW_PARENT", raising=False)
    return {"mlflow": {"experiment": "test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}


def _client(config):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=config["mlflow"]["tracking_uri"])


def test_finished_run_has_params_metrics_and_series(config):
    with tracking.run(config, "t/m/seed0", {"training": {"lr": 0.1}, "seed": 0}, {"task": "t"}) as tracker:
        tracker.metrics({"test": 81.5})
        tracker.series("train_loss", [3.0, 2.0, 1.0])
    run = _client(config).get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"training.lr": "0.1", "seed": "0"}
    assert run.data.metrics["test"] == 81.5 and run.data.tags["task"] == "t"
    history = _client(config).get_metric_history(tracker.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]


def test_failed_run_is_marked_with_the_error(config):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.run(config, "t/m/seed0", {}, {}) as tracker:
            raise RuntimeError("boom at step 3")
    run = _client(config).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: boom at step 3"


def test_environment_parent_links_children(config, monkeypatch):
    parent = tracking.start_parent(config, "snakemake")
    monkeypatch.setenv("LORAREPRO_MLFLOW_PARENT", parent)
    with tracking.run(config, "child", {}, {}) as tracker:
        pass
    tracking.end_parent(config, parent, "FINISHED")
    client = _client(config)
    assert client.get_run(tracker.run_id).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).info.status == "FINISHED"


def test_tracking_uri_from_environment_wins(config, tmp_path, monkeypatch):
    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    tracking.init(config)
    assert (tmp_path / "other.db").is_file() and not (tmp_path / "mlflow.db").exists()
