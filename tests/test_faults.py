"""Faults and attacks on the pipeline and its audit: planted code never runs, pickles are refused,
reports survive failures, killed runs end, corrupt inputs stop before any result is deleted, edits of
records, histories and figures are caught, errors name their file. The slow ones tamper with a copy of the session's
finished pipeline (conftest.finished: a temporary DVC project that ran a reduced config)."""

import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, finished_config
from workspace import copy_repo, run_as_user

CONFIG = "small.yaml"
RUN = "results/runs/sentiment/lora_r8/seed0.json"


def sh(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    return run_as_user(cwd, *cmd)


def snakemake(cwd: Path, *args: str, config: str = CONFIG) -> subprocess.CompletedProcess:
    return sh(cwd, sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", config, *args)




def cli(*args: str) -> int:
    from lorarepro.pipeline.cli import main

    return main(list(args))


def audit_records(*args: str) -> list[dict]:
    """`lorarepro audit --configfile small.yaml ARGS` in process; its records."""
    cli("audit", "--configfile", CONFIG, *args)
    path = Path("results/audit/manual/audit.small.json")  # per config (paths.config_id); apart from the pipeline's
    return json.loads((path if path.is_file() else Path("results/audit/manual/audit.json")).read_text())["records"]


def with_status(records: list[dict], status: str, check: str | None = None) -> list[dict]:
    return [r for r in records if r["status"] == status and (check is None or r["check"] == check)]


# ---------------------------------------------------------------- 1. nothing runs the config did not ask for

PLANTED = "import pathlib\npathlib.Path({flag!r}).write_text('ran')\n" \
          "from transformers import PreTrainedTokenizerFast\nclass PlantedTokenizer(PreTrainedTokenizerFast):\n    pass\n"


def plant_tokenizer_code(model_dir: Path, flag: Path) -> None:
    """A custom tokenizer class in the model directory, and its completion marker claiming trust."""
    (model_dir / "tokenization_planted.py").write_text(PLANTED.format(flag=str(flag)))
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_planted.PlantedTokenizer"]}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    marker = model_dir / "lorarepro_backbone.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "trust_remote_code": True}))


@pytest.mark.slow
def test_code_planted_in_the_backbone_never_runs_in_the_audit(repo):
    plant_tokenizer_code(repo / "models" / "t5-tiny", repo / "PLANTED")
    records = audit_records("--reevaluate", "10")
    assert not (repo / "PLANTED").exists()
    assert ("backbone", "models/t5-tiny/model.safetensors") in {(r["check"], r["file"]) for r in with_status(records, "fail")}
    skipped = with_status(records, "skip", "reevaluate")
    assert skipped and all("not loaded" in r["detail"] for r in skipped)


def test_the_marker_cannot_turn_remote_code_on(workspace, tmp_path, monkeypatch):
    """Only the config's backbone entry allows a model directory's code, never a file inside it."""
    from lorarepro.core import paths
    from lorarepro.domain.families import common

    source = paths.backbone_dir("t5-tiny").resolve()
    monkeypatch.chdir(tmp_path)
    shutil.copytree(source, paths.backbone_dir("t5-tiny"))
    plant_tokenizer_code(paths.backbone_dir("t5-tiny"), tmp_path / "PLANTED")
    monkeypatch.setattr(common, "_TRUSTED", (), raising=False)
    if hasattr(common, "allow_remote_code"):  # (the code before the fix read the marker instead)
        common.allow_remote_code(workspace)  # the entry leaves trust_remote_code off
    common.load_tokenizer(paths.backbone_dir("t5-tiny"))
    assert not (tmp_path / "PLANTED").exists()


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch PICKLE_RAN",))


@pytest.mark.slow
def test_a_pickle_beside_the_adapter_is_refused_by_evaluate_with_a_clear_error(repo, capsys):
    ckpt = repo / "checkpoints" / "sentiment" / "lora_r8" / "seed0"
    (ckpt / "adapter_model.bin").write_bytes(pickle.dumps(_Planted()))
    assert cli("evaluate", "sentiment", "lora_r8", "--configfile", CONFIG, "--seeds", "0") == 1
    err = capsys.readouterr().err
    assert "pickle weights ['adapter_model.bin']" in err and "Traceback" not in err
    assert not (repo / "PICKLE_RAN").exists()


