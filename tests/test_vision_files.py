"""The vision family on image files (hub/local data): a tiny RGB ViT saved with its image processor,
an image-folder task with an OOD split; images are decoded per batch through the processor."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lorarepro.domain import families
from lorarepro.domain.data import load_manifest, load_split, prepare_task
from lorarepro.stages.training.loop import make_optimizer, step_plan, train_steps


@pytest.fixture
def vit_dir(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=64, num_labels=5))
    out = tmp_path / "vit"
    model.save_pretrained(out, safe_serialization=True)
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(out)
    return out


@pytest.fixture
def folder_task(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4), ("test_c1", 4)):
        for cls, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40 if split == "test_c1" else 10, (16, 16, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "img" / split / cls / f"{i}.png")
    cfg = {"family": "vision", "backbone": "vit", "source": "local", "path": str(tmp_path / "img"), "format": "imagefolder",
           "splits": {"train": "train", "validation": "test", "test": "test", "ood_s1": "test_c1"}}
    prepare_task("colours", cfg, 0, tmp_path / "data")
    return tmp_path / "data"


def test_vit_learns_from_image_files(vit_dir, folder_task):
    vision = families.get("vision")
    manifest = load_manifest(folder_task)
    assert manifest["num_labels"] == 2 and "ood_s1" in manifest["splits"]
    model, processor = vision.load_for_task(vit_dir, manifest)
    assert processor is not None and model.config.num_labels == 2
    train = load_split(folder_task, "train")
    enc = vision.encode(train, processor, manifest, 0)
    batch = enc.batch([0, 13])
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["labels"].tolist() == [0, 1]
    plan = step_plan(len(enc), 8, 1, 6, seed=0)
    optimizer, scheduler = make_optimizer(model, 3e-3, 0.0, len(plan), 0.0)
    history = train_steps(model, plan, enc.batch, optimizer, scheduler)
    assert history.loss[-1] < history.loss[0]
    assert vision.evaluate(model, processor, load_split(folder_task, "test"), manifest, 0) == 100.0
    assert 0.0 <= vision.evaluate(model, processor, load_split(folder_task, "ood_s1"), manifest, 0) <= 100.0


def test_image_files_without_a_processor_are_refused(folder_task):
    vision = families.get("vision")
    enc = vision.encode(load_split(folder_task, "train"), None, load_manifest(folder_task), 0)
    with pytest.raises(ValueError, match="image processor"):
        enc.batch([0])


@pytest.fixture
def clip_dir(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from lorarepro.domain.families.common import build_tokenizer

    from tokenizers.processors import TemplateProcessing

    tok = build_tokenizer(["a", "photo", "of", "red.", "blue."])  # words as the template "a photo of a {}." splits
    # CLIP pools the text at its end-of-text token, which CLIP's own tokenizer appends
    tok._tokenizer.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.eos_token_id)])
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": tok.pad_token_id,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id},
        vision_config={"image_size": 8, "patch_size": 4, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=8)
    out = tmp_path / "clip"
    CLIPModel(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}).save_pretrained(out)
    return out


def test_clip_with_a_frozen_zero_shot_head_trains_its_adapter(clip_dir, folder_task, tmp_path):
    from lorarepro.domain.methods import lora

    vision = families.get("vision")
    manifest = load_manifest(folder_task)
    assert manifest["class_names"] == ["blue", "red"]
    model, processor = vision.load_for_task(clip_dir, manifest)
    head = model.head.weight.detach().clone()
    assert head.shape == (2, 8) and vision.trained_heads(model) == []
    model = lora.apply(model, {"type": "lora", "r": 2, "alpha": 4}, vision.head_modules(), vision.trained_heads(model))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # tower adapted, zero-shot head frozen
    enc = vision.encode(load_split(folder_task, "train"), processor, manifest, 0)
    assert enc.batch([0])["pixel_values"].shape == (1, 3, 8, 8)
    plan = step_plan(len(enc), 8, 1, 4, seed=0)
    optimizer, scheduler = make_optimizer(model, 1e-2, 0.1, len(plan), 0.0)
    history = train_steps(model, plan, enc.batch, optimizer, scheduler)
    assert history.loss[-1] < history.loss[0]
    assert torch.equal(model.base_model.model.head.weight, head)
    assert 0.0 <= vision.evaluate(model, processor, load_split(folder_task, "test"), manifest, 0) <= 100.0
    model.save_pretrained(tmp_path / "ckpt")  # PEFT adapter of a custom module
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").is_file()
