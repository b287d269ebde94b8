"""generation: math word problems with a causal LM (the paper's Llama-2 / GSM8K setting).

Training is next-token prediction on `question solution`, with the loss on the solution only.
Evaluation decodes greedily; the task's `metric` picks the score: exact match of the extracted final
number (default), or HumanEval pass@1 of the completion run in a sandbox (lorarepro.humaneval).
"""

import re
from pathlib import Path

import numpy as np
import torch

from lorarepro import device
from lorarepro.families.common import Encoded, build_tokenizer, ids, load_tokenizer, pad, quiet_transformers

TEXT = True  # has a tokenizer built from the family vocabulary
ARCH = "llama"
METRIC = "exact_match"
MAX_NEW_TOKENS = 32  # the tiny tasks' solutions; a task's `max_new_tokens` (manifest) overrides it


def build_backbone(size: dict, vocab: list[str]):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(vocab)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **size,
    )
    return LlamaForCausalLM(config), tokenizer


def _lm_batch(prompts: list[list[int]], answers: list[list[int]], pad_id: int) -> dict:
    """Right-padded prompt+answer sequences with labels only on the answer part."""
    seqs = [p + a for p, a in zip(prompts, answers)]
    labels = [[-100] * len(p) + a for p, a in zip(prompts, answers)]
    input_ids = pad(seqs, pad_id)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": pad(labels, -100)}


def pretext_batch(tokenizer, rows, rng: np.random.Generator, max_length: int) -> dict:
    seqs = ids(tokenizer, rows["text"].tolist(), max_length - 1, eos=True)
    return _lm_batch([[tokenizer.bos_token_id]] * len(seqs), seqs, tokenizer.pad_token_id)


def load_for_task(backbone_dir: Path, manifest: dict):
    from transformers import LlamaForCausalLM

    quiet_transformers()
    tokenizer = load_tokenizer(backbone_dir)
    return LlamaForCausalLM.from_pretrained(str(backbone_dir), use_safetensors=True), tokenizer


def trained_heads(model) -> list[str]:
    """Heads trained in full beside an adapter (a new head per task)."""
    return []


def head_modules() -> list[str]:
    return ["lm_head"]


def _prompts(tokenizer, df, max_length: int) -> list[list[int]]:
    return [[tokenizer.bos_token_id] + s for s in ids(tokenizer, df["question"].tolist(), max_length, eos=False)]


def encode(df, tokenizer, manifest: dict, max_length: int) -> Encoded:
    columns = {
        "prompts": _prompts(tokenizer, df, max_length),
        "answers": ids(tokenizer, df["solution"].tolist(), max_length, eos=True),
    }
    pad_id = tokenizer.pad_token_id
    return Encoded(columns, lambda c, idx: _lm_batch([c["prompts"][i] for i in idx], [c["answers"][i] for i in idx], pad_id))


def extract_answer(decoded: str | list[str]) -> str | None:
    """The final number of a decoded solution: after the last 'answer is', else the last number.

    Digits are single tokens of the word-level tokenizer (decoded with spaces between them), so
    digits separated by a space or a thousands comma are joined back into one number.
    """
    text = " ".join(decoded) if isinstance(decoded, list) else decoded
    text = re.sub(r"(?<=\d)[ ,](?=\d)", "", text)
    if "answer is" in text:
        numbers = re.findall(r"-?\d+", text.rsplit("answer is", 1)[1])
        return numbers[0] if numbers else None
    numbers = re.findall(r"-?\d+", text)
    return numbers[-1] if numbers else None


def _generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
              stop_strings: list[str] | None = None) -> list[list[int]]:
    """Greedy continuations (token ids, pad and eos removed) of left-padded prompt batches; a row
    stops early at eos or at one of `stop_strings` (the text may run past it within its last token)."""
    extra = {"stop_strings": stop_strings, "tokenizer": tokenizer} if stop_strings else {}
    out_rows = []
    for i in range(0, len(prompts), batch_size):
        input_ids = pad(prompts[i : i + batch_size], tokenizer.pad_token_id, left=True).to(device.of(model))
        out = model.generate(
            input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, **extra,
        )
        out_rows += [[t for t in row if t not in (tokenizer.pad_token_id, tokenizer.eos_token_id)]
                     for row in out[:, input_ids.shape[1] :].tolist()]
    return out_rows


def _exact_match(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int) -> float:
    """Exact match (%) of the greedily decoded final number."""
    prompts = _prompts(tokenizer, df, max_length)
    rows = _generate(model, tokenizer, prompts, manifest.get("max_new_tokens", MAX_NEW_TOKENS), batch_size)
    correct = sum(extract_answer(tokenizer.decode(row, skip_special_tokens=True)) == gold  # SentencePiece too
                  for row, gold in zip(rows, df["answer"].astype(str).tolist()))
    return 100.0 * correct / len(prompts)


def _humaneval(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int) -> float:
    """HumanEval pass@1 (%): greedy completions run in the sandbox (lorarepro.humaneval); NotRun unless opted in."""
    from lorarepro import humaneval

    opts = humaneval.require_opt_in(manifest)  # before any work: nothing is generated or run without it
    prompts = _prompts(tokenizer, df, max_length)
    rows = _generate(model, tokenizer, prompts, manifest.get("max_new_tokens", MAX_NEW_TOKENS), batch_size,
                     stop_strings=list(humaneval.STOP))
    completions = []
    for prompt, row in zip(prompts, rows):
        # Decoded together, so a SentencePiece word boundary between prompt and completion survives.
        head = tokenizer.decode(prompt, skip_special_tokens=True)
        full = tokenizer.decode(prompt + row, skip_special_tokens=True)
        completions.append(full[len(head):] if full.startswith(head) else tokenizer.decode(row, skip_special_tokens=True))
    return humaneval.pass_at_1(df, completions, opts)


METRICS = {"exact_match": _exact_match, "humaneval_pass_at_1": _humaneval}


@torch.no_grad()
def evaluate(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int = 128) -> float:
    """The task's metric (manifest `metric`, default exact match), in percent."""
    metric = manifest.get("metric", METRIC)
    if metric not in METRICS:
        raise ValueError(f"task {manifest.get('task')!r}: metric {metric!r} is not implemented for generation "
                         f"(known: {sorted(METRICS)})")
    model.eval()
    return METRICS[metric](model, tokenizer, df, manifest, max_length, batch_size)
