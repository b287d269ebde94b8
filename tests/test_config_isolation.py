"""A config never silently replaces another's results: a standalone config writes everything
under outputs/<config id>/ (lorarepro.core.paths.select), a config merged over params.yaml that changes a
run of the default's is told once, at the DAG, which of the default's files it would replace, and the
audit's DVC check judges only what the audited config made."""

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import FINISHED_CONFIG, finished_config, run_audit
from workspace import run_as_user, user_env

from lorarepro.core import paths

DEFAULT_TREES = ("results", "checkpoints", "data", "models", "logs")
NOTICE = re.compile(r"^WARNING: config '.*' changes", flags=re.M)


@pytest.fixture
def default_root(monkeypatch):
    """This process's output root is the repository's again when the test ends (select sets it in os.environ)."""
    monkeypatch.setenv(paths.ROOT_ENV, ".")


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_as_user(root, sys.executable, "-m", "snakemake", "--cores", "2", *args)


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for tree in DEFAULT_TREES for p in sorted((root / tree).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the root, chosen once


def test_importing_paths_changes_nothing(tmp_path):
    code = ("import os; before = dict(os.environ); from lorarepro.core import paths; "
            "assert dict(os.environ) == before and not os.listdir('.'); print(paths.RESULTS)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={k: v for k, v in user_env(src=True).items() if k != paths.ROOT_ENV})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "results"


def test_a_standalone_config_alone_gets_its_own_root_and_jobs_inherit_it(default_root):
    assert paths.select("small", False) == Path(".") and paths.run_result("t", "m", 0) == Path("results/runs/t/m/seed0.json")
    assert paths.select("", True) == Path(".")  # params.yaml itself
    assert paths.select("paper", True) == Path("outputs/paper")
    assert paths.checkpoint_dir("t", "m", 0) == Path("outputs/paper/checkpoints/t/m/seed0")
    assert paths.audit_json("paper") == Path("outputs/paper/results/audit/audit.paper.json")
    assert [getattr(paths, n) for n in ("DATA", "MODELS", "RESULTS", "LOGS")] == [
        Path("outputs/paper") / n for n in ("data", "models", "results", "logs")]
    # the default's committed records and the content-addressed caches stay where they are
    assert (paths.REGISTRATION, paths.BENCHMARKS, paths.JUDGE_CACHE) == (
        Path("results/preregistration.json"), Path("results/benchmarks"), Path("judge_cache"))
    code = "from lorarepro.core import paths; print(paths.log('train', 't', 'm'))"
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # a job: this environment
    assert job.stdout.strip() == "outputs/paper/logs/train/t/m.log"


def test_a_standalone_copy_of_the_default_gets_its_own_mlflow_experiment():
    from lorarepro.core.config import own_experiment

    default = {"mlflow": {"experiment": "lorarepro-embedded"}}
    assert own_experiment({"mlflow": {"experiment": "lorarepro-embedded"}}, "mine", default) == "lorarepro-embedded-mine"
    assert own_experiment({"mlflow": {"experiment": "lorarepro-paper"}}, "paper", default) == "lorarepro-paper"


# ---------------------------------------------------------------- a standalone config, run


def standalone(params: dict) -> dict:
    """The finished pipeline's config cut to one run, made complete: LoRA on sentiment, seed 0."""
    cfg = finished_config(params)
    cfg.update(standalone=True, seeds=[0], figures=[])
    cfg["tasks"] = {"sentiment": cfg["tasks"]["sentiment"]}
    cfg["backbones"] = {"t5-tiny": cfg["backbones"]["t5-tiny"]}
    cfg["training"] = {"nlu": cfg["training"]["nlu"]}
    cfg["methods"] = {"lora_r8": cfg["methods"]["lora_r8"]}
    cfg["methods"]["lora_r8"]["training"] = {"lr": 0.002}  # another run than the default's, at the same (task, method)
    cfg["tables"] = [{"id": "table_small_nlu", "caption": "alone", "tasks": ["sentiment"], "methods": ["lora_r8"]}]
    return cfg


@pytest.mark.slow
def test_a_standalone_config_leaves_every_file_of_the_default_byte_identical(repo, params, default_root):
    (repo / "alone.yaml").write_text(yaml.safe_dump(standalone(params)))
    before = hashes(repo)
    with sqlite3.connect(repo / "mlflow.db") as db:
        runs_before = db.execute("select count(*) from runs").fetchone()[0]
    done = snakemake(repo, "--configfile", "alone.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not NOTICE.search(done.stderr)
    assert hashes(repo) == before
    own = repo / "outputs" / "alone"
    assert {p.name for p in (own / "results" / "tables").glob("table_small_nlu.*")} >= {"table_small_nlu.csv", "table_small_nlu.md"}
    assert (own / "checkpoints" / "sentiment" / "lora_r8" / "seed0").is_dir() and (own / "models" / "t5-tiny").is_dir()
    audit = json.loads((own / "results" / "audit" / "audit.alone.json").read_text())
    assert audit["passed"]
    assert [(r["status"], r["file"]) for r in audit["records"] if r["check"] == "dvc"] == [("info", "dvc.yaml")]
    with sqlite3.connect(repo / "mlflow.db") as db:
        mine = db.execute("select count(*) from runs join experiments using (experiment_id) "
                          "where experiments.name = 'lorarepro-embedded-alone'").fetchone()[0]
        assert db.execute("select count(*) from runs").fetchone()[0] == runs_before + mine == runs_before + 2  # parent, child


# ---------------------------------------------------------------- a merging config: told once


def plan(root: Path, config: str) -> subprocess.CompletedProcess:
    done = snakemake(root, "-n", "--configfile", config)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_a_merging_config_that_changes_a_default_run_is_told_which_files_it_replaces(repo):
    assert not NOTICE.search(plan(repo, FINISHED_CONFIG).stderr)  # its runs are its own, not params.yaml's
    # make the finished runs the default's: the finished config becomes params.yaml
    (repo / "params.yaml").write_text((repo / FINISHED_CONFIG).read_text())
    (repo / "audit_only.yaml").write_text(yaml.safe_dump({"audit": {"reevaluate": 2}}))
    assert not NOTICE.search(plan(repo, "audit_only.yaml").stderr)  # no run of the default's changes
    (repo / "change.yaml").write_text(yaml.safe_dump({"methods": {"lora_r8": {"training": {"lr": 0.002}}}}))
    [line] = [line for line in plan(repo, "change.yaml").stderr.splitlines() if NOTICE.match(line)]  # once, one line
    runs = [p for t in ("digits", "sentiment") for p in [*(repo / "results/runs" / t / "lora_r8").glob("seed*.*"),
                                                         *(repo / "checkpoints" / t / "lora_r8").glob("seed*")]]
    shown = sorted((repo / "results/tables").glob("table_small*.*")) + sorted((repo / "results/figures").glob("training_curves.*"))
    assert "changes 2 of the default's runs (params.yaml: digits/lora_r8, sentiment/lora_r8)" in line
    assert f"will replace {len(shown) + len(runs)} of the default's files" in line
    assert "results/tables/table_small.csv" in line and "outputs/change/" in line
    # other data (or another backbone) changes no run's settings, but every run on it, and the data itself
    (repo / "data.yaml").write_text(yaml.safe_dump({"data_seed": 99}))
    [line] = [line for line in plan(repo, "data.yaml").stderr.splitlines() if NOTICE.match(line)]
    assert "changes 4 of the default's runs" in line and "of the default's files" in line


# ---------------------------------------------------------------- the DVC check, scoped


@pytest.mark.slow
def test_the_dvc_check_judges_only_what_the_audited_config_made(repo, default_root, monkeypatch):
    from lorarepro import audit
    from lorarepro.audit import dvc_outs
    from lorarepro.domain.experiment import load

    extra = repo / "checkpoints" / "elsewhere" / "lora_r8" / "seed0" / "adapter_model.safetensors"
    extra.parent.mkdir(parents=True)
    extra.write_bytes(b"another config's checkpoint")
    ours = [r for r in run_audit()["records"] if r["check"] == "dvc"]
    assert not [r for r in ours if r["status"] in ("warn", "fail")]
    [note] = [r for r in ours if r["status"] == "info"]
    assert "1 DVC-tracked output(s) changed that no run of this config made" in note["detail"]
    config = load("params.yaml", FINISHED_CONFIG)
    default = audit.run(config, audit.Options.from_config(config, reevaluate=0), [])  # as the embedded default
    assert [r["status"] for r in default["records"] if r["check"] == "dvc" and "elsewhere" in r["file"]] == ["warn"]
    monkeypatch.setenv(paths.ROOT_ENV, "outputs/alone")  # a standalone config's root: outside every DVC output
    assert [(r["status"], r["file"]) for r in dvc_outs.check([], set(), "alone")] == [("info", "dvc.yaml")]
