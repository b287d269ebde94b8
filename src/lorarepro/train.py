"""Fine-tune one (task, method) for every seed: train, evaluate, save the checkpoint and the result JSON.

Called by the Snakemake `train` rule (lorarepro.jobs.train). One job covers all seeds of a
(task, method) because a job's fixed cost (set-up, and for a job started cold the imports of torch,
transformers, PEFT and MLflow: ~5 s) exceeds a tiny run itself; every seed still gets its own
checkpoint, result JSON and MLflow run.

A run killed mid-way resumes from its last step checkpoint (lorarepro.resume) with the same result.
An evaluation deliberately not run (lorarepro.evaluate.NotRun: code execution not enabled, no judge configured) is recorded as
a null metric with the reason under `not_run`; the run is still FINISHED and its checkpoint saved.

With `training.<family>.distributed.processes` N > 1 the job runs its seeds on N data-parallel
ranks (lorarepro.distributed); rank 0 alone evaluates and writes. One process never imports it.

A run whose loss goes NaN/inf is a recorded outcome: its result JSON has status FAILED with the
error and step, its MLflow run is FAILED, and the job goes on with the other seeds and succeeds, so
the tables (which only count FINISHED runs) show the cell as diverged.

Everything in a result JSON is deterministic for a given config and machine except the keys
listed in VOLATILE (timings, memory, the MLflow run id, the git state).
"""

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from lorarepro import device, families, judge, paths
from lorarepro.atomic import atomic_dir, write_json, write_text
from lorarepro.config import resolve_run
from lorarepro.cost import StepMemoryProbe
from lorarepro.evaluate import evaluate_splits
from lorarepro.families.common import quiet_transformers
from lorarepro.hashing import sha256_dir
from lorarepro.loop import History, NonFiniteLoss, make_optimizer, step_plan, train_steps
from lorarepro.methods import lora
from lorarepro.resume import StepCheckpoints, fingerprint
from lorarepro.runinfo import git_state, peak_rss_mb, versions

VOLATILE = ("resources", "lineage.mlflow_run_id", "lineage.git_commit", "lineage.git_dirty", "versions")


def load_model(run: dict, manifest: dict, seed: int):
    """The task's backbone, seeded so that a new head (and later the adapter init) is too."""
    family = families.get(run["family"])
    torch.manual_seed(seed)
    model, tokenizer = family.load_for_task(paths.backbone_dir(run["backbone"]), manifest)
    if run.get("backbone_dtype"):  # e.g. bf16 backbone; PEFT keeps the adapter in fp32 (autocast_adapter_dtype)
        model = model.to(getattr(torch, run["backbone_dtype"]))
    return model, tokenizer


def wrap_adapter(model, run: dict, total_steps: int, gradient_batches=None):
    """The method's PEFT adapter around `model` (unchanged for full fine-tuning)."""
    if run["adapter"] is None:
        return model
    family = families.get(run["family"])
    train_heads = family.trained_heads(model)
    return lora.apply(model, run["adapter"], family.head_modules(), train_heads,
                      total_steps=total_steps, gradient_batches=gradient_batches)


