"""A subset of the embedded default through a real SLURM, against the same subset run locally.

    python benchmarks/slurm_run.py              # as root, with Debian's slurm-wlm and munge installed
    python benchmarks/slurm_run.py --keep DIR   # keep both copies (results/, logs/, .snakemake/log/)

Starts the single-node cluster of scripts/slurm_cluster.sh (and stops it again unless it was already
up), then runs the subset (`subset`: one task, LoRA and Flat-LoRA, two seeds; every rule of the
pipeline: data, pretext, backbone, train per seed, sharpness, tables, figures, claims, audit) twice,
each in its own copy of the repository: `snakemake --profile workflow/profiles/slurm` (every job a
SLURM job; cold starts) and `snakemake --cores 2` (local, warm start). Writes
results/benchmarks/slurm_run.json: the SLURM jobs submitted (and what SLURM granted each), both
runs' wall seconds, and whether every output equals the local run's (`identical_to_local`;
`differences` says what does not).

The test cluster has no accounting database, so the runs ask the plugin for `squeue` status queries
(scripts/slurm_cluster.sh keeps finished jobs visible to squeue for 10 minutes) and poll every 2 s
instead of 40 s; on a real cluster the profile's defaults (sacct) apply.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "slurm_run.json"
CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "profile.yaml"
CONFIG = "subset.yaml"
TASK = "sentiment"
# What this cluster needs beyond the profile: no slurmdbd (squeue, not sacct) and quick polling.
CLUSTER_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2")
MLFLOW_ID = re.compile(r"\b[0-9a-f]{32}\b")  # an MLflow run id, named in the audit and the report captions

sys.path.insert(0, str(ROOT / "tests"))
from conftest import reduced  # noqa: E402  (the tests' reduced config, cut further by `subset`)
from workspace import copy_repo  # noqa: E402  (the tests' copy of the workflow, as a user runs it)


def subset(params: dict) -> dict:
    """The reduced test config cut to one task and two methods, with every rule still in the DAG."""
    cfg = reduced(params)
    cfg["tasks"] = {TASK: cfg["tasks"][TASK]}
    backbone = cfg["tasks"][TASK]["backbone"]
    cfg["backbones"] = {backbone: cfg["backbones"][backbone]}
    family = cfg["tasks"][TASK]["family"]
    cfg["training"] = {family: cfg["training"][family]}
    cfg["methods"] = {m: cfg["methods"][m] for m in ("lora_r8", "flat_lora_r8")}
    cfg["tables"] = [{"id": "table_small", "caption": "SLURM subset", "paper_table": "table1",
                      "tasks": [TASK], "methods": list(cfg["methods"])}]
    cfg["figures"] = [{"id": "training_curves", "caption": "curves", "tasks": [TASK], "methods": ["lora_r8"]}]
    cfg["sharpness"] = {"n_eval": 16, "draws": 2, "hessian_iters": 3, "radii": [0.05]}
    cfg["claims"]["comparisons"] = [{"claim": "nlu_average", "role": "primary",
                                     "pairs": [["flat_lora_r8", "lora_r8"]], "tasks": [TASK]}]
    return cfg


def partition() -> str:
    """The profile's partition: the test cluster is given that name, so the profile runs unedited."""
    return str(yaml.safe_load(PROFILE.read_text())["default-resources"]["slurm_partition"])


def cluster(action: str) -> subprocess.CompletedProcess:
    """scripts/slurm_cluster.sh start|stop|status, its one partition named after the profile's."""
    env = {**os.environ, "LORAREPRO_SLURM_PARTITION": partition()}
    return subprocess.run(["bash", str(CLUSTER), action], capture_output=True, text=True, env=env, timeout=180)


def workspace(root: Path, params: dict) -> Path:
    """A copy of the repository's workflow with the subset config beside it."""
    root.mkdir(parents=True, exist_ok=True)
    copy_repo(root)
    (root / CONFIG).write_text(yaml.safe_dump(subset(params)))
    return root


def run(root: Path, slurm: bool, timeout: int = 1200) -> dict:
    """Snakemake on the subset in `root`, through SLURM or locally: status, wall seconds, jobs, log."""
    where = ["--profile", "workflow/profiles/slurm", *CLUSTER_FLAGS] if slurm else ["--cores", "2"]
    cmd = [sys.executable, "-m", "snakemake", "--configfile", CONFIG, *where]
    # as a user runs it: no tracking settings inherited from a calling test process
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    seconds = time.perf_counter() - start
    log = done.stdout + done.stderr
    (root / ("slurm_run.log" if slurm else "local_run.log")).write_text(log)
    rules = re.findall(r"^(?:local)?rule (\w+):", log, flags=re.M)
    out = {"returncode": done.returncode, "wall_seconds": round(seconds, 1), "log": log,
           "jobs_by_rule": {r: rules.count(r) for r in sorted(set(rules))}}
    if slurm:  # a job Snakemake runs itself (`all`, any localrule) is logged as "localrule"
        out["local_rules"] = sorted(set(re.findall(r"^localrule (\w+):", log, flags=re.M)))
        out["slurm_job_ids"] = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
        match = re.search(r"SLURM run ID: (\S+)", log)
        out["slurm_run_id"] = match.group(1) if match else None
    return out


