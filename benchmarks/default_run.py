"""Wall time of the README's first command (install + the embedded default pipeline) from a fresh clone.

    python benchmarks/default_run.py                 # clone HEAD into a temporary directory, run, time
    python benchmarks/default_run.py --keep DIR      # clone into DIR and keep it (its results/ included)

The command is read from the README (the first fenced block), so what is timed is what a new user
runs: a new virtual environment, `pip install` of the pinned dependencies, and `snakemake --cores 2`.
Writes results/benchmarks/default_run.json: the whole command's wall seconds, the pipeline's own
(Snakemake's "Elapsed time"), the number of jobs, the commit, the machine (its CPU model) and the
numerics fingerprint the results were made under. The budget is 600 s on
2 cores.
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
            "within_budget": wall <= BUDGET_S, "machine": machine(), "numerics": numerics_of(clone)}


def numerics_of(clone: Path) -> dict | None:
    """The numerics fingerprint the run's records were made under (lorarepro.numerics)."""
    for path in sorted((clone / "results" / "runs").rglob("seed*.json")):
        if not path.name.endswith(".sharpness.json"):
            return json.loads(path.read_text()).get("lineage", {}).get("numerics")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into this (new) directory and keep it")
    args = parser.parse_args(argv)
    if args.keep:
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
