"""What a training step costs in memory, measured (Table 6's extra-memory column; the table's
columns are lorarepro.reporting.cost).

A process's peak RSS says little here: one job trains every seed in turn, the allocator keeps freed
pages, and imports dominate. Instead one optimizer step in the middle of training (where Flat-LoRA's
noise is on and SAM's second pass runs) is recorded with the torch profiler's memory events, and the
peak of the bytes torch allocated above what was live when the step began is reported: activations,
gradients, optimizer temporaries, and whatever a method adds (Flat-LoRA's regenerated noise, SAM's
weight gradients and saved copies). It counts torch CPU tensors only (not Python objects), on the
device the run used; the same probe runs for every method, so differences between methods are the
methods' own.
"""

from __future__ import annotations

import io
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile


def peak_bytes(events) -> int:
    """Peak of the running sum of allocation (+) and free (-) sizes of profiler memory events."""
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


class StepMemoryProbe:
    """Loop callback recording one optimizer step (`step`) with the torch profiler's memory events."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.peak_bytes: int | None = None
        self._profiler = None
        self._saved_fd: int | None = None

    def on_step_start(self, step: int) -> None:
        if step == self.step:
            # Kineto prints "USDT ... profiler_start/stop" trace lines on every start; its levels are
            # ERROR 4 < USDT 5, so only 6 hides them. Read when the profiler first starts in a process.
            os.environ.setdefault("KINETO_LOG_LEVEL", "6")
            self._saved_fd = native_stderr_to(sys.stderr)
            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.__enter__()

    def on_step_end(self, step: int) -> None:
        if step == self.step and self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            # The raw event stream holds every allocation and free in order; the aggregated
            # FunctionEvents fold allocations into their ops and keep only the frees as "[memory]".
            raw = self._profiler.profiler.kineto_results.events()
            self.peak_bytes = peak_bytes(e for e in raw if e.name() == "[memory]"
                                         and e.device_type() == torch.autograd.DeviceType.CPU)
            self._profiler = None
            self._saved_fd = restore_native_stderr(self._saved_fd)

    def close(self) -> None:
        """Stop a profiler left running by a step that raised."""
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self._profiler = None
        self._saved_fd = restore_native_stderr(self._saved_fd)

    @property
    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / 2**20, 3)


def native_stderr_to(stream) -> int | None:
    """Point fd 2, where torch's C++ code writes (e.g. c10's "[W CPUAllocator.cpp] Memory block of
    unknown size ..." during the profiled step), at `stream`'s file: in a job that is its log, not the
    console. Returns the saved fd 2 to restore, or None when `stream` has no file of its own."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    if fd == 2:
        return None
    stream.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    return saved


def restore_native_stderr(saved: int | None) -> None:
    """Undo native_stderr_to; returns None (the caller's fd is spent)."""
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
