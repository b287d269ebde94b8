"""Wall time of the README's first command (install + the embedded default pipeline) from a fresh clone.

    python benchmarks/default_run.py                 # clone HEAD into a temporary directory, run, time
    python benchmarks/default_run.py --keep DIR      # clone into DIR and keep it (its results/ included)

The command is read from the README (the first fenced block), so what is timed is what a new user
runs: a new virtual environment, `pip install` of the pinned dependencies, and `snakemake --cores 2`.
Writes results/benchmarks/default_run.json: the whole command's wall seconds, the pipeline's own
(Snakemake's "Elapsed time"), the number of jobs, the commit, the machine (its CPU model), the
numerics fingerprint the results were made under, and a profile: job-seconds per kind of job, core
utilisation, and inside the train jobs optimizer steps vs evaluation vs the rest. The budget is 600 s
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "benchmarks" / "default_run.json"
BUDGET_S = 600


def readme_command(readme: Path) -> str:
    """The first fenced bash block of the README: the install-and-run command."""
    match = re.search(r"```bash\n(.+?)\n```", readme.read_text(encoding="utf-8"), re.S)
    if match is None:
        raise SystemExit(f"{readme}: no ```bash block")
    return match.group(1).strip()


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(memory, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def run(clone: Path) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    command = readme_command(clone / "README.md")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MLFLOW_TRACKING_URI")}
    start = time.perf_counter()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (clone / "default_run.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"the README's command failed with status {done.returncode} (log: {clone / 'default_run.log'})")
    text = done.stdout + done.stderr
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", text)
    elapsed = re.findall(r"Elapsed time: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    pipeline = (int(elapsed[-1][0]) * 3600 + int(elapsed[-1][1]) * 60 + float(elapsed[-1][2])) if elapsed else None
    return {"command": command, "commit": commit, "wall_seconds": round(wall, 1),
            "pipeline_seconds": None if pipeline is None else round(pipeline, 1),
            "install_seconds": None if pipeline is None else round(wall - pipeline, 1),
            "jobs": int(steps[-1][1]) if steps else None, "budget_seconds": BUDGET_S,
            "within_budget": wall <= BUDGET_S, "machine": machine(), "numerics": numerics_of(clone),
            "profile": profile(text, clone, cores(command))}


def job_spans(log: str) -> list[dict]:
    """Each job of Snakemake's log: rule, start and end (seconds from the first job's start)."""
    stamp, first, pending, started, spans = None, None, None, {}, []
    for line in log.splitlines():
        if (match := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line.strip())):
            stamp = time.mktime(time.strptime(match.group(1), "%a %b %d %H:%M:%S %Y"))
            first = stamp if first is None else first
        elif (match := re.fullmatch(r"(?:local)?rule (\S+):", line.strip())):
            pending = match.group(1)
        elif (match := re.fullmatch(r"jobid: (\d+)", line.strip())) and pending:
            started[match.group(1)], pending = (pending, stamp - first), None
        elif (match := re.match(r"Finished jobid: (\d+)", line.strip())) and match.group(1) in started:
            rule, start = started.pop(match.group(1))
            spans.append({"rule": rule, "start": start, "end": stamp - first})
    return spans


def cores(command: str) -> int:
    match = re.search(r"--cores[ =](\d+)", command)
    return int(match.group(1)) if match else os.cpu_count()


def profile(log: str, clone: Path, cores: int) -> dict:
    """Where the pipeline's seconds go: job-seconds per kind of job (a per_method train job
    `train__<task>__<method>` counts under its task), how busy the cores were, and inside the train
    jobs the split between optimizer steps, evaluation and the rest (model and data loading, saving,
    MLflow), from the records' volatile `resources` (timings to the second in Snakemake's log)."""
    spans = job_spans(log)
    if not spans:
        return {}
    by_kind: dict[str, float] = {}
    for span in spans:
        parts = span["rule"].split("__")
        kind = f"train:{parts[1]}" if parts[0] == "train" and len(parts) == 3 else parts[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + span["end"] - span["start"]
    makespan = max(span["end"] for span in spans)
    runs = [json.loads(p.read_text())["resources"] for p in planned_records(clone)]
    steps = sum(r.get("seconds", 0.0) for r in runs)
    evaluation = sum(r.get("evaluate_seconds", 0.0) for r in runs)
    train_jobs = sum(v for k, v in by_kind.items() if k.startswith("train"))
    return {
        "job_seconds": {k: round(v) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "job_seconds_total": round(sum(by_kind.values())),
        "makespan_seconds": round(makespan),
        "core_utilisation": round(sum(by_kind.values()) / (cores * makespan), 3),
        "train_jobs": {"runs": len(runs), "optimizer_steps_seconds": round(steps), "evaluation_seconds": round(evaluation),
                       "other_seconds": round(train_jobs - steps - evaluation),
                       "share_optimizer_steps": round(steps / train_jobs, 3) if train_jobs else None},
    }


def planned_records(clone: Path) -> list[Path]:
    """The result JSONs of the runs params.yaml plans that wrote one (not every file under results/runs/:
    records of runs the config no longer plans stay in a clone until removed)."""
    from lorarepro.core import paths  # deferred: read in the clone, after the run
    from lorarepro.core.config import read, reported_runs

    planned = reported_runs(read(clone / "params.yaml"))
    records = (clone / paths.run_result(task, method, seed) for (task, method), seeds in sorted(planned.items())
               for seed in seeds)
    return [record for record in records if record.is_file()]


def numerics_of(clone: Path) -> dict | None:
    """The numerics fingerprint the run's records were made under (lorarepro.core.numerics)."""
    for path in sorted((clone / "results" / "runs").rglob("seed*.json")):
        if not path.name.endswith(".sharpness.json"):
            return json.loads(path.read_text()).get("lineage", {}).get("numerics")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into this (new) directory and keep it")
    parser.add_argument("--reprofile", type=Path, metavar="CLONE",
                        help="recompute only the profile of the run kept in CLONE (its default_run.log) into the JSON")
    args = parser.parse_args(argv)
    if args.reprofile:
        result = json.loads(OUT.read_text())
        result["profile"] = profile((args.reprofile / "default_run.log").read_text(), args.reprofile, cores(result["command"]))
    elif args.keep:
        result = run(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="lorarepro-default-run-") as tmp:
            result = run(Path(tmp) / "clone")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
