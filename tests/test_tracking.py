"""MLflow tracking: runs end FINISHED or FAILED (with the error), params and metrics land, parents link."""

import os

import pytest

from lorarepro.core import tracking


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



def test_metrics_for_a_run_of_another_store_are_skipped_with_a_warning(config):
    """A result JSON pulled from another machine names a run this store lacks: flatness measured
    here must not fail the job."""
    with tracking.run(config, "t/m/seed0", {}, {}) as tracker:
        pass
    assert tracking.log_metrics(config, tracker.run_id, {"hessian_top": 2.0})
    assert _client(config).get_run(tracker.run_id).data.metrics["hessian_top"] == 2.0
    with pytest.warns(UserWarning, match="not logged"):
        assert not tracking.log_metrics(config, "0" * 32, {"hessian_top": 2.0})


STRESS_STEPS = 30


def _stress_worker(uri: str, i: int) -> str:
    """One training job's MLflow traffic: per-step writes, a loss series, eval metrics, tags."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    config = {"mlflow": {"experiment": "stress"}}
    with tracking.run(config, f"job{i}", {"training": {"lr": i}}, {"job": i}) as tracker:
        for step in range(STRESS_STEPS):
            tracker.metrics({"grad_norm": step}, step=step)
        tracker.series("train_loss", [1.0 / (s + 1) for s in range(STRESS_STEPS * 10)])
        tracker.metrics({"test": i})
        tracker.tags({"checkpoint_sha256": f"{i:064x}"})
    return tracker.run_id


@pytest.mark.slow
def test_concurrent_processes_lose_no_run_or_metric(tmp_path, config):
    """16 processes write to one SQLite store at once (as 16 parallel Snakemake jobs do)."""
    import multiprocessing
    import sqlite3
    from concurrent.futures import ProcessPoolExecutor

    jobs = 16
    uri = config["mlflow"]["tracking_uri"]
    tracking.init({"mlflow": {"experiment": "stress", "tracking_uri": uri}})  # as Snakemake's onstart does
    context = multiprocessing.get_context("forkserver")  # fresh processes, but MLflow imported only once
    context.set_forkserver_preload(["mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        run_ids = list(pool.map(_stress_worker, [uri] * jobs, range(jobs)))
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        status = dict(db.execute("select run_uuid, status from runs").fetchall())
        counts = db.execute("select key, count(*) from metrics group by key").fetchall()
        tags = db.execute("select count(*) from tags where key = 'checkpoint_sha256'").fetchone()[0]
    assert sorted(status) == sorted(run_ids) and set(status.values()) == {"FINISHED"}
    assert dict(counts) == {"grad_norm": jobs * STRESS_STEPS, "train_loss": jobs * STRESS_STEPS * 10, "test": jobs}
    assert tags == jobs


def test_next_invocation_here_ends_what_a_killed_one_left_running(config, tmp_path, monkeypatch):
    """A SIGKILLed pipeline leaves its runs RUNNING; the next start in the same directory (Snakemake's
    lock: nothing else runs there) ends them KILLED, and leaves other directories' runs alone."""
    client = _client(config)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    other = tracking.start_parent(config, "snakemake")  # a live invocation in another directory
    monkeypatch.chdir(tmp_path)
    killed = tracking.start_parent(config, "snakemake")
    monkeypatch.setenv("LORAREPRO_MLFLOW_PARENT", killed)
    with tracking.run(config, "t/m/seed0", {}, {}) as finished:
        pass
    child = tracking.run(config, "t/m/seed1", {}, {})
    interrupted = child.__enter__()  # never exits: the process "died" mid-run
    monkeypatch.delenv("LORAREPRO_MLFLOW_PARENT")
    tracking.start_parent(config, "snakemake")
    status = {run_id: client.get_run(run_id).info.status for run_id in (other, killed, finished.run_id, interrupted.run_id)}
    assert status == {other: "RUNNING", killed: "KILLED", finished.run_id: "FINISHED", interrupted.run_id: "KILLED"}
    assert "killed" in client.get_run(interrupted.run_id).data.tags["error"]


RESULT = {"metric": "accuracy", "metrics": {"test": 81.5, "validation": 80.0, "ood_s1": None},
          "resources": {"seconds": 3.0, "seconds_per_step": 0.012, "step_peak_mb": 41.5, "peak_rss_mb": 566.9},
          "train": {"trainable_params": 29322, "total_params": 98516}}


