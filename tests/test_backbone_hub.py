"""Hub backbones (safetensors only, no network here: the hub client is replaced by a local copy) and
a bf16 backbone with fp32 adapters (paper Table 3)."""

import fnmatch
import shutil
from pathlib import Path

import pytest
import torch

from lorarepro.core import paths
from lorarepro.stages import backbone
from lorarepro.domain.experiment import resolve_run


def fake_snapshot(hub_dir):
    """The hub client's contract: files of the repo matching allow_patterns land in local_dir."""
    def snapshot_download(repo_id, revision, local_dir, allow_patterns):
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        for f in hub_dir.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy(f, Path(local_dir) / f.name)
        return local_dir
    return snapshot_download


def test_hub_backbone_keeps_safetensors_and_drops_pickles(workspace, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    shutil.copytree(paths.backbone_dir("t5-tiny"), hub)
    (hub / "pytorch_model.bin").write_bytes(b"pickle")
    monkeypatch.setattr(backbone, "snapshot_download", fake_snapshot(hub))
    info = backbone.download_hub("t5-hub", {"arch": "t5", "model": "org/t5", "revision": "abc"}, tmp_path / "models" / "t5-hub")
    out = tmp_path / "models" / "t5-hub"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "pytorch_model.bin").exists() and info["model"] == "org/t5" and info["revision"] == "abc"
    (hub / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        backbone.download_hub("t5-hub", {"arch": "t5", "model": "org/t5"}, tmp_path / "models" / "again")


def test_bf16_backbone_with_fp32_adapters_trains(workspace):
    from lorarepro.domain import families
    from lorarepro.domain.data import load_manifest, load_split
    from lorarepro.domain.methods.flat import FlatLoRA
    from lorarepro.stages.training.train import load_model, wrap_adapter

    cfg = {**workspace, "backbones": {**workspace["backbones"], "llama-tiny": {**workspace["backbones"]["llama-tiny"], "dtype": "bfloat16"}}}
    run = resolve_run(cfg, "arithmetic", "flat_lora_r8")
    assert run.backbone_dtype == "bfloat16" and resolve_run(workspace, "arithmetic", "flat_lora_r8").backbone_dtype is None
    manifest = load_manifest(paths.prepared_dir("arithmetic"))
    model, tokenizer = load_model(run, manifest, seed=0)
    model = wrap_adapter(model, run, total_steps=2)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    family = families.get("generation")
    enc = family.encode(load_split(paths.prepared_dir("arithmetic"), "train").head(4), tokenizer, manifest, 48)
    flat = FlatLoRA(model, rho=0.05, total_steps=2, seed=0, mode="exact", scope="lora")
    flat.begin_step(1)  # noise at half strength: the bf16 weight plus fp32 noise must still run
    loss = model(**enc.batch([0, 1, 2, 3])).loss
    loss.backward()
    flat.end_step()
    flat.close()
    assert torch.isfinite(loss) and all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_pristine_weights_are_read_from_sharded_checkpoints(workspace, tmp_path):
    """Hub models of 7B ship as model-0000k-of-0000n.safetensors; in-place Flat restores from all shards."""
    from transformers import LlamaForCausalLM

    from lorarepro.domain.methods import lora
    from lorarepro.domain.checkpoints import backbone_weights as pristine_targets

    model = LlamaForCausalLM.from_pretrained(str(paths.backbone_dir("llama-tiny")))
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB", safe_serialization=True)
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    peft = lora.apply(model, {"type": "lora", "r": 2}, ["lm_head"], [])
    names = [n for n, m in peft.named_modules() if n.endswith(".base_layer")]
    saved = pristine_targets(names, tmp_path / "sharded")
    modules = dict(peft.named_modules())
    assert len(saved) == len(names) > 4
    assert all(torch.equal(saved[n], modules[n].weight) for n in names)
