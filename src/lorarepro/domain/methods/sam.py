"""SAM baselines of the Flat-LoRA paper (Table 6): sharpness-aware minimisation, two passes per step.

SAM (Foret et al., 2021) takes each optimizer step's gradient at the worst-case nearby point
``theta + e`` with ``e = rho * g / ||g||`` (``g`` the gradient at ``theta``, ``||.||`` the global L2 norm
over every perturbed tensor). The perturbed *space* is what distinguishes the baselines:

``weight`` (SAM-W)
    The merged weight ``W' = W + s*BA`` of every LoRA-wrapped linear. Since ``dL/dW' = dL/dW``, the
    first pass turns on gradients for the frozen base weights ``W``; ``e_W = rho * g_W / ||g_W||`` is
    added to ``W`` (so ``W'`` moves by exactly ``e_W``), and the second pass, with ``W`` frozen again,
    gives gradients to A and B only.
``lora`` (LoRA-SAM)
    The adapter matrices only (every ``lora_A`` / ``lora_B`` / ... parameter of the PEFT adapters).
``trainable`` (plain SAM)
    Every parameter the optimizer trains: full fine-tuning + SAM, or LoRA + trained heads.

Perturbed tensors are restored EXACTLY (a copy is taken before ``e`` is added and copied back), so
a frozen base stays bit-identical and rho = 0 gives bit-identically the plain update.

Memory (what Table 6 reports). Per optimizer step SAM-W holds, for every target layer, the
gradient of ``W`` (m x n, from the first backward on) and a copy of ``W`` (m x n, from ``ascend`` to
``end_step``; each layer's gradient is freed as its copy is taken, so together about one m x n per
layer plus one layer). That is the size of the targeted base weights -- the cost Flat-LoRA avoids
(its noise is regenerated from a seed; O(m) per layer). LoRA-SAM holds a copy of A and B only
(negligible). Compute: two forward/backward passes per step, and SAM-W's first backward also forms
the O(tokens * m * n) weight gradients.

Protocol with the training loop (``lorarepro.stages.training.loop.train_steps`` calls it)::

    sam = SAM(model, rho=0.05, space="weight")
    for step, micro_batches in enumerate(plan):
        sam.begin_step(step)          # SAM-W: requires_grad on the base weights; RNG state saved
        for mb in micro_batches:      # pass 1 at theta: its loss is the step's recorded loss
            loss(mb).backward()
        sam.ascend()                  # e from the accumulated gradient; theta += e; grads cleared;
                                      # W frozen again; RNG state rewound (same dropout masks)
        for mb in micro_batches:      # pass 2 at theta + e: the gradient the optimizer uses
            loss(mb).backward()
        sam.end_step()                # theta restored exactly from the copies
        optimizer.step(); optimizer.zero_grad()
    sam.close()                       # restores anything still perturbed (e.g. after an exception)

A hook "is two-pass" iff it has ``ascend``; FlatLoRA (one pass) has only ``begin_step``/``end_step``.
Gradient accumulation: both passes run every micro-batch of the step, so ``g`` is the full batch's.
Data parallel: pass 1 does not sync through DDP; ``ascend`` all-reduces the target gradients, so
every rank adds the same ``e`` (the full batch's), as one process would.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from peft.tuners.lora import LoraLayer
from torch import nn

from lorarepro.domain.methods.lora import wrapped_linears

__all__ = ["SAM", "SPACES", "from_run"]

SPACES = ("weight", "lora", "trainable")


def _base_weights(model: nn.Module) -> list[nn.Parameter]:
    """The frozen base weight of every PEFT LoraLayer wrapping a linear (tied weights once)."""
    out, seen = [], set()
    for _, base in wrapped_linears(model, "SAM-W"):
        if id(base.weight) not in seen:
            seen.add(id(base.weight))
            out.append(base.weight)
    return out


def _adapter_params(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters of the PEFT LoRA adapters (lora_A, lora_B, ... of every LoraLayer)."""
    out, seen = [], set()
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for attr in module.adapter_layer_names:
            for p in getattr(module, attr).parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def _average_over_ranks(grads: list[torch.Tensor]) -> None:
    """Data-parallel ranks (lorarepro.stages.training.ranks) run pass 1 without DDP's sync and SAM-W's base-weight
    gradients are outside DDP anyway: average them here, so every rank ascends along the same,
    full-batch gradient (each rank's pass-1 loss carries its share of the batch times the world size)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for g in grads:  # SUM then divide: gloo has no AVG
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        g.div_(world)


def _global_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm over all tensors together, accumulated in fp32 at least."""
    if not tensors:
        return 0.0
    norms = [torch.linalg.vector_norm(t, dtype=torch.promote_types(t.dtype, torch.float32)) for t in tensors]
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms])).item()


