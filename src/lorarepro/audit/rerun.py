"""Audit checks that run models: re-evaluate sampled checkpoints (the recorded metrics must come back
exactly on the same machine) and, optionally, retrain sampled runs in a temporary directory (exactly
on CPU, within a tolerance on GPU). Neither touches the original outputs or the MLflow store."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

from lorarepro.core import numerics, paths
from lorarepro.domain import checkpoints, families
from lorarepro.audit.artifacts import dict_diff
from lorarepro.audit.report import record
from lorarepro.domain.data import load_manifest
from lorarepro.domain.experiment import RunSpec

FIX = "the checkpoint does not give the recorded metrics: restore it (`dvc checkout checkpoints`) or retrain it"


def backbone_differences(model, run: dict, seed: int) -> tuple[int, list[str]]:
    """(tensors compared, names that differ) between the loaded model's frozen backbone weights and
    a fresh load of models/<backbone> by the same loader, seeded alike (checkpoints.load_backbone):
    a LoRA-family run must leave the backbone bit-identical. Both sides carry the loader's names, so
    a backbone saved without the model class's prefix (a bare BertModel, sentence-transformers) or
    renamed on load (ViT, CLIP in transformers 5) is compared weight by weight all the same."""
    manifest = load_manifest(paths.prepared_dir(run["task"]))
    with torch.random.fork_rng(devices=[]):
        fresh = checkpoints.load_backbone(run, seed, manifest)[0].state_dict()
    heads = families.get(run["family"]).head_modules()
    compared, differ = 0, []
    for name, tensor in model.get_base_model().state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        if key not in fresh or any(key.startswith(h + ".") for h in heads) or fresh[key].shape != tensor.shape:
            continue
        compared += 1
        if not torch.equal(fresh[key], tensor):
            differ.append(key)
    return compared, differ


def reevaluate(runs: list, evaluation: dict | None = None, unverified: dict | None = None) -> list[dict]:
    """`evaluation`: the config's section (a judge); a split not run comes back not run, with its reason.
    `unverified`: {run: why} of runs whose files failed verification: these are never loaded (a
    changed file could carry code or pickles), so their re-evaluation is skipped with the reason."""
    out = []
    for run in runs:
        out.append(skipped("reevaluate", run, unverified[run]) if run in (unverified or {})
                   else _reevaluate_one(run, evaluation))
    return out


def skipped(check: str, run, why: str) -> dict:
    return record(check, "skip", run.path, f"not loaded: {why} (see its failures)",
                  "restore the files (`dvc checkout`) or retrain the run")


def other_numerics(check: str, run) -> dict | None:
    """A skip record when the run was made under other numerics than this process computes with:
    exact agreement is promised only between equal fingerprints (lorarepro.core.numerics)."""
    fix = "audit with the run's numerics (config key `numerics`, the same threads and pinned wheels)"
    try:
        checkpoints.deterministic(run.result["config"])  # the run's threads and numerics, where this process can
    except numerics.NumericsError as err:
        return record(check, "skip", run.path, f"not compared exactly: {err}", fix)
    recorded = run.result.get("lineage", {}).get("numerics")
    differ = numerics.differences(recorded, numerics.fingerprint())
    if recorded is None or not differ:
        return None
    return record(check, "skip", run.path, f"not compared exactly: made under other numerics ({'; '.join(differ)})", fix)


def _reevaluate_one(run, evaluation: dict | None) -> dict:
    cfg = run.result["config"]
    if (skip := other_numerics("reevaluate", run)) is not None:
        return skip
    try:
        metrics, not_run, model = checkpoints.evaluate_saved(cfg, run.seed, evaluation)
    except Exception as err:  # any failure is the finding (corrupt file, missing adapter, ...)
        return record("reevaluate", "fail", run.checkpoint, f"does not load or evaluate: {type(err).__name__}: {err}", FIX)
    diff = dict_diff({"metrics": run.result.get("metrics") or {}, "not_run": run.result.get("not_run") or {}},
                     {"metrics": metrics, "not_run": not_run})
    problems = [f"metrics recorded vs re-evaluated: {'; '.join(diff)}"] if diff else []
    if cfg["adapter"] is not None:
        compared, differ = backbone_differences(model, cfg, run.seed)
        if not compared:
            problems.append(f"no backbone weight of the loaded model could be compared with models/{cfg['backbone']}")
        elif differ:
            problems.append(f"backbone weights differ from models/{cfg['backbone']}: {differ[:3]} "
                            f"({len(differ)} of {compared} tensors)")
    if problems:
        return record("reevaluate", "fail", run.path, "; ".join(problems), FIX)
    return record("reevaluate", "pass", run.path, f"{len(metrics)} splits reproduced exactly"
                  + (f", backbone bit-identical ({compared} tensors)" if cfg["adapter"] is not None else ""))


@contextlib.contextmanager
def scratch_workspace():
    """A temporary working directory that sees the real data and backbones (read only) and writes
    checkpoints and results of its own, so retraining never overwrites the originals."""
    with tempfile.TemporaryDirectory(prefix="lorarepro-retrain-") as tmp:
        for name in ("data", "models"):
            os.symlink(Path(name).resolve(), Path(tmp) / name)
        with contextlib.chdir(tmp):
            yield Path(tmp)


def retrain(config: dict, runs: list, gpu_tolerance: float, unverified: dict | None = None) -> list[dict]:
    """Retrain each run from its recorded config and compare: exactly on CPU (metrics, final loss and
    checkpoint hash), within `gpu_tolerance` metric points on GPU. Not tracked in MLflow. A run in
    `unverified` ({run: why}) is skipped: its data or backbone failed their content check."""
    from lorarepro.stages.training.train import train_one  # deferred: only `--retrain` trains

    out = []
    for run in runs:
        if run in (unverified or {}):
            out.append(skipped("retrain", run, unverified[run]))
            continue
        cfg = run.result["config"]
        cpu = (run.result.get("resources") or {}).get("device", "cpu") == "cpu"
        if not cpu:
            checkpoints.deterministic(cfg)  # a GPU retrain compares within a tolerance, whatever the CPU numerics
        elif (skip := other_numerics("retrain", run)) is not None:
            out.append(skip)
            continue
        with scratch_workspace():
            again = train_one(config, RunSpec.of(cfg), run.seed)
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
