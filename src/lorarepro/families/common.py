"""Shared pieces of the text families: word-level tokenizers, padding, batch indexing."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging

from lorarepro.paths import BACKBONE_MARKER

SPECIAL = ["<pad>", "</s>", "<unk>", "<s>"]
SENTINELS = [f"<extra_id_{i}>" for i in range(16)]


def build_tokenizer(vocab: list[str], sentinels: bool = False):
    """A word-level tokenizer over `vocab` (digits split individually), wrapped for transformers.

    The hub's tokenizers cannot be downloaded here, and a tiny model wants a tiny vocabulary; this one
    is saved with save_pretrained and reloaded with AutoTokenizer like any hub tokenizer.
    """
    tokens = SPECIAL + (SENTINELS if sentinels else []) + [w for w in vocab if w not in SPECIAL]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    extra = {"additional_special_tokens": SENTINELS} if sentinels else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>", **extra
    )


def load_tokenizer(backbone_dir: Path):
    """The saved tokenizer; custom tokenizer code runs only if the backbone's config entry allowed it
    (`trust_remote_code`, recorded in the backbone's completion marker by lorarepro.backbone)."""
    marker = Path(backbone_dir) / BACKBONE_MARKER
    trust = bool(json.loads(marker.read_text()).get("trust_remote_code", False)) if marker.is_file() else False
    return AutoTokenizer.from_pretrained(str(backbone_dir), trust_remote_code=trust)


def pad(seqs: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Stack variable-length id lists into one tensor, padding right (or left, for decoder prompts)."""
    width = max(len(s) for s in seqs)
    rows = [([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s))) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def ids(tokenizer, texts: list[str], max_length: int, eos: bool) -> list[list[int]]:
    """Token ids per text, truncated to max_length (counting the optional eos)."""
    out = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    keep = max_length - (1 if eos else 0) if max_length else None
    return [(s[:keep] if keep else s) + ([tokenizer.eos_token_id] if eos else []) for s in out]


@dataclass
class Encoded:
    """A training split as python lists/tensors plus the family's collate function."""

    columns: dict
    collate: object  # callable(columns, index list) -> dict of tensors for model(**batch)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def batch(self, index: list[int]) -> dict:
        return self.collate(self.columns, index)


def quiet_transformers() -> None:
    """Silence load reports and progress bars; the job log keeps our own progress lines."""
    logging.set_verbosity_error()
    logging.disable_progress_bar()
