"""Flat-LoRA: a random perturbation of the full weight space, regenerated from seeds.

Paper: Li et al., "Flat-LoRA: Low-Rank Adaptation over a Flat Loss Landscape", ICML 2025
(arXiv 2409.14396); this project's reading of it is the README's section "Flat-LoRA here".

For every target linear layer with frozen weight ``W`` (m x n, out x in) and, for LoRA layers, the
adapter delta ``s*BA``, at optimizer step ``t`` of ``T``::

    W'      = W + s*BA                         (PEFT's ``get_delta_weight``; W itself otherwise)
    sigma_i = f(t) * rho / sqrt(n) * ||W'_i,:||_2     (no grad, constant within the step)
    eps_ij  ~ N(0, sigma_i^2)
    f(t)    = 1/2 * (1 - cos(pi * t / T))

and the loss of that step is taken at ``W + eps`` (gradients reach the trainable parameters only).
The same ``eps`` serves every micro-batch of one optimizer step. It is never stored: each draw is
seeded with ``noise_seed(run_seed, step, layer_index)`` (a private ``torch.Generator``, or the fused
kernel's Philox counters), so every data-parallel rank draws the same noise, reruns are bit-identical
and the global RNG is untouched.
Persistent memory is O(m) per layer (the sigma rows and one integer seed).

Two modes:

``exact`` (default)
    ``W`` is never written. While a step is armed, the target layer's ``forward`` is an instance
    attribute that calls :class:`_PerturbedLinear`, an autograd function that regenerates ``eps``,
    uses ``W + eps`` as a temporary, and saves only its input (plus the existing ``W`` by reference and
    the O(m) sigma rows). Its backward regenerates ``eps`` again. Base weights stay bit-identical.
``inplace``
    As the official code, but seeded: ``eps`` is added to ``W`` in place by :meth:`FlatLoRA.begin_step`
    and the regenerated ``eps`` subtracted by :meth:`FlatLoRA.end_step`. Floating-point rounding makes
    ``(W + eps) - eps != W``; measure it with :meth:`FlatLoRA.drift` against a caller-held
    :meth:`FlatLoRA.snapshot` and undo it with :meth:`FlatLoRA.restore`.

Usage (one optimizer step, with gradient accumulation)::

    flat = FlatLoRA(model, rho=0.05, total_steps=T, seed=run_seed)
    for step in range(T):
        flat.begin_step(step)
        for micro_batch in ...:
            loss(model, micro_batch).backward()
        flat.end_step()
        optimizer.step(); optimizer.zero_grad()
    flat.close()

Cost. One noise draw is O(m*n) random numbers and a pass through the layer O(tokens*m*n) FLOPs,
so the overhead falls as the tokens per micro-batch grow. sigma needs no m x n temporary: ``||W_i + s(BA)_i||^2 = ||W_i||^2 +
2s B_i.(W A^T)_i + s^2 B_i (A A^T) B_i^T``, from one read of W, accumulated in fp32 (every device).
On CUDA with Triton (shipped with torch's CUDA wheels) ``W + eps`` is one fused pass
(:mod:`lorarepro.domain.methods.flat_kernels`): Philox noise in registers, scaled, added, written once in
W's dtype. Elsewhere (CPU) it is plain torch: ``torch.randn`` from a private ``torch.Generator``.

AdaLoRA. As defined, Flat-LoRA perturbs every adapted linear, AdaLoRA's ``SVDLinear`` too (sigma from
``W + scaling/ranknum * B (A * E)``). The official trainer perturbs only ``peft.tuners.lora.layer.Linear``
modules (logTrainer.py:L156-157, as the project reads it), so its "AdaLoRA + Flat" trains with no noise at
all; ``adalora_noise=False`` (config ``flat: {adalora_noise: false}``) does the same: linears wrapped by an
AdaLoRA layer are no target, and a model left with no target trains as the plain method (recorded as
``layers: 0`` with ``excluded_adalora``).

Notes: the noise of half-precision weights is drawn in fp32 and ``W + eps`` rounded once; a step with
``f(t) * rho == 0`` (step 0, or rho = 0) arms nothing, so the model is exactly the plain one; draws
are identical across ranks of one device type (the CPU's torch.Generator and the CUDA kernel's Philox
give different streams); a weight tied between several linears is perturbed once, at its first module
in ``named_modules()``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lorarepro.domain.methods.lora import wrapped_linears

if importlib.util.find_spec("triton") is not None:  # torch's CUDA wheels ship Triton; the CPU wheels (CI) do not
    from lorarepro.domain.methods import flat_kernels
else:
    flat_kernels = None

__all__ = ["FlatLoRA", "flat_factor", "from_run", "noise_seed"]

MODES = ("exact", "inplace")
SCOPES = ("lora", "all")
_SEED_MASK = (1 << 63) - 1


# --------------------------------------------------------------------------- pure functions


def flat_factor(step: int, total_steps: int) -> float:
    """Noise schedule f(t) = 1/2 * (1 - cos(pi * t / T)): 0 at t = 0, 1/2 at T/2, 1 at T.

    ``step / total_steps`` is clamped to [0, 1], so a step count that overshoots ``total_steps`` (a
    rounding difference in the trainer) keeps the full noise rather than decreasing it again.
    """
    if total_steps < 1:
        raise ValueError(f"flat.total_steps must be >= 1, got {total_steps!r}")
    frac = min(max(step / total_steps, 0.0), 1.0)
    return 0.5 * (1.0 - math.cos(math.pi * frac))


def noise_seed(run_seed: int, step: int, layer_index: int) -> int:
    """A 63-bit non-negative seed derived from (run seed, optimizer step, layer index).

    BLAKE2b of the decimal integers with a fixed personalisation: independent of the process, the
    platform, ``PYTHONHASHSEED`` and the clock, and of the order in which seeds are asked for.
    """
    ints = (run_seed, step, layer_index)
    if not all(isinstance(v, int) for v in ints):
        raise TypeError(f"noise_seed takes integers, got {ints!r}")
    data = ",".join(str(int(v)) for v in ints).encode("ascii")
    digest = hashlib.blake2b(data, digest_size=8, person=b"flat-lora-eps").digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


# --------------------------------------------------------------------------- noise generation


def _compute_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types (the noise and W + eps are formed in fp32, then rounded once)."""
    return torch.promote_types(weight_dtype, torch.float32)


