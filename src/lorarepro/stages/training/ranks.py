"""Data-parallel training: this process as one of N ranks (accelerate's DDP over torch.distributed).

Config: `training.<family>.distributed` (a method's or task's `training:` may override it, like any
training key): `{processes: N, backend: auto|nccl|gloo, timeout_minutes: M}` (defaults:
lorarepro.domain.experiment.distributed). Absent, or processes 1, is the single-process path, which never
builds a `Ranks` or imports accelerate.

With N > 1 the train job's launcher (lorarepro.pipeline.launcher) starts N copies of the job's own
entry point through torch.distributed.run. Each finds its rank in the environment (`join`) and
builds an `accelerate.Accelerator` (process group, its device: cuda:<local rank> of the claimed GPUs,
or the CPU with gloo). Ranks train in lockstep; rank 0 alone (`is_main`) tracks (MLflow),
evaluates, saves checkpoints, step checkpoints and the result JSON while the others wait at a
barrier. A rank stuck in a collective fails after `timeout_minutes` (it must cover rank 0's
evaluation of one seed).

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
import os

import torch

from lorarepro.domain.experiment import distributed
from lorarepro.stages.training.loop import NonFiniteLoss


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

    def close(self) -> None:
        """After success only, and together: a rank that destroys its group while another still talks
        to it can hang (pytorch#75097); after an error the launcher stops the other ranks."""
        self.barrier()
        torch.distributed.destroy_process_group()

    def accumulate(self, model, micro_batches, batch_fn, what: str, step: int, sync: bool = True) -> float:
        """Forward + backward of this rank's shard of every micro-batch; returns the step's mean loss over all
        ranks (equal to the 1-process loss). Gradients sync on the last micro-batch only (`sync` False: never,
        for SAM's first pass, which all-reduces what it needs itself). A non-finite loss on any rank raises
        NonFiniteLoss on every rank, after the step's collectives, so no rank is left waiting."""
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


def join(run) -> Ranks | None:
    """This process's rank when torch.distributed.run started it with more than one rank (LOCAL_RANK
    and WORLD_SIZE in the environment), else None: the plain single-process path."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "LOCAL_RANK" not in os.environ or world == 1:
        return None
    dp = distributed(run)
    if world != dp["processes"]:
        raise RuntimeError(f"started as one of {world} data-parallel ranks, but task={run.task} method={run.method} "
                           f"has training.distributed.processes {dp['processes']}")
    return Ranks(accelerator(dp))


def accelerator(dp: dict):
    """The rank's Accelerator: gloo on CPU, nccl (or the configured backend) on the claimed GPUs."""
    # deferred: only data-parallel ranks use accelerate
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    cpu = not torch.cuda.is_available()
    backend = dp["backend"] if dp["backend"] != "auto" else ("gloo" if cpu else "nccl")
    if cpu and backend == "nccl":
        raise RuntimeError("training.distributed.backend is nccl but this rank sees no GPU (CUDA_VISIBLE_DEVICES)")
    group = InitProcessGroupKwargs(backend=backend, timeout=datetime.timedelta(minutes=dp["timeout_minutes"]))
    return Accelerator(cpu=cpu, mixed_precision="no", kwargs_handlers=[group, DistributedDataParallelKwargs()])
