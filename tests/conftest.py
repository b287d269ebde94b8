"""Shared fixtures: the repository's params.yaml and a reduced config for fast end-to-end runs."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from lorarepro.core import numerics

# The suite computes as the default pipeline does (params.yaml: portable, one thread): pinned before
# torch is first imported, so a test may call training code in this process.
numerics.pin("portable", 1)

import torch  # noqa: E402  (after the pinning, on purpose)

ROOT = Path(__file__).resolve().parents[1]

# A local copy of FastChat's llm_judge data files at the pinned commit (lorarepro.core.pinned.FASTCHAT_COMMIT),
# for the tests that compare with them verbatim: judge_prompts.jsonl, question.jsonl and
# reference_answer/gpt-4.jsonl (or the flattened reference_answer_gpt-4.jsonl). Without it those tests skip.
FASTCHAT_ENV = "LORAREPRO_FASTCHAT_DATA"
FASTCHAT_FILES = {  # name -> (its paths in the copy, the pinned sha256)
    "judge_prompts": (("judge_prompts.jsonl",), "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6"),
    "questions": (("question.jsonl", "mt_bench/question.jsonl"),
                  "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
    "references": (("reference_answer_gpt-4.jsonl", "reference_answer/gpt-4.jsonl", "mt_bench/reference_answer/gpt-4.jsonl"),
                   "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"),
}
FASTCHAT_SKIP = (f"set {FASTCHAT_ENV} to a local copy of FastChat's fastchat/llm_judge/data/ folder at commit "
                 "0e6d3e4beaab66f4d3f93db72541a4abab8af28d to run the verbatim comparisons")


def fastchat_file(name: str) -> Path | None:
    """FastChat's file `name` (a key of FASTCHAT_FILES) from $LORAREPRO_FASTCHAT_DATA, its sha256 checked
    against the pin; None when the variable is unset. A copy with other bytes is an error, never a skip."""
    import hashlib
    import os

    folder = os.environ.get(FASTCHAT_ENV)
    if not folder:
        return None
    candidates, sha256 = FASTCHAT_FILES[name]
    found = next((Path(folder) / c for c in candidates if (Path(folder) / c).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{FASTCHAT_ENV}={folder}: none of {list(candidates)} there")
    if hashlib.sha256(found.read_bytes()).hexdigest() != sha256:
        raise ValueError(f"{found}: not the pinned bytes of FastChat's file (sha256 {sha256[:12]}…)")
    return found


@pytest.fixture(scope="session")
def params() -> dict:
    with open(ROOT / "params.yaml") as fh:
        return yaml.safe_load(fh)


def reduced(params: dict) -> dict:
    """The embedded default shrunk to seconds: 1 task per family, tiny sizes, 2 seeds, few steps."""
    cfg = copy.deepcopy(params)
    cfg["seeds"] = [0, 1]
    # the default's comparisons name methods and tasks the reduced config drops: claims on its own runs
    cfg["claims"]["comparisons"] = [
        {"claim": "nlu_average", "role": "primary", "pairs": [["flat_lora_r8", "lora_r8"]], "tasks": ["sentiment"]},
        {"claim": "overhead_time", "role": "primary", "pairs": [["flat_lora_r8", "lora_r8"]], "tasks": ["sentiment", "digits"]},
    ]
    for name, bb in cfg["backbones"].items():
        bb["pretrain"].update(steps=20, examples=min(bb["pretrain"]["examples"], 300))
    cfg["tasks"] = {k: v for k, v in cfg["tasks"].items() if k in ("sentiment", "digits", "arithmetic")}
    for task in cfg["tasks"].values():
        task["sizes"] = {"train": 64, "validation": 16, "test": 32}
    for family in cfg["training"].values():
        family["epochs"] = 1
    cfg["methods"] = {k: v for k, v in cfg["methods"].items() if k in ("full_ft", "lora_r8", "flat_lora_r8")}
    cfg["tables"] = [
        {"id": "table_small", "caption": "reduced", "paper_table": "table1",
         "tasks": list(cfg["tasks"]), "methods": list(cfg["methods"])},
    ]
    cfg["figures"] = [
        {"id": "ood_curve", "caption": "ood", "tasks": ["digits"], "methods": ["lora_r8", "flat_lora_r8"]},
        {"id": "training_curves", "caption": "curves", "tasks": list(cfg["tasks"]), "methods": ["lora_r8"]},
    ]
    return cfg


@pytest.fixture
def small_config(params) -> dict:
    return reduced(params)


FINISHED_CONFIG = "small.yaml"


def finished_config(params: dict) -> dict:
    """The reduced config cut to full fine-tuning and LoRA on one vision and one NLU task (digits on
    the tiny ViT, sentiment on the tiny T5), two seeds, a table per task, one figure, no sharpness or
    claims: what the audit and the fault tests tamper with."""
    cfg = reduced(params)
    cfg["tasks"] = {k: cfg["tasks"][k] for k in ("digits", "sentiment")}
    cfg["backbones"] = {k: cfg["backbones"][k] for k in ("vit-tiny", "t5-tiny")}
    cfg["training"] = {k: cfg["training"][k] for k in ("vision", "nlu")}
    cfg["methods"] = {k: cfg["methods"][k] for k in ("full_ft", "lora_r8")}
    cfg["tables"] = [
        {"id": "table_small", "caption": "reduced", "paper_table": "table2", "tasks": ["digits"], "methods": ["full_ft", "lora_r8"]},
        {"id": "table_small_nlu", "caption": "reduced, NLU", "tasks": ["sentiment"], "methods": ["full_ft", "lora_r8"]},
    ]
    cfg["figures"] = [{"id": "training_curves", "caption": "curves", "tasks": ["sentiment"], "methods": ["lora_r8"]}]
    cfg["claims"]["comparisons"] = []
    del cfg["sharpness"]
    return cfg


@pytest.fixture(scope="session")
def finished(tmp_path_factory, params):
    """One finished pipeline for the whole session (shared: copy it before changing anything): a DVC
    project that ran `finished_config` with Snakemake, its audit included, and recorded its outputs."""
    import sys

    from workspace import WORKFLOW, copy_repo, run_as_user

    root = copy_repo(tmp_path_factory.mktemp("finished"), WORKFLOW + ("src", "dvc.yaml", ".dvcignore"))
    (root / FINISHED_CONFIG).write_text(yaml.safe_dump(finished_config(params)))
    assert run_as_user(root, sys.executable, "-m", "dvc", "init", "--no-scm", "-q").returncode == 0
    done = run_as_user(root, sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", FINISHED_CONFIG)
    assert done.returncode == 0, done.stderr[-5000:]
    first = json.loads((root / "results" / "audit" / "audit.small.json").read_text())  # per config: paths.config_id
    # before `dvc commit` nothing is recorded: the pipeline's own audit passes and says so
    assert first["passed"] and [r["file"] for r in first["records"] if r["status"] == "warn"] == ["dvc.lock"]
    committed = run_as_user(root, sys.executable, "-m", "dvc", "commit", "--force", "-q")
    assert committed.returncode == 0, committed.stderr
    return root


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory, params):
    """Data and backbones of the reduced config, built once per session."""
    from workspace import prepare

    root = tmp_path_factory.mktemp("workspace")
    prepare(root, reduced(params))
    return root


@pytest.fixture
def workspace(prepared_root, monkeypatch, params):
    """chdir into the prepared workspace; yields the reduced config."""
    monkeypatch.chdir(prepared_root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{prepared_root / 'mlflow.db'}")
    return reduced(params)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: threads only add spin-waiting on a shared CPU (params.yaml runs with 1 too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeResponse:
    """What `requests.get` returns, for tests that monkeypatch it: the body and an HTTP status."""

    def __init__(self, content: bytes, status: int = 200):
        self.content, self.status = content, status

    def raise_for_status(self):
        if self.status != 200:
            import requests  # deferred: only tests of downloads need it

            raise requests.HTTPError(f"{self.status} Client Error")


@pytest.fixture
def repo(finished, tmp_path, monkeypatch):
    """A copy of the session's finished pipeline to tamper with; in-process commands run inside it."""
    copy = tmp_path / "repo"
    shutil.copytree(finished, copy, symlinks=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LORAREPRO_MLFLOW_PARENT", raising=False)
    return copy


def run_audit(**options) -> dict:
    """The audit of the finished pipeline's config, in process (default: no re-evaluation)."""
    from lorarepro import audit
    from lorarepro.domain.experiment import load

    config = load("params.yaml", FINISHED_CONFIG)
    return audit.run(config, audit.Options.from_config(config, **{"reevaluate": 0, **options}), [FINISHED_CONFIG])


def failing(result: dict) -> dict:
    """{(check, file): detail} of an audit's failures."""
    return {(r["check"], r["file"]): r["detail"] for r in result["records"] if r["status"] == "fail"}