def _fused(weight: torch.Tensor) -> bool:
    """Whether the Triton kernels (methods/flat_kernels.py) serve this weight: CUDA, Triton importable."""
    return flat_kernels is not None and flat_kernels.runs_on(weight)


def _draw(sigma: torch.Tensor, seed: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """eps with eps[i, j] ~ N(0, sigma[i]^2), from a private generator (global RNG untouched)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    eps = torch.randn(shape, generator=gen, device=device, dtype=sigma.dtype)
    return eps.mul_(sigma.unsqueeze(1))


def _noise(weight: torch.Tensor, sigma: torch.Tensor, seed: int) -> torch.Tensor:
    """eps itself (m x n, in sigma's compute dtype); the fused kernel gives it as 0 + eps."""
    if _fused(weight):
        zeros = torch.zeros(weight.shape, dtype=sigma.dtype, device=weight.device)
        return flat_kernels.perturb(zeros, sigma, seed, out=zeros)
    return _draw(sigma, seed, weight.shape, weight.device)


def _perturbed(weight: torch.Tensor, sigma: torch.Tensor, seed: int) -> torch.Tensor:
    """A temporary ``W + eps`` in W's dtype (formed in fp32 for half types: one rounding)."""
    if _fused(weight):
        return flat_kernels.perturb(weight, sigma, seed)
    eps = _draw(sigma, seed, weight.shape, weight.device)
    return eps.add_(weight).to(weight.dtype)


def _shift(weight: torch.Tensor, sigma: torch.Tensor, seed: int, sign: int) -> None:
    """W <- W + sign * eps in place (half weights: formed in fp32, rounded once)."""
    if _fused(weight):
        flat_kernels.perturb(weight, sigma, seed, out=weight, subtract=sign < 0)
        return
    eps = _draw(sigma, seed, weight.shape, weight.device)
    if eps.dtype == weight.dtype:
        weight.add_(eps, alpha=sign)
    else:
        weight.copy_(eps.mul_(sign).add_(weight))


# --------------------------------------------------------------------------- sigma


_CHUNK = 1 << 22  # elements of a half weight upcast at a time by the plain-torch sigma (a bounded temporary)


def _low_rank(lora_layers: list[nn.Module], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """``(A, B, s)`` with ``s * B @ A`` the sum of the active, unmerged adapter deltas (None: none).

    The factors of PEFT's ``get_delta_weight``: LoRA ``scaling * B A``; AdaLoRA ``scaling / (ranknum +
    1e-5) * B (A * E)``; any other tuner (VeRA, LoHa, LoKr, ...) its dense ``get_delta_weight`` (`_dense`).
    Several adapters are stacked (A's rows, B's columns) with their scales in B.
    """
    parts = []
    for layer in lora_layers:
        if getattr(layer, "disable_adapters", False):
            continue
        merged = set(getattr(layer, "merged_adapters", ()))
        for adapter in layer.active_adapters:
            # a tuner layer's first adapter parameter dict says which adapters it holds (LoRA: lora_A)
            if adapter not in getattr(layer, layer.adapter_layer_names[0]) or adapter in merged:
                continue
            if not hasattr(layer, "lora_A"):
                parts.append(_dense(layer, adapter))
                continue
            a, b = layer.lora_A[adapter], layer.lora_B[adapter]
            if hasattr(layer, "lora_E"):  # AdaLoRA: A, B, E are parameters; ranknum a tensor
                parts.append((a * layer.lora_E[adapter], b, layer.scaling[adapter] / (layer.ranknum[adapter] + 1e-5)))
            else:
                parts.append((a.weight, b.weight, layer.scaling[adapter]))
    if not parts:
        return None
    if len(parts) == 1 and not torch.is_tensor(parts[0][2]):
        a, b, s = parts[0]
        return a.detach().to(dtype).contiguous(), b.detach().to(dtype).contiguous(), float(s)
    a = torch.cat([a.detach().to(dtype) for a, _, _ in parts])
    b = torch.cat([(b.detach() * s).to(dtype) for _, b, s in parts], dim=1)
    return a, b.contiguous(), 1.0


def _dense(layer: nn.Module, adapter: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A tuner without low-rank factors: its delta D (m x n) as the exact factors I D or D I (the
    smaller identity), so the row norms of W + D need no second formula."""
    if not hasattr(layer, "get_delta_weight"):
        where = f"{type(layer).__module__}.{type(layer).__name__}"  # e.g. peft.tuners.ia3.layer.Linear
        raise TypeError(f"Flat-LoRA needs the adapter's delta weight; {where} has no get_delta_weight")
    delta = layer.get_delta_weight(adapter).detach()
    m, n = delta.shape
    eye = torch.eye(min(m, n), dtype=delta.dtype, device=delta.device)
    return (delta, eye, 1.0) if m <= n else (eye, delta, 1.0)


def _row_norms(weight: torch.Tensor, factors, out_scale: float) -> torch.Tensor:
    """``out_scale * ||W_i + s (B A)_i||`` per row without an m x n temporary (plain torch).

    ``||W_i||^2 + 2 s B_i.(W A^T)_i + s^2 B_i (A A^T) B_i^T`` in the compute dtype (fp32 for half W, whose
    rows are upcast ``_CHUNK`` elements at a time). Rounding error is relative to ``||W_i||^2 +
    ||s (BA)_i||^2``: a row the adapter nearly cancels keeps an absolute error, clamped at 0, never NaN.
    """
    cdt = _compute_dtype(weight.dtype)
    m, n = weight.shape
    norms = torch.empty(m, dtype=cdt, device=weight.device)
    wa = None if factors is None else torch.empty(m, factors[0].shape[0], dtype=cdt, device=weight.device)
    rows = max(1, _CHUNK // max(n, 1))
    for start in range(0, m, rows):
        block = weight[start:start + rows].to(cdt)
        norms[start:start + rows] = torch.linalg.vector_norm(block, dim=1)
        if wa is not None:
            torch.mm(block, factors[0].t(), out=wa[start:start + rows])
    if factors is None:
        return norms.mul_(out_scale)
    a, b, s = factors
    b = b * s
    total = norms.square_().add_(2 * (b * wa).sum(1)).add_(((b @ (a @ a.t())) * b).sum(1))
    return total.clamp_min_(0).sqrt_().mul_(out_scale)


class _PerturbedLinear(torch.autograd.Function):
    """y = x (W + eps)^T + b, with eps regenerated from its seed in forward and again in backward.

    Saved for backward: ``W`` (the existing parameter, by reference), the O(m) sigma rows and, only
    when ``W`` itself needs a gradient, ``x`` (for a frozen ``W``, as autograd's own linear does: saving
    ``x`` would keep a tokens x n activation alive through the backward). ``W + eps`` is a temporary of
    each pass, never kept by autograd. ``cast`` is the autocast dtype
    the surrounding region asked for (None outside autocast): inputs are cast to it by hand and the
    matmuls run with autocast off, so forward and backward agree on the precision.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, sigma, seed, cast):  # type: ignore[override]
        ctx.seed = seed
        ctx.cast = cast
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight, sigma)
        with torch.autocast(x.device.type, enabled=False):
            w = _perturbed(weight, sigma, seed)
            if cast is not None:
                x, w = x.to(cast), w.to(cast)
                bias = None if bias is None else bias.to(cast)
            out = F.linear(x, w, bias)
        # F.linear on a 3-D input returns a view; a custom Function's view may not be modified in
        # place, and adapters do exactly that (AdaLoRA: `result += ...`): hand back a fresh tensor.
        return out.clone() if out._is_view() else out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight, sigma = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        with torch.autocast(grad_out.device.type, enabled=False):
            cast = ctx.cast
            if need_x:
                w = _perturbed(weight, sigma, ctx.seed)
                w = w if cast is None else w.to(cast)
                grad_x = (grad_out.to(w.dtype) @ w).to(ctx.x_dtype)
                del w
            g2 = grad_out.reshape(-1, grad_out.shape[-1])
            if need_w:
                xc = x if cast is None else x.to(cast)
                x2 = xc.reshape(-1, xc.shape[-1])
                grad_w = (g2.t().to(x2.dtype) @ x2).to(weight.dtype)
            if need_b:
                grad_b = g2.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None, None


class _ArmedForward:
    """The exact-mode ``forward`` of an armed layer (an object, so a deepcopy binds to the copy)."""

    def __init__(self, layer: nn.Linear, sigma: torch.Tensor, seed: int) -> None:
        self.layer, self.sigma, self.seed = layer, sigma, seed

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        cast = _autocast_dtype(input.device.type) if input.is_floating_point() else None
        layer = self.layer
        return _PerturbedLinear.apply(input, layer.weight, layer.bias, self.sigma, self.seed, cast)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except (RuntimeError, TypeError):  # device type without autocast support
        return None
    return None


# --------------------------------------------------------------------------- target discovery


def _lora_wrappers(model: nn.Module) -> tuple[dict[int, list[nn.Module]], set[int]]:
    """id(base linear) -> the PEFT LoraLayers wrapping it; ids of the modules of their adapters."""
    wrappers: dict[int, list[nn.Module]] = {}
    adapter_parts: set[int] = set()
    for module, base in wrapped_linears(model, "Flat-LoRA"):
        wrappers.setdefault(id(base), []).append(module)
        base_modules = {id(m) for m in base.modules()}
        adapter_parts.update(id(m) for m in module.modules() if id(m) not in base_modules)
    return wrappers, adapter_parts


def _is_adalora(layer: nn.Module) -> bool:
    """An AdaLoRA adapter layer (PEFT's AdaLoraLayer: SVDLinear and its quantised forms)."""
    from peft.tuners.adalora.layer import AdaLoraLayer  # deferred: PEFT, only when a model is searched

    return isinstance(layer, AdaLoraLayer)


def _find_targets(model: nn.Module, scope: str, adalora_noise: bool = True,
                  ) -> tuple[list[str], list[nn.Linear], list[list[nn.Module]], int]:
    """Target linears in ``named_modules()`` order, each with the LoRA layers that wrap it, and how many
    AdaLoRA-wrapped linears were left out (``adalora_noise=False``, the official trainer's behaviour).

    scope "lora": the base layer of every PEFT ``LoraLayer``. scope "all": every ``nn.Linear`` that
    is not part of a LoRA adapter (lora_A / lora_B / ...), i.e. also un-adapted linears. A weight
    shared by several linears (tied weights) is targeted once, at its first module.
    """
    wrappers, adapter_parts = _lora_wrappers(model)
    names, layers, lora_of = [], [], []
    seen_weights: set[int] = set()
    excluded = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module) in adapter_parts:
            continue
        if not adalora_noise and any(_is_adalora(w) for w in wrappers.get(id(module), [])):
            excluded += 1
            continue
        if (scope == "lora" and id(module) not in wrappers) or id(module.weight) in seen_weights:
            continue
        if not module.weight.is_floating_point():
            raise TypeError(f"Flat-LoRA needs a floating-point weight; {name!r} has {module.weight.dtype}")
        seen_weights.add(id(module.weight))
        names.append(name)
        layers.append(module)
        lora_of.append(wrappers.get(id(module), []))
    return names, layers, lora_of, excluded


# --------------------------------------------------------------------------- the method


class FlatLoRA:
    """Flat-LoRA's per-step random weight perturbation on a (PEFT) model; see the module docstring.

    Persistent state: per target layer one sigma vector (m values) and one integer seed, plus
    references to the modules. No m x n tensor is ever held between calls.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        rho: float,
        total_steps: int,
        seed: int,
        mode: str = "exact",
        scope: str = "lora",
        adalora_noise: bool = True,
    ) -> None:
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) or rho < 0:
            raise ValueError(f"flat.rho must be a finite number >= 0, got {rho!r}")
        if mode not in MODES:
            raise ValueError(f"flat.mode must be one of {MODES}, got {mode!r}")
        if scope not in SCOPES:
            raise ValueError(f"flat.scope must be one of {SCOPES}, got {scope!r}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"flat.total_steps must be an integer >= 1, got {total_steps!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"flat.seed must be an integer, got {seed!r}")
        if not isinstance(adalora_noise, bool):
            raise ValueError(f"flat.adalora_noise must be true or false, got {adalora_noise!r}")

        self.rho = float(rho)
        self.total_steps = total_steps
        self.seed = seed
        self.mode = mode
        self.scope = scope
        self.adalora_noise = adalora_noise
        names, layers, lora_of, self.excluded_adalora = _find_targets(model, scope, adalora_noise)
        if not layers and not self.excluded_adalora:
            what = "no PEFT LoraLayer" if scope == "lora" else "no nn.Linear"
            raise ValueError(f"Flat-LoRA found no target layer (flat.scope={scope!r}: {what} in the model)")
        self.target_names: list[str] = names
        self._layers: list[nn.Linear] = layers
        self._lora_of: list[list[nn.Module]] = lora_of
        self._sigma: list[torch.Tensor | None] = [None] * len(layers)
        self._seeds: list[int | None] = [None] * len(layers)
        self._step: int | None = None  # the step of the open window (None: closed)
        self._active = False  # noise is in effect in the open window (False when f(t)*rho == 0)
        self._saved_forward: list[Any] = []  # exact: instance forwards we shadowed (None: none)
        self._closed = False

    # ----------------------------------------------------------------- per-step protocol

    def begin_step(self, step: int) -> None:
        """Open optimizer step ``step`` (0-based): sigma rows and seeds; arm (exact) or add eps (inplace)."""
        if self._closed:
            raise RuntimeError("FlatLoRA.begin_step after close()")
        if self._step is not None:
            raise RuntimeError(f"FlatLoRA.begin_step({step}) while step {self._step} is open; call end_step() first")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        scale = flat_factor(step, self.total_steps) * self.rho
        with torch.no_grad():
            for idx in range(len(self._layers)):
                self._sigma[idx] = self._sigma_rows(idx, scale)
                self._seeds[idx] = noise_seed(self.seed, step, idx)
        self._step = step
        self._active = scale > 0.0
        if not self._active:
            return  # rho == 0 or f(t) == 0: exactly the plain model
        if self.mode == "exact":
            self._arm()
        else:
            self._shift_weights(+1)

    def end_step(self) -> None:
        """Close the open step, after the backward of its last micro-batch (inplace: subtract eps)."""
        if self._step is None:
            raise RuntimeError("FlatLoRA.end_step without a matching begin_step")
        if self._active:
            if self.mode == "exact":
                self._disarm()
            else:
                self._shift_weights(-1)
        self._step = None
        self._active = False

    def close(self) -> None:
        """Undo everything: an open step is ended, every forward override removed. Idempotent."""
        if self._closed:
            return
        if self._step is not None:
            self.end_step()
        self._disarm()
        self._closed = True

    # ----------------------------------------------------------------- inspection

    def sigma(self, layer_index: int) -> torch.Tensor:
        """The sigma rows (shape (m,), fp32 for half weights) of the most recent begin_step."""
        sig = self._sigma[layer_index]
        if sig is None:
            raise RuntimeError("FlatLoRA.sigma: no step has begun yet")
        return sig

    def noise(self, layer_index: int) -> torch.Tensor:
        """Regenerate eps (m x n, in the compute dtype) of the most recent begin_step (tests only)."""
        sig = self.sigma(layer_index)
        return _noise(self._layers[layer_index].weight.detach(), sig, self._seeds[layer_index])

    # ----------------------------------------------------------------- the trainer's view (lorarepro.domain.methods)

    def resume_weights(self) -> dict[str, torch.Tensor] | None:
        """In-place mode trains on W with its rounding drift: a resumed run must continue from that W."""
        if self.mode != "inplace":
            return None
        return {f"{name}.weight": layer.weight for name, layer in zip(self.target_names, self._layers)}

    def finish(self, pristine) -> dict:
        """The run record's `flat` entry; in-place mode first measures its rounding drift against the
        saved backbone (`pristine(target_names)`) and then restores W from it exactly."""
        info: dict[str, Any] = {"mode": self.mode, "layers": len(self.target_names)}
        if not self.adalora_noise:  # only then, so records of the default keep their keys
            info["excluded_adalora"] = self.excluded_adalora
        if self.mode == "inplace":
            reference = pristine(self.target_names)
            info.update({f"drift_{k}": v for k, v in self.drift(reference).items()})
            self.restore(reference)
        return info

    # ----------------------------------------------------------------- drift (inplace mode)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of the target weights, owned by the caller (the reference for drift/restore)."""
        return {name: layer.weight.detach().clone() for name, layer in zip(self.target_names, self._layers)}

    def drift(self, reference: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> dict[str, float]:
        """How far the target weights are from ``reference`` (a snapshot, or tensors in target order).

        Returns ``max_abs`` (largest |W - W_ref| entry), ``rel_fro`` (||W - W_ref||_F / ||W_ref||_F
        over all targets together) and ``frac_changed`` (share of entries that differ at all).
        """
        refs = self._reference_list(reference)
        max_abs, diff_sq, ref_sq, changed, total = 0.0, 0.0, 0.0, 0, 0
        with torch.no_grad():
            for layer, ref in zip(self._layers, refs):
                w = layer.weight.detach().double()
                r = ref.to(w.device).double()
                d = w - r
                if d.numel():
                    max_abs = max(max_abs, d.abs().max().item())
                diff_sq += d.square().sum().item()
                ref_sq += r.square().sum().item()
                changed += int((d != 0).sum().item())
                total += d.numel()
        rel = math.sqrt(diff_sq) / math.sqrt(ref_sq) if ref_sq > 0 else (0.0 if diff_sq == 0 else math.inf)
        return {"max_abs": max_abs, "rel_fro": rel, "frac_changed": changed / max(total, 1)}

    def restore(self, reference: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> None:
        """Copy ``reference`` back into the target weights (inplace mode: undo the rounding drift)."""
        if self._step is not None and self._active and self.mode == "inplace":
            raise RuntimeError("FlatLoRA.restore inside an open inplace step; call end_step() first")
        refs = self._reference_list(reference)
        with torch.no_grad():
            for layer, ref in zip(self._layers, refs):
                layer.weight.copy_(ref)

    # ----------------------------------------------------------------- internals

    def _reference_list(self, reference) -> list[torch.Tensor]:
        if isinstance(reference, Mapping):
            missing = [n for n in self.target_names if n not in reference]
            if missing:
                raise KeyError(f"reference lacks target weights: {missing}")
            refs = [reference[n] for n in self.target_names]
        else:
            refs = list(reference)
            if len(refs) != len(self._layers):
                raise ValueError(f"reference has {len(refs)} tensors, expected {len(self._layers)}")
        for name, layer, ref in zip(self.target_names, self._layers, refs):
            if ref.shape != layer.weight.shape:
                raise ValueError(f"reference for {name!r}: shape {tuple(ref.shape)} != {tuple(layer.weight.shape)}")
        return refs

    def _sigma_rows(self, idx: int, scale: float) -> torch.Tensor:
        """sigma_i = scale / sqrt(n) * ||(W + sum of s*BA)_i||, a fresh (m,) tensor (no grad)."""
        weight = self._layers[idx].weight.detach()
        factors = _low_rank(self._lora_of[idx], _compute_dtype(weight.dtype))
        out_scale = scale / math.sqrt(weight.shape[1])
        if _fused(weight) and (factors is None or factors[0].shape[0] <= flat_kernels.MAX_RANK):
            return flat_kernels.sigma_rows(weight, *(factors or (None, None, 1.0)), out_scale)
        return _row_norms(weight, factors, out_scale)

    def _shift_weights(self, sign: int) -> None:
        """inplace mode: W <- W + sign * eps, eps regenerated from the step's seed (no grad)."""
        with torch.no_grad():
            for idx, layer in enumerate(self._layers):
                _shift(layer.weight, self._sigma[idx], self._seeds[idx], sign)

    def _arm(self) -> None:
        """exact mode: give every target layer a perturbed forward (an instance attribute)."""
        if self._saved_forward:
            return
        for idx, layer in enumerate(self._layers):
            self._saved_forward.append(layer.__dict__.get("forward"))
            layer.forward = _ArmedForward(layer, self._sigma[idx], self._seeds[idx])

    def _disarm(self) -> None:
        """Remove the forward overrides (restoring any instance forward that was there before)."""
        for layer, previous in zip(self._layers, self._saved_forward):
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous
        self._saved_forward = []


def from_run(model: nn.Module, settings: dict, total_steps: int, seed: int) -> FlatLoRA:
    """The strategy of a run's resolved `flat` settings (lorarepro.domain.methods.STRATEGIES)."""
    return FlatLoRA(model, rho=settings["rho"], total_steps=total_steps, seed=seed, mode=settings["mode"],
                    scope=settings["scope"], adalora_noise=settings.get("adalora_noise", True))