def train_one(config: dict, run: dict, seed: int, tracker=None, ranks=None) -> dict | None:
    """Train and evaluate one seed; returns the result dict (also written to disk).

    `ranks` (lorarepro.distributed.Ranks): this process is one data-parallel rank; all ranks train,
    rank 0 alone saves step checkpoints, evaluates and writes (the others return None)."""
    from lorarepro.data import load_split, verify_dataset

    task, method, tcfg = run["task"], run["method"], run["training"]
    label = f"task={task} method={method} seed={seed}"
    task_dir = paths.prepared_dir(task)
    manifest = verify_dataset(task_dir)
    family = families.get(run["family"])
    model, tokenizer = load_model(run, manifest, seed)
    train_df = load_split(task_dir, "train")
    encoded = family.encode(train_df, tokenizer, manifest, tcfg["max_length"])
    plan = step_plan(len(encoded), tcfg["batch_size"], tcfg["grad_accum"], tcfg["epochs"], seed)
    adapter = run["adapter"]
    ga_steps = plan[: lora.gradient_steps(adapter)]  # LoRA-GA's gradient: the first steps' batches
    model = wrap_adapter(model, run, len(plan), lambda: (encoded.batch(mb) for step in ga_steps for mb in step))
    dev = device.pick() if ranks is None else ranks.device
    main = ranks is None or ranks.is_main
    model.to(dev)  # after the adapter exists (LoRA-GA/PiSSA initialise on the host)
    initial = lora.initial_state(model, adapter)
    optimizer, scheduler = make_optimizer(model, tcfg["lr"], tcfg["weight_decay"], len(plan), tcfg["warmup_ratio"],
                                          loraplus_lr_ratio=(adapter or {}).get("loraplus_lr_ratio"))
    flat = _flat_hook(model, run, len(plan), seed)
    hook = flat if flat is not None else _sam_hook(model, run)
    # The profiler's first use costs ~1 s a process: only runs a table reports the cost of are probed.
    probe = StepMemoryProbe(len(plan) // 2) if _costed(config, task, method) else None
    # AdaLoRA's rank allocator keeps importance averages outside the model and optimizer, which a
    # step checkpoint does not hold: it always trains from the start.
    every = 0 if (adapter or {}).get("type") == "adalora" else config.get("checkpoint_every", 50)
    ckpts = StepCheckpoints(paths.resume_dir(task, method, seed),
                            fingerprint(run, seed, manifest["sha256"], _backbone_sha(run["backbone"])), every)
    history = History()
    state = ckpts.load()
    start_step = ckpts.restore(state, model, optimizer, scheduler, history) if state is not None else 0

    def on_step_end(steps_done: int, hist: History) -> None:
        # Called after end_step, so in-place Flat noise is never in W here.
        if main and ckpts.due(steps_done, len(plan)):
            ckpts.save(steps_done, model, optimizer, scheduler, hist, _inplace_weights(model, run, flat))

    module = lora.training_module(model, adapter)
    module = module if ranks is None else ranks.wrap(module)
    start = time.perf_counter()
    from tqdm import tqdm

    with tqdm(total=len(plan), desc=label, mininterval=2.0, disable=not main) as progress:
        try:
            train_steps(module, plan, lambda idx: device.to(encoded.batch(idx), dev),
                        optimizer, scheduler, hook=hook, callbacks=[*([probe] if probe else []), *lora.callbacks(model, adapter)],
                        label=label, progress=progress, start_step=start_step, history=history,
                        on_step_end=on_step_end, ranks=ranks)
        except NonFiniteLoss as exc:
            if main:
                _write_failed(run, seed, exc, history, manifest, tracker)
                ckpts.clear()
            raise
        finally:
            if probe is not None:
                probe.close()
            if hook is not None:
                hook.close()
    seconds = time.perf_counter() - start
    if not main:
        return None
    flat_info = _finish_flat(model, run, flat, manifest)
    evaluation = config.get("evaluation")
    details: dict = {}  # per-split evaluation details (HumanEval: outcomes, sandbox isolation)
    metrics, not_run = evaluate_splits(family, model, tokenizer, task_dir, manifest, tcfg["max_length"], evaluation, details)
    ckpt = save_checkpoint(model, tokenizer, paths.checkpoint_dir(task, method, seed), initial)
    metric = manifest.get("metric", family.METRIC)
    result = {
        "task": task, "method": method, "seed": seed, "family": run["family"], "backbone": run["backbone"],
        "status": "FINISHED", "metric": metric, "metrics": metrics,
        # present only when some split was deliberately not run, was scored by a judge or carries
        # details (HumanEval's outcomes): other results keep their keys
        **({"not_run": not_run} if not_run else {}),
        **({"judge": judge.describe((evaluation or {}).get("judge"), metrics)} if metric == "mt_bench" else {}),
        **({"evaluation": details} if details else {}),
        "config": run,
        "train": {
            "steps": len(plan), "final_loss": history.loss[-1],
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in model.parameters()),
            "distributed": {"processes": 1, "backend": None} if ranks is None else {"processes": ranks.world, "backend": ranks.backend},
        },
        "flat": flat_info,
        "resources": {
            "seconds": round(seconds, 3), "seconds_per_step": round(seconds / len(plan), 5),
            "step_peak_mb": probe.peak_mb if probe else None, "peak_rss_mb": round(peak_rss_mb(), 1), "device": dev.type,
        },
        "lineage": {
            "data_sha256": manifest["sha256"],
            "backbone_sha256": _backbone_sha(run["backbone"]),
            "checkpoint_sha256": ckpt,
            "mlflow_run_id": tracker.run_id if tracker else None,
            **{f"git_{k}": v for k, v in git_state().items()},
        },
        "versions": versions(),
    }
    write_text(paths.run_history(task, method, seed), _history_csv(history))
    write_json(paths.run_result(task, method, seed), result)
    if tracker is not None:
        tracker.series("train_loss", history.loss)
    ckpts.clear()  # outputs are written: the run is done, its resume state is not needed
    return result