# ---------------------------------------------------------------- 2. a real encoder checkpoint

WORDS = ["the", "cat", "dog", "sat", "ran", "a", "mat", "park"]


def test_encoder_saved_without_the_class_prefix_reevaluates_bit_identical(params, tmp_path, monkeypatch, one_thread):
    """A bare BertModel save (as sentence-transformers saves encoders: `encoder.layer.0…`, no `bert.`)."""
    from transformers import BertConfig, BertModel

    from lorarepro.audit import artifacts, rerun
    from lorarepro.domain.data import prepare_task
    from lorarepro.domain.experiment import resolve_run
    from lorarepro.domain.families.common import build_tokenizer
    from lorarepro.stages.training.train import train_one

    monkeypatch.chdir(tmp_path)
    tok = build_tokenizer(WORDS)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
              ).save_pretrained(tmp_path / "bert-src")
    tok.save_pretrained(tmp_path / "bert-src")
    rows = [("the cat sat", "the cat sat", 1), ("the dog ran", "a dog ran", 1), ("the cat sat", "the dog ran", 0),
            ("a mat", "the park", 0)] * 8
    pd.DataFrame(rows, columns=["sentence1", "sentence2", "label"]).to_parquet(tmp_path / "pairs.parquet")
    config = copy.deepcopy(params)
    config["backbones"] = {"bert-bare": {"arch": "encoder", "source": "local", "path": str(tmp_path / "bert-src")}}
    config["tasks"] = {"pairs": {"family": "nlu", "backbone": "bert-bare", "source": "local", "path": str(tmp_path),
                                 "format": "parquet", "fields": {"text": ["sentence1", "sentence2"], "label": "label"},
                                 "label_words": ["different", "same"],
                                 "splits": {"train": "pairs.parquet", "validation": "pairs.parquet[:8]", "test": "pairs.parquet[:8]"}}}
    config["training"]["nlu"].update(epochs=1, batch_size=8)
    from lorarepro.stages.backbone import build

    build("bert-bare", config)
    prepare_task("pairs", config["tasks"]["pairs"], 0, Path("data/prepared/pairs"))
    result = train_one(config, resolve_run(config, "pairs", "lora_r8"), seed=0)
    [found] = rerun.reevaluate([artifacts.Run("pairs", "lora_r8", 0, result)])
    assert found["status"] == "pass", found["detail"]
    assert "backbone bit-identical" in found["detail"]


# ---------------------------------------------------------------- 3. the report of a failed audit

@pytest.mark.slow
def test_a_failed_audit_keeps_the_report_its_message_points_to(repo):
    flip = repo / "checkpoints" / "sentiment" / "lora_r8" / "seed0" / "adapter_model.safetensors"
    data = bytearray(flip.read_bytes())
    data[-9] ^= 1
    flip.write_bytes(bytes(data))
    done = snakemake(repo, "--forcerun", "audit")
    assert done.returncode != 0
    assert "report: results/audit/report.small.md" in done.stdout + done.stderr
    report = (repo / "results" / "audit" / "report.small.md").read_text()
    assert report.startswith("# Audit: FAILED") and f"`hashes` `{RUN}`" in report


# ---------------------------------------------------------------- 4. one config's run and another's audit