def granted(run_id: str) -> list[dict]:
    """What SLURM recorded for each job of the run: state, CPUs, memory and generic resources (GPUs)."""
    done = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id, "--format", "%i|%T|%C|%m|%b"],
                          capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
    return [{"job": int(j), "state": s, "cpus": int(c), "memory": m, "gres": g} for j, s, c, m, g in sorted(rows, key=lambda r: int(r[0]))]


def differences(local: Path, other: Path) -> list[str]:
    """What differs between two runs' results/: run and sharpness JSONs compared without their
    volatile keys (lorarepro.domain.records); the audit and report captions with MLflow run ids masked
    (each run has its own); every other file (tables, metrics, claims, histories, figures) byte for byte."""
    from lorarepro.domain import records

    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in (root / "results").rglob("*") if p.is_file()}

    mine, theirs = files(local), files(other)
    out = [f"only in {local.name}: {p}" for p in sorted(mine - theirs)]
    out += [f"only in {other.name}: {p}" for p in sorted(theirs - mine)]
    for rel in sorted(mine & theirs):
        a, b = local / rel, other / rel
        if filecmp.cmp(a, b, shallow=False):
            continue
        if rel.parts[:2] == ("results", "runs") and rel.suffix == ".json":
            volatile = records.SHARPNESS_VOLATILE if rel.name.endswith(".sharpness.json") else records.VOLATILE
            same = records.stable(records.load(a), volatile) == records.stable(records.load(b), volatile)
        elif rel.parts[:2] in (("results", "audit"), ("results", "report")):
            same = MLFLOW_ID.sub("<run>", a.read_text()) == MLFLOW_ID.sub("<run>", b.read_text())
        else:
            same = False
        if not same:
            out.append(f"differs: {rel}")
    return out


def slurm_version() -> str:
    done = subprocess.run(["sinfo", "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="run in DIR/slurm and DIR/local and keep them")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from importlib.metadata import version

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    was_up = cluster("status").returncode == 0
    started = cluster("start")
    if started.returncode != 0:
        raise SystemExit(f"scripts/slurm_cluster.sh start failed:\n{started.stdout}{started.stderr}")
    try:
        with tempfile.TemporaryDirectory(prefix="slurm_run_") as tmp:
            base = args.keep or Path(tmp)
            slurm = run(workspace(base / "slurm", params), slurm=True)
            if slurm["returncode"] != 0:
                raise SystemExit(f"the SLURM run failed (log: {base / 'slurm' / 'slurm_run.log'}):\n{slurm['log'][-3000:]}")
            jobs = granted(slurm["slurm_run_id"])
            local = run(workspace(base / "local", params), slurm=False)
            if local["returncode"] != 0:
                raise SystemExit(f"the local run failed:\n{local['log'][-3000:]}")
            diff = differences(base / "local", base / "slurm")
    finally:
        if not was_up:
            cluster("stop")
    nodes = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout.splitlines()[:1]
    result = {
        "what": "subset of the embedded default (benchmarks/slurm_run.py `subset`) through snakemake --profile "
                "workflow/profiles/slurm on scripts/slurm_cluster.sh, against the same subset run locally",
        "jobs": len(slurm["slurm_job_ids"]),
        "jobs_by_rule": slurm["jobs_by_rule"],
        "local_rules": slurm["local_rules"],  # run by Snakemake itself, not submitted
        "slurm_jobs": jobs,
        "wall_seconds": {"slurm": slurm["wall_seconds"], "local": local["wall_seconds"]},
        "identical_to_local": not diff,
        "differences": diff,
        "compared": "results/: run and sharpness JSONs without volatile keys (lorarepro.domain.records.stable), audit and "
                    "captions with MLflow run ids masked, everything else byte for byte",
        "cluster": {"node": nodes[0] if nodes else None, "partition": partition(), "slurm": slurm_version(),
                    "status_flags": list(CLUSTER_FLAGS)},
        "versions": {"snakemake": version("snakemake"),
                     "snakemake-executor-plugin-slurm": version("snakemake-executor-plugin-slurm")},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("jobs", "wall_seconds", "identical_to_local", "differences")}, indent=2))
    return result


if __name__ == "__main__":
    main()
