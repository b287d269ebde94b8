"""generation: math word problems with a causal LM (the paper's Llama-2 / GSM8K setting).

Training is next-token prediction on `question solution`, with the loss on the solution only.
Evaluation decodes greedily; the task's `metric` picks the score: exact match of the extracted final
number (default), HumanEval pass@1 of the completion run in a sandbox (lorarepro.domain.evaluation.humaneval), or
MT-Bench, two-turn answers rated by a judge model (lorarepro.domain.evaluation.judge).
"""

import re
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lorarepro.core import device, paths
from lorarepro.domain.evaluation import humaneval, judge
from lorarepro.domain.families.common import Encoded, build_tokenizer, ids, load_tokenizer, pad, quiet_transformers
from lorarepro.domain.families.rules.generation import METRIC  # the default metric, declared with the task rules
from lorarepro.core.registry import Registry

TEXT = True  # has a tokenizer built from the family vocabulary
MAX_NEW_TOKENS = 32  # the tiny tasks' solutions; a task's `max_new_tokens` (manifest) overrides it


def build_backbone(size: dict, vocab: list[str]):
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


def _generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[list[int]]:
    """Greedy continuations (token ids, pad and eos removed) of left-padded prompt batches; a row
    stops early at eos."""
    out_rows = []
    for i in range(0, len(prompts), batch_size):
        input_ids = pad(prompts[i : i + batch_size], tokenizer.pad_token_id, left=True).to(device.of(model))
        out = model.generate(
            input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out_rows += [[t for t in row if t not in (tokenizer.pad_token_id, tokenizer.eos_token_id)]
                     for row in out[:, input_ids.shape[1] :].tolist()]
    return out_rows


def _decode(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True)  # real tokenizers (SentencePiece) too


@torch.no_grad()
def chat_answers(model, tokenizer, conversations: list[list[str]], manifest: dict, max_length: int,
                 batch_size: int = 128) -> list[list[str]]:
    """Greedy answers to every user turn of every conversation, each turn seeing the conversation so
    far: `<s> turn1 answer1 </s> <s> turn2` (turns as written, already in the task's prompt; each cut
    to `max_length` tokens), the context cut to its last tokens only where it would not fit the
    model's positions with the new tokens."""
    model.eval()
    max_new = manifest.get("max_new_tokens", MAX_NEW_TOKENS)
    positions = getattr(model.config, "max_position_embeddings", None)
    keep = max(positions - max_new, 1) if positions else None
    contexts, answers = [[] for _ in conversations], [[] for _ in conversations]
    for turn in range(max(len(c) for c in conversations)):
        active = [i for i, c in enumerate(conversations) if turn < len(c)]
        turn_ids = ids(tokenizer, [conversations[i][turn] for i in active], max_length, eos=False)
        for i, t in zip(active, turn_ids):
            contexts[i] = contexts[i] + [tokenizer.bos_token_id] + t
        inputs = [contexts[i][-keep:] if keep else contexts[i] for i in active]
        generated = _generate(model, tokenizer, inputs, max_new, batch_size)
        for i, tokens in zip(active, generated):
            contexts[i] += tokens + [tokenizer.eos_token_id]
            answers[i].append(_decode(tokenizer, tokens))
    return answers


def _mt_bench(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int, evaluation: dict | None) -> float:
    """MT-Bench score (1-10) of a judge (`evaluation.judge`; lorarepro.domain.evaluation.judge) over the manifest's
    `mt_bench_turns`, by FastChat's rules; NotRun without a judge."""
    spec = (evaluation or {}).get("judge")
    # NotRun, or no FastChat prompts, or no reference answer, before any answer is generated
    grader, prompts = judge.make_judge(spec), judge.load_prompts(spec)
    turns = manifest.get("mt_bench_turns", judge.TURNS)
    questions = [{"turns": list(r.turns), "category": r.category, "reference": list(r.reference)} for r in df.itertuples()]
    judge.check_questions(questions, turns)
    # at most 16 conversations a batch: two turns of up to ~1K new tokens each keep a 7B model's KV cache small;
    # turns after the last one graded are not generated
    answers = chat_answers(model, tokenizer, [list(p)[:max(turns)] for p in df["prompts"]], manifest, max_length,
                           min(batch_size, 16))
    return judge.mt_bench_score(grader, prompts, questions, answers, paths.JUDGE_CACHE, turns)


def _exact_match(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int, evaluation: dict | None) -> float:
    """Exact match (%) of the greedily decoded final number."""
    prompts = _prompts(tokenizer, df, max_length)
    answers = df["answer"].astype(str).tolist()
    generated = _generate(model, tokenizer, prompts, manifest.get("max_new_tokens", MAX_NEW_TOKENS), batch_size)
    correct = sum(extract_answer(_decode(tokenizer, tokens)) == gold for tokens, gold in zip(generated, answers))
    return 100.0 * correct / len(prompts)


def _humaneval(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int, evaluation: dict | None) -> float:
    """HumanEval pass@1 (%): greedy or sampled completions (evaluation.humaneval) run in the sandbox
    (lorarepro.domain.evaluation.humaneval); NotRun unless opted in."""
    opts = humaneval.require_opt_in(evaluation)  # before any work: nothing is generated or run without it
    humaneval.reference_stops()  # a missing lm_eval task file fails here, before the generation
    prompts = _prompts(tokenizer, df, max_length)
    # No stop_strings: transformers matches them against the prompt too (HumanEval prompts end in "\n", so
    # a first line "def ..." would stop at once), while the reference cuts the completion alone; the
    # stop sequences are applied after generation (humaneval.truncate), exact for a greedy completion.
    max_new = manifest.get("max_new_tokens", MAX_NEW_TOKENS)
    if opts["decoding"] == "sample":  # the official protocol: n samples per problem (evaluation.humaneval)
        completions, sampling = humaneval.sample_completions(model, tokenizer, prompts, max_new, opts)
        return humaneval.pass_at_k(df, completions, opts, sampling)
    rows = _generate(model, tokenizer, prompts, max_new, batch_size)
    completions = [humaneval.completion_text(tokenizer, prompt, row) for prompt, row in zip(prompts, rows)]
    return humaneval.pass_at_k(df, completions, opts)


# A task's `metric` (schema: tasks.<name>.metric, carried in the manifest) -> its scorer.
METRICS = Registry("generation metric")
METRICS.register("exact_match", _exact_match)
METRICS.register("humaneval_pass_at_1", _humaneval)
METRICS.register("mt_bench", _mt_bench)


@torch.no_grad()
def evaluate(model, tokenizer, df, manifest: dict, max_length: int, batch_size: int = 128,
             evaluation: dict | None = None) -> float:
    """The task's metric (manifest `metric`, default exact match); `evaluation`: the config's section."""
    metric = manifest.get("metric", METRIC)
    if metric not in METRICS:
        raise ValueError(f"task {manifest.get('task')!r}: metric {metric!r} is not implemented by the generation family "
                         f"(known: {sorted(METRICS)})")
    model.eval()
    return METRICS[metric](model, tokenizer, df, manifest, max_length, batch_size, evaluation)
