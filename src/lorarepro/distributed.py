"""Data-parallel training of one (task, method) job over N ranks: torch.distributed.run + accelerate.

Config: `training.<family>.distributed` (a method's or task's `training:` may override it, like any
training key): `{processes: N, backend: auto|nccl|gloo, timeout_minutes: M}`. Absent, or processes 1,
is the single-process path, which never imports this module's launcher or accelerate.

With N > 1 the job process (lorarepro.jobs.train, after lorarepro.gpus claimed N GPUs and set
CUDA_VISIBLE_DEVICES) runs `launch`: it writes the config to a file and starts

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 \
        -m lorarepro.distributed <config.json> <task> <method> <job tags>

as an argv list. Each rank (`main`) builds an `accelerate.Accelerator` (process group, its device:
cuda:<local rank> of the claimed GPUs, or the CPU with gloo) and runs train.run_task_method with a
`Ranks` object. Ranks train in lockstep; rank 0 alone tracks (MLflow), evaluates, saves checkpoints,
step checkpoints and the result JSON while the others wait at a barrier. A rank that dies makes
torch.distributed.run stop the others and exit non-zero; `launch` raises with the exit status. A rank
stuck in a collective fails after `timeout_minutes` (it must cover rank 0's evaluation of one seed).

Data: every optimizer step's global micro-batches come from loop.step_plan as in a 1-process run;
each micro-batch is split across ranks (rank r takes indices r, r+N, ...), so an N-rank run sees
exactly the examples of the 1-process run with the same `batch_size` and `grad_accum` (per-rank
micro-batch = batch_size / grad_accum / N). Each rank weights its shard's loss by its share of the
micro-batch's loss units (target tokens, or examples for 1-D labels) times N; DDP averages over
ranks, so the synchronised gradient is the 1-process gradient up to floating-point summation order.
Flat-LoRA's noise is seeded by (seed, step, layer) and its sigma comes from the replicated weights,
so every rank perturbs identically; SAM all-reduces its first-pass gradients (methods/sam.py).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULTS = {"processes": 1, "backend": "auto", "timeout_minutes": 60}


def settings(run: dict) -> dict:
    """The run's data-parallel settings with defaults (processes 1: the plain single-process path)."""
    return {**DEFAULTS, **(run["training"].get("distributed") or {})}


# --------------------------------------------------------------------------- launcher (job process)


def run_ranks(target: list[str], processes: int, what: str = "job") -> None:
    """Run `target` (`["-m", module, ...]` or `[script, ...]`) on `processes` local ranks; raise if any fails."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "--max-restarts=0", *target]
    env = dict(os.environ)
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (device.pick does the same)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default; run_task_method sets config threads
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=_fd(sys.stdout), stderr=_fd(sys.stderr), check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"data-parallel {what} failed: torch.distributed.run exited with status {done.returncode} after "
            f"{time.perf_counter() - start:.0f} s ({processes} ranks); the failing rank's traceback is in the log above")


def _fd(stream):
    """The stream's file descriptor when it has one (the job log), else inherit ours."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def launch(config: dict, task: str, method: str, job: dict | None, dp: dict) -> list[dict]:
    """Train every seed of (task, method) on dp['processes'] ranks; returns rank 0's result dicts."""
    from lorarepro import paths

    with tempfile.TemporaryDirectory(prefix="lorarepro-ranks-") as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(config))
        run_ranks(["-m", "lorarepro.distributed", str(cfg), task, method, json.dumps(job or {})], dp["processes"],
                  what=f"training of task={task} method={method}")
    return [json.loads(paths.run_result(task, method, seed).read_text()) for seed in config["seeds"]]


# --------------------------------------------------------------------------- one rank


