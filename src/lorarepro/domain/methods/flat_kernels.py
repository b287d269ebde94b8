"""Flat-LoRA's fused Triton kernels: ``W + eps`` written in one pass, sigma's rows from one read of W.

Imported by :mod:`lorarepro.domain.methods.flat` only where Triton is importable (torch's CUDA wheels ship
it; the CPU wheels, and so CI, do not: there every path is plain torch). The kernels run on CUDA
tensors, and on any tensor under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the test
suite checks them without a GPU.

Why (the cost model in lorarepro.domain.methods.flat): in plain torch, ``W + eps`` for a bf16 weight costs an fp32 ``randn``, a
scale, an add and a cast -- about 28 bytes of memory traffic per element against 4 to read and write W
once. Here each element is read once, its noise made in registers (Philox, four normals per counter),
scaled by sigma_i, added in fp32, rounded once to the output's dtype and written once.

Noise layout: element (i, j) of an m x n weight takes normal ``k = j // q`` of ``randn4x(seed, i*q + p)``
with ``q = ceil(n / 4)`` and ``p = j % q``. It depends on (seed, i, j, n) only, not on block sizes or
grid, so a seed gives the same noise on every rank and rerun of one device type (a different stream
from the CPU's torch.Generator).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

__all__ = ["DTYPES", "MAX_RANK", "perturb", "runs_on", "sigma_rows"]

DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # fp64 weights keep the plain torch path
MAX_RANK = 64  # sigma_rows keeps an (R x R) Gram block per program; larger adapters use plain torch
_NOISE_BLOCK = 1024  # Philox counters per program (4 normals each)
_SIGMA_BLOCK_M, _SIGMA_BLOCK_N = 32, 64


@triton.jit
def _add_quarter(w_ptr, out_ptr, w_row, out_row, stride_wn, stride_on, cols, mask, eps):
    w = tl.load(w_ptr + w_row + cols * stride_wn, mask=mask).to(tl.float32)
    tl.store(out_ptr + out_row + cols * stride_on, (w + eps).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed"])
def _perturb_kernel(w_ptr, out_ptr, sigma_ptr, seed, n, quarter, stride_wm, stride_wn, stride_om, stride_on,
                    SUBTRACT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    pos = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = pos < quarter
    z0, z1, z2, z3 = tl.randn4x(seed, row * quarter + pos)
    s = tl.load(sigma_ptr + row)
    if SUBTRACT:
        s = -s
    w_row = row.to(tl.int64) * stride_wm
    out_row = row.to(tl.int64) * stride_om
    _add_quarter(w_ptr, out_ptr, w_row, out_row, stride_wn, stride_on, pos, live & (pos < n), s * z0)
    _add_quarter(w_ptr, out_ptr, w_row, out_row, stride_wn, stride_on, quarter + pos, live & (quarter + pos < n), s * z1)
    _add_quarter(w_ptr, out_ptr, w_row, out_row, stride_wn, stride_on, 2 * quarter + pos,
                 live & (2 * quarter + pos < n), s * z2)
    _add_quarter(w_ptr, out_ptr, w_row, out_row, stride_wn, stride_on, 3 * quarter + pos,
                 live & (3 * quarter + pos < n), s * z3)


@triton.jit
def _sigma_kernel(w_ptr, a_ptr, b_ptr, out_ptr, m, n, r, stride_wm, stride_wn, b_scale, out_scale,
                  HAS_LORA: tl.constexpr, R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < m
    w_rows = rows.to(tl.int64) * stride_wm
    ks = tl.arange(0, R)
    sq = tl.zeros([BLOCK_M], dtype=tl.float32)
    wa = tl.zeros([BLOCK_M, R], dtype=tl.float32)
    gram = tl.zeros([R, R], dtype=tl.float32)
    for start in range(0, n, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < n
        w = tl.load(w_ptr + w_rows[:, None] + cols[None, :] * stride_wn, mask=row_ok[:, None] & col_ok[None, :],
                    other=0.0).to(tl.float32)
        sq += tl.sum(w * w, axis=1)
        if HAS_LORA:
            a = tl.load(a_ptr + ks[:, None] * n + cols[None, :], mask=(ks[:, None] < r) & col_ok[None, :], other=0.0)
            wa += tl.dot(w, tl.trans(a), input_precision="ieee")
            gram += tl.dot(a, tl.trans(a), input_precision="ieee")
    total = sq
    if HAS_LORA:
        b = tl.load(b_ptr + rows[:, None] * r + ks[None, :], mask=row_ok[:, None] & (ks[None, :] < r), other=0.0)
        b = b * b_scale
        total += 2.0 * tl.sum(b * wa, axis=1) + tl.sum(tl.dot(b, gram, input_precision="ieee") * b, axis=1)
    tl.store(out_ptr + rows, tl.sqrt_rn(tl.maximum(total, 0.0)) * out_scale, mask=row_ok)


_INTERPRETED = isinstance(_perturb_kernel, InterpretedFunction)


def runs_on(weight: torch.Tensor) -> bool:
    """Whether the kernels serve this weight: a CUDA tensor (any tensor under the interpreter) of a
    supported dtype. The choice depends on the device type and dtype only, never on timing."""
    return weight.dtype in DTYPES and weight.dim() == 2 and (weight.is_cuda or _INTERPRETED)


def perturb(weight: torch.Tensor, sigma: torch.Tensor, seed: int, *, out: torch.Tensor | None = None,
            subtract: bool = False) -> torch.Tensor:
    """``out[i, j] = round(W[i, j] + sigma[i] * z[i, j])`` (``-`` with ``subtract``), in fp32, rounded once.

    ``out`` defaults to a new tensor in W's dtype; ``out=weight`` updates W in place (each element is
    read and written by the same program). ``sigma`` is fp32, shape (m,).
    """
    m, n = weight.shape
    quarter = triton.cdiv(n, 4)
    if m * quarter >= 2**31:
        raise ValueError(f"Flat-LoRA's fused noise takes weights under 2**33 elements, got {m} x {n}")
    if out is None:
        out = torch.empty_like(weight, memory_format=torch.contiguous_format)
    if m and n:
        grid = (m, triton.cdiv(quarter, _NOISE_BLOCK))
        _perturb_kernel[grid](weight, out, sigma, seed, n, quarter, weight.stride(0), weight.stride(1),
                              out.stride(0), out.stride(1), SUBTRACT=subtract, BLOCK=_NOISE_BLOCK)
    return out


def sigma_rows(weight: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, b_scale: float,
               out_scale: float) -> torch.Tensor:
    """``out_scale * ||W_i + b_scale * (B A)_i||`` per row, fp32, reading W once and forming no m x n tensor.

    ``||W_i||^2 + 2 s B_i.(W A^T)_i + s^2 B_i (A A^T) B_i^T``, every term accumulated in fp32 (the Gram
    block A A^T is recomputed by each program from the A tiles it loads anyway). ``a`` (r x n) and ``b``
    (m x r) are fp32 and contiguous, r <= MAX_RANK; None when the layer has no adapter.
    """
    m, n = weight.shape
    out = torch.empty(m, dtype=torch.float32, device=weight.device)
    has_lora = a is not None
    r = a.shape[0] if has_lora else 0
    if has_lora and r > MAX_RANK:
        raise ValueError(f"sigma_rows takes adapters of rank <= {MAX_RANK}, got {r}")
    if m:
        grid = (triton.cdiv(m, _SIGMA_BLOCK_M),)
        _sigma_kernel[grid](weight, a if has_lora else weight, b if has_lora else weight, out, m, n, r,
                            weight.stride(0), weight.stride(1), float(b_scale), float(out_scale),
                            HAS_LORA=has_lora, R=max(16, triton.next_power_of_2(r)),
                            BLOCK_M=_SIGMA_BLOCK_M, BLOCK_N=_SIGMA_BLOCK_N)
    return out
