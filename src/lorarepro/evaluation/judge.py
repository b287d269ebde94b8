"""MT-Bench single-answer grading through a pluggable judge (the paper's Table 3 chat column).

The model answers each question's turns greedily, every turn seeing the conversation so far
(families.generation.chat_answers); a judge model rates each answer from 1 to 10 ("[[N]]" in its
reply), with the reference answer for math, reasoning and coding questions; the score is the mean
rating over every (question, turn).

A judge is configured under `evaluation.judge` (schema) and off otherwise:
    kind openai_chat   an OpenAI-compatible chat-completions endpoint over `requests`, temperature 0,
                       retries with exponential backoff; the API key comes from the environment
                       variable `api_key_env` and is never logged or recorded
    kind python        `callable: "module:function"`, called with the chat messages, returns the reply
Without a judge, or with its key variable empty, `make_judge` raises NotRun: the tables show the
column as not run, and the saved checkpoint can be judged later.

Replies are cached by content (judge model, prompt, question and answer) under paths.JUDGE_CACHE,
so evaluating the same answers again, or a rerun, does not pay for the judge twice.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import time
from pathlib import Path

from tqdm import tqdm

from lorarepro.atomic import write_json
from lorarepro.evaluation import NotRun

REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
DEFAULTS = {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "timeout": 120, "retries": 5}

SYSTEM = (
    "You are an impartial judge of the answers an AI assistant gives to a user. Judge helpfulness, "
    "relevance, accuracy, depth, creativity and level of detail.{reference_rule} Start with a short "
    "explanation and be as objective as possible; do not let the length of an answer sway you. Then "
    "rate the answer on a scale of 1 to 10, written exactly as \"[[rating]]\", for example \"Rating: [[5]]\"."
)
REFERENCE_RULE = (
    " A reference answer is given: correctness matters most, so compare the assistant's answer with "
    "the reference and point out and correct its mistakes."
)
SINGLE = "[Question]\n{question}\n\n{reference}[The Start of the Assistant's Answer]\n{answer}\n[The End of the Assistant's Answer]"
MULTI = (
    "Rate only the assistant's answer to the user's last question; the earlier turns are context.\n\n"
    "{reference}[The Start of the Conversation]\n{conversation}\n[The End of the Conversation]"
)
PROMPT_SHA256 = hashlib.sha256(json.dumps([SYSTEM, REFERENCE_RULE, SINGLE, MULTI]).encode()).hexdigest()
NO_JUDGE = "no MT-Bench judge: set evaluation.judge (and its API key variable, e.g. OPENAI_API_KEY)"


class JudgeError(RuntimeError):
    """The judge could not be asked, or its reply holds no rating; the message says which judge."""


def check(spec: dict | None) -> None:
    """What the schema cannot express; a ValueError names the key (called by config.check)."""
    if spec is None:
        return
    if spec["kind"] == "openai_chat" and "model" not in spec:
        raise ValueError("config key 'evaluation.judge.model': required for kind openai_chat")
    if spec["kind"] == "python" and "callable" not in spec:
        raise ValueError("config key 'evaluation.judge.callable': required for kind python (module:function)")


def describe(spec: dict | None, metrics: dict) -> dict | None:
    """What a result JSON records about the judge that scored `metrics`: kind, model and the grading
    prompt's hash (never a key); None when no split was scored (not run)."""
    if spec is None or all(v is None for v in metrics.values()):
        return None
    model = spec.get("model") or spec.get("callable")
    return {"kind": spec["kind"], "model": model, "prompt_sha256": PROMPT_SHA256}


def make_judge(spec: dict | None):
    """The configured judge, a callable(messages) -> reply text with a `.name`; NotRun without one."""
    if spec is None:
        raise NotRun(NO_JUDGE)
    check(spec)
    spec = {**DEFAULTS, **spec}
    if spec["kind"] == "python":
        module, _, name = spec["callable"].partition(":")
        try:
            function = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"config key 'evaluation.judge.callable': cannot import {spec['callable']!r} ({err})") from None
        return _Named(function, spec.get("model") or spec["callable"])
    if not os.environ.get(spec["api_key_env"]):
        raise NotRun(f"no MT-Bench judge: ${spec['api_key_env']} is empty (evaluation.judge.api_key_env)")
    return OpenAIChat(spec["model"], spec["base_url"], spec["api_key_env"], spec["timeout"], spec["retries"])


