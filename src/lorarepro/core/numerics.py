"""Numerics: what makes float results independent of the x86-64 CPU they were computed on.

torch dispatches its CPU kernels by ISA (AVX-512 or AVX2 code: other rounding), MKL picks its GEMM
code by vendor and ISA, oneDNN picks kernels and blocking by ISA and cache size, NumPy dispatches its
SIMD loops by ISA, and thread counts change reduction order. The tiny backbones' pretraining is
chaotic, so one rounding difference becomes another model, other tables and other verdicts.

`portable` (the default) pins all of these before torch or NumPy initialise, in every process that
computes (Snakemake's, hence its jobs, the warm server and torchrun's ranks; the CLI; benchmarks):
ATen's kernels to AVX2 (present on every x86-64 CPU of the last decade; the same instructions give
the same bits on Intel and AMD), MKL's conditional numerical reproducibility to its COMPATIBLE branch
(Intel documents only this branch as giving the same results on non-Intel CPUs: with AVX2 requested,
an AMD CPU falls back to MKL's automatic dispatch), oneDNN off (torch then runs its own convolution
on MKL's GEMM; its ISA is also capped for anything that still reaches it), NumPy's dispatch to
x86-64-v3 (AVX2), and the thread counts. `native` lets each library choose: fastest, exact only on
the same CPU model.

What a process actually ran under is its fingerprint (`fingerprint()`), recorded in every result
and MLflow run; the CPU model is recorded beside it as information, not part of the comparison.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

MODES = ("portable", "native")
MODE_ENV = "LORAREPRO_NUMERICS"  # the mode this process tree was pinned to (inherited by children)
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
PORTABLE_CAPABILITY = "AVX2"  # what torch.backends.cpu.get_cpu_capability() reports once pinned
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class NumericsError(RuntimeError):
    """This process computes under other numerics than its config asks for."""


def pin(mode: str, threads: int) -> None:
    """Set the environment of `mode` for this process and its children; call before torch is imported.

    portable overrides whatever the user's environment says (a hostile ATEN_CPU_CAPABILITY or
    MKL_CBWR must not change a result); native leaves the libraries' own variables alone."""
    if mode not in MODES:
        raise ValueError(f"numerics: {mode!r} is not one of {', '.join(MODES)}")
    env = dict(PORTABLE_ENV) if mode == "portable" else {}
    env |= {name: str(threads) for name in THREAD_ENV}
    if "torch" in sys.modules and os.environ.get(MODE_ENV) != mode:
        _check_capability(mode)  # too late to pin torch: fine only if it already runs as asked
    os.environ.update(env)
    os.environ[MODE_ENV] = mode


def apply(mode: str, threads: int) -> None:
    """The in-process half, after torch is imported: threads and oneDNN, then check the pinning held."""
    import torch  # deferred: pin() must be able to run before torch exists

    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mode != "portable"
    _check_capability(mode)
    if mode == "portable":
        unpinned = {k: os.environ.get(k) for k, v in PORTABLE_ENV.items() if os.environ.get(k) != v}
        if unpinned:
            raise NumericsError(f"numerics: portable, but this process's environment has {unpinned}: "
                                "start it through lorarepro.core.numerics.pin (the Snakefile and the CLI do)")


def _check_capability(mode: str) -> None:
    if mode != "portable":
        return
    import torch  # deferred, as above

    running = torch.backends.cpu.get_cpu_capability()
    if running != PORTABLE_CAPABILITY:
        raise NumericsError(
            f"numerics: portable needs torch's {PORTABLE_CAPABILITY} CPU kernels, but this process runs {running}: "
            "either torch was imported before lorarepro.core.numerics.pin set ATEN_CPU_CAPABILITY, or this CPU "
            "lacks AVX2/FMA (then set `numerics: native`; results are then exact only on this CPU model)")


def fingerprint() -> dict:
    """The settings this process computes under: equal fingerprints promise equal bits."""
    import numpy  # deferred: its dispatch reads NPY_DISABLE_CPU_FEATURES when first imported
    import torch  # deferred, as above

    return {
        "mode": os.environ.get(MODE_ENV, "native"),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "unset"),
        "onednn": "on" if torch.backends.mkldnn.enabled else "off",
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset"),
        "numpy_disabled_features": os.environ.get("NPY_DISABLE_CPU_FEATURES", "none"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mkl": _mkl_version(torch.__config__.show()),
        "numpy": numpy.__version__,
    }


def _mkl_version(config: str) -> str | None:
    found = re.search(r"Math Kernel Library Version ([\w.\-]+)", config)
    return found.group(1) if found else None


def differences(recorded: dict | None, current: dict | None) -> list[str]:
    """Each setting in which two fingerprints differ, as 'key: a → b' (empty when equal)."""
    recorded, current = recorded or {}, current or {}
    return [f"{key}: {recorded.get(key)} → {current.get(key)}" for key in sorted(set(recorded) | set(current))
            if recorded.get(key) != current.get(key)]


def cpu_model() -> str:
    """The CPU's model name: information beside a fingerprint (volatile: never compared)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
