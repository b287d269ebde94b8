"""Data-parallel training (lorarepro.stages.training.ranks, lorarepro.pipeline.launcher) with real ranks: torch.distributed.run, CPU, gloo.

Agreement with one process (same global batch): ranks split every micro-batch and DDP averages their
gradients, so the N-rank run is the 1-process run up to floating-point summation order. Measured
here (tiny Llama, 6 AdamW steps, fp32): adapter weights within 6e-8 (LoRA) and 1.1e-7 (Flat-LoRA),
final loss within 1e-8 relative, same metrics; asserted at 1e-5. Weighting the shards by examples
instead of target tokens would miss by 2.7e-3 in the loss (checked), so the test sees that error.
"""

import copy
import json
import shutil
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lorarepro.core import paths
from lorarepro.core.config import ConfigError
from lorarepro.domain.experiment import validate
from lorarepro.pipeline.launcher import run_ranks

TASK = "arithmetic"
TOL = 1e-5
HERE = Path(__file__).resolve().parent


def _config(base: dict, processes: int) -> dict:
    """One seed; 25 examples a step in 2 micro-batches (13 + 12), so the ranks' shards are uneven."""
    cfg = copy.deepcopy(base)
    cfg["seeds"] = [0]
    cfg["training"]["generation"].update(batch_size=25, grad_accum=2, epochs=2)
    if processes > 1:
        cfg["training"]["generation"]["distributed"] = {"processes": processes, "backend": "gloo", "timeout_minutes": 2}
    return cfg


@pytest.fixture
def ddp_workspace(prepared_root, tmp_path, monkeypatch, params):
    """A private copy of the prepared workspace (the runs here write outputs) with its own MLflow store."""
    from conftest import reduced

    for item in ("data", "models"):
        shutil.copytree(prepared_root / item, tmp_path / item)
    monkeypatch.chdir(tmp_path)
    return reduced(params)


def _outputs(method: str) -> dict:
    return {"result": json.loads(paths.run_result(TASK, method, 0).read_text()),
            "history": paths.run_history(TASK, method, 0).read_text(),
            "adapter": load_file(paths.checkpoint_dir(TASK, method, 0) / "adapter_model.safetensors")}


def _mlflow_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora_r8", "flat_lora_r8"])
def test_two_ranks_match_one_process(ddp_workspace, tmp_path, monkeypatch, method):
    from lorarepro.domain.experiment import resolve_run
    from lorarepro.pipeline.launcher import train_job

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'one.db'}")
    one_cfg, two_cfg = _config(ddp_workspace, 1), _config(ddp_workspace, 2)
    train_job(one_cfg, resolve_run(one_cfg, TASK, method), [0])
    one = _outputs(method)
    uri = f"sqlite:///{tmp_path / 'two.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    [returned] = train_job(two_cfg, resolve_run(two_cfg, TASK, method), [0])
    two = _outputs(method)

    assert returned == two["result"]
    assert one["result"]["train"]["distributed"] == {"processes": 1, "backend": None}
    assert two["result"]["train"]["distributed"] == {"processes": 2, "backend": "gloo"}
    assert two["result"]["status"] == "FINISHED" and two["result"]["train"]["steps"] == one["result"]["train"]["steps"] == 6
    if method.startswith("flat"):
        assert two["result"]["flat"]["layers"] == one["result"]["flat"]["layers"] > 0
    # Same examples per step, gradients equal up to summation order: same losses and adapter.
    l1, l2 = one["result"]["train"]["final_loss"], two["result"]["train"]["final_loss"]
    assert abs(l1 - l2) <= TOL * abs(l1), (l1, l2)
    for row1, row2 in zip(one["history"].splitlines()[1:], two["history"].splitlines()[1:]):
        (s1, loss1, lr1), (s2, loss2, lr2) = row1.split(","), row2.split(",")
        assert s1 == s2 and lr1 == lr2 and abs(float(loss1) - float(loss2)) <= TOL * float(loss1), (row1, row2)
    assert one["adapter"].keys() == two["adapter"].keys()
    gap = max((one["adapter"][k] - two["adapter"][k]).abs().max().item() for k in one["adapter"])
    assert gap <= TOL, gap
    assert two["result"]["metrics"] == one["result"]["metrics"]
    print(f"{method}: 1 vs 2 ranks: final loss {l1!r} vs {l2!r}, adapter max |diff| {gap:.2e}")
    # Rank 0 alone writes: one result JSON, one MLflow run, and the JSON names that run.
    assert sorted(p.name for p in paths.run_result(TASK, method, 0).parent.iterdir()) == ["seed0.history.csv", "seed0.json"]
    runs = _mlflow_runs(uri)
    assert [(r.info.run_name, r.info.status) for r in runs] == [(f"{TASK}/{method}/seed0", "FINISHED")]
    assert two["result"]["lineage"]["mlflow_run_id"] == runs[0].info.run_id


@pytest.mark.slow
def test_ranks_perturb_identically_under_flat_and_sam(tmp_path):
    """Each rank trains its own shards with its own global RNG; at step 3 every rank holds the same
    W + eps (in-place Flat) and the same adapter; SAM-W on 2 ranks gives the 1-process adapter
    (tests/ddp_probe.py)."""
    out = tmp_path / "probe.json"
    run_ranks([str(HERE / "ddp_probe.py"), str(out)], 2, what="noise probe")
    probe = json.loads(out.read_text())
    assert probe["world"] == 2 and probe["noise_abs_sum"] > 0
    assert probe["perturbed_spread"] == 0.0 and probe["adapter_spread"] == 0.0
    # SAM-W ascends along the all-reduced (full-batch) gradient: 2 ranks train as 1 process.
    assert probe["sam_moved"] > 1e-3 and probe["sam_gap"] <= TOL, probe


def test_a_dying_rank_fails_the_job_without_hanging(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text("import os, sys, time\nif os.environ['RANK'] == '1':\n    sys.exit(3)\ntime.sleep(300)\n")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"data-parallel test job failed: torch.distributed.run exited with status 1"):
        run_ranks([str(script)], 2, what="test job")
    assert time.perf_counter() - start < 60  # the launcher stopped rank 0 instead of waiting for it


@pytest.mark.parametrize("change, key", [
    ({"resources": {"train": {"gpu": 1}}}, "resources.train.gpu"),
    ({"training": {"nlu": {"distributed": {"processes": 2, "backend": "nccl"}}}}, "training.distributed.backend"),
    ({"training": {"nlu": {"distributed": {"processes": 0}}}}, "training.nlu.distributed.processes"),
    ({"training": {"nlu": {"distributed": {"processes": 2, "fsdp": True}}}}, "training.nlu.distributed"),
])
def test_bad_distributed_settings_name_the_key(params, change, key):
    from lorarepro.core.config import deep_merge

    cfg = deep_merge(params, {"training": {"nlu": {"distributed": {"processes": 2}}}})
    validate(cfg)  # CPU ranks: no GPU resources declared
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(deep_merge(cfg, change))
