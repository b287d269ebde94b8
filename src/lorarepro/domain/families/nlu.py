"""nlu: prompted classification as text-to-text with T5 (the paper's GLUE setting), or with an
encoder classifier (AutoModelForSequenceClassification: RoBERTa, BERT, DeBERTa; the original LoRA
paper's GLUE setting).

T5: the input is the prompt, the target is the label word. Accuracy is the official code's "soft
metric" (github nblt/Flat-LoRA, utils.py `compute_metrics`): at the first decoder step, the label
words' first tokens compete and the one with the highest logit is the prediction (the official code
compares the gold label word with the other one, so it covers two classes; the argmax over the label
words is the same for two and extends to more). Free greedy decoding can also emit a token that is no
label word; this metric never does. Label words of a task must differ in their first token.
Encoders: a new classification head per task, trained in full beside the adapter; the prediction is
the argmax of its logits. Which of the two a backbone is comes from its config (is_encoder_decoder).

The score is the task's `metric` (tasks.<name>.metric, carried in the manifest; accuracy by default)
over the predicted labels, scikit-learn's: accuracy, matthews_corrcoef (CoLA's: a majority-class
model scores 0), f1 (of label 1: MRPC's "equivalent") or f1_macro, in percent. The vision family
scores with the same `METRICS`.
"""

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics
from transformers import AutoModelForSequenceClassification, T5Config, T5ForConditionalGeneration

from lorarepro.core import device
from lorarepro.domain.families.common import SENTINELS, Encoded, build_tokenizer, ids, load_tokenizer, pad, quiet_transformers
from lorarepro.domain.families.rules.nlu import METRIC  # the default metric, declared with the task rules
from lorarepro.core.registry import Registry

TEXT = True  # has a tokenizer built from the family vocabulary

# A classification task's `metric` -> its score (%) of (gold, predicted) labels. Accuracy as a count
# over the examples: the same float as before the metrics were configurable.
METRICS = Registry("classification metric")
METRICS.register("accuracy", lambda gold, pred: 100.0 * metrics.accuracy_score(gold, pred, normalize=False) / len(gold))
METRICS.register("matthews_corrcoef", lambda gold, pred: 100.0 * metrics.matthews_corrcoef(gold, pred))
METRICS.register("f1", lambda gold, pred: 100.0 * metrics.f1_score(gold, pred, zero_division=0.0))
METRICS.register("f1_macro", lambda gold, pred: 100.0 * metrics.f1_score(gold, pred, average="macro", zero_division=0.0))


def score(manifest: dict, gold, predicted) -> float:
    """The task's metric (manifest `metric`, default accuracy) in percent."""
    return float(METRICS[manifest.get("metric", METRIC)](np.asarray(gold), np.asarray(predicted)))


def build_backbone(size: dict, vocab: list[str]):
    tokenizer = build_tokenizer(vocab, sentinels=True)
    config = T5Config(
        vocab_size=len(tokenizer), dropout_rate=0.0, feed_forward_proj="relu",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, **size,
    )
    return T5ForConditionalGeneration(config), tokenizer


def pretext_batch(tokenizer, rows, rng: np.random.Generator, max_length: int) -> dict:
    """T5's pretraining mixture: span corruption on plain sentences, text-to-text on rows with a target."""
    supervised = rows["target"] != ""
    inputs, targets = _span_corruption(tokenizer, rows[~supervised]["text"].tolist(), rng, max_length)
    inputs += ids(tokenizer, rows[supervised]["text"].tolist(), max_length, eos=True)
    targets += ids(tokenizer, rows[supervised]["target"].tolist(), max_length, eos=True)
    return _batch(inputs, targets, tokenizer.pad_token_id)


def _span_corruption(tokenizer, texts: list[str], rng: np.random.Generator, max_length: int):
    """~15% of tokens in short spans become sentinels; the target spells the spans out."""
    sentinel_ids = tokenizer.convert_tokens_to_ids(SENTINELS)
    inputs, targets = [], []
    for seq in ids(tokenizer, texts, max_length, eos=False):
        n_spans = max(1, round(0.15 * len(seq) / 2))
        starts = sorted(rng.choice(len(seq), size=min(n_spans, len(seq)), replace=False))
        src, tgt, pos = [], [], 0
        for k, start in enumerate(starts):
            if start < pos:
                continue
            end = min(len(seq), start + int(rng.integers(1, 4)))
            src += seq[pos:start] + [sentinel_ids[k]]
            tgt += [sentinel_ids[k]] + seq[start:end]
            pos = end
        inputs.append(src + seq[pos:] + [tokenizer.eos_token_id])
        targets.append(tgt + [tokenizer.eos_token_id])
    return inputs, targets


def _batch(inputs: list[list[int]], targets: list[list[int]], pad_id: int) -> dict:
    input_ids = pad(inputs, pad_id)
    labels = pad(targets, -100)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


def is_classifier(tokenizer) -> bool:
    """True for an encoder classifier: the tokenizer was loaded from the backbone dir, whose config says."""
    return _classifier_dir(str(tokenizer.name_or_path))


@lru_cache(maxsize=None)
def _classifier_dir(path: str) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and not json.loads(config.read_text()).get("is_encoder_decoder", False)


