"""What a training step costs in memory, measured (Table 6's extra-memory column).

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

    def on_step_start(self, step: int) -> None:
        if step == self.step:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.__enter__()

    def on_step_end(self, step: int) -> None:
        if step == self.step and self._profiler is not None:
            import torch

            self._profiler.__exit__(None, None, None)
            # The raw event stream holds every allocation and free in order; the aggregated
            # FunctionEvents fold allocations into their ops and keep only the frees as "[memory]".
            raw = self._profiler.profiler.kineto_results.events()
            self.peak_bytes = peak_bytes(e for e in raw if e.name() == "[memory]"
                                         and e.device_type() == torch.autograd.DeviceType.CPU)
            self._profiler = None

    def close(self) -> None:
        """Stop a profiler left running by a step that raised."""
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self._profiler = None

    @property
    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / 2**20, 3)


# ----------------------------------------------------------------------------- table columns

COST_HEADER = ["ms/step", "step peak MB"]
COST_NOTE = (
    "Cost columns: `ms/step` = training wall time per optimizer step (this machine, other jobs running "
    "beside it, so ±20% is noise); `step peak MB` = peak of the torch CPU bytes allocated during one "
    "training step (the middle one) and live at the same time, measured with the torch profiler's "
    "memory events (lorarepro.cost), not a process RSS. Means over the row's finished runs and tasks."
)


def run_cost(task: str, method: str, seeds: list[int]) -> list[tuple[float, float]]:
    """(ms per step, step peak MB) of each FINISHED run of (task, method) that recorded both."""
    from lorarepro import paths
    from lorarepro.tables import load_finished_run

    out = []
    for seed in seeds:
        run = load_finished_run(paths.run_result(task, method, seed))
        res = (run or {}).get("resources") or {}
        if res.get("seconds_per_step") is not None and res.get("step_peak_mb") is not None:
            out.append((1000.0 * res["seconds_per_step"], float(res["step_peak_mb"])))
    return out


def cost_columns(spec: dict, seeds: list[int]) -> tuple[list[str], dict[str, list[float | None]]]:
    """Header and per-method values of a table's cost columns: ms/step and step peak MB, plus, with
    `cost_baseline`, time relative to the baseline (x) and memory beyond it (MB)."""
    means = {}
    for method in spec["methods"]:
        values = [v for task in spec["tasks"] for v in run_cost(task, method, seeds)]
        means[method] = ([sum(v[0] for v in values) / len(values), sum(v[1] for v in values) / len(values)]
                         if values else [None, None])
    header = list(COST_HEADER)
    baseline = spec.get("cost_baseline")
    if baseline is not None:
        header += [f"time vs {baseline} (x)", f"extra MB vs {baseline}"]
        ref = means[baseline]
        for method, (ms, mb) in means.items():
            known = None not in (ms, mb, *ref)
            means[method] = [ms, mb, ms / ref[0] if known else None, mb - ref[1] if known else None]
    return header, means
