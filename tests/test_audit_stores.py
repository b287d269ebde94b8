"""The audit reads the MLflow store read-only, never creates one, never passes plainly without it,
and holds what MLflow's API can change after a run finished against what training logged."""

import json
import shutil
import sqlite3

import pytest

from lorarepro.audit import stores
from conftest import failing, run_audit

RUN = "results/runs/digits/lora_r8/seed0.json"


def test_a_missing_store_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(stores.StoreAbsent, match="MLflow store not found"):
        stores.open_store({})
    (tmp_path / "mlflow.db").write_bytes(b"")
    with pytest.raises(stores.StoreAbsent, match="empty"):
        stores.open_store({})
    (tmp_path / "mlflow.db").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, no mlruns/


def test_the_store_is_read_read_only(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("x", artifact_location=str(tmp_path / "mlruns" / "1"))
    run_id = client.create_run(experiment, run_name="t/m/seed0", tags={"seed": "0"}).info.run_id
    client.log_param(run_id, "seed", "0")
    for step, value in enumerate((1.0, 0.5)):
        client.log_metric(run_id, "train_loss", value, step=step)
    client.set_terminated(run_id, "FINISHED")
    before = (tmp_path / "mlflow.db").read_bytes()
    store = stores.open_store({"mlflow": {"tracking_uri": "sqlite:///mlflow.db"}})
    tracked = store.get(run_id)
    assert (tracked.name, tracked.status, tracked.params, tracked.tags["seed"]) == ("t/m/seed0", "FINISHED", {"seed": "0"}, "0")
    assert tracked.metrics == {"train_loss": 0.5} and [v for _, v, _ in store.history(run_id, "train_loss")] == [1.0, 0.5]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.db.execute("delete from runs")
    assert (tmp_path / "mlflow.db").read_bytes() == before and store.get("nope") is None


# ----------------------------------------------------------------------------- on a finished pipeline



def _client(repo):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


@pytest.mark.slow
def test_removed_store_fails_while_mlruns_holds_its_runs_and_nothing_is_created(repo):
    (repo / "mlflow.db").unlink()
    result = run_audit()
    assert not (repo / "mlflow.db").exists()
    assert "the store that tracked them in this checkout is gone" in failing(result)[("mlflow", "mlflow.db")]


@pytest.mark.slow
def test_store_and_artifacts_absent_pass_only_as_not_checked(repo):
    (repo / "mlflow.db").unlink()
    shutil.rmtree(repo / "mlruns")
    result = run_audit(reevaluate=1)
    assert result["passed"] and result["not_checked"] == ["MLflow not checked (store absent)"]
    assert not run_audit(reevaluate=1, strict=True)["passed"]
    assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()


@pytest.mark.slow
def test_set_tag_after_the_run_with_a_matching_record_fails_against_the_logged_result(repo):
    result = json.loads((repo / RUN).read_text())
    result["lineage"]["git_commit"] = "f" * 40
    (repo / RUN).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    _client(repo).set_tag(result["lineage"]["mlflow_run_id"], "git_commit", "f" * 40)
    detail = failing(run_audit())[("mlflow", RUN)]
    assert "field 'lineage' differs from the result JSON training logged" in detail and "git_commit" in detail


@pytest.mark.slow
def test_log_metric_with_the_evaluated_again_tag_is_re_evaluated_and_fails(repo):
    from lorarepro.core.tracking import EVALUATED_AGAIN

    run = "results/runs/digits/full_ft/seed0.json"
    result = json.loads((repo / run).read_text())
    result["metrics"]["test"] += 3.0
    (repo / run).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    client, run_id = _client(repo), result["lineage"]["mlflow_run_id"]
    client.log_metric(run_id, f"test_{result['metric']}", result["metrics"]["test"])
    client.set_tag(run_id, EVALUATED_AGAIN, f"test_{result['metric']}")
    result = run_audit(reevaluate=0)  # no sample: the changed run is re-evaluated all the same
    (again,) = [r for r in result["records"] if r["check"] == "reevaluate" and r["file"] == run]
    # fails on the recorded metric (skips only where this process cannot compute under the run's numerics)
    assert again["status"] == "fail" and "metrics recorded vs re-evaluated" in again["detail"] or (
        again["status"] == "skip" and "numerics" in again["detail"])
    assert not result["passed"]


@pytest.mark.slow
def test_edited_logged_config_artifact_fails_naming_it(repo):
    from lorarepro.audit.stores import open_store

    run_id = json.loads((repo / RUN).read_text())["lineage"]["mlflow_run_id"]
    store = open_store({})
    folder = store.artifacts(store.get(run_id))
    config = json.loads((folder / "config.json").read_text())
    config["training"]["lr"] = 0.5
    (folder / "config.json").write_text(json.dumps(config))
    assert "config.json training logged differs" in failing(run_audit())[("mlflow", RUN)]