class _Named:
    def __init__(self, function, name: str):
        self.function, self.name = function, name

    def __call__(self, messages: list[dict]) -> str:
        return str(self.function(messages))


class OpenAIChat:
    """A chat-completions client: POST {base_url}/chat/completions, temperature 0."""

    def __init__(self, model: str, base_url: str, api_key_env: str, timeout: float = 120, retries: int = 5,
                 backoff: float = 1.0, max_tokens: int = 2048):
        self.name, self.url = model, base_url.rstrip("/") + "/chat/completions"
        self.api_key_env, self.timeout, self.retries, self.backoff, self.max_tokens = api_key_env, timeout, retries, backoff, max_tokens

    def __call__(self, messages: list[dict]) -> str:
        import requests  # deferred: only a configured HTTP judge needs it

        key = os.environ.get(self.api_key_env, "")
        body = {"model": self.name, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        where = f"judge {self.name!r} at {self.url} (API key from ${self.api_key_env})"
        for attempt in range(self.retries + 1):
            try:
                response = requests.post(self.url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=self.timeout)
            except requests.RequestException as err:
                error, retry = f"{type(err).__name__}: {err}", True
            else:
                if response.status_code == 200:
                    try:
                        return str(response.json()["choices"][0]["message"]["content"])
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise JudgeError(f"{where}: not a chat-completions reply: {_scrub(response.text, key)[:300]!r}") from None
                error = f"HTTP {response.status_code}: {_scrub(response.text, key)[:300]}"
                retry = response.status_code == 429 or response.status_code >= 500
            if not retry or attempt == self.retries:
                raise JudgeError(f"{where} failed after {attempt + 1} attempt(s): {error}")
            time.sleep(min(self.backoff * 2**attempt, 60.0))
        raise AssertionError("unreachable")


def _scrub(text: str, key: str) -> str:
    """An error page may echo the request: the key never reaches a log."""
    return text.replace(key, "***") if key else text


def messages(question: dict, answers: list[str], turn: int) -> list[dict]:
    """The grading conversation for answer `turn` (0-based) of one question."""
    turns, refs = question["turns"], list(question.get("reference") or [])
    use_ref = question.get("category") in REFERENCE_CATEGORIES and any(refs)
    if turn == 0:
        reference = f"[The Start of Reference Answer]\n{refs[0]}\n[The End of Reference Answer]\n\n" if use_ref and refs[0] else ""
        user = SINGLE.format(question=turns[0], reference=reference, answer=answers[0])
    else:
        conversation = "\n\n".join(f"### User:\n{turns[t]}\n\n### Assistant:\n{answers[t]}" for t in range(turn + 1))
        reference = ""
        if use_ref:
            shown = "\n\n".join(f"### Reference answer to question {t + 1}:\n{refs[t]}" for t in range(turn + 1) if t < len(refs))
            reference = f"[The Start of Reference Answers]\n{shown}\n[The End of Reference Answers]\n\n"
        user = MULTI.format(reference=reference, conversation=conversation)
    system = SYSTEM.format(reference_rule=REFERENCE_RULE if use_ref else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def rating(reply: str, judge_name: str) -> float:
    """The last "[[N]]" of the reply, 1 <= N <= 10."""
    found = RATING.findall(reply)
    if not found or not 1 <= float(found[-1]) <= 10:
        raise JudgeError(f"judge {judge_name!r} gave no rating [[1-10]] in its reply: {reply[:300]!r}")
    return float(found[-1])


def ask(judge, conversation: list[dict], cache_dir: Path | None) -> str:
    """The judge's reply, from the content-addressed cache when this exact request was answered before."""
    key = hashlib.sha256(json.dumps({"judge": judge.name, "messages": conversation}, sort_keys=True).encode()).hexdigest()
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.json"
    if path is not None and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["reply"]
    reply = judge(conversation)
    rating(reply, judge.name)  # an unparsable reply is an error, never cached
    if path is not None:
        write_json(path, {"judge": judge.name, "reply": reply})
    return reply


def mt_bench_score(judge, questions: list[dict], answers: list[list[str]], cache_dir: Path | None) -> float:
    """Mean judge rating (1-10) over every (question, turn)."""
    scores = []
    for question, answer in tqdm(list(zip(questions, answers)), desc=f"MT-Bench judge {judge.name}", mininterval=5.0):
        for turn in range(len(question["turns"])):
            scores.append(rating(ask(judge, messages(question, answer, turn), cache_dir), judge.name))
    return sum(scores) / len(scores)
