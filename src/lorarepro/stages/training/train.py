"""Fine-tune one (task, method) for every seed: train, evaluate, save the checkpoint and the result JSON.

Called by the Snakemake `train` rule (lorarepro.pipeline.jobs.train). One job covers all seeds of a
(task, method) because a job's fixed cost (set-up, and for a job started cold the imports of torch,
transformers, PEFT and MLflow: ~5 s) exceeds a tiny run itself; every seed still gets its own
checkpoint, result JSON and MLflow run.

A run killed mid-way resumes from its last step checkpoint (lorarepro.stages.training.resume) with the same
result. An evaluation deliberately not run (lorarepro.domain.evaluation.NotRun: code execution not enabled,
no judge configured) is recorded as a null metric with the reason under `not_run`; the run is still
FINISHED and its checkpoint saved. The method's step strategy (Flat-LoRA, SAM) comes from the run's
settings through lorarepro.domain.methods and its adapter kind (how the adapter is wrapped, initialised,
optimised and saved) from lorarepro.domain.methods.lora; what the record says of how a metric was scored
(a judge) comes from lorarepro.domain.evaluation. Nothing here names a method or an adapter.

With `training.<family>.distributed.processes` N > 1 the launcher (lorarepro.pipeline.launcher)
starts N processes that each run `train_task_method` as one rank (lorarepro.stages.training.ranks); rank 0
alone evaluates and writes.

A run whose loss goes NaN/inf is a recorded outcome: its result JSON has status FAILED with the
error and step, its MLflow run is FAILED, and the job goes on with the other seeds and succeeds, so
the tables (which only count FINISHED runs) show the cell as diverged.

Everything in a result JSON is deterministic for a given config and machine except the keys
lorarepro.domain.records.VOLATILE lists (timings, memory, the MLflow run id, the git state).
"""

import contextlib
import math
import sys
import time

import torch
from tqdm import tqdm

from lorarepro.core import device, numerics, paths, tracking
from lorarepro.domain import checkpoints, families, methods, records
from lorarepro.core.atomic import atomic_dir, write_json
from lorarepro.domain.data import load_eval_splits, load_manifest, load_split, verify_dataset
from lorarepro.domain.evaluation import evaluate_splits, record_entries
from lorarepro.domain.experiment import RunSpec
from lorarepro.domain.methods import lora
from lorarepro.core.runinfo import git_state, peak_rss_mb, versions
from lorarepro.stages.training import ranks as data_parallel
from lorarepro.stages.training.loop import History, NonFiniteLoss, make_optimizer, step_plan, train_steps
from lorarepro.stages.training.memory import StepMemoryProbe
from lorarepro.stages.training.resume import StepCheckpoints, fingerprint
from lorarepro.stages.training.selection import Selection


def load_model(run: RunSpec, manifest: dict, seed: int):
    """The task's backbone, seeded so that a new head (and later the adapter init) is too."""
    family = families.get(run.family)
    torch.manual_seed(seed)
    model, tokenizer = family.load_for_task(paths.backbone_dir(run.backbone), manifest)
    if run.backbone_dtype:  # e.g. bf16 backbone; PEFT keeps the adapter in fp32 (autocast_adapter_dtype)
        model = model.to(getattr(torch, run.backbone_dtype))
    return model, tokenizer


def wrap_adapter(model, run: RunSpec, total_steps: int, gradient_batches=None, device=None):
    """The method's PEFT adapter around `model` (unchanged for full fine-tuning), on `device`."""
    family = families.get(run.family)
    return lora.apply(model, run.adapter, family.head_modules(), family.trained_heads(model),
                      total_steps=total_steps, gradient_batches=gradient_batches, device=device)


