"""GPU slots for local multi-GPU runs: each job pins its own GPUs through CUDA_VISIBLE_DEVICES.

Snakemake's `resources: gpu=1` only limits how many jobs run at once; it never says *which* GPU a
job gets, so two jobs would both land on GPU 0. A job therefore claims free slots itself, with an
exclusive `fcntl` lock per GPU under `.snakemake/gpu_slots/`. The kernel drops a lock when its
process dies, so a killed job never leaves a GPU claimed. Under SLURM (SLURM_JOB_ID set) the
scheduler already sets CUDA_VISIBLE_DEVICES per job and nothing is claimed here.
"""

import contextlib
import fcntl
import os
import time
from pathlib import Path

LOCK_DIR = Path(".snakemake") / "gpu_slots"


def visible_gpus() -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES if set, else LORAREPRO_GPUS (a count), else torch's count."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if os.environ.get("LORAREPRO_GPUS"):
        return [str(i) for i in range(int(os.environ["LORAREPRO_GPUS"]))]
    import torch  # deferred: the job's client process (lorarepro.pipeline.jobs) must not import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@contextlib.contextmanager
def claim(n: int, lock_dir: Path = LOCK_DIR, poll_s: float = 0.5, timeout_s: float | None = None):
    """Hold `n` free GPUs for the duration of the block and expose only them to CUDA; yields their ids."""
    if n <= 0 or os.environ.get("SLURM_JOB_ID"):
        yield os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if n > 0 else []
        return
    gpus = visible_gpus()
    if n > len(gpus):
        raise RuntimeError(f"job asks for {n} GPU(s) but only {len(gpus)} are visible ({gpus})")
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    held: list[tuple[str, object]] = []
    try:
        while True:
            for gpu in gpus:
                if len(held) == n:
                    break
                fh = open(Path(lock_dir) / f"gpu{gpu}.lock", "a")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append((gpu, fh))
                except BlockingIOError:
                    fh.close()
            if len(held) == n:
                break
            _release(held)  # never sit on part of a claim: two jobs could deadlock on halves
            held = []
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no {n} free GPU(s) among {gpus} after {timeout_s} s")
            time.sleep(poll_s)
        ids = [gpu for gpu, _ in held]
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        try:
            yield ids
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous
    finally:
        _release(held)


def _release(held) -> None:
    for _, fh in held:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
