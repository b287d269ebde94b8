"""Fixed costs of the pipeline, apart from the training itself: DAG build, no-op rerun, job start-up.

    python benchmarks/pipeline_overhead.py                       # default grid (params.yaml) + reduced run
    python benchmarks/pipeline_overhead.py --configfile workflow/configs/paper.yaml --workdir DIR

Measures, each as the minimum and median of --repeats runs (the machine may be shared):
- dag_seconds[name]: `snakemake --dry-run` of each grid (params.yaml, and every --configfile given;
  a file that does not exist is recorded as "config not present", never skipped silently), in a
  temporary copy of the workflow with no outputs, so the whole DAG is planned;
- noop_rerun_seconds: `snakemake --cores 2` on a finished pipeline (--workdir, else the reduced test
  config is run once in a temporary copy first) when nothing is left to do;
- job_startup_seconds: (wall, and the process's CPU time) one training job of that pipeline from process start to its first optimizer
  step: the Snakemake script preamble's import, the adapter, lorarepro and library imports, config
  resolution, the MLflow run, data checks, model + adapter load, encoding and optimizer set-up.
Writes results/benchmarks/pipeline_overhead.json. Targets: paper-grid DAG <= 10 s, no-op rerun <= 5 s,
per-job start-up <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "pipeline_overhead.json"
TARGETS = {"paper_dag_seconds": 10.0, "noop_rerun_seconds": 5.0, "job_startup_seconds": 3.0}

# A training job as Snakemake runs it (workflow/scripts/train.py), stopped at its first optimizer step.
STARTUP_JOB = """
import os, sys, time
import snakemake.script  # what Snakemake's script preamble imports before the adapter runs
from lorarepro.workflow import logged
with logged(sys.argv[2]):
    import lorarepro.train as train
    real = train.train_steps
    def first_step(*args, **kwargs):
        cpu = os.times()
        print(f"FIRST_STEP {time.time():.6f} {cpu.user + cpu.system:.3f}", file=sys.__stdout__, flush=True)
        raise SystemExit(0)
    train.train_steps = first_step
    import yaml
    config = yaml.safe_load(open(sys.argv[1]))
    train.run_task_method(config, "sentiment", "lora_r8")
