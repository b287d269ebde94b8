"""Shared pieces of the text families: word-level tokenizers, padding, batch indexing, and which
model directories may run code of their own (the config's `trust_remote_code`, nothing else)."""

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, dynamic_module_utils
from transformers.utils import logging

from lorarepro.core import paths

SPECIAL = ["<pad>", "</s>", "<unk>", "<s>"]
SENTINELS = [f"<extra_id_{i}>" for i in range(16)]
UNKNOWN_SHARE = 0.1  # above this share of <unk> tokens a text is mostly outside the vocabulary: warn

# Directories whose loads may run Python code shipped with the model (`allow_remote_code`): only
# the backbones whose config entry sets trust_remote_code, and the checkpoints fine-tuned from them.
_TRUSTED: tuple[Path, ...] = ()


class VocabularyWarning(UserWarning):
    """A task's text is mostly outside its backbone's vocabulary: the model would train on <unk>."""


def allow_remote_code(config: dict) -> None:
    """Set, from the config alone, which directories may run their own code; every entry point that
    loads models calls this with the config it loaded. A file inside a model directory (its
    completion marker, a tokenizer config) never decides it."""
    global _TRUSTED
    trusted = {name for name, entry in config["backbones"].items() if entry.get("trust_remote_code")}
    dirs = [paths.backbone_dir(b) for b in trusted]
    dirs += [paths.CHECKPOINTS / task for task, entry in config["tasks"].items() if entry["backbone"] in trusted]
    _TRUSTED = tuple(d.resolve() for d in dirs)


def may_run_code(model_dir: Path) -> bool:
    """Whether loading from `model_dir` may run code it ships (see `allow_remote_code`)."""
    where = Path(model_dir).resolve()
    return any(where == d or d in where.parents for d in _TRUSTED)


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
    """The saved tokenizer; custom tokenizer code runs only where the config allowed it (`allow_remote_code`)."""
    return AutoTokenizer.from_pretrained(str(backbone_dir), trust_remote_code=may_run_code(backbone_dir))


def pad(seqs: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Stack variable-length id lists into one tensor, padding right (or left, for decoder prompts)."""
    width = max(len(s) for s in seqs)
    rows = [([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s))) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def ids(tokenizer, texts: list[str], max_length: int, eos: bool) -> list[list[int]]:
    """Token ids per text, truncated to max_length (counting the optional eos)."""
    out = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    warn_unknown(tokenizer, out)
    keep = max_length - (1 if eos else 0) if max_length else None
    return [(s[:keep] if keep else s) + ([tokenizer.eos_token_id] if eos else []) for s in out]


def warn_unknown(tokenizer, sequences: list[list[int]]) -> None:
    """Warn when more than UNKNOWN_SHARE of the tokens are <unk>: the text is mostly outside the
    vocabulary (a new task on the embedded tiny tokenizer, built from the built-in tasks' words)."""
    unk = tokenizer.unk_token_id
    total = sum(len(s) for s in sequences)
    unknown = 0 if unk is None else sum(s.count(unk) for s in sequences)
    if total and unknown > UNKNOWN_SHARE * total:
        # no counts in the message: Python then shows it once per call site, not once per batch
        warnings.warn(f"more than {UNKNOWN_SHARE:.0%} of the tokens are unknown (<unk>) to the tokenizer of "
                      f"{tokenizer.name_or_path or 'this backbone'}: the text is mostly outside its vocabulary, so "
                      "the model sees <unk> instead of words (the embedded backbones know only the built-in "
                      "tasks' words; use a backbone with a general tokenizer)", VocabularyWarning, stacklevel=3)


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
    """Silence load reports and progress bars; the job log keeps our own progress lines. Also: never
    ask on stdin whether to run a model directory's code (transformers asks for 15 s when a load
    does not say trust_remote_code): without the config's permission such a load fails."""
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    dynamic_module_utils.TIME_OUT_REMOTE_CODE = 0