class SAM:
    """Two-pass SAM step strategy over one parameter space; see the module docstring."""

    def __init__(self, model: nn.Module, *, rho: float, space: str = "weight") -> None:
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) or rho < 0:
            raise ValueError(f"sam.rho must be a finite number >= 0, got {rho!r}")
        if space not in SPACES:
            raise ValueError(f"sam.space must be one of {SPACES}, got {space!r}")
        self.rho = float(rho)
        self.space = space
        if space == "weight":
            targets = _base_weights(model)
        elif space == "lora":
            targets = _adapter_params(model)
        else:
            targets = [p for p in model.parameters() if p.requires_grad]
        if not targets:
            what = {"weight": "no PEFT LoraLayer", "lora": "no trainable LoRA adapter", "trainable": "no trainable parameter"}
            raise ValueError(f"SAM found nothing to perturb (sam.space={space!r}: {what[space]} in the model)")
        self._targets: list[nn.Parameter] = targets
        # Everything that carries a gradient in pass 1 and must start pass 2 clean.
        self._trainable = [p for p in model.parameters() if p.requires_grad]
        self._saved: list[torch.Tensor] | None = None  # copies of the targets while perturbed
        self._rng: tuple | None = None
        self._step: int | None = None
        self.last_grad_norm: float | None = None  # ||g|| of the most recent ascend (diagnostics)

    # ----------------------------------------------------------------- per-step protocol

    def begin_step(self, step: int) -> None:
        """Open step ``step``: remember the RNG state; SAM-W lets the base weights collect gradients."""
        if self._step is not None:
            raise RuntimeError(f"SAM.begin_step({step}) while step {self._step} is open; call end_step() first")
        self._step = step
        self._rng = _rng_state()
        if self.space == "weight":
            for w in self._targets:
                w.grad = None
                w.requires_grad_(True)

    def ascend(self) -> None:
        """After pass 1: theta += rho * g / ||g||, clear every gradient, rewind the RNG for pass 2."""
        if self._step is None or self._saved is not None:
            raise RuntimeError("SAM.ascend must follow begin_step and come once per step")
        grads = [p.grad for p in self._targets if p.grad is not None]
        _average_over_ranks(grads)
        norm = _global_norm(grads)
        self.last_grad_norm = norm
        scale = self.rho / norm if norm > 0 else 0.0
        saved = []
        with torch.no_grad():
            for p in self._targets:
                saved.append(p.detach().clone())
                if p.grad is not None and scale:
                    p.add_(p.grad.to(p.dtype), alpha=scale)
                p.grad = None  # free each gradient as its copy is taken (SAM-W: one m x n at a time)
        self._saved = saved
        if self.space == "weight":
            for w in self._targets:
                w.requires_grad_(False)
        for p in self._trainable:
            p.grad = None
        _set_rng_state(self._rng)

    def end_step(self) -> None:
        """After pass 2 (before optimizer.step): copy the saved values back, bit-exactly."""
        if self._step is None:
            raise RuntimeError("SAM.end_step without a matching begin_step")
        if self._saved is None:
            raise RuntimeError("SAM.end_step before ascend: SAM needs two passes per step")
        self._restore()
        self._step = None

    def close(self) -> None:
        """Restore anything still perturbed and refreeze the base weights. Idempotent."""
        if self._saved is not None:
            self._restore()
        if self.space == "weight":
            for w in self._targets:
                w.grad = None
                w.requires_grad_(False)
        self._step = None

    def resume_weights(self) -> None:
        """Nothing beyond the trainable parameters: every step ends with the weights restored."""
        return None

    def finish(self, pristine) -> None:
        """Nothing to report or undo after training (lorarepro.domain.methods.finish)."""
        return None

    def _restore(self) -> None:
        with torch.no_grad():
            for p, saved in zip(self._targets, self._saved):
                p.copy_(saved)
        self._saved = None


def from_run(model: nn.Module, settings: dict, total_steps: int, seed: int) -> SAM:
    """The strategy of a run's resolved `sam` settings (lorarepro.domain.methods.STRATEGIES)."""
    return SAM(model, rho=settings["rho"], space=settings["space"])


def _rng_state() -> tuple:
    """Global CPU (and CUDA, when in use) RNG state: pass 2 replays pass 1's dropout masks."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
