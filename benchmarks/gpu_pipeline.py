"""The embedded default pipeline end to end on a GPU machine, twice, with the gpu-local profile.

    # here, with network: wheels of what the GPU machine lacks (its `pip freeze` in have.txt, if known)
    python benchmarks/gpu_pipeline.py wheelhouse [--dest build/wheels] [--have have.txt]
    # on the GPU machine, offline: install them (its own CUDA torch stays), then run
    python benchmarks/gpu_pipeline.py install [--wheelhouse build/wheels]
    python benchmarks/gpu_pipeline.py run [--reduced] [--keep DIR]
    # on a CPU: everything but the device check; reports device cpu and writes no JSON
    python benchmarks/gpu_pipeline.py run --allow-cpu --reduced --cores 2

`run` copies the workflow twice into a temporary directory and runs `snakemake --profile
workflow/profiles/gpu-local --resources gpu=<visible GPUs>` in each from scratch (local execution, so
jobs start warm: lorarepro.pipeline.warm), then compares the two: every run's result and sharpness JSON
without its volatile keys (lorarepro.domain.records; the checkpoint's sha256 is among what is kept, so the
weights must match bit for bit) and loss history. Files derived from timings (table_sam's ms/step,
the overhead claim) differ between any two runs and are listed apart. Writes
results/benchmarks/gpu_pipeline.json: the GPU, the device every training job reports, wall seconds,
jobs, whether the jobs started warm, and the rerun's determinism. `--reduced` runs the tests' reduced
config (tests/conftest.py) instead of params.yaml, to fit a short device session.

The wheelhouse holds every pin of constraints.txt but torch (the GPU machine's CUDA build stays), less
what `--have` lists at the same version, and setuptools to build this project, all for this machine's
Python and platform; `install` refuses another Python version and installs the project editable.
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

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "gpu_pipeline.json"
WHEELS = ROOT / "build" / "wheels"  # /build/ is git-ignored: carry it to the device machine
PROFILE = "workflow/profiles/gpu-local"
CARRY_LIMIT_MIB = 64  # what the device machine's `carry` takes in all


def _name(requirement: str) -> str:
    """A distribution's normalised name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", requirement.split("==")[0].strip()).lower()


def pins(constraints: Path, have: Path | None) -> list[str]:
    """constraints.txt's `name==version` lines but torch's, less those `have` (a pip freeze) has as is."""
    present = set()
    if have is not None:
        present = {(_name(line), line.split("==")[1].strip()) for line in have.read_text().splitlines() if "==" in line}
    out = []
    for line in constraints.read_text().splitlines():
        if "==" not in line or line.lstrip().startswith("#") or _name(line) == "torch":
            continue
        if (_name(line), line.split("==")[1].strip()) not in present:
            out.append(line.strip())
    return out


def wheelhouse(dest: Path, have: Path | None) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    wanted = pins(ROOT / "constraints.txt", have)
    pip = [sys.executable, "-m", "pip"]
    if wanted:  # --no-deps: constraints.txt is already the whole closure, so nothing is resolved twice
        subprocess.run([*pip, "download", "--no-deps", "--dest", str(dest), *wanted], check=True)
    for sdist in [*dest.glob("*.tar.gz"), *dest.glob("*.zip")]:  # the target is offline: build them here
        subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(dest), str(sdist)], check=True)
        sdist.unlink()
    # the project itself is installed editable from the tree the device runs; its build backend comes along
    import setuptools

    subprocess.run([*pip, "download", "--no-deps", "--dest", str(dest), f"setuptools=={setuptools.__version__}"], check=True)
    # what `install` constrains by: the pins without torch's
    (dest / "constraints.txt").write_text("\n".join(line for line in (ROOT / "constraints.txt").read_text().splitlines()
                                                    if "==" in line and _name(line) != "torch") + "\n")
    manifest = {"python": platform.python_version(), "platform": platform.platform(), "wheels": len(list(dest.glob("*.whl"))),
                "mib": round(sum(p.stat().st_size for p in dest.iterdir()) / 2**20, 1)}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))
    if manifest["mib"] > CARRY_LIMIT_MIB:
        print(f"warning: {manifest['mib']} MiB is over the device machine's {CARRY_LIMIT_MIB} MiB carry; "
              "give --have the GPU machine's pip freeze", file=sys.stderr)
    return manifest


def install(wheels: Path) -> None:
    built = json.loads((wheels / "manifest.json").read_text())["python"]
    if built.rsplit(".", 1)[0] != platform.python_version().rsplit(".", 1)[0]:
        raise SystemExit(f"the wheels are for Python {built}, this is {platform.python_version()}")
    # editable: the pipeline runs this tree's code; [test]: the tests, and conftest's reduced config for --reduced
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
                    "-c", str(wheels / "constraints.txt"), "-e", f"{ROOT}[test]"], check=True)