class _Session:
    """Everything one seed's training holds: data, model, optimizer, step strategy, resume state."""

    def __init__(self, config: dict, run: RunSpec, seed: int, ranks) -> None:
        self.run, self.seed, self.ranks = run, seed, ranks
        self.main = ranks is None or ranks.is_main
        task, method, tcfg = run.task, run.method, run.training
        self.label = f"task={task} method={method} seed={seed}"
        self.task_dir = paths.prepared_dir(task)
        self.manifest = verify_dataset(self.task_dir)
        self.family = families.get(run.family)
        model, self.tokenizer = load_model(run, self.manifest, seed)
        self.encoded = self.family.encode(_training_rows(self.task_dir, tcfg), self.tokenizer, self.manifest,
                                          tcfg["max_length"])
        self.plan = step_plan(len(self.encoded), tcfg["batch_size"], tcfg["grad_accum"], tcfg["epochs"], seed)
        self.adapter = lora.kind(run.adapter)
        init_steps = self.plan[: self.adapter.gradient_steps]  # an init from gradients reads the first steps' batches
        self.device = device.pick() if ranks is None else ranks.device
        self.model = wrap_adapter(model, run, len(self.plan),
                                  lambda: (self.encoded.batch(mb) for step in init_steps for mb in step), self.device)
        self.initial = self.adapter.initial_state(self.model)
        lr, decay = tcfg["lr"], tcfg["weight_decay"]
        self.optimizer, self.scheduler = make_optimizer(self.model, lr, decay, len(self.plan), tcfg["warmup_ratio"],
                                                        self.adapter.param_groups(self.model, lr, decay))
        self.strategy = methods.build(self.model, run, len(self.plan), seed)
        self.probe = StepMemoryProbe(len(self.plan) // 2)  # ~10 ms: the warm server imported the profiler
        # an adapter whose training state a step checkpoint cannot hold always trains from the start
        every = config.get("checkpoint_every", 50) if self.adapter.resumable else 0
        self.resume = StepCheckpoints(paths.resume_dir(task, method, seed),
                                      fingerprint(run, seed, self.manifest["sha256"], _backbone_sha(run.backbone)), every)
        self.selection = Selection(tcfg.get("checkpoint_selection", "last"), self.model,
                                   math.ceil(len(self.encoded) / tcfg["batch_size"]), len(self.plan), self._validation_score)

    def fit(self) -> float:
        """Every optimizer step from where a saved resume state left off, into `self.history`; seconds."""
        self.history = history = History()
        state = self.resume.load()
        start_step = self.resume.restore(state, self.model, self.optimizer, self.scheduler, history) if state is not None else 0
        self.selection.load_state_dict((state or {}).get("extra", {}).get("selection"))

        def on_step_end(steps_done: int, hist: History) -> None:
            # Called after the strategy's end_step, so in-place Flat noise is never in W here.
            if not self.main:
                return
            self.selection.after_step(steps_done)
            if self.resume.due(steps_done, len(self.plan)):
                self.resume.save(steps_done, self.model, self.optimizer, self.scheduler, hist,
                                 self.strategy.resume_weights() if self.strategy else None,
                                 {"selection": self.selection.state_dict()} if self.selection.active else None)

        module = self.adapter.training_module(self.model)
        module = module if self.ranks is None else self.ranks.wrap(module)
        callbacks = [self.probe, *self.adapter.callbacks(self.model)]
        start = time.perf_counter()
        with tqdm(total=len(self.plan), desc=self.label, mininterval=2.0, disable=not self.main) as progress:
            try:
                train_steps(module, self.plan, lambda idx: device.to(self.encoded.batch(idx), self.device),
                            self.optimizer, self.scheduler, hook=self.strategy, callbacks=callbacks, label=self.label,
                            progress=progress, start_step=start_step, history=history, on_step_end=on_step_end,
                            ranks=self.ranks)
            finally:
                self.probe.close()
                if self.strategy is not None:
                    self.strategy.close()
        return time.perf_counter() - start

    def _validation_score(self) -> float:
        """The selection's criterion on the validation split: the training loss (mean over examples)
        or the task's metric; the model is back in training mode afterwards."""
        frame = load_split(self.task_dir, "validation")
        tcfg = self.run.training
        try:
            if self.selection.criterion == "best_validation_metric":
                return self.family.evaluate(self.model, self.tokenizer, frame, self.manifest, tcfg["max_length"])
            encoded = self.family.encode(frame, self.tokenizer, self.manifest, tcfg["max_length"])
            size, total = tcfg["batch_size"], 0.0
            self.model.eval()
            with torch.no_grad():
                for start in range(0, len(encoded), size):
                    index = list(range(start, min(start + size, len(encoded))))
                    total += float(self.model(**device.to(encoded.batch(index), self.device)).loss) * len(index)
            return total / len(encoded)
        finally:
            self.model.train()

    def pristine(self, target_names: list[str]) -> dict:
        """The saved backbone's weights of these layers (what an in-place strategy restores W from)."""
        backbone = paths.backbone_dir(self.run.backbone)
        return checkpoints.backbone_weights(target_names, backbone,
                                            lambda: self.family.load_for_task(backbone, self.manifest)[0])


def train_one(config: dict, run: RunSpec, seed: int, tracker=None, ranks=None) -> dict | None:
    """Train and evaluate one seed; returns the result dict (also written to disk).

    `ranks` (lorarepro.stages.training.ranks.Ranks): this process is one data-parallel rank; all ranks train,
    rank 0 alone saves step checkpoints, evaluates and writes (the others return None)."""
    started, run_start = _now(), time.perf_counter()
    checkpoints.deterministic(run)  # the run's threads and numerics, whoever calls (a job, the audit, a test)
    session = _Session(config, run, seed, ranks)
    try:
        seconds = session.fit()
    except NonFiniteLoss as exc:
        if session.main:
            _write_failed(run, seed, exc, session.history, session.manifest, tracker)
            session.resume.clear()
        raise
    if not session.main:
        return None
    selected = session.selection.restore()
    strategy_entry = methods.finish(session.strategy, session.pristine)
    evaluation = config.get("evaluation")
    details: dict = {}  # per-split evaluation details (HumanEval: outcomes, sandbox isolation)
    evaluate_start = time.perf_counter()
    metrics, not_run = evaluate_splits(session.family, session.model, session.tokenizer,
                                       load_eval_splits(session.task_dir, session.manifest), session.manifest,
                                       run.training["max_length"], evaluation, details)
    evaluate_seconds = time.perf_counter() - evaluate_start
    metric = session.manifest.get("metric", session.family.METRIC)
    ckpt = checkpoints.save(session.model, session.tokenizer, paths.checkpoint_dir(run.task, run.method, seed),
                            session.initial, card={"run": run.as_dict(), "seed": seed, "metric": metric, "metrics": metrics})
    model, history = session.model, session.history
    result = {
        "task": run.task, "method": run.method, "seed": seed, "family": run.family, "backbone": run.backbone,
        "status": records.FINISHED, "metric": metric, "metrics": metrics,
        # present only when some split was deliberately not run, was scored by a judge or carries
        # details (HumanEval's outcomes): other results keep their keys
        **({"not_run": not_run} if not_run else {}),
        **record_entries(metric, evaluation, metrics),
        **({"evaluation": details} if details else {}),
        "config": run.as_dict(),
        "train": {
            "steps": len(session.plan), "final_loss": history.loss[-1],
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in model.parameters()),
            "distributed": {"processes": 1, "backend": None} if ranks is None else {"processes": ranks.world, "backend": ranks.backend},
            **({"selection": selected} if selected else {}),
        },
        **strategy_entry,
        "resources": {
            "seconds": round(seconds, 3), "seconds_per_step": round(seconds / len(session.plan), 5),
            # where the rest of the run's time goes (benchmarks/default_run.py profiles the default)
            "evaluate_seconds": round(evaluate_seconds, 3), "run_seconds": round(time.perf_counter() - run_start, 3),
            "step_peak_mb": session.probe.peak_mb, "peak_rss_mb": round(peak_rss_mb(), 1),
            "device": session.device.type, "cpu_model": numerics.cpu_model(),
            # the GPU's kind prices the run in `lorarepro estimate` (the audit compares forecast and record)
            **({"gpu_model": torch.cuda.get_device_name(session.device)} if session.device.type == "cuda" else {}),
        },
        "lineage": {**_lineage(session.manifest, run, tracker), "checkpoint_sha256": ckpt},
        "versions": versions(),
    }
    records.write_history(run.task, run.method, seed, history)
    records.write(result)
    _print_summary(session.label, started, seconds, result)
    if tracker is not None:
        tracker.series("train_loss", history.loss)
    session.resume.clear()  # outputs are written: the run is done, its resume state is not needed
    return result


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _print_summary(label: str, started: str, seconds: float, result: dict) -> None:
    """The job log's last lines for a seed: when, the final metrics, the files written."""
    task, method, seed = result["task"], result["method"], result["seed"]
    scores = ", ".join(f"{split} {'not run' if v is None else v}" for split, v in result["metrics"].items())
    print(f"{label}: started {started}, finished {_now()} ({seconds:.1f} s training)\n"
          f"  {result['metric']}: {scores}\n"
          f"  wrote {paths.run_result(task, method, seed)}, {paths.run_history(task, method, seed)}, "
          f"{paths.checkpoint_dir(task, method, seed)}/", flush=True)


