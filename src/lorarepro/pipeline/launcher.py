"""Data-parallel launch: a train job configured for N > 1 processes runs its own entry point on N
local ranks through torch.distributed.run, as nanoGPT's `torchrun train.py` does.

The job process (lorarepro.pipeline.jobs.train, after lorarepro.pipeline.gpus claimed N GPUs and
set CUDA_VISIBLE_DEVICES) calls `train_job`, which for N > 1 writes the config to a file and starts

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 \
        -m lorarepro.pipeline.launcher <config.json> <task> <method> <seeds> <job tags>

as an argv list (no shell). Each rank runs `main`, which calls the same
lorarepro.stages.training.train.train_task_method a one-process job calls; the rank comes from the
environment torch.distributed.run sets (lorarepro.stages.training.ranks.join). A rank that dies makes
torch.distributed.run stop the others and exit non-zero; `run_ranks` raises with the exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from lorarepro.domain import records
from lorarepro.domain.experiment import RunSpec, distributed
from lorarepro.domain.families.common import allow_remote_code
from lorarepro.stages.training.train import train_task_method


def run_ranks(target: list[str], processes: int, what: str = "job") -> None:
    """Run `target` (`["-m", module, ...]` or `[script, ...]`) on `processes` local ranks; raise if any fails."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "--max-restarts=0", *target]
    env = dict(os.environ)
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (device.pick does the same)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default; the training job sets config threads
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=_fd(sys.stdout), stderr=_fd(sys.stderr), check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"data-parallel {what} failed: torch.distributed.run exited with status {done.returncode} after "
            f"{time.perf_counter() - start:.0f} s ({processes} ranks); the failing rank's traceback is in the log above")


def _fd(stream):
    """The stream's file descriptor when it has one (the job log), else inherit ours."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def train_job(config: dict, run: RunSpec, seeds: list[int], job: dict | None = None) -> list[dict]:
    """The train job's body: these seeds of the resolved `run`, here or on the ranks it asks for;
    returns the result records."""
    task, method = run.task, run.method
    processes = distributed(run)["processes"]
    if processes == 1:
        return train_task_method(config, run, seeds, job)
    with tempfile.TemporaryDirectory(prefix="lorarepro-ranks-") as tmp:
        handed = Path(tmp) / "job.json"
        handed.write_text(json.dumps({"config": config, "run": run.as_dict()}))
        run_ranks(["-m", "lorarepro.pipeline.launcher", str(handed), json.dumps(seeds), json.dumps(job or {})],
                  processes, what=f"training of task={task} method={method}")
    return [records.read(task, method, seed) for seed in seeds]


def main(argv: list[str]) -> None:
    """One rank: `python -m lorarepro.pipeline.launcher <job.json: config and run> <seeds json> <job tags json>`."""
    handed, seeds, job = argv

    @record  # the launcher's failure summary then names the rank and its exception
    def rank_main() -> None:
        given = json.loads(Path(handed).read_text())
        allow_remote_code(given["config"])  # each rank is a new process: the config alone decides again
        train_task_method(given["config"], RunSpec.of(given["run"]), json.loads(seeds), json.loads(job))

    rank_main()


if __name__ == "__main__":
    main(sys.argv[1:])
