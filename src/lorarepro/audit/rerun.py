"""Audit checks that run models: re-evaluate sampled checkpoints (the recorded metrics must come back
exactly on the same machine) and, optionally, retrain sampled runs in a temporary directory (exactly
on CPU, within a tolerance on GPU). Neither touches the original outputs or the MLflow store."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from lorarepro import checkpoints, families, paths
from lorarepro.audit.report import record
from lorarepro.audit.artifacts import dict_diff

FIX = "the checkpoint does not give the recorded metrics: restore it (`dvc checkout checkpoints`) or retrain it"


def backbone_differences(model, run: dict) -> tuple[int, list[str]]:
    """(tensors compared, names that differ) between the loaded model's frozen backbone weights and
    models/<backbone>/model.safetensors: a LoRA-family run must leave the backbone bit-identical."""
    saved = load_file(str(paths.backbone_dir(run["backbone"]) / "model.safetensors"))
    heads = families.get(run["family"]).head_modules()
    compared, differ = 0, []
    for name, tensor in model.get_base_model().state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        if key not in saved or any(key.startswith(h + ".") for h in heads) or saved[key].shape != tensor.shape:
            continue
        compared += 1
        if not torch.equal(saved[key], tensor):
            differ.append(key)
    return compared, differ


def reevaluate(runs: list, evaluation: dict | None = None) -> list[dict]:
    """`evaluation`: the config's section (a judge); a split not run comes back not run, with its reason."""
    out = []
    for run in runs:
        cfg = run.result["config"]
        try:
            metrics, not_run, model = checkpoints.evaluate_saved(cfg, run.seed, evaluation)
        except Exception as err:  # any failure is the finding (corrupt file, missing adapter, ...)
            out.append(record("reevaluate", "fail", run.checkpoint,
                              f"does not load or evaluate: {type(err).__name__}: {err}", FIX))
            continue
        diff = dict_diff({"metrics": run.result.get("metrics") or {}, "not_run": run.result.get("not_run") or {}},
                         {"metrics": metrics, "not_run": not_run})
        problems = [f"metrics recorded vs re-evaluated: {'; '.join(diff)}"] if diff else []
        if cfg["adapter"] is not None:
            compared, differ = backbone_differences(model, cfg)
            if differ or not compared:
                problems.append(f"backbone weights differ from models/{cfg['backbone']}: {differ[:3]} "
                                f"({compared} tensors compared)")
        out.append(record("reevaluate", "fail", run.path, "; ".join(problems), FIX) if problems else
                   record("reevaluate", "pass", run.path, f"{len(metrics)} splits reproduced exactly"
                          + (", backbone bit-identical" if cfg["adapter"] is not None else "")))
    return out


@contextlib.contextmanager
def scratch_workspace():
    """A temporary working directory that sees the real data and backbones (read only) and writes
    checkpoints and results of its own, so retraining never overwrites the originals."""
    with tempfile.TemporaryDirectory(prefix="lorarepro-retrain-") as tmp:
        for name in ("data", "models"):
            os.symlink(Path(name).resolve(), Path(tmp) / name)
        with contextlib.chdir(tmp):
            yield Path(tmp)


def retrain(config: dict, runs: list, gpu_tolerance: float) -> list[dict]:
    """Retrain each run from its recorded config and compare: exactly on CPU (metrics, final loss and
    checkpoint hash), within `gpu_tolerance` metric points on GPU. Not tracked in MLflow."""
    from lorarepro.training.train import train_one  # deferred: only `--retrain` trains

    out = []
    for run in runs:
        cfg = run.result["config"]
        checkpoints.deterministic(cfg.get("threads", 1))
        with scratch_workspace():
            again = train_one(config, cfg, run.seed)
        cpu = (run.result.get("resources") or {}).get("device", "cpu") == "cpu"
        if cpu:
            recorded = {"metrics": run.result["metrics"], "final_loss": run.result["train"]["final_loss"],
                        "checkpoint_sha256": run.result["lineage"]["checkpoint_sha256"]}
            retrained = {"metrics": again["metrics"], "final_loss": again["train"]["final_loss"],
                         "checkpoint_sha256": again["lineage"]["checkpoint_sha256"]}
            diff = dict_diff(recorded, retrained)
        else:
            diff = [f"{k}: {v} vs {again['metrics'].get(k)}" for k, v in run.result["metrics"].items()
                    if (v is None) != (again["metrics"].get(k) is None) or k not in again["metrics"]
                    or (v is not None and abs(float(v) - float(again["metrics"][k])) > gpu_tolerance)]
        how = "exactly (CPU)" if cpu else f"within ±{gpu_tolerance} (GPU)"
        out.append(record("retrain", "fail", run.path, f"recorded vs retrained, expected {how}: {'; '.join(diff)}",
                          "the run does not reproduce: check the machine, package versions and seeds")
                   if diff else record("retrain", "pass", run.path, f"retrained, reproduced {how}"))
    return out
