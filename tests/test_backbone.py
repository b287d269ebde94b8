"""Backbones: pretrained in the pipeline, saved with save_pretrained, reloaded by from_pretrained."""

import json

import pytest

from lorarepro.core import paths
from lorarepro.domain import families
from lorarepro.stages.backbone import copy_local
from lorarepro.core.hashing import sha256_dir


@pytest.mark.parametrize("backbone, family", [("t5-tiny", "nlu"), ("vit-tiny", "vision"), ("llama-tiny", "generation")])
def test_pretrained_backbone_is_a_complete_hf_directory(workspace, backbone, family):
    bdir = paths.backbone_dir(backbone)
    assert (bdir / "model.safetensors").is_file() and (bdir / "config.json").is_file()
    assert not list(bdir.glob("*.bin"))
    info = json.loads(paths.backbone_done(backbone).read_text())
    assert info["sha256"] == sha256_dir(bdir)  # the marker describes exactly these bytes
    assert info["final_loss"] < info["first_loss"]  # pretraining learned something
    fam = families.get(family)
    if fam.TEXT:
        assert (bdir / "tokenizer.json").is_file()
    task = next(t for t, c in workspace["tasks"].items() if c["family"] == family)
    from lorarepro.domain.data import load_manifest

    model, tokenizer = fam.load_for_task(bdir, load_manifest(paths.prepared_dir(task)))
    assert sum(p.numel() for p in model.parameters()) > 10_000


def test_local_backbone_without_safetensors_is_refused(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        copy_local("m", {"arch": "t5", "path": str(src)}, tmp_path / "out")


def test_local_backbone_is_copied_without_pickles(workspace, tmp_path):
    src = tmp_path / "src"
    import shutil

    shutil.copytree(paths.backbone_dir("vit-tiny"), src)
    (src / "pytorch_model.bin").write_bytes(b"pickle")
    info = copy_local("local-vit", {"arch": "vit", "path": str(src)}, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()
    assert info["sha256"] == sha256_dir(tmp_path / "out")