def _inplace_weights(model, run: dict, flat) -> dict | None:
    """In-place Flat mode trains on W with its rounding drift: a resumed run must continue from that W."""
    if flat is None or run["flat"]["mode"] != "inplace":
        return None
    params = dict(model.named_parameters())
    return {f"{name}.weight": params[f"{name}.weight"] for name in flat.target_names}


def _write_failed(run: dict, seed: int, exc: NonFiniteLoss, history: History, manifest: dict, tracker) -> None:
    """A diverged run is a recorded outcome: result JSON with status FAILED (tables show the cell as
    diverged/missing), the history so far, and a checkpoint directory holding only a status file,
    so the job's declared outputs exist and the rest of the pipeline runs."""
    task, method = run["task"], run["method"]
    failure = {"status": "FAILED", "error": str(exc), "failed_step": exc.step}
    with atomic_dir(paths.checkpoint_dir(task, method, seed)) as tmp:
        write_json(tmp / "status.json", failure)
    write_text(paths.run_history(task, method, seed), _history_csv(history))
    write_json(paths.run_result(task, method, seed), {
        "task": task, "method": method, "seed": seed, "family": run["family"], "backbone": run["backbone"],
        **failure, "metric": manifest.get("metric", families.get(run["family"]).METRIC), "metrics": {}, "config": run,
        "lineage": {"data_sha256": manifest["sha256"], "backbone_sha256": _backbone_sha(run["backbone"]),
                    "mlflow_run_id": tracker.run_id if tracker else None,
                    **{f"git_{k}": v for k, v in git_state().items()}},
        "versions": versions(),
    })


def _costed(config: dict, task: str, method: str) -> bool:
    """Whether a table with `cost: true` reports this run (its step memory is then measured)."""
    return any(spec.get("cost") and task in spec["tasks"] and method in spec["methods"] for spec in config.get("tables") or [])


def _flat_hook(model, run: dict, total_steps: int, seed: int):
    if run["flat"] is None:
        return None
    from lorarepro.methods.flat import FlatLoRA

    f = run["flat"]
    return FlatLoRA(model, rho=f["rho"], total_steps=total_steps, seed=seed, mode=f["mode"], scope=f["scope"])


def _sam_hook(model, run: dict):
    """SAM baselines (Table 6): SAM-W over the merged weights, LoRA-SAM over A and B (methods/sam.py)."""
    if run.get("sam") is None:
        return None
    from lorarepro.methods.sam import SAM

    return SAM(model, rho=run["sam"]["rho"], space=run["sam"]["space"])


def _finish_flat(model, run: dict, flat, manifest: dict) -> dict | None:
    """In-place mode leaves rounding drift in W: measure it, then restore W exactly from the backbone."""
    if flat is None:
        return None
    info = {"mode": run["flat"]["mode"], "layers": len(flat.target_names)}
    if run["flat"]["mode"] == "inplace":
        backbone = paths.backbone_dir(run["backbone"])
        reload = lambda: families.get(run["family"]).load_for_task(backbone, manifest)[0]  # noqa: E731
        pristine = pristine_targets(flat.target_names, backbone, reload)
        info.update({f"drift_{k}": v for k, v in flat.drift(pristine).items()})
        flat.restore(pristine)
    return info


def pristine_targets(target_names: list[str], backbone_dir: Path, reload=None) -> dict:
    """The saved backbone's weights of the perturbed layers, keyed by their (PEFT-wrapped) names.

    Read straight from the safetensors shards where the file uses the module names (T5, Llama: no
    second model in memory). transformers renames some architectures' keys on load (ViT, CLIP in
    v5), so weights missing from the files come from `reload()`, a fresh load of the same backbone
    by the loader training used."""
    from safetensors import safe_open

    keys = {name: name.removeprefix("base_model.model.").removesuffix(".base_layer") + ".weight" for name in target_names}
    found = {}
    for shard in sorted(Path(backbone_dir).glob("*.safetensors")):  # hub models of 7B come in shards
        with safe_open(str(shard), framework="pt") as fh:
            found.update({k: fh.get_tensor(k) for k in set(fh.keys()) & set(keys.values())})
    if reload is not None and not set(keys.values()) <= found.keys():
        loaded = dict(reload().named_parameters())
        found.update({k: loaded[k].detach() for k in set(keys.values()) - found.keys() if k in loaded})
    out = {}
    for name, key in keys.items():
        if key not in found:
            raise KeyError(f"{backbone_dir}/*.safetensors has no weight '{key}' for perturbed layer '{name}'")
        out[name] = found[key]
    return out


