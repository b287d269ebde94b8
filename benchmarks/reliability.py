"""The fault and tamper matrix (issue 17): what a new user, or an attacker, does to a finished run,
and whether the pipeline and `lorarepro audit` behave as the README says.

    python benchmarks/reliability.py                  # ~7 min on 2 CPUs -> results/benchmarks/reliability.json
    python benchmarks/reliability.py --only table_cell,full_disk --keep /tmp/rel   # some cases; keep the copies
    python benchmarks/reliability.py --code /tmp/old --out /tmp/old.json   # another checkout's code (an older commit)

A finished default run takes ~8 minutes of 2 CPUs, so the finished run here is built from a reduced
config (the embedded default shrunk as tests/conftest.py `reduced` does: 2 tasks, 3 methods, 2 seeds,
tiny sizes; written into the JSON). It runs once, in a DVC project (`dvc init --no-scm`, `dvc commit`
after the run); each case copies it, breaks one thing, runs what a user runs (snakemake, `lorarepro
audit`, `lorarepro evaluate`) and records what was expected, what was observed and whether they agree.
The full-disk case mounts a small tmpfs (needs root).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CODE = REPO  # the checkout COPIED comes from, and whose package the commands run (--code)
OUT = REPO / "results" / "benchmarks" / "reliability.json"
CONFIG = "reliability.yaml"
COPIED = ("Snakefile", "params.yaml", "workflow", "src/lorarepro", "dvc.yaml", ".dvcignore")
DEFAULT_TREES = ("results", "checkpoints", "data", "models", "logs")  # the folders a run at the repository root writes
LORA0 = "results/runs/sentiment/lora_r8/seed0.json"
LONG0 = "results/runs/sentiment/lora_long/seed0.json"


def reduced_config() -> dict:
    """The embedded default, shrunk: sentiment (tiny T5) and digits (tiny ViT), full fine-tuning,
    LoRA and a longer LoRA run (for the kills), seeds 0 and 1, step checkpoints every 20 steps."""
    cfg = yaml.safe_load((CODE / "params.yaml").read_text())
    cfg["seeds"] = [0, 1]
    cfg["checkpoint_every"] = 20
    cfg["tasks"] = {k: {**cfg["tasks"][k], "sizes": {"train": 64, "validation": 16, "test": 32}}
                    for k in ("sentiment", "digits")}
    cfg["backbones"] = {k: cfg["backbones"][k] for k in ("t5-tiny", "vit-tiny")}
    for backbone in cfg["backbones"].values():
        backbone["pretrain"].update(steps=20, examples=min(backbone["pretrain"]["examples"], 300))
    cfg["training"] = {k: {**cfg["training"][k], "epochs": 1} for k in ("nlu", "vision")}
    cfg["methods"] = {k: cfg["methods"][k] for k in ("full_ft", "lora_r8")}
    cfg["methods"]["lora_long"] = {"label": "LoRA, long", "adapter": {"type": "lora", "r": 8, "alpha": 16},
                                   "training": {"epochs": 40, "batch_size": 8}}
    cfg["tables"] = [{"id": "table_small", "caption": "reliability", "paper_table": "table1", "sharpness": False,
                      "tasks": ["sentiment", "digits"], "methods": ["full_ft", "lora_r8", "lora_long"]}]
    cfg["figures"] = [{"id": "training_curves", "caption": "curves", "tasks": ["sentiment", "digits"], "methods": ["lora_r8"]},
                      {"id": "ood_curve", "caption": "ood", "tasks": ["digits"], "methods": ["lora_r8"]}]
    cfg["claims"]["comparisons"] = []
    return cfg


# ----------------------------------------------------------------------------- a project on disk


class Project:
    """A directory holding the workflow, its config and (once built) a finished run."""

    def __init__(self, root: Path):
        self.root = root

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT")}
        env["PYTHONPATH"] = str(CODE / "src")
        return env

    def sh(self, *cmd: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, env=self.env())

    def snakemake(self, *args: str, config: str = CONFIG) -> subprocess.CompletedProcess:
        return self.sh(sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", config, *args)

    def lorarepro(self, *args: str) -> subprocess.CompletedProcess:
        return self.sh(sys.executable, "-m", "lorarepro", *args)

    def audit(self, *args: str, config: str = CONFIG) -> tuple[int, list[dict]]:
        """`lorarepro audit --configfile reliability.yaml ARGS`: (exit status, records)."""
        done = self.lorarepro("audit", "--configfile", config, "--json", self.audit_json(config), *args)
        path = self.path(self.audit_json(config))
        records = json.loads(path.read_text())["records"] if path.is_file() else []
        if done.returncode not in (0, 1):
            raise RuntimeError(f"lorarepro audit exited {done.returncode}: {done.stderr[-2000:]}")
        return done.returncode, records

    @staticmethod
    def audit_json(config: str = CONFIG) -> str:
        """Where the matrix has `lorarepro audit` write its JSON: the manual audit's own place, named
        explicitly so that any version of the code (--code) writes it there."""
        return f"results/audit/manual/audit.{Path(config).stem}.json"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def copy(self, name: str) -> Project:
        target = self.root.parent / name
        shutil.copytree(self.root, target, symlinks=True)
        return Project(target)


def build(root: Path) -> tuple[Project, float]:
    """The finished run: the workflow copied, `dvc init`, snakemake, `dvc commit`; (project, seconds)."""
    root.mkdir(parents=True)
    for item in COPIED:
        src, dst = CODE / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() else shutil.copy(src, dst))
    (root / "profiles").symlink_to("workflow/profiles")
    (root / CONFIG).write_text(yaml.safe_dump(reduced_config(), sort_keys=False))
    project = Project(root)
    check(project.sh(sys.executable, "-m", "dvc", "init", "--no-scm", "-q"), "dvc init")
    start = time.perf_counter()
    check(project.snakemake(), "the finished run")
    seconds = time.perf_counter() - start
    check(project.sh(sys.executable, "-m", "dvc", "commit", "--force", "-q"), "dvc commit")
    return project, seconds


def check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def failed(records: list[dict]) -> set[tuple[str, str]]:
    return {(r["check"], r["file"]) for r in records if r["status"] == "fail"}


def statuses(records: list[dict], check_name: str) -> list[str]:
    return sorted({r["status"] for r in records if r["check"] == check_name})


def flip_byte(path: Path, offset: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def mtimes(project: Project, *dirs: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for d in dirs for p in project.path(d).rglob("*") if p.is_file()}


def stable(path: Path) -> dict:
    """A result JSON without its volatile keys (lorarepro.domain.records.stable): what two identical runs share."""
    from lorarepro.domain import records

    return records.stable(json.loads(path.read_text()))


def mlflow_status(project: Project, run_name: str) -> list[str]:
    with sqlite3.connect(project.path("mlflow.db")) as db:
        return [s for (s,) in db.execute("select status from runs where name = ? order by start_time", (run_name,))]


def edit_cell(p: Project) -> None:
    """Half a point onto LoRA's sentiment mean in results/tables/table_small.csv."""
    path = p.path("results/tables/table_small.csv")
    lines = path.read_text().splitlines()
    mean = lines[0].split(",").index("mean")
    row = next(i for i, line in enumerate(lines) if ",lora_r8," in line and ",sentiment," in line)
    fields = lines[row].split(",")
    fields[mean] = str(float(fields[mean]) + 0.5)
    lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def tree_hashes(p: Project) -> dict[str, str]:
    """sha256 of every file under DEFAULT_TREES, by relative path."""
    return {str(f.relative_to(p.root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for tree in DEFAULT_TREES for f in sorted(p.path(tree).rglob("*")) if f.is_file()}


# ----------------------------------------------------------------------------- the cases

CASES: dict = {}


def case(name: str, expected: str):
    """Register `fn(base) -> (observed, passed)` as a case of the matrix."""
    def register(fn):
        CASES[name] = (expected, fn)
        return fn
    return register


def caught(records: list[dict], status: int, *wanted: tuple[str, str]) -> tuple[str, bool]:
    """The usual tamper verdict: exit 1 and every `wanted` (check, file) among the failures."""
    found = failed(records)
    return f"exit {status}; failing: {sorted(found)}", status == 1 and set(wanted) <= found


@case("untampered", "the audit passes with --strict: no failure, warning or skip")
def untampered(base: Project) -> tuple[str, bool]:
    status, records = base.copy("untampered").audit("--strict", "--reevaluate", "all")
    counts = {s: sum(r["status"] == s for r in records) for s in ("fail", "warn", "skip", "pass")}
    return f"exit {status}; {counts}", status == 0 and counts["fail"] == counts["warn"] == counts["skip"] == 0


@case("checkpoint_byte", "a flipped checkpoint byte fails hashes and dvc for that run; it is not loaded")
def checkpoint_byte(base: Project) -> tuple[str, bool]:
    p = base.copy("checkpoint_byte")
    flip_byte(p.path("checkpoints/sentiment/lora_r8/seed0/adapter_model.safetensors"))
    status, records = p.audit("--reevaluate", "all")
    seen, ok = caught(records, status, ("hashes", LORA0), ("dvc", LORA0))
    skipped = [r for r in records if r["check"] == "reevaluate" and r["file"] == LORA0]
    return seen + f"; re-evaluation: {[r['status'] for r in skipped]}", ok and [r["status"] for r in skipped] == ["skip"]


@case("metric_in_result_json", "an edited metric fails mlflow, the table and the re-evaluation")
def metric_in_result_json(base: Project) -> tuple[str, bool]:
    p = base.copy("metric_in_result_json")
    result = json.loads(p.path(LORA0).read_text())
    result["metrics"]["test"] += 1.0
    p.path(LORA0).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    status, records = p.audit("--reevaluate", "all")
    return caught(records, status, ("mlflow", LORA0), ("reevaluate", LORA0), ("tables", "results/tables/table_small.csv"))


@case("table_cell", "an edited table cell fails the table, naming the cell")
def table_cell(base: Project) -> tuple[str, bool]:
    p = base.copy("table_cell")
    edit_cell(p)
    status, records = p.audit()
    seen, ok = caught(records, status, ("tables", "results/tables/table_small.csv"))
    detail = next((r["detail"] for r in records if r["file"] == "results/tables/table_small.csv" and r["status"] == "fail"), "")
    return seen + f"; {detail[:80]}", ok and "lora_r8/sentiment mean" in detail


@case("mlflow_run_deleted", "a deleted MLflow run fails mlflow for its result JSON")
def mlflow_run_deleted(base: Project) -> tuple[str, bool]:
    from mlflow.tracking import MlflowClient

    p = base.copy("mlflow_run_deleted")
    run_id = json.loads(p.path(LORA0).read_text())["lineage"]["mlflow_run_id"]
    MlflowClient(tracking_uri=f"sqlite:///{p.path('mlflow.db')}").delete_run(run_id)
    status, records = p.audit()
    return caught(records, status, ("mlflow", LORA0))


@case("mlflow_run_edited", "a param edited inside MLflow's database fails mlflow")
def mlflow_run_edited(base: Project) -> tuple[str, bool]:
    p = base.copy("mlflow_run_edited")
    run_id = json.loads(p.path(LORA0).read_text())["lineage"]["mlflow_run_id"]
    with sqlite3.connect(p.path("mlflow.db")) as db:
        db.execute("update params set value = '0.5' where run_uuid = ? and key = 'training.lr'", (run_id,))
    status, records = p.audit()
    return caught(records, status, ("mlflow", LORA0))


@case("params_changed_after_training", "a method's params changed after training make its runs stale (fail params)")
def params_changed_after_training(base: Project) -> tuple[str, bool]:
    p = base.copy("params_changed_after_training")
    cfg = yaml.safe_load(p.path(CONFIG).read_text())
    cfg["methods"]["lora_r8"]["training"] = {"lr": 0.004}
    p.path(CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    status, records = p.audit()
    return caught(records, status, ("params", LORA0), ("params", LORA0.replace("seed0", "seed1")))


@case("backbone_modified", "a flipped backbone byte fails backbone and the runs' hashes; none of its runs is loaded")
def backbone_modified(base: Project) -> tuple[str, bool]:
    p = base.copy("backbone_modified")
    flip_byte(p.path("models/t5-tiny/model.safetensors"))
    status, records = p.audit("--reevaluate", "all")
    seen, ok = caught(records, status, ("backbone", "models/t5-tiny/model.safetensors"), ("hashes", LORA0))
    loaded = sorted({r["status"] for r in records if r["check"] == "reevaluate" and "/sentiment/" in r["file"]})
    return seen + f"; sentiment re-evaluations: {loaded}", ok and loaded == ["skip"]


@case("data_file_edited", "an edited prepared data file fails data and hashes in the audit")
def data_file_edited(base: Project) -> tuple[str, bool]:
    p = base.copy("data_file_edited")
    flip_byte(p.path("data/prepared/digits/test.parquet"), 100)
    status, records = p.audit()
    return caught(records, status, ("data", "data/prepared/digits/manifest.json"),
                  ("hashes", "results/runs/digits/lora_r8/seed0.json"))


@case("data_regenerated_other_seed", "data regenerated with another seed fail the runs' hashes and dvc")
def data_regenerated_other_seed(base: Project) -> tuple[str, bool]:
    p = base.copy("data_regenerated_other_seed")
    cfg = reduced_config()
    script = ("import sys, json; from lorarepro.domain.data import prepare_task; "
              "prepare_task('digits', json.loads(sys.argv[1]), int(sys.argv[2]), 'data/prepared/digits')")
    check(p.sh(sys.executable, "-c", script, json.dumps(cfg["tasks"]["digits"]), str(cfg["data_seed"] + 1)), "prepare_task")
    status, records = p.audit()
    return caught(records, status, ("hashes", "results/runs/digits/lora_r8/seed0.json"),
                  ("dvc", "results/runs/digits/lora_r8/seed0.json"))


@case("swapped_seeds", "seed 0's and seed 1's result JSONs swapped fail both runs' hashes")
def swapped_seeds(base: Project) -> tuple[str, bool]:
    p = base.copy("swapped_seeds")
    one = LORA0.replace("seed0", "seed1")
    a, b = p.path(LORA0).read_text(), p.path(one).read_text()
    p.path(LORA0).write_text(b)
    p.path(one).write_text(a)
    status, records = p.audit()
    return caught(records, status, ("hashes", LORA0), ("hashes", one))


@case("run_json_missing", "a missing result JSON fails `result`, naming the file")
def run_json_missing(base: Project) -> tuple[str, bool]:
    p = base.copy("run_json_missing")
    one = LORA0.replace("seed0", "seed1")
    p.path(one).unlink()
    status, records = p.audit()
    return caught(records, status, ("result", one))


@case("pickle_adapter", "a pickle beside the adapter fails the checkpoint check; `lorarepro evaluate` refuses it "
      "with a one-line error (exit 1) and no pickle code runs")
def pickle_adapter(base: Project) -> tuple[str, bool]:
    p = base.copy("pickle_adapter")
    (p.path("checkpoints/sentiment/lora_r8/seed0/adapter_model.bin")).write_bytes(pickle.dumps(_Planted()))
    status, records = p.audit()
    seen, ok = caught(records, status, ("checkpoint", "checkpoints/sentiment/lora_r8/seed0"))
    done = p.lorarepro("evaluate", "sentiment", "lora_r8", "--configfile", CONFIG, "--seeds", "0")
    clean = done.returncode == 1 and "pickle weights" in done.stderr and "Traceback" not in done.stderr
    ran = p.path("PICKLE_RAN").exists()
    return seen + f"; evaluate exit {done.returncode}: {done.stderr.strip()[:120]!r}; pickle code ran: {ran}", ok and clean and not ran


class _Planted:
    """A pickle that runs a command when loaded: the attack `weights_only` and safetensors prevent."""

    def __reduce__(self):
        return (os.system, ("touch PICKLE_RAN",))


# ----------------------------------------------------------------------------- processes killed, a full disk


def _processes() -> list[tuple[int, int, str, str]]:
    """(pid, parent pid, command line, working directory) of every process we may inspect."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append((int(entry.name), ppid, cmdline, os.readlink(entry / "cwd")))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _trainers(root: Path) -> list[int]:
    """The processes running jobs in `root`: forks of its warm job server, else the job scripts."""
    procs = [p for p in _processes() if p[3] == str(root)]
    servers = {pid for pid, _, cmd, _ in procs if "lorarepro.pipeline.warm" in cmd}
    forks = [pid for pid, ppid, _, _ in procs if ppid in servers]
    return forks or [pid for pid, _, cmd, _ in procs if ".snakemake/scripts" in cmd]


def _wait_for(predicate, proc: subprocess.Popen, seconds: float = 300) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _start(p: Project, log: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", CONFIG, *args]
    return subprocess.Popen(cmd, cwd=p.root, stdout=open(p.path(log), "w"), stderr=subprocess.STDOUT,
                            env=p.env(), start_new_session=True)




@case("kill9_trainer_alone", "kill -9 of the training process alone (as the OOM killer does): the job fails, "
      "its MLflow run ends KILLED; the rerun resumes from the step checkpoint and the result JSON is identical "
      "to the uninterrupted run's; the audit passes")
def kill9_trainer_alone(base: Project) -> tuple[str, bool]:
    p = base.copy("kill9_trainer_alone")
    state = p.path("resume/sentiment/lora_long/seed0/state.pt")
    proc = _start(p, "first.log", "--forcerun", LONG0)  # train that run again
    killed = _wait_for(lambda: state.is_file() and _trainers(p.root), proc)
    for pid in _trainers(p.root) if killed else []:
        os.kill(pid, signal.SIGKILL)
    first = proc.wait(timeout=600)
    runs = mlflow_status(p, "sentiment/lora_long/seed0")
    again = p.snakemake("--forcerun", LONG0)  # the same command again
    # the job's log: one per (task, method) locally (jobs: auto), one per seed where jobs run per seed
    log = next(p.path(f) for f in ("logs/train/sentiment/lora_long.log", "logs/train/sentiment/lora_long/seed0.log")
               if p.path(f).is_file())
    resumed = "resume: continuing from" in log.read_text()
    same = again.returncode == 0 and stable(p.path(LONG0)) == stable(base.path(LONG0))
    status, _ = p.audit()
    observed = (f"killed mid-run: {killed}; first exit {first}; MLflow runs of the seed: {runs}; rerun exit "
                f"{again.returncode}, resumed: {resumed}, result identical: {same}; audit exit {status}")
    return observed, killed and first != 0 and runs[-1:] == ["KILLED"] and "RUNNING" not in runs and resumed and same and status == 0


@case("kill9_snakemake", "kill -9 of Snakemake and all its jobs: the next run names `--unlock`; after it, finished jobs "
      "are kept, the rest run, MLflow shows the killed runs KILLED and none RUNNING; the audit passes")
def kill9_snakemake(base: Project) -> tuple[str, bool]:
    p = base.copy("kill9_snakemake")
    kept = mtimes(p, "results/runs", "checkpoints")
    kept = {k: v for k, v in kept.items() if "sentiment/lora_long" not in str(k)}
    state = p.path("resume/sentiment/lora_long/seed0/state.pt")
    proc = _start(p, "first.log", "--forcerun", LONG0, LONG0.replace("seed0", "seed1"))
    killed = _wait_for(state.is_file, proc)
    with contextlib.suppress(ProcessLookupError):  # (it ended before the kill: `killed` says so)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    forced = ("--forcerun", LONG0, LONG0.replace("seed0", "seed1"))
    locked = p.snakemake(*forced)
    unlock = p.snakemake("--unlock")
    again = p.snakemake(*forced)  # the same command again
    untouched = {k: k.stat().st_mtime_ns for k in kept} == kept
    with sqlite3.connect(p.path("mlflow.db")) as db:
        pipelines = [s for (s,) in db.execute("select status from runs where name = 'snakemake' order by start_time")]
        running = db.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]
    same = all(stable(p.path(LONG0.replace("seed0", s))) == stable(base.path(LONG0.replace("seed0", s))) for s in ("seed0", "seed1"))
    status, _ = p.audit()
    observed = (f"killed mid-run: {killed}; next run names --unlock: {'--unlock' in output(locked)}; unlock exit "
                f"{unlock.returncode}; rerun exit {again.returncode}; finished outputs untouched: {untouched}; "
                f"pipeline runs {pipelines[-2:]}, RUNNING {running}; results identical: {same}; audit exit {status}")
    ok = (killed and locked.returncode != 0 and "--unlock" in output(locked) and unlock.returncode == 0
          and again.returncode == 0 and untouched and pipelines[-2:] == ["KILLED", "FINISHED"] and running == 0 and same and status == 0)
    return observed, ok


@case("full_disk", "a full disk (tmpfs) stops the job with `cannot write <path>: …`, leaves no half-written output "
      "that looks finished and no finished output changed; after space is freed the rerun completes and the audit passes")
def full_disk(base: Project) -> tuple[str, bool]:
    mount = base.root.parent / "full_disk_mount"
    mount.mkdir()
    size = sum(f.stat().st_size for f in base.root.rglob("*") if f.is_file() and not f.is_symlink())
    check(subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + 16 * 2**20}", "tmpfs", str(mount)],
                         capture_output=True, text=True), "mount tmpfs")
    try:
        return _full_disk(base, mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _full_disk(base: Project, mount: Path) -> tuple[str, bool]:
    """A new method's runs (so that no old output is deleted first and frees space) on a disk with
    room for logs and MLflow but not for the 0.7 MB full fine-tuned checkpoint."""
    p = Project(mount / "project")
    shutil.copytree(base.root, p.root, symlinks=True)
    cfg = yaml.safe_load(p.path(CONFIG).read_text())
    cfg["methods"]["full_ft_b"] = {**cfg["methods"]["full_ft"], "label": "Full FT b"}
    cfg["tables"].append({**cfg["tables"][0], "id": "table_disk", "tasks": ["sentiment"], "methods": ["full_ft_b"]})
    p.path("disk.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    kept = mtimes(p, "results/runs", "checkpoints")
    filler = mount / "filler"
    _fill(filler, leave=300 * 2**10)
    first = p.snakemake("--cores", "1", config="disk.yaml")
    message = next((line.strip() for line in output(first).splitlines() if "cannot write" in line), "")
    left = [str(f.relative_to(p.root)) for d in ("results/runs", "checkpoints") for f in p.path(d).rglob("*")
            if "full_ft_b" in str(f) and f.is_file()]
    untouched = {k: k.stat().st_mtime_ns for k in kept if k.exists()} == kept
    filler.unlink()
    again = p.snakemake(config="disk.yaml")  # the same command again, with room
    status, _ = p.audit(config="disk.yaml")
    observed = (f"first exit {first.returncode}: {message[:200]!r}; full_ft_b files left: {left}; finished outputs "
                f"untouched: {untouched}; after freeing space: rerun exit {again.returncode}, audit exit {status}")
    return observed, (first.returncode != 0 and bool(message) and not left and untouched
                      and again.returncode == 0 and status == 0)


def _fill(path: Path, leave: int) -> None:
    """Fill the file system of `path` until `leave` bytes are free."""
    free = shutil.disk_usage(path.parent).free
    with open(path, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


# ----------------------------------------------------------------------------- the cases of issue 17

PLANTED = ("import pathlib\npathlib.Path({flag!r}).write_text('ran')\nfrom transformers import PreTrainedTokenizerFast\n"
           "class PlantedTokenizer(PreTrainedTokenizerFast):\n    pass\n")


@case("17.1_planted_backbone_code", "trust_remote_code set in the backbone's own marker plus a custom tokenizer file: "
      "no planted code runs in `lorarepro audit`; the backbone fails, its runs are not loaded (re-evaluation skipped)")
def planted_backbone_code(base: Project) -> tuple[str, bool]:
    p = base.copy("planted_backbone_code")
    model = p.path("models/t5-tiny")
    (model / "tokenization_planted.py").write_text(PLANTED.format(flag=str(p.path("PLANTED"))))
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "auto_map": {"AutoTokenizer": [None, "tokenization_planted.PlantedTokenizer"]}}))
    marker = model / "lorarepro_backbone.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "trust_remote_code": True}))
    status, records = p.audit("--reevaluate", "all")
    seen, ok = caught(records, status, ("backbone", "models/t5-tiny/model.safetensors"))
    skipped = sorted({r["status"] for r in records if r["check"] == "reevaluate" and "/sentiment/" in r["file"]})
    ran = p.path("PLANTED").exists()
    done = p.lorarepro("evaluate", "sentiment", "lora_r8", "--configfile", CONFIG, "--seeds", "0")
    ran_evaluate = p.path("PLANTED").exists()
    observed = (seen + f"; sentiment re-evaluations {skipped}; planted code ran in audit: {ran}; `lorarepro evaluate` "
                f"exit {done.returncode}, planted code ran: {ran_evaluate}")
    return observed, ok and skipped == ["skip"] and not ran and not ran_evaluate


@case("17.2_prefixless_encoder", "a local encoder saved without the model class's prefix (bare BertModel, as "
      "sentence-transformers saves): its LoRA run re-evaluates exactly with the backbone bit-identical, every "
      "backbone tensor compared (staged apart: the reduced default has no encoder)")
def prefixless_encoder(base: Project) -> tuple[str, bool]:
    work = base.root.parent / "prefixless_encoder"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", ENCODER_SCRIPT], cwd=work, capture_output=True, text=True,
                          env=base.env(), timeout=600)
    if done.returncode != 0:
        return f"staging failed: {done.stderr[-500:]}", False
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return f"{record['status']}: {record['detail']}", record["status"] == "pass" and "bit-identical" in record["detail"]


ENCODER_SCRIPT = r'''
from lorarepro.core import numerics
numerics.pin("portable", 1)  # before torch starts, as every lorarepro process
import json, copy, yaml, pandas as pd
from pathlib import Path
from transformers import BertConfig, BertModel
from lorarepro.audit import artifacts, rerun
from lorarepro.stages.backbone import build
from lorarepro.domain.data import prepare_task
from lorarepro.domain.experiment import resolve_run
from lorarepro.domain.families.common import build_tokenizer
from lorarepro.stages.training.train import train_one

tok = build_tokenizer(["the", "cat", "dog", "sat", "ran", "a", "mat", "park"])
BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)).save_pretrained("bert-src")
tok.save_pretrained("bert-src")
rows = [("the cat sat", "the cat sat", 1), ("the dog ran", "a dog ran", 1), ("the cat sat", "the dog ran", 0), ("a mat", "the park", 0)] * 8
pd.DataFrame(rows, columns=["sentence1", "sentence2", "label"]).to_parquet("pairs.parquet")
config = yaml.safe_load(open(%r))
config["backbones"] = {"bert-bare": {"arch": "encoder", "source": "local", "path": "bert-src"}}
config["tasks"] = {"pairs": {"family": "nlu", "backbone": "bert-bare", "source": "local", "path": ".", "format": "parquet",
                             "fields": {"text": ["sentence1", "sentence2"], "label": "label"}, "label_words": ["different", "same"],
                             "splits": {"train": "pairs.parquet", "validation": "pairs.parquet[:8]", "test": "pairs.parquet[:8]"}}}
config["training"]["nlu"].update(epochs=1, batch_size=8)
build("bert-bare", config)
prepare_task("pairs", config["tasks"]["pairs"], 0, Path("data/prepared/pairs"))
result = train_one(config, resolve_run(config, "pairs", "lora_r8"), seed=0)
print(json.dumps(rerun.reevaluate([artifacts.Run("pairs", "lora_r8", 0, result)])[0]))
''' % str(CODE / "params.yaml")


@case("17.3_failed_audit_keeps_report", "a failing audit in the pipeline (a checkpoint byte) exits non-zero; the "
      "report its message points to is kept, saying FAILED")
def failed_audit_keeps_report(base: Project) -> tuple[str, bool]:
    p = base.copy("failed_audit_keeps_report")
    flip_byte(p.path("checkpoints/sentiment/lora_r8/seed0/adapter_model.safetensors"))
    done = p.snakemake("--forcerun", "audit")
    report = p.path("results/audit/report.reliability.md")
    points = "report: results/audit/report.reliability.md" in output(done)
    verdict = report.read_text().splitlines()[0] if report.is_file() else "(missing)"
    return f"exit {done.returncode}; message points to it: {points}; report: {verdict!r}", (
        done.returncode != 0 and points and verdict == "# Audit: FAILED")


def run_other_config(p: Project) -> subprocess.CompletedProcess:
    """The pipeline under other.yaml: the reduced config with its own table (table_other, LoRA only), no figures."""
    other = reduced_config()
    other["tables"][0].update(id="table_other", methods=["lora_r8"])
    other["figures"] = []
    p.path("other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    return p.snakemake(config="other.yaml")


@case("17.4_another_config", "a run with another --configfile leaves this config's tables index, metrics and audit "
      "alone: this config's audit still passes, and its fixes name its --configfile")
def another_config(base: Project) -> tuple[str, bool]:
    p = base.copy("another_config")
    ran = run_other_config(p)
    status, _ = p.audit()
    p.path("results/tables/index.reliability.json").unlink()
    _, records = p.audit()
    fix = next((r["fix"] for r in records if r["status"] == "fail" and r["check"] == "tables"), "")
    names = f"--configfile {CONFIG}" in fix
    return f"other config's run exit {ran.returncode}; this config's audit exit {status}; fix names the config: {names}", (
        ran.returncode == 0 and status == 0 and names)


@case("17.5_trainer_killed_alone_mlflow", "the MLflow run of a training process killed alone ends KILLED "
      "(see kill9_trainer_alone), never RUNNING for ever")
def trainer_killed_alone_mlflow(base: Project) -> tuple[str, bool]:
    observed, passed = RESULTS.get("kill9_trainer_alone", ("not run", False))
    return observed.split("; rerun")[0], passed


@case("17.6_corrupt_data_file", "a corrupt prepared data file stops `snakemake -n` and a forced train job before "
      "any job, naming the file; no result, history or checkpoint is deleted")
def corrupt_data_file(base: Project) -> tuple[str, bool]:
    p = base.copy("corrupt_data_file")
    flip_byte(p.path("data/prepared/sentiment/test.parquet"), 100)
    kept = mtimes(p, "results/runs", "checkpoints")
    dry = p.snakemake("--dry-run")
    forced = p.snakemake("--forcerun", "train")
    named = all("data/prepared/sentiment/test.parquet: content differs" in output(d) for d in (dry, forced))
    untouched = {k: k.stat().st_mtime_ns for k in kept if k.exists()} == kept
    return f"-n exit {dry.returncode}, forced exit {forced.returncode}, file named: {named}; outputs untouched: {untouched}", (
        dry.returncode != 0 and forced.returncode != 0 and named and untouched)


def _forge_metric(p: Project, result_path: str, shift: float, rewrite_history: bool) -> None:
    """A forgery kept consistent: result JSON, MLflow and the tables agree on the new metric. Through
    MLflow's API (a new value logged) or, with `rewrite_history`, in its database (every logged value)."""
    from mlflow.tracking import MlflowClient

    from lorarepro.core.tracking import run_metrics  # MLflow's name of the test metric (e.g. test_accuracy)

    path = p.path(result_path)
    result = json.loads(path.read_text())
    result["metrics"]["test"] += shift
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    run_id = result["lineage"]["mlflow_run_id"]
    (key, value), = run_metrics({"metric": result["metric"], "metrics": {"test": result["metrics"]["test"]}}).items()
    if rewrite_history:
        with sqlite3.connect(p.path("mlflow.db")) as db:
            for table in ("metrics", "latest_metrics"):
                db.execute(f"update {table} set value = ? where run_uuid = ? and key = ?", (value, run_id, key))
    else:
        MlflowClient(tracking_uri=f"sqlite:///{p.path('mlflow.db')}").log_metric(run_id, key, value)
    check(p.snakemake("--forcerun", "tables", "--until", "tables"), "rebuilding the tables")


@case("17.7a_metric_rewritten_in_mlflow", "a metric rewritten consistently (result JSON, a new MLflow value, rebuilt "
      "tables) in a run the audit does not re-evaluate: MLflow's history still holds the first value, mlflow fails")
def metric_rewritten_in_mlflow(base: Project) -> tuple[str, bool]:
    p = base.copy("metric_rewritten_in_mlflow")
    _forge_metric(p, LORA0, 3.0, rewrite_history=False)
    status, records = p.audit("--reevaluate", "0")
    seen, ok = caught(records, status, ("mlflow", LORA0))
    return seen, ok and {f for _, f in failed(records)} == {LORA0}  # mlflow, and (issue 27) its forced re-evaluation


@case("17.7b_loss_history_edited", "an edited loss-history CSV (a step's loss; a step cut off) fails: MLflow's "
      "train_loss series differs, and a missing step fails the history check")
def loss_history_edited(base: Project) -> tuple[str, bool]:
    p = base.copy("loss_history_edited")
    path = p.path(LORA0.replace(".json", ".history.csv"))
    lines = path.read_text().splitlines()
    step, loss, lr = lines[1].split(",")
    lines[1] = f"{step},{float(loss) * 0.5:.6g},{lr}"
    path.write_text("\n".join(lines) + "\n")
    first, edited = p.audit("--reevaluate", "0")
    path.write_text("\n".join(lines[:-1]) + "\n")
    second, cut = p.audit("--reevaluate", "0")
    history = str(path.relative_to(p.root))
    observed = f"edited: exit {first}, {sorted(failed(edited))}; cut: exit {second}, {sorted(failed(cut))}"
    return observed, ("mlflow", LORA0) in failed(edited) and ("history", history) in failed(cut) and first == second == 1


@case("17.7c_figure_edited", "an edited figure fails: every figure is drawn again from the run records and compared")
def figure_edited(base: Project) -> tuple[str, bool]:
    p = base.copy("figure_edited")
    flip_byte(p.path("results/figures/training_curves.png"), 2000)
    status, records = p.audit("--reevaluate", "0")
    return caught(records, status, ("figures", "results/figures/training_curves.png"))


@case("17.7d_forgery_of_the_mlflow_database", "a forgery that also rewrites MLflow's database (every logged value) "
      "in a run outside the sample: since issue 27 the default audit catches it too (mlflow: the result JSON differs "
      "from the one training logged as an artifact, and the run is re-evaluated whatever the sample); "
      "`--reevaluate all` catches it as before")
def forgery_of_the_mlflow_database(base: Project) -> tuple[str, bool]:
    p = base.copy("forgery_of_the_mlflow_database")
    default, records = p.audit()
    sampled = {r["file"] for r in records if r["check"] == "reevaluate"}
    target = next(f"results/runs/sentiment/{m}/seed{s}.json" for m in ("lora_r8", "full_ft", "lora_long")
                  for s in (0, 1) if f"results/runs/sentiment/{m}/seed{s}.json" not in sampled)
    _forge_metric(p, target, 3.0, rewrite_history=True)
    sample, forged = p.audit()
    full, everything = p.audit("--reevaluate", "all")
    observed = (f"forged {target} (not in the sample {sorted(sampled)}): default audit exit {sample}, failing "
                f"{sorted(failed(forged))}; --reevaluate all exit {full}, failing {sorted(failed(everything))}")
    return observed, (default == 0 and sample == 1 and {("mlflow", target), ("reevaluate", target)} <= failed(forged)
                      and full == 1 and ("reevaluate", target) in failed(everything))


@case("17.8_fresh_clone_dvc", "a clone's DVC cache without the directory manifests, and Snakemake's "
      ".snakemake_timestamp files, raise no DVC warning: `lorarepro audit --strict` passes")
def fresh_clone_dvc(base: Project) -> tuple[str, bool]:
    p = base.copy("fresh_clone_dvc")
    p.path("checkpoints/sentiment/lora_r8/seed0/.snakemake_timestamp").unlink()
    with_cache, records = p.audit("--strict")
    shutil.rmtree(p.path(".dvc/cache"))
    without, again = p.audit("--strict")
    warns = [r["file"] for r in records + again if r["status"] in ("warn", "fail")]
    return f"--strict with a timestamp gone: exit {with_cache}; without the cache: exit {without}; warnings {warns}", (
        with_cache == 0 and without == 0 and not warns)


@case("17.9_moved_mlflow_store", "a copied project writes new MLflow artifacts into its own mlruns/ and shows every "
      "run's artifacts from there; the original's mlruns/ gains nothing")
def moved_mlflow_store(base: Project) -> tuple[str, bool]:
    original = base.copy("moved_mlflow_store_original")
    before = sorted(str(f) for f in original.path("mlruns").rglob("*"))
    p = Project(base.root.parent / "moved_mlflow_store_copy")
    shutil.copytree(original.root, p.root, symlinks=True)
    ran = p.snakemake("--forcerun", LORA0)  # a run trained again in the copy
    with sqlite3.connect(p.path("mlflow.db")) as db:
        uris = [u for (u,) in db.execute("select artifact_uri from runs")]
    own = all(u.startswith(str(p.path("mlruns"))) for u in uris)
    run_id = json.loads(p.path(LORA0).read_text())["lineage"]["mlflow_run_id"]
    shown = sorted(f.name for f in p.path("mlruns").rglob(f"{run_id}/artifacts/*"))
    after = sorted(str(f) for f in original.path("mlruns").rglob("*"))
    return f"rerun exit {ran.returncode}; every artifact URI in the copy: {own}; new run's artifacts {shown}; " \
           f"original's mlruns unchanged: {before == after}", ran.returncode == 0 and own and bool(shown) and before == after


# ----------------------------------------------------------------------------- bad configs (issue 17.10)


def _dry(p: Project, *args: str) -> tuple[int, str]:
    done = p.sh(sys.executable, "-m", "snakemake", "--dry-run", *args)
    return done.returncode, output(done)


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    hit = next((i for i, line in enumerate(lines) if "Error" in line or "error" in line), len(lines) - 1)
    return " ".join(lines[hit:hit + 2])[:200]


@case("17.10a_yaml_error_in_params", "a YAML error in params.yaml: `snakemake -n` and `lorarepro audit` name the "
      "file, line and column before any job (the audit exits 2 without a traceback)")
def yaml_error_in_params(base: Project) -> tuple[str, bool]:
    p = base.copy("yaml_error_in_params")
    p.path("params.yaml").write_text(p.path("params.yaml").read_text() + "\nbroken: [1, 2\n")
    status, text = _dry(p)
    audit = p.lorarepro("audit")
    named = "params.yaml, line" in text and "params.yaml, line" in audit.stderr
    return f"snakemake -n exit {status}: {_first_error(text)!r}; audit exit {audit.returncode}: {audit.stderr.strip()[:150]!r}", (
        status != 0 and audit.returncode == 2 and named and "Traceback" not in audit.stderr)


@case("17.10b_yaml_error_in_configfile", "a YAML error in a --configfile: Snakemake (9.27) parses it before the "
      "workflow runs and says only 'Config file is not valid JSON or YAML' (its `--verbose` shows the parser's file and "
      "line); `lorarepro audit --configfile` names file, line and column")
def yaml_error_in_configfile(base: Project) -> tuple[str, bool]:
    p = base.copy("yaml_error_in_configfile")
    p.path("bad.yaml").write_text("seeds: [0, 1\nthreads: 1\n")
    status, text = _dry(p, "--configfile", "bad.yaml")
    _, verbose = _dry(p, "--configfile", "bad.yaml", "--verbose")
    audit = p.lorarepro("audit", "--configfile", "bad.yaml")
    named = 'bad.yaml", line 2' in verbose
    observed = (f"snakemake exit {status}: {_first_error(text)!r}; --verbose names it: {named}; "
                f"audit exit {audit.returncode}: {audit.stderr.strip()[:120]!r}")
    return observed, (status != 0 and "not valid JSON or YAML" in text and named
                      and audit.returncode == 2 and "bad.yaml, line 2, column 8" in audit.stderr)


@case("17.10c_unknown_figure", "a figure id without a registered drawer fails `snakemake -n`, naming the key")
def unknown_figure(base: Project) -> tuple[str, bool]:
    p = base.copy("unknown_figure")
    cfg = yaml.safe_load(p.path(CONFIG).read_text())
    cfg["figures"].append({"id": "no_such_figure", "caption": "x", "tasks": ["digits"], "methods": ["lora_r8"]})
    p.path("fig.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    status, text = _dry(p, "--configfile", "fig.yaml")
    return f"exit {status}: {_first_error(text)!r}", status != 0 and "config key 'figures.no_such_figure'" in text


@case("17.10d_unknown_key_and_bad_value", "an unknown key, an unknown method in a table and a rank <= 0 each stop "
      "`snakemake -n` naming the key")
def unknown_key_and_bad_value(base: Project) -> tuple[str, bool]:
    p = base.copy("unknown_key_and_bad_value")
    cfg = yaml.safe_load(p.path(CONFIG).read_text())
    variants = {"typo": ({**cfg, "seedz": [0]}, "seedz"),
                "method": (_with_table_method(cfg, "lora_r99"), "tables.table_small.methods"),
                "rank": (_with_rank(cfg, 0), "methods.lora_r8.adapter.r")}
    seen, ok = [], True
    for name, (variant, key) in variants.items():
        p.path(f"{name}.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
        status, text = _dry(p, "--configfile", f"{name}.yaml")
        # ours say `config key 'a.b'`; Snakemake's schema validation says `instance['a']['b']`
        named = key in text or "".join(f"['{k}']" for k in key.split(".")) in text
        seen.append(f"{name}: exit {status}, key named: {named}")
        ok = ok and status != 0 and named
    return "; ".join(seen), ok


def _with_table_method(cfg: dict, method: str) -> dict:
    out = copy.deepcopy(cfg)
    out["tables"][0]["methods"].append(method)
    return out


def _with_rank(cfg: dict, rank: int) -> dict:
    out = copy.deepcopy(cfg)
    out["methods"]["lora_r8"]["adapter"]["r"] = rank
    return out


@case("17.10e_headerless_glue_tsv", "a headerless GLUE TSV (CoLA) named by header fields: the error says the file is "
      "read by position and how to name its fields")
def headerless_glue_tsv(base: Project) -> tuple[str, bool]:
    from lorarepro.domain.data import prepare_task

    work = base.root.parent / "headerless_glue_tsv"
    (work / "CoLA").mkdir(parents=True)
    (work / "CoLA" / "train.tsv").write_text("gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThe more we study.\n")
    cfg = {"family": "nlu", "backbone": "t5-tiny", "source": "local", "path": str(work), "format": "glue_tsv",
           "fields": {"text": ["sentence"], "label": "label"}, "label_words": ["unacceptable", "acceptable"],
           "splits": {s: "CoLA/train.tsv" for s in ("train", "validation", "test")}}
    try:
        prepare_task("cola", cfg, 0, work / "out")
    except ValueError as err:
        return str(err)[-160:], "read by position" in str(err) and "'3'" in str(err)
    return "prepared without an error", False


@case("17.10f_text_outside_vocabulary", "a new task whose text is outside the tiny tokenizer's vocabulary trains "
      "with a warning on the console and in the job log")
def text_outside_vocabulary(base: Project) -> tuple[str, bool]:
    p = base.copy("text_outside_vocabulary")
    rows = ["text,label"] + [f"quantum chromodynamics predicts asymptotic freedom number {i},{i % 2}" for i in range(40)]
    p.path("foreign.csv").write_text("\n".join(rows) + "\n")
    cfg = yaml.safe_load(p.path(CONFIG).read_text())
    cfg["tasks"]["foreign"] = {"family": "nlu", "backbone": "t5-tiny", "source": "local", "path": ".", "format": "csv",
                               "fields": {"text": ["text"], "label": "label"}, "label_words": ["negative", "positive"],
                               "splits": {"train": "foreign.csv[:24]", "validation": "foreign.csv[24:32]", "test": "foreign.csv[32:]"}}
    cfg["tables"] = [{**cfg["tables"][0], "id": "table_foreign", "tasks": ["foreign"], "methods": ["lora_r8"]}]
    cfg["figures"] = []
    p.path("foreign.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))  # (reordered keys are changed params to Snakemake)
    done = p.snakemake(config="foreign.yaml")
    console = "mostly outside its vocabulary" in output(done)
    logs = [str(f.relative_to(p.root)) for f in p.path("logs/train/foreign").rglob("*.log")
            if "VocabularyWarning" in f.read_text()]
    return f"exit {done.returncode}; warning on the console: {console}; in job logs: {logs}", (
        done.returncode == 0 and console and bool(logs))


# ----------------------------------------------------------------------------- the cases of issue 27

LORA1 = LORA0.replace("seed0", "seed1")
FULL0 = "results/runs/sentiment/full_ft/seed0.json"


def _one_line(done: subprocess.CompletedProcess) -> bool:
    return "Traceback" not in output(done)


@case("27.1a_mlflow_store_removed", "mlflow.db removed: the audit creates no store and fails `mlflow` on mlflow.db "
      "(mlruns/ still holds the runs' artifacts); with mlruns/ gone too it passes only as 'MLflow not checked "
      "(store absent)' and --strict fails")
def mlflow_store_removed(base: Project) -> tuple[str, bool]:
    p = base.copy("mlflow_store_removed")
    p.path("mlflow.db").unlink()
    status, records = p.audit("--reevaluate", "0")
    seen, ok = caught(records, status, ("mlflow", "mlflow.db"))
    created = p.path("mlflow.db").exists()
    shutil.rmtree(p.path("mlruns"))
    loose = p.lorarepro("audit", "--configfile", CONFIG)
    strict, _ = p.audit("--strict")
    headline = loose.stdout.splitlines()[0] if loose.stdout else ""
    observed = seen + f"; store created: {created}; without mlruns/: {headline[:90]!r}; --strict exit {strict}"
    return observed, (ok and not created and loose.returncode == 0
                      and headline.startswith("audit PASSED — MLflow not checked (store absent)") and strict == 1)


@case("27.1b_mlflow_set_tag_forgery", "a lineage value changed in the result JSON and, through MLflow's API, in the "
      "finished run's tag: `mlflow` fails on that result JSON, naming the field against the result JSON training logged")
def mlflow_set_tag_forgery(base: Project) -> tuple[str, bool]:
    from mlflow.tracking import MlflowClient

    p = base.copy("mlflow_set_tag_forgery")
    result = json.loads(p.path(LORA0).read_text())
    result["lineage"]["data_sha256"] = "0" * 64
    p.path(LORA0).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    MlflowClient(tracking_uri=f"sqlite:///{p.path('mlflow.db')}").set_tag(result["lineage"]["mlflow_run_id"], "data_sha256", "0" * 64)
    status, records = p.audit("--reevaluate", "0")
    seen, ok = caught(records, status, ("mlflow", LORA0))
    detail = next((r["detail"] for r in records if r["check"] == "mlflow" and r["file"] == LORA0), "")
    return seen + f"; {detail[:100]}", ok and "field 'lineage' differs from the result JSON training logged" in detail


@case("27.1c_mlflow_log_metric_with_tag", "a metric forged in the result JSON, logged through MLflow's API with the "
      "evaluated-again tag that `lorarepro evaluate` sets, tables rebuilt: with no sample (--reevaluate 0) the run is "
      "re-evaluated all the same and `reevaluate` fails on it")
def mlflow_log_metric_with_tag(base: Project) -> tuple[str, bool]:
    from mlflow.tracking import MlflowClient

    from lorarepro.core.tracking import EVALUATED_AGAIN, run_metrics

    p = base.copy("mlflow_log_metric_with_tag")
    result = json.loads(p.path(FULL0).read_text())
    result["metrics"]["test"] += 3.0
    p.path(FULL0).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (key, value), = run_metrics({"metric": result["metric"], "metrics": {"test": result["metrics"]["test"]}}).items()
    client, run_id = MlflowClient(tracking_uri=f"sqlite:///{p.path('mlflow.db')}"), result["lineage"]["mlflow_run_id"]
    client.log_metric(run_id, key, value)
    client.set_tag(run_id, EVALUATED_AGAIN, key)
    check(p.snakemake("--forcerun", "tables", "--until", "tables"), "rebuilding the tables")
    status, records = p.audit("--reevaluate", "0")
    return caught(records, status, ("reevaluate", FULL0))


@case("27.2_sharpness_halved", "flatness measured (a table with sharpness: true), then LoRA's sharpness records "
      "halved and the tables rebuilt as the audit's fix says: the audit fails `sharpness` on the edited record "
      "(its sha256 differs from the one its job wrote) and `mlflow` on its run")
def sharpness_halved(base: Project) -> tuple[str, bool]:
    p = base.copy("sharpness_halved")
    cfg = yaml.safe_load(p.path(CONFIG).read_text())
    cfg["tables"][0]["sharpness"] = True
    p.path(CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    check(p.snakemake(), "measuring flatness")
    record_path = LORA0.replace(".json", ".sharpness.json")
    measures = json.loads(p.path(record_path).read_text())
    measures["expected_sharpness"] = {k: v / 2 for k, v in measures["expected_sharpness"].items()}
    p.path(record_path).write_text(json.dumps(measures, indent=2, sort_keys=True) + "\n")
    rebuilt = p.snakemake("--forcerun", "tables")
    status, records = p.audit()
    seen, ok = caught(records, status, ("sharpness", record_path), ("mlflow", LORA0))
    return f"tables rebuilt, the pipeline's own audit: exit {rebuilt.returncode}; " + seen, ok and rebuilt.returncode != 0


@case("27.3_relabelled_diverged", "a finished run relabelled as diverged (status FAILED, failed_step, a NaN error): "
      "`exclusion` fails on its result JSON (full history, weights, a FINISHED MLflow run)")
def relabelled_diverged(base: Project) -> tuple[str, bool]:
    p = base.copy("relabelled_diverged")
    result = json.loads(p.path(LORA1).read_text())
    result.update(status="FAILED", failed_step=1, error="task=sentiment method=lora_r8 seed=1 loss is nan at step 1")
    p.path(LORA1).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    status, records = p.audit("--reevaluate", "0")
    return caught(records, status, ("exclusion", LORA1))


@case("27.4_swapped_seeds_with_checkpoints", "seed 0's and seed 1's checkpoints swapped together with their result "
      "JSONs and histories (every hash agrees with its record): `identity` and `mlflow` fail on both")
def swapped_seeds_with_checkpoints(base: Project) -> tuple[str, bool]:
    p = base.copy("swapped_seeds_with_checkpoints")
    pairs = [("checkpoints/sentiment/lora_r8/seed0", "checkpoints/sentiment/lora_r8/seed1"), (LORA0, LORA1),
             (LORA0.replace(".json", ".history.csv"), LORA1.replace(".json", ".history.csv"))]
    for a, b in pairs:
        p.path(a).rename(p.path("swap"))
        p.path(b).rename(p.path(a))
        p.path("swap").rename(p.path(b))
    status, records = p.audit("--reevaluate", "0")
    return caught(records, status, ("identity", LORA0), ("identity", LORA1), ("mlflow", LORA0), ("mlflow", LORA1))


@case("27.5a_fifo_adapter", "a FIFO in place of a checkpoint's adapter_model.safetensors: the audit ends (within "
      "120 s) without opening it, failing `input` on the FIFO and `checkpoint` on its checkpoint")
def fifo_adapter(base: Project) -> tuple[str, bool]:
    return _fifo(base, "fifo_adapter", "checkpoints/sentiment/lora_r8/seed0/adapter_model.safetensors",
                 ("checkpoint", "checkpoints/sentiment/lora_r8/seed0"))


@case("27.5b_fifo_data", "a FIFO in place of a prepared data file: the audit ends (within 120 s), failing `input` "
      "on the FIFO and `data` on its manifest; none of its runs is loaded")
def fifo_data(base: Project) -> tuple[str, bool]:
    return _fifo(base, "fifo_data", "data/prepared/digits/test.parquet", ("data", "data/prepared/digits/manifest.json"))


def _fifo(base: Project, name: str, relative: str, *wanted: tuple[str, str]) -> tuple[str, bool]:
    p = base.copy(name)
    p.path(relative).unlink()
    os.mkfifo(p.path(relative))
    try:
        done = p.sh(sys.executable, "-m", "lorarepro", "audit", "--configfile", CONFIG, "--json", p.audit_json(),
                    "--reevaluate", "all", timeout=120)
    except subprocess.TimeoutExpired:
        return "the audit hung (killed after 120 s)", False
    records = json.loads(p.path(p.audit_json()).read_text())["records"]
    seen, ok = caught(records, done.returncode, ("input", relative), *wanted)
    return seen + f"; one line, no traceback: {_one_line(done)}", ok and _one_line(done)


@case("27.5c_result_not_json", "a result JSON that is not JSON: the audit exits 1 without a traceback, failing "
      "`result` on that file (and every check that reads it names it)")
def result_not_json(base: Project) -> tuple[str, bool]:
    p = base.copy("result_not_json")
    p.path(LORA1).write_text("{broken")
    done = p.lorarepro("audit", "--configfile", CONFIG, "--json", p.audit_json(), "--reevaluate", "0")
    records = json.loads(p.path(p.audit_json()).read_text())["records"]
    seen, ok = caught(records, done.returncode, ("result", LORA1))
    return seen + f"; no traceback: {_one_line(done)}", ok and _one_line(done)


def _jobs(done: subprocess.CompletedProcess) -> list[str]:
    """The rules of the jobs a Snakemake run (or dry run) names."""
    return re.findall(r"^(?:local)?rule (\w+):", output(done), flags=re.M)


@case("27.6_manual_audit_then_pipeline_audit", "a manual `lorarepro audit` never writes the audit rule's output "
      "(results/audit/audit.reliability.json): after a passing one `snakemake -n` has nothing to do; after a failing one "
      "(an edited table) `snakemake` runs its own audit, which fails `tables` on results/tables/table_small.csv in "
      "results/audit/report.reliability.md")
def manual_audit_then_pipeline_audit(base: Project) -> tuple[str, bool]:
    p = base.copy("manual_audit_then_pipeline_audit")
    rule_output = p.path(f"results/audit/audit.{Path(CONFIG).stem}.json")
    before = rule_output.read_bytes(), rule_output.stat().st_mtime_ns
    # as a user runs it: no --json, the default files
    passing = p.lorarepro("audit", "--configfile", CONFIG, "--reevaluate", "0").returncode
    idle = _jobs(p.snakemake("--dry-run"))
    edit_cell(p)
    failing = p.lorarepro("audit", "--configfile", CONFIG, "--reevaluate", "0").returncode
    untouched = (rule_output.read_bytes(), rule_output.stat().st_mtime_ns) == before
    ran = p.snakemake()
    report = p.path(f"results/audit/report.{Path(CONFIG).stem}.md")
    text = report.read_text() if report.is_file() else ""
    named = "`tables` `results/tables/table_small.csv`" in text
    observed = (f"manual audits exit {passing} then {failing}; rule output untouched: {untouched}; jobs after the passing "
                f"one: {idle}; snakemake exit {ran.returncode}, ran audit: {'audit' in _jobs(ran)}, its report "
                f"{text.splitlines()[0] if text else '(missing)'!r} names the table: {named}")
    return observed, (passing == 0 and failing == 1 and untouched and idle == [] and ran.returncode != 0
                      and "audit" in _jobs(ran) and text.startswith("# Audit: FAILED") and named)


def _one_run(cfg: dict) -> dict:
    """`cfg` cut to LoRA on sentiment, seed 0, one table (the finished run's table id): a run of its own, quickly."""
    cfg.update(seeds=[0], figures=[])
    cfg["tasks"] = {"sentiment": cfg["tasks"]["sentiment"]}
    cfg["backbones"] = {"t5-tiny": cfg["backbones"]["t5-tiny"]}
    cfg["training"] = {"nlu": cfg["training"]["nlu"]}
    cfg["methods"] = {"lora_r8": {**cfg["methods"]["lora_r8"], "training": {"lr": 0.002}}}  # not the finished run's
    cfg["tables"] = [{**cfg["tables"][0], "tasks": ["sentiment"], "methods": ["lora_r8"]}]
    return cfg


@case("27.7a_standalone_config_apart", "a standalone config (`standalone: true`, alone.yaml) writes everything under "
      "outputs/alone/: every file of the finished run under results/, checkpoints/, data/, models/ and logs/ stays "
      "byte-identical, the finished run's MLflow experiment gains no run, and its own audit "
      "(outputs/alone/results/audit/audit.alone.json) passes with `dvc` as information only")
def standalone_config_apart(base: Project) -> tuple[str, bool]:
    p = base.copy("standalone_config_apart")
    p.path("alone.yaml").write_text(yaml.safe_dump({**_one_run(reduced_config()), "standalone": True}, sort_keys=False))
    before, runs = tree_hashes(p), _experiment_runs(p)
    done = p.snakemake(config="alone.yaml")
    after = tree_hashes(p)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    audit = p.path("outputs/alone/results/audit/audit.alone.json")
    records = json.loads(audit.read_text())["records"] if audit.is_file() else []
    dvc = sorted({r["status"] for r in records if r["check"] == "dvc"})
    passed = audit.is_file() and json.loads(audit.read_text())["passed"]
    table = p.path("outputs/alone/results/tables/table_small.csv").is_file()
    observed = (f"snakemake exit {done.returncode}; changed under the finished run's folders: {len(changed)} "
                f"{changed[:3]}; its experiment's runs {runs} -> {_experiment_runs(p)}; own table: {table}; own audit "
                f"passed: {passed}, dvc statuses {dvc}")
    return observed, (done.returncode == 0 and not changed and _experiment_runs(p) == runs and table and passed
                      and dvc == ["info"])


def _experiment_runs(p: Project) -> int:
    """Runs in the MLflow experiment of the finished run (params.yaml's, which reliability.yaml keeps)."""
    name = reduced_config()["mlflow"]["experiment"]
    with sqlite3.connect(p.path("mlflow.db")) as db:
        return db.execute("select count(*) from runs join experiments using (experiment_id) where experiments.name = ?",
                          (name,)).fetchone()[0]


@case("27.7b_merging_config_notice", "a config merged over params.yaml that changes a run of the default's "
      "(lora_r8's learning rate) is told at the DAG (`snakemake -n`), in one line printed once, that it will replace "
      "the default's files, counting them and naming results/tables/table_small.csv first; a config whose runs are "
      "its own (reliability.yaml) is told nothing")
def merging_config_notice(base: Project) -> tuple[str, bool]:
    p = base.copy("merging_config_notice")
    own = [line for line in output(p.snakemake("--dry-run")).splitlines() if "will replace" in line]
    p.path("params.yaml").write_text(p.path(CONFIG).read_text())  # the finished runs become the default's
    p.path("change.yaml").write_text(yaml.safe_dump({"methods": {"lora_r8": {"training": {"lr": 0.002}}}}))
    done = p.snakemake("--dry-run", config="change.yaml")
    lines = [line for line in output(done).splitlines() if "will replace" in line]
    first = lines[0] if lines else ""
    named = "changes 2 of the default's runs" in first and "files at the paths they share: results/tables/table_small.csv" in first
    return f"-n exit {done.returncode}; notice lines: {len(lines)}: {first[:230]!r}; reliability.yaml's: {len(own)}", (
        done.returncode == 0 and len(lines) == 1 and named and not own)


@case("27.7c_other_config_no_dvc_warning", "a run of the finished config regenerated after `dvc commit` (full_ft "
      "digits seed 0: checkpoint and result JSON agree) warns `dvc` on results/runs/digits/full_ft/seed0.json in that "
      "config's audit; another config's audit (other.yaml: table_other, LoRA only) passes with --strict: `dvc` gives "
      "no warning, only information on dvc.lock about what it did not make")
def other_config_no_dvc_warning(base: Project) -> tuple[str, bool]:
    from lorarepro.core.hashing import sha256_dir

    p = base.copy("other_config_no_dvc_warning")
    ran = run_other_config(p)
    regenerated = "results/runs/digits/full_ft/seed0.json"
    checkpoint = p.path("checkpoints/digits/full_ft/seed0")
    flip_byte(checkpoint / "model.safetensors")
    result = json.loads(p.path(regenerated).read_text())
    result["lineage"]["checkpoint_sha256"] = sha256_dir(checkpoint)  # as a retrain would record it
    p.path(regenerated).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    _, own = p.audit("--reevaluate", "0")
    warned = [r["file"] for r in own if r["check"] == "dvc" and r["status"] == "warn"]
    status, records = p.audit("--strict", "--reevaluate", "1", config="other.yaml")
    dvc = [(r["status"], r["file"]) for r in records if r["check"] == "dvc" and r["status"] != "pass"]
    return (f"finished config's dvc warnings: {warned}; other config's run exit {ran.returncode}, its audit --strict "
            f"exit {status}, dvc beyond pass: {dvc}"), (
        warned == [regenerated] and ran.returncode == 0 and status == 0 and dvc == [("info", "dvc.lock")])


# ----------------------------------------------------------------------------- the matrix

RESULTS: dict[str, tuple[str, bool]] = {}


def run_cases(base: Project, names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        expected, fn = CASES[name]
        start = time.perf_counter()
        try:
            observed, passed = fn(base)
        except Exception as exc:  # a case that cannot be staged is a finding too: it fails, with why
            observed, passed = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", False
        RESULTS[name] = (observed, passed)
        rows.append({"case": name, "expected": expected, "observed": observed, "pass": bool(passed),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"{'PASS' if passed else 'FAIL'} {name} ({rows[-1]['seconds']} s): {observed}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--keep", type=Path, help="build in this new directory and keep it")
    parser.add_argument("--code", type=Path, default=REPO, help="copy the code and workflow (Snakefile, params.yaml, "
                        "workflow/, src/lorarepro, dvc.yaml, .dvcignore) from this checkout, e.g. an older commit's "
                        "(default: this one)")
    parser.add_argument("--out", type=Path, help=f"write the JSON here (default {OUT.relative_to(REPO)}, written "
                        "only when every case runs)")
    args = parser.parse_args(argv)
    global CODE
    CODE = args.code.resolve()
    missing = [item for item in COPIED if not (CODE / item).exists()]
    if missing:
        raise SystemExit(f"--code {args.code}: not a checkout of this project (missing {missing})")
    names = args.only.split(",") if args.only else list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {sorted(CASES)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="lorarepro-reliability-"))
    try:
        base, seconds = build(work / "finished")
        start = time.perf_counter()
        rows = run_cases(base, names)
        document = {
            "finished_run": {"config": "reduced (benchmarks/reliability.py reduced_config): 2 tasks (sentiment on the "
                             "tiny T5, digits on the tiny ViT), full_ft, lora_r8 and lora_long, seeds 0 and 1, tiny "
                             "sizes; not the full params.yaml (~8 CPU-minutes)", "seconds": round(seconds, 1)},
            **({"code": str(CODE)} if CODE != REPO else {}),  # another checkout's code (--code)
            "cases": rows, "passed": sum(r["pass"] for r in rows), "total": len(rows),
            "matrix_seconds": round(time.perf_counter() - start, 1),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = args.out or (None if args.only else OUT)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {out}")
    print(f"{document['passed']} of {document['total']} cases pass")
    return 0 if document["passed"] == document["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
