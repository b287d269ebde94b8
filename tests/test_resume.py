"""Faults during training: a run killed with SIGKILL resumes from its last step checkpoint with the
same result JSON; a state from another config is not used; a diverged run is a recorded FAILED outcome."""

import copy
import json
import subprocess
import sys

import pytest
import torch

from lorarepro.core import paths
from lorarepro.domain.experiment import resolve_run
from lorarepro.stages.training.loop import NonFiniteLoss
from lorarepro.stages.training.resume import STATE
from lorarepro.stages.training.train import train_task_method, train_one
from test_train import _stable

# Trains like the trainer, but SIGKILLs itself right after its second step checkpoint is written.
KILLED_RUN = """
import json, os, signal, sys
import torch
from lorarepro.stages.training import resume
from lorarepro.domain.experiment import resolve_run
from lorarepro.stages.training.train import train_one

saved = resume.StepCheckpoints.save
def save_then_die(self, steps_done, *args, **kwargs):
    saved(self, steps_done, *args, **kwargs)
    if steps_done == 2 * self.every:
        os.kill(os.getpid(), signal.SIGKILL)
resume.StepCheckpoints.save = save_then_die
torch.set_num_threads(1)
cfg = json.loads(sys.argv[1])
train_one(cfg, resolve_run(cfg, sys.argv[2], sys.argv[3]), seed=0)
"""


@pytest.fixture
def single_thread():
    """As in a training job (one thread per job): the killed process and this one must reduce alike."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _long_config(workspace: dict, mode: str | None = None) -> dict:
    """24 optimizer steps (3 epochs of 64 examples, batch 8), a step checkpoint every 5."""
    cfg = copy.deepcopy(workspace)
    cfg["checkpoint_every"] = 5
    for family in cfg["training"].values():
        family.update(epochs=3, batch_size=8)
    if mode:
        cfg["methods"]["flat_lora_r8"]["flat"] = {"mode": mode, "rho": 0.5}
    return cfg


def _outputs(task: str, method: str) -> dict:
    ckpt = paths.checkpoint_dir(task, method, 0)
    return {p.name: p.read_bytes() for p in sorted(ckpt.iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("task, method, mode", [
    ("sentiment", "flat_lora_r8", "exact"),
    ("sentiment", "flat_lora_r8", "inplace"),  # W carries rounding drift between steps: saved too
    ("digits", "lora_r8", None),  # a trained head beside the adapter
    ("arithmetic", "full_ft", None),
])
def test_killed_run_resumes_to_the_identical_result(workspace, capsys, single_thread, task, method, mode):
    cfg = _long_config(workspace, mode)
    run = resolve_run(cfg, task, method)
    reference = _stable(train_one(cfg, run, seed=0))
    reference_ckpt = _outputs(task, method)
    assert not paths.resume_dir(task, method, 0).exists()  # deleted once the outputs are written
    paths.run_result(task, method, 0).unlink()

    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(cfg), task, method], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not paths.run_result(task, method, 0).exists()
    state = torch.load(paths.resume_dir(task, method, 0) / STATE, weights_only=True)
    assert state["steps_done"] == 10 and len(state["history"]["loss"]) == 10

    capsys.readouterr()
    resumed = _stable(train_one(cfg, run, seed=0))
    out = capsys.readouterr().out
    assert "continuing from" in out and "after step 10" in out
    assert resumed == reference
    assert _outputs(task, method) == reference_ckpt
    assert not paths.resume_dir(task, method, 0).exists()


def test_state_of_another_config_is_not_used(workspace, capsys):
    cfg = copy.deepcopy(workspace)
    run = resolve_run(cfg, "sentiment", "lora_r8")
    state_dir = paths.resume_dir("sentiment", "lora_r8", 0)
    state_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "fingerprint": "another config", "steps_done": 1}, state_dir / STATE)
    capsys.readouterr()
    result = train_one(cfg, run, seed=0)
    assert "(fingerprint differs); starting over" in capsys.readouterr().out
    assert result["status"] == "FINISHED" and not state_dir.exists()

    state_dir.mkdir(parents=True)
    (state_dir / STATE).write_bytes(b"half a file")
    assert _stable(train_one(cfg, run, seed=0)) == _stable(result)
    assert "unreadable" in capsys.readouterr().out


def _diverging(workspace: dict) -> dict:
    cfg = copy.deepcopy(workspace)
    cfg["methods"]["lora_r8"]["training"] = {"lr": 1e30}
    cfg["training"]["nlu"].update(epochs=3, batch_size=8)
    return cfg


def test_diverged_run_is_recorded_failed_with_task_method_seed_step(workspace, capfd):
    cfg = _diverging(workspace)
    results = train_task_method(cfg, resolve_run(cfg, "sentiment", "lora_r8"))
    assert [r["status"] for r in results] == ["FAILED", "FAILED"]  # every seed still ran
    for seed, result in zip(cfg["seeds"], results):
        assert json.loads(paths.run_result("sentiment", "lora_r8", seed).read_text()) == result
        assert result["failed_step"] >= 1 and result["metrics"] == {}
        assert f"task=sentiment method=lora_r8 seed={seed}: loss is" in result["error"]
        assert f"at step {result['failed_step']}" in result["error"]
        status = json.loads((paths.checkpoint_dir("sentiment", "lora_r8", seed) / "status.json").read_text())
        assert status["status"] == "FAILED"
        history = paths.run_history("sentiment", "lora_r8", seed).read_text().splitlines()
        assert len(history) == result["failed_step"] + 1  # header + the finite steps
        assert not paths.resume_dir("sentiment", "lora_r8", seed).exists()
    assert "ERROR: run diverged: task=sentiment method=lora_r8 seed=0" in capfd.readouterr().err

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for result in results:
        mlflow_run = client.get_run(result["lineage"]["mlflow_run_id"])
        assert mlflow_run.info.status == "FAILED"
        assert "NonFiniteLoss" in mlflow_run.data.tags["error"]


def test_diverged_train_one_still_raises(workspace):
    cfg = _diverging(workspace)
    with pytest.raises(NonFiniteLoss) as err:
        train_one(cfg, resolve_run(cfg, "sentiment", "lora_r8"), seed=0)
    assert err.value.step >= 1
