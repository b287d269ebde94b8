"""Bad input and security: file problems fail at the job's start naming the file; weights load from
safetensors only; remote code stays off unless a backbone entry of the config allows it; no config
value reaches a shell. (Config-value errors before any job starts: tests/test_config.py.)"""

import copy
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from lorarepro.core import paths
from lorarepro.core.config import ConfigError
from lorarepro.domain.experiment import resolve_run, validate
from lorarepro.stages.training.train import train_one


@pytest.fixture
def scratch(workspace, tmp_path, monkeypatch):
    """A private copy of the prepared sentiment/digits data beside links to the shared backbones."""
    root = Path.cwd()
    for task in ("sentiment", "digits"):
        shutil.copytree(root / paths.prepared_dir(task), tmp_path / paths.prepared_dir(task))
    (tmp_path / paths.MODELS).mkdir()
    for backbone in ("t5-tiny", "vit-tiny"):
        (tmp_path / paths.backbone_dir(backbone)).symlink_to(root / paths.backbone_dir(backbone))
    monkeypatch.chdir(tmp_path)
    return workspace


@pytest.mark.parametrize("split", ["train", "test"])  # test is read only after training: checked first
def test_missing_split_file_fails_at_job_start_naming_it(scratch, split):
    (paths.prepared_dir("sentiment") / f"{split}.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=f"data/prepared/sentiment/{split}.parquet"):
        train_one(scratch, resolve_run(scratch, "sentiment", "lora_r8"), seed=0)
    assert not paths.checkpoint_dir("sentiment", "lora_r8", 0).exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_parquet_fails_at_job_start_naming_it(scratch, damage):
    path = paths.prepared_dir("sentiment") / "test.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(ValueError, match=r"data/prepared/sentiment/test.parquet: content differs from the sha256"):
        train_one(scratch, resolve_run(scratch, "sentiment", "lora_r8"), seed=0)


def test_unreadable_parquet_names_the_file(tmp_path):
    from lorarepro.domain.data import load_split

    (tmp_path / "train.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=f"cannot read parquet file {tmp_path / 'train.parquet'}"):
        load_split(tmp_path, "train")


def test_model_dir_with_only_pickle_weights_is_refused(scratch):
    """from_pretrained(use_safetensors=True): a pytorch_model.bin is never unpickled."""
    from safetensors.torch import load_file

    bdir = paths.backbone_dir("vit-tiny")
    real = bdir.resolve()
    bdir.unlink()
    shutil.copytree(real, bdir)
    torch.save(load_file(bdir / "model.safetensors"), bdir / "pytorch_model.bin")
    (bdir / "model.safetensors").unlink()
    with pytest.raises(OSError, match=r"model.safetensors.*models/vit-tiny"):
        train_one(scratch, resolve_run(scratch, "digits", "lora_r8"), seed=0)


def test_no_torch_load_without_weights_only():
    """Every torch.load in the package passes weights_only=True (no pickle code can run). The one
    pickle is lorarepro.pipeline.warm's hand-over of a job (Snakemake's own pickled `snakemake` object) between
    two processes of the same user, over a socket in a 0700 directory (tests/test_warm.py)."""
    for file in (ROOT / "src" / "lorarepro").rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", file.read_text()):
            assert "weights_only=True" in call, f"{file}: {call}"
        assert "import pickle" not in file.read_text() or file.name == "warm.py", file


@pytest.mark.parametrize("entry, expected", [({}, False), ({"trust_remote_code": True}, True)])
def test_trust_remote_code_only_when_the_backbone_entry_says_so(workspace, tmp_path, monkeypatch, entry, expected):
    """The config's entry alone decides: the backbone's own marker claims trust either way
    (tests/test_faults.py plants code behind such a claim)."""
    from transformers import AutoTokenizer

    from lorarepro.stages.backbone import copy_local
    from lorarepro.domain.families import common

    source = paths.backbone_dir("t5-tiny").resolve()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "_TRUSTED", ())
    entry = {"arch": "t5", "source": "local", "path": str(source), **entry}
    copy_local("t5-local", {**entry, "trust_remote_code": True}, paths.backbone_dir("t5-local"))
    common.allow_remote_code({"backbones": {"t5-local": entry}, "tasks": {}})
    seen = {}
    real = AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    common.load_tokenizer(paths.backbone_dir("t5-local"))
    assert seen["trust_remote_code"] is expected


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["backbones"]["t5-tiny"].update(trust_remote_code="yes"), "backbones.t5-tiny.trust_remote_code"),
    (lambda c: c.update(checkpoint_every=-1), "checkpoint_every"),
    (lambda c: c.update(checkpoint_every=2.5), "checkpoint_every"),
    (lambda c: c["methods"].update({"x$(reboot)": c["methods"]["lora_r8"]}), "methods"),
    (lambda c: c["backbones"].update({"a b": c["backbones"]["t5-tiny"]}), "backbones"),
])
def test_new_keys_and_names_are_validated(params, mutate, key):
    cfg = copy.deepcopy(params)
    mutate(cfg)
    with pytest.raises(ConfigError, match=f"'{re.escape(key)}"):
        validate(cfg)


def _rule_files() -> list[Path]:
    return [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]


def test_rules_never_build_shell_commands():
    """Every rule runs a `script:` adapter; none uses shell:/run:/wrapper:, so no config string is
    ever spliced into a command line."""
    rules = 0
    for file in _rule_files():
        text = file.read_text()
        assert not re.search(r"^\s+(shell|run|wrapper|notebook):", text, flags=re.M), file
        parts = re.split(r"^(?:local)?rule (\w+):", text, flags=re.M)[1:]
        for name, body in zip(parts[::2], parts[1::2]):
            rules += 1
            body = re.split(r"^\S", body, flags=re.M)[0]  # up to the next top-level statement
            assert name == "all" or re.search(r"^\s+script:", body, flags=re.M), f"{file}: rule {name} has no script:"
    assert rules >= 8


def test_wildcards_are_constrained_like_the_schema_names():
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    schema = (ROOT / "workflow" / "schemas" / "params.schema.yaml").read_text()
    pattern = re.search(r'pattern: "\^(.*)\$"', schema).group(1)
    for wildcard in ("task", "method", "backbone"):
        assert f'{wildcard}="{pattern}"' in common