"""


def _env(src: Path = ROOT / "src") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}
    env["PYTHONPATH"] = str(src)
    return env


def _snakemake(cwd: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, env=_env())
    return time.perf_counter() - start, done


def _copy_workflow(dest: Path) -> Path:
    for item in ("Snakefile", "params.yaml", "workflow"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    (dest / "profiles").symlink_to("workflow/profiles")
    return dest


def _stats(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "runs": [round(v, 3) for v in values]}


def dag_times(configfiles: list[str], repeats: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _copy_workflow(Path(tmp))
        for name, extra in [("default (params.yaml)", [])] + [(c, ["--configfile", str(Path(c).resolve())]) for c in configfiles]:
            if extra and not Path(extra[1]).is_file():
                out[name] = "config not present"
                continue
            times = []
            for _ in range(repeats):
                # `--quiet all`: no job listing, so the time is the DAG build, not terminal output
                seconds, done = _snakemake(repo, "--dry-run", "--quiet", "all", *extra)
                if done.returncode != 0:
                    raise RuntimeError(f"snakemake --dry-run failed for {name}:\n{done.stderr[-3000:]}")
                times.append(seconds)
            out[name] = {**_stats(times), "jobs": _count_jobs(repo, extra)}
    return out


def _count_jobs(repo: Path, extra: list[str]) -> int | None:
    """Jobs in the plan (the `total` row of Snakemake's job stats)."""
    import re

    _, done = _snakemake(repo, "--dry-run", *extra)
    match = re.search(r"^total\s+(\d+)", done.stdout + done.stderr, flags=re.M)
    return int(match.group(1)) if match else None


def finished_workdir(workdir: str | None, configfile: str, keep: Path) -> tuple[Path, str]:
    """A directory where the pipeline has run to completion, and the --configfile it ran with."""
    if workdir:
        return Path(workdir), configfile
    sys.path.insert(0, str(ROOT / "tests"))
    import yaml

    from conftest import reduced

    repo = _copy_workflow(keep)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (repo / "reduced.yaml").write_text(yaml.safe_dump(reduced(params)))
    print("running the reduced pipeline once (a few minutes) ...", flush=True)
    _, done = _snakemake(repo, "--cores", "2", "--configfile", "reduced.yaml")
    if done.returncode != 0:
        raise RuntimeError(f"reduced pipeline failed:\n{done.stderr[-3000:]}")
    return repo, "reduced.yaml"


def noop_times(repo: Path, config: str, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        seconds, done = _snakemake(repo, "--cores", "2", "--configfile", config)
        text = done.stdout + done.stderr
        if done.returncode != 0 or "Nothing to be done" not in text:
            raise RuntimeError(f"the rerun was not a no-op in {repo}:\n{text[-3000:]}")
        times.append(seconds)
    return _stats(times)


def startup_times(repo: Path, config: str, repeats: int, baseline: str | None = None) -> dict:
    """Start-up of this tree's code and, if given, of a baseline source tree (e.g. the main branch's
    src/), interleaved run by run so that changing load on a shared machine hits both alike."""
    import yaml

    cfg = yaml.safe_load((repo / config).read_text()) if config != "params.yaml" else {}
    merged = repo / ".benchmark_config.yaml"
    base = yaml.safe_load((repo / "params.yaml").read_text())
    sys.path.insert(0, str(ROOT / "src"))
    from lorarepro.config import deep_merge

    merged.write_text(yaml.safe_dump(deep_merge(base, cfg)))
    trees = {"this tree": ROOT / "src", **({f"baseline {baseline}": Path(baseline)} if baseline else {})}
    wall, cpu = {name: [] for name in trees}, {name: [] for name in trees}
    for _ in range(repeats):
        for name, src in trees.items():
            start = time.time()
            done = subprocess.run([sys.executable, "-c", STARTUP_JOB, str(merged), str(repo / "logs" / "startup.log")],
                                  cwd=repo, capture_output=True, text=True, env=_env(src))
            marks = [line for line in done.stdout.splitlines() if line.startswith("FIRST_STEP")]
            if not marks:
                raise RuntimeError(f"start-up probe failed:\n{done.stderr[-3000:]}\n{(repo / 'logs' / 'startup.log').read_text()[-3000:]}")
            wall[name].append(float(marks[0].split()[1]) - start)
            cpu[name].append(float(marks[0].split()[2]))
    # CPU seconds of the job process: less sensitive than wall time to other load on a shared machine
    out = {name: {**_stats(wall[name]), "cpu_seconds": _stats(cpu[name])} for name in trees}
    return out if baseline else out["this tree"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", action="append", default=[], help="another grid to time the DAG of (repeatable)")
    parser.add_argument("--workdir", help="a finished pipeline (default: run the reduced config in a temp copy)")
    parser.add_argument("--workdir-configfile", default="params.yaml", help="the --configfile that --workdir ran with")
    parser.add_argument("--baseline-src", help="also time job start-up with this src/ (e.g. a checkout of main) for a before/after")
    parser.add_argument("--skip-dag", action="store_true", help="only the no-op rerun and start-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}, "targets": TARGETS}
    if not args.skip_dag:
        report["dag_seconds"] = dag_times(args.configfile or ["workflow/configs/paper.yaml"], args.repeats)
    with tempfile.TemporaryDirectory() as keep:
        repo, config = finished_workdir(args.workdir, args.workdir_configfile, Path(keep))
        report["finished_pipeline"] = {"workdir": "temporary copy" if not args.workdir else str(args.workdir), "configfile": config}
        report["noop_rerun_seconds"] = noop_times(repo, config, args.repeats)
        report["job_startup_seconds"] = startup_times(repo, config, args.repeats, args.baseline_src)
    report["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    from lorarepro.atomic import write_json

    write_json(Path(args.out), report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