class Ranks:
    """This rank's view of the job: who writes, the DDP-wrapped model, and the sharded accumulation."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.is_main = accelerator.is_main_process
        self.device = accelerator.device
        self.backend = accelerator.state.backend

    def wrap(self, module):
        """DDP around the module the loop calls (accelerate places it on this rank's device)."""
        self._causal = _is_causal(module)
        return self.accelerator.prepare_model(module)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def accumulate(self, model, micro_batches, batch_fn, what: str, step: int, sync: bool = True) -> float:
        """Forward + backward of this rank's shard of every micro-batch; returns the step's mean loss over all
        ranks (equal to the 1-process loss). Gradients sync on the last micro-batch only (`sync` False: never,
        for SAM's first pass, which all-reduces what it needs itself). A non-finite loss on any rank raises
        NonFiniteLoss on every rank, after the step's collectives, so no rank is left waiting."""
        from lorarepro.loop import NonFiniteLoss

        total = sum(len(m) for m in micro_batches)
        contribution = torch.zeros((), dtype=torch.float64, device=self.device)
        for k, indices in enumerate(micro_batches):
            mine = indices[self.rank :: self.world]
            # A rank without examples (a last batch smaller than the ranks) still runs one, at weight 0,
            # so that DDP's all-reduce sees every rank.
            batch = batch_fn(mine or indices[:1])
            units = self._units(batch) if mine else torch.zeros((), dtype=torch.float64, device=self.device)
            all_units = self.accelerator.reduce(units.clone(), reduction="sum")
            share = (units / all_units).item() * len(indices) / total
            last = sync and k == len(micro_batches) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                loss = model(**batch).loss
                self.accelerator.backward(loss * (share * self.world))
            contribution += loss.detach().double() * share
        step_loss = self.accelerator.reduce(contribution, reduction="sum").item()
        if not torch.isfinite(torch.tensor(step_loss)):
            raise NonFiniteLoss(f"{what} is {step_loss} at step {step} (mean over {self.world} ranks)", step)
        return step_loss

    def _units(self, batch: dict) -> torch.Tensor:
        """What the model's loss averages over: target tokens (labels != -100; a causal LM predicts
        from position 1 on) or examples (1-D labels)."""
        labels = batch["labels"]
        if labels.dim() == 1:
            return torch.tensor(float(len(labels)), dtype=torch.float64, device=self.device)
        if self._causal:
            labels = labels[..., 1:]
        return (labels != -100).sum().to(torch.float64)


def _is_causal(module) -> bool:
    """Whether the transformers model inside (PEFT wrappers around it) shifts its labels (decoder-only)."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if hasattr(config, "is_encoder_decoder"):
            return not config.is_encoder_decoder
    return False


def accelerator(dp: dict):
    """The rank's Accelerator: gloo on CPU, nccl (or the configured backend) on the claimed GPUs."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    cpu = not torch.cuda.is_available()
    backend = dp["backend"] if dp["backend"] != "auto" else ("gloo" if cpu else "nccl")
    if cpu and backend == "nccl":
        raise RuntimeError("training.distributed.backend is nccl but this rank sees no GPU (CUDA_VISIBLE_DEVICES)")
    group = InitProcessGroupKwargs(backend=backend, timeout=datetime.timedelta(minutes=dp["timeout_minutes"]))
    return Accelerator(cpu=cpu, mixed_precision="no", kwargs_handlers=[group, DistributedDataParallelKwargs()])


def main(argv: list[str]) -> None:
    """One rank: `python -m lorarepro.distributed <config.json> <task> <method> <job tags json>`."""
    from torch.distributed.elastic.multiprocessing.errors import record

    config_path, task, method, job = argv

    @record  # the launcher's failure summary then names the rank and its exception
    def rank_main() -> None:
        from lorarepro.config import resolve_run
        from lorarepro.train import run_task_method

        config = json.loads(Path(config_path).read_text())
        ranks = Ranks(accelerator(settings(resolve_run(config, task, method))))
        run_task_method(config, task, method, json.loads(job), ranks=ranks)
        # Only after success, and together: a rank that destroys its group while another still talks
        # to it can hang (pytorch#75097); after an error the launcher stops the other ranks.
        ranks.barrier()
        torch.distributed.destroy_process_group()

    rank_main()


if __name__ == "__main__":
    main(sys.argv[1:])
