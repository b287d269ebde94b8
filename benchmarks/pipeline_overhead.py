"""Fixed costs of the pipeline, apart from the training itself: DAG build, no-op rerun, job start-up.

    python benchmarks/pipeline_overhead.py                       # default grid (params.yaml) + reduced run
    python benchmarks/pipeline_overhead.py --configfile workflow/configs/paper.yaml --workdir DIR

Measures, each as the minimum and median of --repeats runs (the machine may be shared):
- dag_seconds[name]: `snakemake --dry-run` of each grid (params.yaml, and every --configfile given;
  a file that does not exist is recorded as "config not present", never skipped silently), in a
  temporary copy of the workflow with no outputs, so the whole DAG is planned;
- noop_rerun_seconds: `snakemake --cores 2` on a finished pipeline (--workdir, else the reduced test
  config is run once in a temporary copy first) when nothing is left to do;
- job_startup_seconds: (wall, and the job process's CPU time) one training job of that pipeline from
  process start to its first optimizer step: the Snakemake script preamble's import, the adapter,
  lorarepro and library imports, config resolution, the MLflow run, data checks, model + adapter
  load, encoding and optimizer set-up; `cold` (the job imports everything itself) and `warm` (the
  job is a fork of the lorarepro.pipeline.warm server, as local pipeline jobs are; the target applies here),
  plus the server's one-off imports.
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



def probe_job(args: dict) -> None:
    """A training job (lorarepro.pipeline.jobs.train's body) stopped at its first optimizer step, which it
    reports on stdout with the job process's CPU seconds. Runs in the job process: a fork of the
    warm server, or the adapter's own process when started cold."""
    import yaml

    from lorarepro.pipeline.jobs import logged

    with logged(args["log"]):
        import lorarepro.stages.training.train as train

        def first_step(*_args, **_kwargs):
            cpu = os.times()
            print(f"FIRST_STEP {time.time():.6f} {cpu.user + cpu.system:.3f}", file=sys.__stdout__, flush=True)
            raise SystemExit(0)

        train.train_steps = first_step
        from lorarepro.domain.experiment import resolve_run

        config = yaml.safe_load(open(args["config"]))
        train.train_task_method(config, resolve_run(config, "sentiment", "lora_r8"))


# The job's adapter process, as Snakemake's `script:` starts it: its preamble imports snakemake.script.
PROBE_ADAPTER = """
import sys
import snakemake.script
sys.path.insert(0, sys.argv[3])
from pipeline_overhead import probe_job
from lorarepro.pipeline.warm import run_job
run_job({"config": sys.argv[1], "log": sys.argv[2]}, probe_job)
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
        # the pipeline's own invocation: params.yaml alone is no --configfile (the audit's params name them)
        extra = ["--configfile", config] if config != "params.yaml" else []
        seconds, done = _snakemake(repo, "--cores", "2", *extra)
        text = done.stdout + done.stderr
        if done.returncode != 0 or "Nothing to be done" not in text:
            raise RuntimeError(f"the rerun was not a no-op in {repo}:\n{text[-3000:]}")
        times.append(seconds)
    return _stats(times)


def startup_times(repo: Path, config: str, repeats: int) -> dict:
    """Start-up of one training job, cold (the job process imports everything itself) and warm (a
    fork of the lorarepro.pipeline.warm server, as the pipeline runs local jobs), interleaved run by run so
    that changing load on a shared machine hits both alike. The server's own imports are paid once
    per pipeline run and reported apart."""
    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from lorarepro.pipeline import warm
    from lorarepro.core.config import deep_merge

    cfg = yaml.safe_load((repo / config).read_text()) if config != "params.yaml" else {}
    merged = repo / ".benchmark_config.yaml"
    merged.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((repo / "params.yaml").read_text()), cfg)))
    server_log = repo / "logs" / "warm" / "benchmark.log"
    started = time.time()
    os.environ.update(_env())  # the server imports this tree's lorarepro, as the jobs do
    address, pid = warm.start(server_log)
    while "imports done" not in server_log.read_text():
        time.sleep(0.05)
    server_seconds = time.time() - started
    wall, cpu = {"cold": [], "warm": []}, {"cold": [], "warm": []}
    try:
        for _ in range(repeats):
            for mode in ("cold", "warm"):
                env = {**_env(), **({warm.ENV: address} if mode == "warm" else {})}
                start = time.time()
                done = subprocess.run([sys.executable, "-c", PROBE_ADAPTER, str(merged), str(repo / "logs" / "startup.log"),
                                       str(Path(__file__).parent)], cwd=repo, capture_output=True, text=True, env=env)
                marks = [line for line in done.stdout.splitlines() if line.startswith("FIRST_STEP")]
                if not marks or "lorarepro.pipeline.warm:" in done.stderr:
                    raise RuntimeError(f"{mode} start-up probe failed:\n{done.stderr[-3000:]}\n"
                                       f"{(repo / 'logs' / 'startup.log').read_text()[-3000:]}")
                wall[mode].append(float(marks[0].split()[1]) - start)
                cpu[mode].append(float(marks[0].split()[2]))
    finally:
        warm.stop(address, pid)
    # CPU seconds of the job process: less sensitive than wall time to other load on a shared machine
    out = {mode: {**_stats(wall[mode]), "cpu_seconds": _stats(cpu[mode])} for mode in wall}
    out["warm_server_imports_seconds"] = round(server_seconds, 3)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", action="append", default=[], help="another grid to time the DAG of (repeatable)")
    parser.add_argument("--workdir", help="a finished pipeline (default: run the reduced config in a temp copy)")
    parser.add_argument("--workdir-configfile", default="params.yaml", help="the --configfile that --workdir ran with")
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
        report["job_startup_seconds"] = startup_times(repo, config, args.repeats)
    report["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    from lorarepro.core.atomic import write_json

    write_json(Path(args.out), report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