def device() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"type": "cpu", "torch": torch.__version__}
    return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda}


def pipeline(root: Path, gpus: int, cores: int | None, configfile: str | None) -> dict:
    """The pipeline from scratch in `root` with the gpu-local profile: wall seconds, jobs, what the jobs report."""
    from lorarepro.domain import records

    cmd = [sys.executable, "-m", "snakemake", "--profile", PROFILE, "--resources", f"gpu={gpus}"]
    cmd += ["--cores", str(cores)] if cores else []
    cmd += ["--configfile", configfile] if configfile else []
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    (root / "gpu_pipeline.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the pipeline failed in {root} (log: {root / 'gpu_pipeline.log'}):\n{done.stderr[-3000:]}")
    steps = re.findall(r"(\d+) of \d+ steps \(100%\) done", done.stdout + done.stderr)
    runs = [records.load(p) for p in (root / "results" / "runs").rglob("seed*.json") if not p.name.endswith(".sharpness.json")]
    return {"wall_seconds": round(seconds, 1), "jobs": int(steps[-1]) if steps else None,
            "job_devices": sorted({r["resources"]["device"] for r in runs}), "runs": len(runs),
            # the warm server's log: local jobs were forks of it (lorarepro.pipeline.warm)
            "warm_start": (root / "logs" / "warm" / "server.log").is_file()}


def run(args: argparse.Namespace) -> dict:
    sys.path[:0] = [str(Path(__file__).parent), str(ROOT / "tests")]
    import yaml  # deferred, as the imports below: `install` runs on the standard library alone
    from slurm_run import differences  # the SLURM benchmark's comparison of two runs' results/
    from workspace import copy_repo  # the tests' copy of the workflow, as a user runs it

    dev = device()
    if dev["type"] != "cuda" and not args.allow_cpu:
        raise SystemExit("no GPU visible to torch: this benchmark is for a GPU machine (--allow-cpu runs it on the CPU "
                         "and writes no JSON)")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="gpu_pipeline_") as tmp:
        base = args.keep or Path(tmp)
        out = {}
        for name in ("first", "rerun"):
            root = copy_repo((base / name).resolve())
            configfile = None
            if args.reduced:
                from conftest import reduced

                (root / "reduced.yaml").write_text(yaml.safe_dump(reduced(params)))
                configfile = "reduced.yaml"
            out[name] = pipeline(root, dev.get("count", 0), args.cores, configfile)
        diff = differences(base / "first", base / "rerun")
    runs_diff = [d for d in diff if "results/runs/" in d]
    result = {
        "device": dev,
        "config": "tests/conftest.py reduced()" if args.reduced else "params.yaml (the embedded default)",
        "profile": PROFILE,
        "jobs": out["first"]["jobs"],
        "wall_seconds": {name: out[name]["wall_seconds"] for name in out},
        "job_devices": out["first"]["job_devices"],
        "warm_start": out["first"]["warm_start"],
        "determinism": {"bit_identical": not runs_diff and out["first"]["runs"] == out["rerun"]["runs"] > 0,
                        "runs_compared": out["first"]["runs"], "run_differences": runs_diff,
                        "derived_differences": [d for d in diff if d not in runs_diff],
                        "compared": "every run's result and sharpness JSON without volatile keys (checkpoint sha256 "
                                    "kept) and loss history, first run against a rerun from scratch"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    print(json.dumps(result, indent=2))
    if dev["type"] != "cuda":
        print(f"device is the CPU: {args.out} not written", file=sys.stderr)
        return result
    if result["job_devices"] != ["cuda"]:
        raise SystemExit(f"a GPU is visible but the jobs ran on {result['job_devices']}: {args.out} not written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wh = sub.add_parser("wheelhouse", help="download/build the wheels the GPU machine lacks")
    wh.add_argument("--dest", type=Path, default=WHEELS)
    wh.add_argument("--have", type=Path, help="the GPU machine's `pip freeze`: its packages at our versions are left out")
    ins = sub.add_parser("install", help="install the project from the wheelhouse, offline")
    ins.add_argument("--wheelhouse", type=Path, default=WHEELS)
    r = sub.add_parser("run", help="the pipeline twice with the gpu-local profile; writes the JSON on a GPU")
    r.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU is visible (no JSON written)")
    r.add_argument("--reduced", action="store_true", help="the tests' reduced config instead of params.yaml")
    r.add_argument("--cores", type=int, help="override the profile's cores")
    r.add_argument("--keep", type=Path, help="run in DIR/first and DIR/rerun and keep them")
    r.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.command == "wheelhouse":
        return wheelhouse(args.dest, args.have)
    if args.command == "install":
        return install(args.wheelhouse)
    return run(args)


if __name__ == "__main__":
    main()