def _lineage(manifest: dict, run: RunSpec, tracker) -> dict:
    return {"data_sha256": manifest["sha256"], "backbone_sha256": _backbone_sha(run.backbone),
            "numerics": numerics.fingerprint(),
            "mlflow_run_id": tracker.run_id if tracker else None, **{f"git_{k}": v for k, v in git_state().items()}}


def _training_rows(task_dir, tcfg: dict):
    """The training split, or its first `train_fraction` of rows (they are in random order): less
    data, e.g. for the positive control."""
    rows = load_split(task_dir, "train")
    fraction = tcfg.get("train_fraction", 1.0)
    return rows if fraction >= 1 else rows.head(max(1, round(fraction * len(rows))))


def _write_failed(run: RunSpec, seed: int, exc: NonFiniteLoss, history: History, manifest: dict, tracker) -> None:
    """A diverged run is a recorded outcome: result JSON with status FAILED (tables show the cell as
    diverged/missing), the history so far, and a checkpoint directory holding only a status file,
    so the job's declared outputs exist and the rest of the pipeline runs."""
    task, method = run.task, run.method
    failure = {"status": "FAILED", "error": str(exc), "failed_step": exc.step}
    with atomic_dir(paths.checkpoint_dir(task, method, seed)) as tmp:
        write_json(tmp / "status.json", failure)
    records.write_history(task, method, seed, history)
    records.write({
        "task": task, "method": method, "seed": seed, "family": run.family, "backbone": run.backbone,
        **failure, "metric": manifest.get("metric", families.get(run.family).METRIC), "metrics": {}, "config": run.as_dict(),
        "lineage": _lineage(manifest, run, tracker), "versions": versions(),
    })