def test_runs_follow_mlflow_conventions(config, tmp_path):
    """The UI opens the runs (experiment kind), fills Source, User, commit and Dataset, and metric names
    say what they measure, cost included (Table 6 comparable in MLflow)."""
    with tracking.run(config, "t/m/seed0", {}, {"task": "t"}) as tracker:
        tracker.dataset("t", "ab" * 32, tmp_path)
        tracker.metrics(tracking.run_metrics(RESULT))
    client = _client(config)
    run = client.get_run(tracker.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] and tags["mlflow.user"]
    assert len(tags["mlflow.source.git.commit"]) == 40  # the tests run in the project's checkout
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "t" and "ab" * 32 in dataset.dataset.profile
    assert dataset.dataset.source == str(tmp_path) and dataset.tags[0].value == "train"
    assert run.data.metrics == {"test_accuracy": 81.5, "validation_accuracy": 80.0, "seconds_per_step": 0.012,
                                "step_peak_mb": 41.5, "peak_rss_mb": 566.9, "train_seconds": 3.0,
                                "trainable_params": 29322, "total_params": 98516}
    sharp = {"expected_sharpness": {"0.05": 0.3}, "hessian_top": None}
    assert tracking.run_metrics(sharpness=sharp) == {"expected_sharpness_rho0.05": 0.3}
    assert tracking.run_metrics({"metric": "pass@1,x", "metrics": {"test": 1}})["test_pass_1_x"] == 1.0


def test_an_existing_experiment_gets_its_kind(config):
    client = _client(config)
    experiment_id = client.create_experiment(config["mlflow"]["experiment"])
    assert tracking.init(config) == experiment_id
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_finished_parent_carries_params_artifacts_and_headline_numbers(config, tmp_path, monkeypatch):
    from lorarepro.core import paths

    monkeypatch.chdir(tmp_path)
    config = {**config, "seeds": [0, 1], "tasks": {}, "methods": {}, "tables": [], "figures": [{"id": "fig", "tasks": ["t"], "methods": ["lora"]}]}
    parent = tracking.start_parent(config, "snakemake", "", [])
    for path, text in {paths.metrics_summary(): '{"table_a/lora/t1": 80.5, "table_a/lora/Avg": null}',
                       paths.tables_index(): '{"tables": [{"id": "table_a", "files": ["results/tables/table_a.md"]}]}',
                       paths.table("table_a", "md"): "| a |", paths.figure("fig", "png"): "png",
                       paths.claims("md"): "claims", paths.audit_report(): "audit"}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tracking.finish_parent(config, parent, "")
    tracking.end_parent(config, parent, "FINISHED")
    client = _client(config)
    run = client.get_run(parent)
    assert run.data.params["seeds"] == "0,1" and run.data.params["config_id"] == "default" and run.data.params["runs"] == "2"
    assert run.data.tags["mlflow.source.name"] == "Snakefile"
    assert run.data.metrics == {"table_a/lora/t1": 80.5}
    listed = {f.path for folder in ("tables", "figures", "claims", "audit") for f in client.list_artifacts(parent, folder)}
    assert listed == {"tables/table_a.md", "tables/index.json", "tables/metrics.json", "figures/fig.png",
                      "claims/claims.md", "audit/report.md"}


def test_a_dataset_another_job_added_at_the_same_moment_is_reused(config, tmp_path, monkeypatch):
    """Parallel jobs on one task insert the same dataset at once; MLflow's unique constraint fails
    the loser, whose next try finds the winner's row."""
    from mlflow.exceptions import MlflowException

    with tracking.run(config, "t/m/seed0", {}, {}) as first:
        first.dataset("t", "cd" * 32, tmp_path)
    with tracking.run(config, "t/m/seed1", {}, {}) as second:
        real, calls = second.client.log_inputs, []

        def racing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
            return real(*args, **kwargs)

        monkeypatch.setattr(second.client, "log_inputs", racing)
        second.dataset("t", "cd" * 32, tmp_path)
    inputs = [_client(config).get_run(r.run_id).inputs.dataset_inputs for r in (first, second)]
    assert len(calls) == 2 and inputs[0][0].dataset == inputs[1][0].dataset
