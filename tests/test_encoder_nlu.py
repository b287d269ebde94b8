"""The nlu family with an encoder classifier (RoBERTa, the original LoRA paper's GLUE setting): a tiny
RoBERTa saved with save_pretrained as a local backbone, a GLUE-like local task with sentence pairs."""

import pandas as pd
import pytest
import torch

from lorarepro.domain import families
from lorarepro.stages.backbone import copy_local
from lorarepro.domain.data import load_manifest, load_split, prepare_task
from lorarepro.domain.families.common import build_tokenizer
from lorarepro.stages.training.loop import make_optimizer, step_plan, train_steps

WORDS = ["the", "cat", "dog", "sat", "ran", "a", "mat", "park"]


@pytest.fixture
def roberta_dir(tmp_path):
    from transformers import RobertaConfig, RobertaForMaskedLM

    tok = build_tokenizer(WORDS)
    torch.manual_seed(0)
    model = RobertaForMaskedLM(RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id))
    src = tmp_path / "roberta-src"
    model.save_pretrained(src, safe_serialization=True)
    tok.save_pretrained(src)
    copy_local("roberta-tiny", {"arch": "encoder", "path": str(src)}, tmp_path / "models" / "roberta-tiny")
    return tmp_path / "models" / "roberta-tiny"


@pytest.fixture
def mrpc_like(tmp_path):
    rows = [("the cat sat", "the cat sat", 1), ("the dog ran", "a dog ran", 1), ("the cat sat", "the dog ran", 0),
            ("a mat", "the park", 0)] * 8
    pd.DataFrame(rows, columns=["sentence1", "sentence2", "label"]).to_parquet(tmp_path / "train.parquet")
    cfg = {"family": "nlu", "backbone": "roberta-tiny", "source": "local", "path": str(tmp_path), "format": "parquet",
           "fields": {"text": ["sentence1", "sentence2"], "label": "label"}, "label_words": ["not_equivalent", "equivalent"],
           "splits": {"train": "train.parquet", "validation": "train.parquet[:8]", "test": "train.parquet[:8]"}}
    prepare_task("mrpc", cfg, 0, tmp_path / "data")
    return tmp_path / "data"


def test_encoder_classifier_with_lora_trains_its_head_and_evaluates(roberta_dir, mrpc_like):
    from lorarepro.domain.methods import lora

    nlu = families.get("nlu")
    manifest = load_manifest(mrpc_like)
    train = load_split(mrpc_like, "train")
    assert {"text", "text_pair"} <= set(train.columns)  # a pair without a prompt stays a pair
    model, tokenizer = nlu.load_for_task(roberta_dir, manifest)
    assert nlu.is_classifier(tokenizer) and model.config.num_labels == 2
    model = lora.apply(model, {"type": "lora", "r": 4, "alpha": 8}, nlu.head_modules(), nlu.trained_heads(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("classifier" in n and "lora" not in n for n in trainable)
    assert not any("classifier" in n and "lora_" in n for n in trainable)  # the head is trained in full, not adapted
    enc = nlu.encode(train, tokenizer, manifest, 32)
    batch = enc.batch([0, 1])
    assert batch["labels"].tolist() == [1, 1] and batch["input_ids"].shape[0] == 2
    plan = step_plan(len(enc), 8, 1, 3, seed=0)
    optimizer, scheduler = make_optimizer(model, 5e-3, 0.0, len(plan), 0.0)
    history = train_steps(model, plan, enc.batch, optimizer, scheduler)
    assert history.loss[-1] < history.loss[0]
    acc = nlu.evaluate(model, tokenizer, load_split(mrpc_like, "test"), manifest, 32)
    assert 0.0 <= acc <= 100.0


def test_t5_stays_text_to_text(workspace):
    from lorarepro.core import paths

    nlu = families.get("nlu")
    manifest = load_manifest(paths.prepared_dir("sentiment"))
    model, tokenizer = nlu.load_for_task(paths.backbone_dir("t5-tiny"), manifest)
    assert not nlu.is_classifier(tokenizer) and nlu.trained_heads(model) == []


def test_encoder_task_is_scored_by_its_configured_metric(roberta_dir, mrpc_like, tmp_path):
    """MRPC's F1: `metric: f1` in the task reaches the manifest and the scorer (scikit-learn's, in percent)."""
    from sklearn.metrics import f1_score

    cfg = {"family": "nlu", "backbone": "roberta-tiny", "source": "local", "path": str(tmp_path), "format": "parquet",
           "fields": {"text": ["sentence1", "sentence2"], "label": "label"}, "label_words": ["not_equivalent", "equivalent"],
           "metric": "f1", "splits": {"train": "train.parquet", "validation": "train.parquet[:8]", "test": "train.parquet[:8]"}}
    manifest = prepare_task("mrpc_f1", cfg, 0, tmp_path / "f1")
    assert manifest["metric"] == "f1" and "metric" not in load_manifest(mrpc_like)  # accuracy: manifests unchanged
    nlu = families.get("nlu")
    model, tokenizer = nlu.load_for_task(roberta_dir, manifest)
    test = load_split(tmp_path / "f1", "test")
    predicted = nlu._classifier_predictions(model, tokenizer, test, manifest, 32, 256)
    assert nlu.evaluate(model, tokenizer, test, manifest, 32) == pytest.approx(100 * f1_score(test["label"], predicted, zero_division=0))