def save_checkpoint(model, tokenizer, out_dir: Path, initial: dict | None = None) -> str:
    """PEFT adapter (adapter_config.json + adapter_model.safetensors) or full save_pretrained; returns its hash.

    `initial`: the adapter at init when the init rewrote the base weights (PiSSA, LoRA-GA); the
    adapter is then saved as a LoRA delta against the original backbone (`lora.save`)."""
    with atomic_dir(out_dir) as tmp:
        if hasattr(model, "peft_config"):
            lora.save(model, tmp, initial)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None and not hasattr(model, "peft_config"):
            tokenizer.save_pretrained(tmp)
        _canonical_adapter_config(tmp / "adapter_config.json")
        digest = sha256_dir(tmp)
    return digest


def _canonical_adapter_config(path: Path) -> None:
    """PEFT keeps target_modules as a set, so its JSON order follows Python's per-process hash seed;
    a sorted list makes identical adapters hash identically (PEFT reads either)."""
    if path.is_file():
        config = json.loads(path.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
            write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _backbone_sha(backbone: str) -> str:
    return json.loads(paths.backbone_done(backbone).read_text())["sha256"]


def _history_csv(history) -> str:
    rows = ["step,loss,lr"] + [f"{s},{l:.6g},{r:.6g}" for s, l, r in zip(history.steps, history.loss, history.lr)]
    return "\n".join(rows) + "\n"


def run_task_method(config: dict, task: str, method: str, job: dict | None = None, ranks=None) -> list[dict]:
    """Every seed of one (task, method), each tracked as its own MLflow run (a child of the pipeline's).

    `job` names the Snakemake job (rule, wildcards) for the run's tags. The input hashes and git
    state are tagged when the run starts, so a run that fails still says what it ran on.
    A run configured for N > 1 data-parallel processes is handed to lorarepro.distributed.launch, whose
    ranks come back here with `ranks`; only rank 0 tracks and returns results."""
    from lorarepro import tracking
    from lorarepro.data import load_manifest

    quiet_transformers()
    torch.set_num_threads(config.get("threads", 1))
    torch.use_deterministic_algorithms(True)
    run = resolve_run(config, task, method)
    if ranks is None and (run["training"].get("distributed") or {}).get("processes", 1) > 1:
        from lorarepro import distributed

        return distributed.launch(config, task, method, job, distributed.settings(run))
    main = ranks is None or ranks.is_main
    inputs = {"data_sha256": load_manifest(paths.prepared_dir(task))["sha256"],
              "backbone_sha256": _backbone_sha(run["backbone"]),
              **{f"git_{k}": v for k, v in git_state().items()}}
    job_tags = {f"snakemake_{k}": v for k, v in (job or {}).items()}
    results = []
    for seed in run["seeds"]:
        tags = {"task": task, "method": method, "seed": seed, "family": run["family"], "backbone": run["backbone"],
                **inputs, **job_tags}
        resolved = {**run, "seed": seed}
        tracked = tracking.run(config, f"{task}/{method}/seed{seed}", resolved, tags) if main else contextlib.nullcontext()
        try:
            with tracked as tracker:
                if tracker is not None:
                    tracker.dict_artifact(resolved, "config.json")
                result = train_one(config, run, seed, tracker, ranks)
                if tracker is not None:
                    tracker.metrics({k: v for k, v in result["metrics"].items() if v is not None})
                    # a split not run is a tag with its reason, never a number
                    tracker.tags({**{k: v for k, v in result["lineage"].items() if k != "mlflow_run_id"},
                                  **{f"not_run.{split}": reason for split, reason in (result.get("not_run") or {}).items()}})
                    tracker.artifact(paths.run_result(task, method, seed))
        except NonFiniteLoss as exc:
            # The MLflow run is already FAILED (tracking.run); the other seeds still run, and the job
            # succeeds so that Snakemake keeps the FAILED result JSON the tables report as diverged.
            if main:
                message = f"ERROR: run diverged: {exc}; recorded as FAILED in {paths.run_result(task, method, seed)}"
                print(message, flush=True)
                print(message, file=sys.__stderr__, flush=True)
                result = json.loads(paths.run_result(task, method, seed).read_text())
        if ranks is not None:
            ranks.barrier()  # the other ranks wait while rank 0 evaluates and writes this seed
        if main:
            results.append(result)
    return results