def load_for_task(backbone_dir: Path, manifest: dict):
    quiet_transformers()
    tokenizer = load_tokenizer(backbone_dir)
    if is_classifier(tokenizer):
        n = manifest["num_labels"]
        model = AutoModelForSequenceClassification.from_pretrained(
            str(backbone_dir), num_labels=n, id2label=dict(enumerate(manifest["label_words"])),
            label2id={w: i for i, w in enumerate(manifest["label_words"])}, ignore_mismatched_sizes=True,
            use_safetensors=True,
        )
        return model, tokenizer
    model = T5ForConditionalGeneration.from_pretrained(str(backbone_dir), use_safetensors=True)
    _label_ids(tokenizer, manifest)  # fail early on unknown or ambiguous label words
    return model, tokenizer


def trained_heads(model) -> list[str]:
    """An encoder's new classification head is trained in full; T5's tied vocabulary head is not."""
    return ["classifier"] if hasattr(model, "classifier") else []


def head_modules() -> list[str]:
    return ["lm_head", "classifier"]  # never LoRA targets (heads of T5 and of encoder classifiers)


def _label_tokens(tokenizer, manifest: dict) -> list[list[int]]:
    """Token ids of each label word. Accuracy compares the label words' first tokens, so these must
    differ (true of the tiny vocabulary's one-token words and of T5's GLUE words, e.g. not_entailment)."""
    out = []
    for word in manifest["label_words"]:
        tok = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not tok or tokenizer.unk_token_id in tok:
            raise ValueError(f"label word '{word}' of task '{manifest['task']}' has unknown tokens")
        out.append(tok)
    firsts = [t[0] for t in out]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"label words {manifest['label_words']} of task '{manifest['task']}' share a first token")
    return out


def _label_ids(tokenizer, manifest: dict) -> list[int]:
    return [t[0] for t in _label_tokens(tokenizer, manifest)]


def _texts(df) -> list[str]:
    """The text-to-text input: one string (a second sentence without a prompt is appended)."""
    if "text_pair" in df:
        return [f"{a} {b}" for a, b in zip(df["text"], df["text_pair"])]
    return df["text"].tolist()


def _classifier_inputs(tokenizer, df, max_length: int) -> list[list[int]]:
    """Encoder inputs with the model's own special tokens; sentence pairs as the tokenizer pairs them."""
    pair = df["text_pair"].tolist() if "text_pair" in df else None
    return tokenizer(df["text"].tolist(), pair, truncation=True, max_length=max_length or None)["input_ids"]


def encode(df, tokenizer, manifest: dict, max_length: int) -> Encoded:
    if is_classifier(tokenizer):
        columns = {"inputs": _classifier_inputs(tokenizer, df, max_length),
                   "labels": torch.tensor(df["label"].to_numpy(), dtype=torch.long)}
        pad_id = tokenizer.pad_token_id
        return Encoded(columns, lambda c, idx: _classifier_batch([c["inputs"][i] for i in idx], c["labels"][idx], pad_id))
    label_tokens = _label_tokens(tokenizer, manifest)
    columns = {
        "inputs": ids(tokenizer, _texts(df), max_length, eos=True),
        "targets": [label_tokens[y] + [tokenizer.eos_token_id] for y in df["label"].tolist()],
    }
    pad_id = tokenizer.pad_token_id
    return Encoded(columns, lambda c, idx: _batch([c["inputs"][i] for i in idx], [c["targets"][i] for i in idx], pad_id))


@torch.no_grad()
def evaluate(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int = 256, evaluation=None) -> float:
    """The task's metric (%) of the predicted labels: the label word whose first token has the highest
    first-step logit (T5, the official soft metric: module docstring), or the classifier's argmax
    (encoders). `evaluation` (the config's judge section, passed with a metric other than exact match)
    is not needed here."""
    model.eval()
    predict = _classifier_predictions if is_classifier(tokenizer) else _label_word_predictions
    return score(manifest, df["label"].to_numpy(), predict(model, tokenizer, df, manifest, max_length, batch_size))


def _label_word_predictions(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int) -> list[int]:
    label_ids = torch.tensor(_label_ids(tokenizer, manifest))
    inputs = ids(tokenizer, _texts(df), max_length, eos=True)
    start = model.config.decoder_start_token_id
    dev = device.of(model)
    predicted = []
    for i in range(0, len(inputs), batch_size):
        input_ids = pad(inputs[i : i + batch_size], tokenizer.pad_token_id).to(dev)
        decoder_input_ids = torch.full((len(input_ids), 1), start, dtype=torch.long, device=dev)
        logits = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                       decoder_input_ids=decoder_input_ids).logits[:, 0]
        predicted += logits[:, label_ids.to(dev)].argmax(-1).cpu().tolist()
    return predicted


def _classifier_batch(inputs: list[list[int]], labels: torch.Tensor, pad_id: int) -> dict:
    input_ids = pad(inputs, pad_id)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


def _classifier_predictions(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int) -> list[int]:
    inputs, dev = _classifier_inputs(tokenizer, df, max_length), device.of(model)
    predicted = []
    for i in range(0, len(inputs), batch_size):
        input_ids = pad(inputs[i : i + batch_size], tokenizer.pad_token_id).to(dev)
        logits = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long()).logits
        predicted += logits.argmax(-1).cpu().tolist()
    return predicted