@pytest.mark.slow
def test_another_configs_run_leaves_this_configs_audit_alone(repo, params):
    other = finished_config(params)
    other["tables"][0]["id"] = "table_other"
    (repo / "other.yaml").write_text(yaml.safe_dump(other))
    done = snakemake(repo, config="other.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not with_status(audit_records("--reevaluate", "0"), "fail")
    index = json.loads((repo / "results" / "tables" / "index.small.json").read_text())
    assert "table_small" in [t["id"] for t in index["tables"]] and "table_other" not in json.dumps(index)
    (repo / "results" / "tables" / "index.small.json").unlink()
    [missing] = with_status(audit_records("--reevaluate", "0"), "fail", "tables")
    assert "`snakemake --cores 2 --configfile small.yaml --forcerun tables`" in missing["fix"]


# ---------------------------------------------------------------- 5. a training process killed alone

@pytest.fixture
def store(tmp_path, monkeypatch):
    from lorarepro.core import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # absolute: MLflow caches a store by its URI, and a relative one would follow an earlier test's directory
    config = {"mlflow": {"experiment": "faults", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    client, _ = tracking.mlflow_client(config)
    return config, client


def _trainer_killed_mid_run(client, parent: str) -> str:
    """A training run as tracking.run leaves it when its process is SIGKILLed: RUNNING for ever."""
    experiment = client.get_run(parent).info.experiment_id
    return client.create_run(experiment, run_name="sentiment/lora_r8/seed0", tags={"mlflow.parentRunId": parent}).info.run_id


def test_a_training_run_killed_alone_ends_killed_with_its_pipeline(store):
    from lorarepro.core import tracking

    config, client = store
    parent = tracking.start_parent(config, "snakemake")
    child = _trainer_killed_mid_run(client, parent)
    tracking.end_parent(config, parent, "FAILED")  # Snakemake's onerror, once its jobs have ended
    assert client.get_run(child).info.status == "KILLED"
    assert client.get_run(parent).info.status == "FAILED"


def test_the_next_invocation_ends_what_an_ended_pipeline_left_running(store, tmp_path, monkeypatch):
    from lorarepro.core import tracking

    config, client = store
    parent = tracking.start_parent(config, "snakemake")
    child = _trainer_killed_mid_run(client, parent)
    client.set_terminated(parent, "FAILED")  # as the code before the fix ended it, leaving the child
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracking.start_parent(config, "snakemake")  # another directory's invocation leaves it alone
    assert client.get_run(child).info.status == "RUNNING"
    monkeypatch.chdir(tmp_path)
    tracking.start_parent(config, "snakemake")
    assert client.get_run(child).info.status == "KILLED"


# ---------------------------------------------------------------- 6. a corrupt prepared data file

@pytest.mark.slow
def test_a_corrupt_data_file_stops_snakemake_before_any_job_deletes_results(repo):
    path = repo / "data" / "prepared" / "sentiment" / "test.parquet"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    kept = {p: p.stat().st_mtime_ns for d in ("results/runs", "checkpoints") for p in (repo / d).rglob("*") if p.is_file()}
    dry = snakemake(repo, "--dry-run")
    assert dry.returncode != 0 and "data/prepared/sentiment/test.parquet: content differs" in dry.stdout + dry.stderr
    forced = snakemake(repo, "--forcerun", "train")
    assert forced.returncode != 0 and "data/prepared/sentiment/test.parquet" in forced.stdout + forced.stderr
    assert {p: p.stat().st_mtime_ns for p in kept if p.exists()} == kept


# ---------------------------------------------------------------- 7. the audit's blind spots

def _rewrite_metric(value_shift: float) -> None:
    """A forgery kept consistent: result JSON, MLflow's latest value and the tables all agree."""
    from mlflow.tracking import MlflowClient

    from lorarepro.domain.experiment import load
    from lorarepro.reporting.tables import build_all

    result = json.loads(Path(RUN).read_text())
    result["metrics"]["test"] += value_shift
    Path(RUN).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    # absolute: MLflow caches stores by URI, and a relative one follows an earlier test's directory
    MlflowClient(tracking_uri=f"sqlite:///{Path('mlflow.db').resolve()}").log_metric(
        result["lineage"]["mlflow_run_id"], f"test_{result['metric']}", result["metrics"]["test"])
    config = load("params.yaml", CONFIG)
    try:
        build_all(config, "workflow/configs/paper_reference.yaml", "small")
    except TypeError:  # the code before the fix has one index for every config
        build_all(config, "workflow/configs/paper_reference.yaml")


@pytest.mark.slow
def test_a_metric_rewritten_in_mlflow_after_training_is_caught(repo):
    _rewrite_metric(3.0)
    found = with_status(audit_records("--reevaluate", "0"), "fail")
    assert {f["file"] for f in found} == {RUN}  # the run, and nothing else
    assert any(f["check"] == "mlflow" and "changed after training" in f["detail"] for f in found)


@pytest.mark.slow
def test_an_edited_loss_history_is_caught(repo):
    path = repo / "results" / "runs" / "sentiment" / "lora_r8" / "seed0.history.csv"
    lines = path.read_text().splitlines()
    step, loss, lr = lines[2].split(",")
    lines[2] = f"{step},{float(loss) * 0.5:.6g},{lr}"
    path.write_text("\n".join(lines) + "\n")
    failed = {(r["check"], r["file"]) for r in with_status(audit_records("--reevaluate", "0"), "fail")}
    assert ("mlflow", RUN) in failed  # MLflow's train_loss series is the independent record
    path.write_text("\n".join(lines[:-1]) + "\n")  # a step cut off
    failed = {(r["check"], r["file"]) for r in with_status(audit_records("--reevaluate", "0"), "fail")}
    assert ("history", str(path.relative_to(repo))) in failed


@pytest.mark.slow
def test_an_edited_figure_is_caught(repo):
    path = repo / "results" / "figures" / "training_curves.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    failed = {(r["check"], r["file"]) for r in with_status(audit_records("--reevaluate", "0"), "fail")}
    assert failed == {("figures", "results/figures/training_curves.png")}


# ---------------------------------------------------------------- 8. a fresh clone's audit

@pytest.mark.slow
def test_snakemake_timestamps_and_a_clone_without_dvcs_cache_raise_no_dvc_warning(repo):
    (repo / "checkpoints" / "sentiment" / "lora_r8" / "seed0" / ".snakemake_timestamp").unlink()  # Snakemake's, not a result
    records = audit_records("--reevaluate", "1", "--strict")  # --strict: 0 re-evaluated is itself a warning
    assert not with_status(records, "warn") and not with_status(records, "fail")
    shutil.rmtree(repo / ".dvc" / "cache")  # what a fresh clone has: dvc.lock, no directory manifests
    records = audit_records("--reevaluate", "1", "--strict")
    assert not with_status(records, "warn") and not with_status(records, "fail")
    assert with_status(records, "pass", "dvc")


# ---------------------------------------------------------------- 9. the MLflow store moves with its project

def test_a_copied_project_writes_and_shows_its_own_artifacts(store, tmp_path, monkeypatch):
    from lorarepro.core import tracking

    config, client = store
    (tmp_path / "a.txt").write_text("first")
    with tracking.run(config, "first", {}, {}) as tracker:
        tracker.artifact(tmp_path / "a.txt")
    first = tracker.run_id
    copied = tmp_path.parent / (tmp_path.name + "-copy")
    shutil.copytree(tmp_path, copied)
    monkeypatch.chdir(copied)
    config = {"mlflow": {**config["mlflow"], "tracking_uri": f"sqlite:///{copied / 'mlflow.db'}"}}
    with tracking.run(config, "second", {}, {}) as tracker:
        tracker.artifact(tmp_path / "a.txt")
    client = tracking.mlflow_client(config)[0]
    for run_id in (first, tracker.run_id):
        uri = client.get_run(run_id).info.artifact_uri
        assert uri.startswith(str(copied / "mlruns")), uri
        assert Path(uri, "a.txt").is_file()
    assert not list((tmp_path / "mlruns").rglob(f"{tracker.run_id}*"))  # nothing written into the original


# ---------------------------------------------------------------- 10. config errors

def test_yaml_errors_name_the_file_and_line(tmp_path, capsys):
    from lorarepro.core.config import ConfigError, read

    bad = tmp_path / "broken.yaml"
    bad.write_text("seeds: [0, 1\nthreads: 1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml, line 2, column 8: not valid YAML"):
        read(bad)
    assert cli("audit", "--params", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"lorarepro audit: {bad}, line 2" in err and "Traceback" not in err


@pytest.mark.slow
def test_snakemake_names_a_broken_params_file_and_an_unknown_figure_before_any_job(tmp_path, params):
    root = copy_repo(tmp_path)
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text() + "\n  oops: [1\n")
    done = sh(root, sys.executable, "-m", "snakemake", "-n")
    assert done.returncode != 0 and "params.yaml, line" in done.stdout + done.stderr
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    cfg = {"figures": [{"id": "no_such_figure", "caption": "x", "tasks": ["sentiment"], "methods": ["lora_r8"]}]}
    (root / "fig.yaml").write_text(yaml.safe_dump(cfg))
    done = sh(root, sys.executable, "-m", "snakemake", "-n", "--configfile", "fig.yaml")
    assert done.returncode != 0 and "config key 'figures.no_such_figure'" in done.stdout + done.stderr


def test_a_headerless_glue_tsv_named_by_header_says_to_use_positions(tmp_path):
    from lorarepro.domain.data import prepare_task

    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text("gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThe more we study.\n")
    cfg = {"family": "nlu", "backbone": "t5-tiny", "source": "local", "path": str(tmp_path), "format": "glue_tsv",
           "fields": {"text": ["sentence"], "label": "label"}, "label_words": ["unacceptable", "acceptable"],
           "splits": {s: "CoLA/train.tsv" for s in ("train", "validation", "test")}}
    with pytest.raises(ValueError, match=r"without a header row \(CoLA's\) is read by position"):
        prepare_task("cola", cfg, 0, tmp_path / "out")


def test_text_outside_the_tokenizers_vocabulary_warns(workspace):
    from lorarepro.core import paths
    from lorarepro.domain.families.common import ids, load_tokenizer

    tokenizer = load_tokenizer(paths.backbone_dir("t5-tiny"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ids(tokenizer, ["the movie was great fun"], 32, eos=True)  # the built-in tasks' words: no warning
        assert not seen
        ids(tokenizer, ["quantum chromodynamics predicts asymptotic freedom"], 32, eos=True)
    assert [w.category.__name__ for w in seen] == ["VocabularyWarning"]
    assert "mostly outside its vocabulary" in str(seen[0].message)


# ---------------------------------------------------------------- the matrix: a full disk

def test_a_full_disk_while_saving_a_checkpoint_names_it_and_leaves_nothing(tmp_path):
    """safetensors reports ENOSPC as SafetensorError "(os error 28)": it must read as atomic's
    `cannot write <path>: disk full` (benchmarks/reliability.py full_disk stages the real thing)."""
    from safetensors import SafetensorError

    from lorarepro.domain import checkpoints
    from lorarepro.core.atomic import OutputError

    class Model:
        def save_pretrained(self, where, safe_serialization):
            (Path(where) / "model.safetensors").write_bytes(b"half")
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(OutputError, match=r"cannot write .*/ckpt: disk full"):
        checkpoints.save(Model(), None, tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_the_reliability_matrix_covers_every_item_and_its_record_passes():
    """benchmarks/reliability.py stages each item of the issue (and the standard tamper cases) on a
    finished run; its committed record says every case passed."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import reliability
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    items = {name.split("_")[0].removeprefix("17.").rstrip("abcdef") for name in reliability.CASES if name.startswith("17.")}
    assert items == {str(i) for i in range(1, 11)}
    record = json.loads((ROOT / "results" / "benchmarks" / "reliability.json").read_text())
    assert [c["case"] for c in record["cases"]] == list(reliability.CASES)
    assert record["passed"] == record["total"] == len(reliability.CASES)


def test_configfile_params_yaml_names_the_default_config(tmp_path, monkeypatch):
    """`snakemake --configfile params.yaml` is the embedded default: its tables index, metrics and
    audit keep the default's names (a second set beside them would go stale)."""
    from lorarepro.core import paths

    monkeypatch.chdir(tmp_path)
    assert paths.config_id(["params.yaml"]) == paths.config_id() == ""
    assert paths.config_id([str(tmp_path / "params.yaml"), "workflow/configs/paper.yaml"]) == "paper"
    assert paths.config_id(["elsewhere/params.yaml"]) == "params"  # another directory's file is another config
