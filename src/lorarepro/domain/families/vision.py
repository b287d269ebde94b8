"""vision: image classification with a ViT (the paper's CLIP ViT-B/32 setting).

Backbones are pretrained on a self-supervised pretext task (rotation prediction) on images disjoint
from the downstream tasks; each downstream task gets a fresh classifier head trained in full beside
the adapter (the paper freezes CLIP's text-derived head, which a tiny ViT does not have). The score is
the task's `metric` over the argmax predictions (accuracy by default; the classification metrics of
lorarepro.domain.families.nlu.METRICS).
"""

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, ViTConfig, ViTForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

from lorarepro.core import device
from lorarepro.domain.families.common import Encoded, quiet_transformers
from lorarepro.domain.families.nlu import score
from lorarepro.domain.families.rules.vision import METRIC  # noqa: F401  (the default metric, declared with the task rules)

TEXT = False  # no tokenizer: images


def _pixels(df) -> torch.Tensor:
    """[N, 1, H, W] in [-1, 1] from the `pixels` column of flattened square images."""
    x = torch.tensor(np.stack(df["pixels"].to_numpy()), dtype=torch.float32)
    side = int(round(x.shape[1] ** 0.5))
    return (x.view(-1, 1, side, side) - 0.5) / 0.5


def _images(processor, blobs) -> torch.Tensor:
    """Encoded image files (the `image` column of hub/local data) through the backbone's image
    processor (resize, RGB, normalisation); decoded per batch, since a dataset of 224x224 float
    tensors would not fit in memory."""
    if processor is None:
        raise ValueError("images from files need the backbone's image processor (preprocessor_config.json in its directory)")
    return processor(images=[Image.open(io.BytesIO(b)).convert("RGB") for b in blobs], return_tensors="pt")["pixel_values"]


def _inputs(processor, df, idx) -> torch.Tensor:
    if "image" in df.columns:
        return _images(processor, df["image"].iloc[idx].tolist())
    return _pixels(df.iloc[idx])


def build_backbone(size: dict, vocab: list[str]):
    config = ViTConfig(num_channels=1, num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **size)
    return ViTForImageClassification(config), None


def pretext_batch(tokenizer, rows, rng: np.random.Generator, max_length: int) -> dict:
    return {"pixel_values": _pixels(rows), "labels": torch.tensor(rows["label"].to_numpy(), dtype=torch.long)}


CLIP_TEMPLATE = "a photo of a {}."  # the zero-shot head's prompt (CLIP's own default template)


class ClipClassifier(torch.nn.Module):
    """CLIP's image tower with a frozen zero-shot head (the paper's Table 2 setting): the head's rows
    are the normalised text embeddings of each class prompt, scaled by CLIP's logit scale."""

    def __init__(self, clip, head_weight: torch.Tensor):
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.head = torch.nn.Linear(head_weight.shape[1], head_weight.shape[0], bias=False)
        self.head.weight.data.copy_(head_weight)
        self.head.requires_grad_(False)

    def forward(self, pixel_values, labels=None):
        emb = self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)
        logits = self.head(emb / emb.norm(dim=-1, keepdim=True))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, out_dir, safe_serialization: bool = True) -> None:
        """Full fine-tuning's checkpoint: every weight (tower, projection, frozen head) as safetensors."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(Path(out_dir) / "model.safetensors"))


def _load_clip(backbone_dir: Path, manifest: dict) -> ClipClassifier:
    names = manifest.get("class_names")
    if not names:
        raise ValueError(f"task '{manifest['task']}': a CLIP backbone needs class names (label_names, image folders or hub ClassLabel)")
    clip = CLIPModel.from_pretrained(str(backbone_dir), use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(backbone_dir))
    with torch.no_grad():
        text = tokenizer([CLIP_TEMPLATE.format(n.replace("_", " ")) for n in names], padding=True, return_tensors="pt")
        emb = clip.get_text_features(**text)
        emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output
        weight = clip.logit_scale.exp() * emb / emb.norm(dim=-1, keepdim=True)
    return ClipClassifier(clip, weight)  # the text tower is dropped with `clip`


def load_for_task(backbone_dir: Path, manifest: dict):
    quiet_transformers()
    n = manifest["num_labels"]
    config = json.loads((Path(backbone_dir) / "config.json").read_text())
    if config.get("model_type") == "clip":
        return _load_clip(backbone_dir, manifest), AutoImageProcessor.from_pretrained(str(backbone_dir))
    model = ViTForImageClassification.from_pretrained(
        str(backbone_dir), num_labels=n, id2label={i: str(i) for i in range(n)},
        label2id={str(i): i for i in range(n)}, ignore_mismatched_sizes=True, use_safetensors=True,
    )
    processor = None
    if (Path(backbone_dir) / "preprocessor_config.json").is_file():  # hub/local models; the tiny one takes pixels
        processor = AutoImageProcessor.from_pretrained(str(backbone_dir))
    return model, processor


def trained_heads(model) -> list[str]:
    """A ViT's new head is trained in full beside an adapter; CLIP's zero-shot head stays frozen."""
    return ["classifier"] if hasattr(model, "classifier") else []


def head_modules() -> list[str]:
    return ["classifier", "head"]  # never LoRA targets


def encode(df, tokenizer, manifest: dict, max_length: int) -> Encoded:
    """`tokenizer` is the backbone's image processor (None for the tiny pixel backbones)."""
    labels = torch.tensor(df["label"].to_numpy(), dtype=torch.long)
    if "image" in df.columns:  # decoded lazily per batch
        columns = {"image": df["image"].tolist(), "labels": labels}
        return Encoded(columns, lambda c, idx: {"pixel_values": _images(tokenizer, [c["image"][i] for i in idx]),
                                                "labels": c["labels"][idx]})
    columns = {"pixel_values": _pixels(df), "labels": labels}
    return Encoded(columns, lambda c, idx: {k: v[idx] for k, v in c.items()})


@torch.no_grad()
def evaluate(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int = 512, evaluation=None) -> float:
    """The task's metric (%) of the argmax predictions; `evaluation` (the judge section) is not needed here."""
    model.eval()
    dev, predicted = device.of(model), []
    for i in range(0, len(df), batch_size):
        pixels = _inputs(tokenizer, df, list(range(i, min(i + batch_size, len(df))))).to(dev)
        predicted += model(pixel_values=pixels).logits.argmax(-1).cpu().tolist()
    return score(manifest, df["label"].to_numpy(), predicted)
