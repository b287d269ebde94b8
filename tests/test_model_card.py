"""A checkpoint on the Hub's conventions: a filled model card, PEFT's task_type, loadable with a
plain `PeftModel.from_pretrained`, and a hash that covers the card and stays stable."""

import json

import pytest
import yaml

from lorarepro.core import paths
from lorarepro.domain import checkpoints, families
from lorarepro.domain.checkpoints.saving import canonical_adapter_config, hub_base
from lorarepro.domain.data import load_split
from lorarepro.domain.experiment import resolve_run
from lorarepro.core.hashing import sha256_dir
from lorarepro.stages.training.train import train_one

TASK_TYPES = {"sentiment": "SEQ_2_SEQ_LM", "arithmetic": "CAUSAL_LM", "digits": None}  # T5, Llama, ViT backbones


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.parametrize("task", sorted(TASK_TYPES))
def test_adapter_checkpoint_has_a_filled_card_and_its_task_type(workspace, one_thread, task):
    run = resolve_run(workspace, task, "lora_r8")
    result = train_one(workspace, run, seed=0)
    ckpt = paths.checkpoint_dir(task, "lora_r8", 0)
    card = (ckpt / "README.md").read_text()
    assert "More Information Needed" not in card  # PEFT's empty template is replaced
    front = front_matter(card)
    assert front["library_name"] == "peft" and {"lorarepro", "lorarepro-lora_r8", f"task-{task}", "lora"} <= set(front["tags"])
    test = result["metrics"]["test"]
    assert f"| test | {test} |" in card and f"| split | {result['metric']} |" in card
    assert "PeftModel.from_pretrained(base, 'checkpoints/" in card
    config = json.loads((ckpt / "adapter_config.json").read_text())
    assert config["task_type"] == TASK_TYPES[task]
    assert config["base_model_name_or_path"] == str(paths.backbone_dir(run.backbone))  # no hub id: in-pipeline
    assert result["lineage"]["checkpoint_sha256"] == sha256_dir(ckpt)  # the hash covers the card
    (ckpt / ".snakemake_timestamp").touch()  # Snakemake's marker in directory() outputs: not content
    assert sha256_dir(ckpt) == result["lineage"]["checkpoint_sha256"]


def test_plain_peft_load_with_the_task_class_scores_as_recorded(workspace, one_thread):
    """A user's `PeftModel.from_pretrained(base, ckpt)` (PeftModelForSeq2SeqLM, from task_type) gives
    the recorded metric, as lorarepro's own load (a plain PeftModel) does."""
    from peft import PeftModel, PeftModelForSeq2SeqLM

    run = resolve_run(workspace, "sentiment", "lora_r8")
    result = train_one(workspace, run, seed=0)
    ckpt = paths.checkpoint_dir("sentiment", "lora_r8", 0)
    manifest = json.loads(paths.manifest("sentiment").read_text())
    base, tokenizer = checkpoints.load_backbone(run, 0, manifest)
    model = PeftModel.from_pretrained(base, str(ckpt)).eval()
    assert isinstance(model, PeftModelForSeq2SeqLM)
    frame = load_split(paths.prepared_dir("sentiment"), "test")
    family = families.get(run.family)
    assert family.evaluate(model, tokenizer, frame, manifest, run.training["max_length"]) == result["metrics"]["test"]
    ours, _, _ = checkpoints.load(run, 0)
    assert type(ours) is PeftModel


def test_full_fine_tuning_card_loads_with_transformers(workspace, one_thread):
    run = resolve_run(workspace, "sentiment", "full_ft")
    train_one(workspace, run, seed=0)
    card = (paths.checkpoint_dir("sentiment", "full_ft", 0) / "README.md").read_text()
    assert front_matter(card)["library_name"] == "transformers"
    assert "full fine-tuning" in card and "T5ForConditionalGeneration.from_pretrained('checkpoints/" in card


def test_hub_backbone_is_named_by_its_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = paths.backbone_done("t5-base")
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"source": "hub", "model": "google-t5/t5-base", "revision": "abc123"}))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "models/t5-base",
                                                               "target_modules": ["v", "q"], "task_type": None}))
    hub = hub_base("t5-base")
    canonical_adapter_config(tmp_path / "adapter_config.json", "SEQ_2_SEQ_LM", hub)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config == {"base_model_name_or_path": "google-t5/t5-base", "revision": "abc123",
                      "target_modules": ["q", "v"], "task_type": "SEQ_2_SEQ_LM"}
