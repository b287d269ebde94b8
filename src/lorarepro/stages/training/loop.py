"""The one optimisation loop, shared by backbone pretraining and fine-tuning under every method.

Methods hook in as small strategies (Flat-LoRA's noise wraps each optimizer step; SAM adds a second
pass at perturbed weights); the loop itself knows nothing about them beyond `begin_step` / `end_step`
and, for two-pass hooks, `ascend`.
"""

import math
from dataclasses import dataclass, field

import torch
from transformers import get_cosine_schedule_with_warmup


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or inf; the message names the run and the step."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


@dataclass
class History:
    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)


def step_plan(n_examples: int, batch_size: int, grad_accum: int, epochs: int, seed: int) -> list[list[list[int]]]:
    """Indices per optimizer step, split into micro-batches; reshuffled each epoch from `seed`.

    The order depends on the seed only, so runs that share a seed see the same data order
    (paired comparisons between methods).
    """
    gen = torch.Generator().manual_seed(seed)
    plan = []
    for _ in range(epochs):
        order = torch.randperm(n_examples, generator=gen).tolist()
        for start in range(0, n_examples, batch_size):
            batch = order[start : start + batch_size]
            size = math.ceil(len(batch) / grad_accum)
            plan.append([batch[i : i + size] for i in range(0, len(batch), size)])
    return plan


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_ratio: float,
                   param_groups: list[dict] | None = None):
    """AdamW with linear warm-up then cosine decay to zero, over every trainable parameter or over
    `param_groups` (torch's; an adapter kind's own, whose groups may set their own lr and decay)."""
    params = [p for p in model.parameters() if p.requires_grad] if param_groups is None else param_groups
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def train_steps(model, plan, batch_fn, optimizer, scheduler, *, hook=None, callbacks=(), label: str = "",
                progress=None, start_step: int = 0, history: History | None = None, on_step_end=None,
                ranks=None) -> History:
    """Run the optimizer steps of `plan` from `start_step`; `batch_fn(indices) -> dict` builds a micro-batch.

    `hook` (optional) gets `begin_step(step)` before the first micro-batch and `end_step()` after the
    last backward of each step: Flat-LoRA uses it to apply one noise draw per optimizer step. A hook
    with `ascend()` (SAM, methods/sam.py) gets it after the step's micro-batches, which then run a
    second time at the perturbed weights; the recorded loss is the first (unperturbed) pass's.
    `callbacks` get `on_step_start(step)` first and `on_step_end(step)` after the optimizer step,
    before the gradients are cleared (an adapter's rank allocation reads them; the cost probe).
    A resumed run passes `start_step` and the `history` so far; `on_step_end(steps_done, history)` runs
    after each complete step, outside the hook's window (step checkpoints, lorarepro.stages.training.resume).
    `ranks` (data-parallel training, lorarepro.stages.training.ranks.Ranks): each rank runs its shard of every
    micro-batch and the recorded loss is the mean over all ranks; SAM's first pass does not sync.
    """
    history = History() if history is None else history
    model.train()
    two_pass = hook is not None and hasattr(hook, "ascend")
    if progress is not None and start_step:
        progress.update(start_step)
    for step in range(start_step, len(plan)):
        micro_batches = plan[step]
        for callback in callbacks:
            callback.on_step_start(step)
        if hook is not None:
            hook.begin_step(step)
        step_loss = _accumulate(model, micro_batches, batch_fn, f"{label}: loss", step, ranks, sync=not two_pass)
        if two_pass:
            hook.ascend()
            _accumulate(model, micro_batches, batch_fn, f"{label}: perturbed (SAM) loss", step, ranks)
        if hook is not None:
            hook.end_step()
        optimizer.step()
        scheduler.step()
        for callback in callbacks:
            callback.on_step_end(step)
        optimizer.zero_grad(set_to_none=True)
        history.steps.append(step)
        history.loss.append(step_loss)
        history.lr.append(scheduler.get_last_lr()[0])
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
        if on_step_end is not None:
            on_step_end(step + 1, history)
    return history


def _accumulate(model, micro_batches, batch_fn, what: str, step: int, ranks=None, sync: bool = True) -> float:
    """Forward + backward of every micro-batch, gradients weighted to the step's mean; its mean loss."""
    if ranks is not None:
        return ranks.accumulate(model, micro_batches, batch_fn, what, step, sync)
    total = sum(len(m) for m in micro_batches)
    step_loss = 0.0
    for indices in micro_batches:
        loss = model(**batch_fn(indices)).loss
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"{what} is {loss.item()} at step {step}", step)
        (loss * len(indices) / total).backward()
        step_loss += loss.item() * len(indices) / total
    return step_loss
