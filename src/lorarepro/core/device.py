"""Where a job computes: its GPU when one is visible (lorarepro.pipeline.gpus pins which), else the CPU."""

import os

import torch


def pick() -> torch.device:
    """cuda:0 of the job's visible GPUs, or cpu. Sets cuBLAS's workspace so deterministic algorithms
    (torch.use_deterministic_algorithms, on in every training job) do not refuse CUDA matmuls."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def to(batch: dict, device: torch.device) -> dict:
    """A batch's tensors on `device` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