def _backbone_sha(backbone: str) -> str:
    return checkpoints.backbone_marker(backbone)["sha256"]


def train_task_method(config: dict, run: RunSpec, seeds: list[int] | None = None, job: dict | None = None) -> list[dict]:
    """These seeds (default: the config's) of one (task, method), each tracked as its own MLflow run
    (a child of the pipeline's).

    `job` names the Snakemake job (rule, wildcards) for the run's tags. The input hashes and git
    state are tagged when the run starts, so a run that fails still says what it ran on. Started by
    torch.distributed.run (lorarepro.pipeline.launcher), this process is one data-parallel rank
    (lorarepro.stages.training.ranks.join); only rank 0 tracks and returns results."""
    checkpoints.deterministic(run)
    task, method = run.task, run.method
    ranks = data_parallel.join(run)
    main = ranks is None or ranks.is_main
    inputs = {"data_sha256": load_manifest(paths.prepared_dir(task))["sha256"],
              "backbone_sha256": _backbone_sha(run.backbone),
              **{f"git_{k}": v for k, v in git_state().items()},
              # what the run computes under (lorarepro.core.numerics), and on which CPU (information only)
              **{f"numerics.{k}": v for k, v in numerics.fingerprint().items()}, "cpu_model": numerics.cpu_model()}
    job_tags = {f"snakemake_{k}": v for k, v in (job or {}).items()}
    results = []
    for seed in config["seeds"] if seeds is None else seeds:
        tags = {"task": task, "method": method, "seed": seed, "family": run.family, "backbone": run.backbone,
                **inputs, **job_tags}
        resolved = {**run.as_dict(), "seed": seed}
        tracked = tracking.run(config, f"{task}/{method}/seed{seed}", resolved, tags) if main else contextlib.nullcontext()
        try:
            with tracked as tracker:
                if tracker is not None:
                    tracker.dict_artifact(resolved, "config.json")
                    tracker.dataset(task, inputs["data_sha256"], paths.prepared_dir(task))
                result = train_one(config, run, seed, tracker, ranks)
                if tracker is not None:
                    tracker.metrics(tracking.run_metrics(result))
                    # a split not run is a tag with its reason, never a number
                    tracker.tags({**{k: v for k, v in result["lineage"].items() if k not in ("mlflow_run_id", "numerics")},
                                  **{f"not_run.{split}": reason for split, reason in (result.get("not_run") or {}).items()}})
                    tracker.artifact(paths.run_result(task, method, seed))
        except NonFiniteLoss as exc:
            # The MLflow run is already FAILED (tracking.run); the other seeds still run, and the job
            # succeeds so that Snakemake keeps the FAILED result JSON the tables report as diverged.
            if main:
                message = f"ERROR: run diverged: {exc}; recorded as FAILED in {paths.run_result(task, method, seed)}"
                print(message, flush=True)
                print(message, file=sys.__stderr__, flush=True)
                result = records.read(task, method, seed)
        if ranks is not None:
            ranks.barrier()  # the other ranks wait while rank 0 evaluates and writes this seed
        if main:
            results.append(result)
    if ranks is not None:
        ranks.close()
    return results
