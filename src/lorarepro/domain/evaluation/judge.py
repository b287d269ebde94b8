"""MT-Bench single-answer grading through a pluggable judge (the paper's Table 3 chat column).

What: the model answers each question's turns greedily, every turn seeing the conversation so far
(families.generation.chat_answers); a judge model rates each answer from 1 to 10, and the score is
the mean rating over the graded (question, turn) pairs, as FastChat's MT-Bench computes it.

Why FastChat's own prompts: a judge's rating depends on its prompt, so only FastChat's grading
prompts and rules give scores comparable with published MT-Bench numbers. They are used as FastChat's
llm_judge (common.py run_judge_single, gen_judgment.py, show_result.py) uses them:
    turn 1  single-v1, or single-math-v1 with reference answer 1 for the categories that need a
            reference (math, reasoning, coding)
    turn 2  single-v1-multi-turn, or single-math-v1-multi-turn with reference answers 1 and 2
    rating  the first "[[N]]" of the reply, else the first "[N]"; a reply with neither rates -1
            and is left out of the mean (the result's details count those replies)
The task setting `mt_bench_turns` (carried in the manifest) chooses the turns that count: [1, 2],
FastChat's overall score, by default; the paper reports the first-turn score, [1].

Where the prompts come from: FastChat's fastchat/llm_judge/data/judge_prompts.jsonl (Apache-2.0),
which its PyPI wheel does not ship, downloaded at a pinned commit (PROMPTS_URL) only when a judge
grades, checked against PROMPTS_SHA256 and cached at paths.JUDGE_PROMPTS (lorarepro.core.pinned); on a
machine without network, `evaluation.judge.prompts` names a local copy of that file (checked the same
way). The questions and the GPT-4 reference answers graded against come from the same commit (the
task split `{fastchat: mt_bench}`, lorarepro.domain.data.external).

A judge is configured under `evaluation.judge` (schema) and off otherwise:
    kind openai_chat   an OpenAI-compatible chat-completions endpoint over `requests`, temperature 0 and
                       max_tokens 2048 (FastChat's), retries with exponential backoff; the API key comes
                       from the environment variable `api_key_env` and is never logged or recorded
    kind python        `callable: "module:function"`, called with the chat messages, returns the reply
Without a judge, or with its key variable empty, `make_judge` raises NotRun: the tables show the
column as not run, and the saved checkpoint can be judged later.

Replies are cached by content (judge model and the whole grading conversation) under
paths.JUDGE_CACHE, so evaluating the same answers again, or a rerun, does not pay for the judge twice.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import re
import time
from pathlib import Path

from tqdm import tqdm

from lorarepro.core import paths, pinned
from lorarepro.core.atomic import write_json
from lorarepro.domain.evaluation.outcome import NotRun, Score

FASTCHAT_COMMIT = pinned.FASTCHAT_COMMIT  # the MT-Bench questions and reference answers come from it too
PROMPTS_URL = pinned.fastchat_url("fastchat/llm_judge/data/judge_prompts.jsonl")
PROMPTS_SHA256 = "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6"
PROMPTS_KEY = "evaluation.judge.prompts"
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")  # FastChat's NEED_REF_CATS
# (turn, with reference answers) -> FastChat's prompt name
PROMPT_NAMES = {(1, False): "single-v1", (1, True): "single-math-v1",
                (2, False): "single-v1-multi-turn", (2, True): "single-math-v1-multi-turn"}
TURNS = (1, 2)  # FastChat's overall score; the task setting mt_bench_turns overrides it
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
NO_RATING = -1
DEFAULTS = {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY", "timeout": 120, "retries": 5}
NO_JUDGE = "no MT-Bench judge: set evaluation.judge (and its API key variable, e.g. OPENAI_API_KEY)"


class JudgeError(RuntimeError):
    """The judge or its prompts could not be had, or no reply holds a rating; the message says which."""


def check(spec: dict | None) -> None:
    """What the schema cannot express; a ValueError names the key (called by config.check)."""
    if spec is None:
        return
    if spec["kind"] == "openai_chat" and "model" not in spec:
        raise ValueError("config key 'evaluation.judge.model': required for kind openai_chat")
    if spec["kind"] == "python" and "callable" not in spec:
        raise ValueError("config key 'evaluation.judge.callable': required for kind python (module:function)")


def describe(spec: dict | None, metrics: dict) -> dict | None:
    """What a result JSON records about the judge that scored `metrics`: kind, model and where its
    grading prompts come from (never a key); None when no split was scored (not run)."""
    if spec is None or all(v is None for v in metrics.values()):
        return None
    model = spec.get("model") or spec.get("callable")
    return {"kind": spec["kind"], "model": model,
            "prompts": {"url": PROMPTS_URL, "commit": FASTCHAT_COMMIT, "sha256": PROMPTS_SHA256}}


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


def load_prompts(spec: dict) -> dict[str, dict]:
    """FastChat's judge prompts by name: the local copy `evaluation.judge.prompts`, else the cached
    download, else a fresh download; whichever it is must have the pinned sha256."""
    pin = pinned.Pin("FastChat's judge prompts", PROMPTS_URL, PROMPTS_SHA256,
                     f"judge_prompts.jsonl of {pinned.FASTCHAT_REPO} at commit {FASTCHAT_COMMIT}")
    try:
        data = pinned.read(pin, paths.JUDGE_PROMPTS, spec.get("prompts") or None, PROMPTS_KEY,
                           hint=f"set config key '{PROMPTS_KEY}' to a local copy of that file")
    except pinned.PinnedError as err:
        raise JudgeError(str(err)) from None
    entries = (json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip())
    return {entry["name"]: entry for entry in entries}


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


def check_questions(questions: list[dict], turns=TURNS) -> None:
    """NotRun unless every question has the turns graded and, in a reference category, a reference
    answer for each (FastChat grades those against references; it refuses to grade without them)."""
    last = max(turns)
    for number, question in enumerate(questions, 1):
        where = f"MT-Bench question {number} ({question.get('category')}: {question['turns'][0][:60]!r})"
        if len(question["turns"]) < last:
            raise NotRun(f"{where} has {len(question['turns'])} turn(s); mt_bench_turns grades turn {last}")
        if question.get("category") in REFERENCE_CATEGORIES and len(question.get("reference") or []) < last:
            raise NotRun(f"{where} has no reference answer for turn {last}, which FastChat's grading of "
                         f"{', '.join(REFERENCE_CATEGORIES)} needs (the split {{fastchat: mt_bench}} has FastChat's "
                          "GPT-4 reference answers; otherwise the task split's fields.reference)")


def messages(prompts: dict[str, dict], question: dict, answers: list[str], turn: int) -> list[dict]:
    """FastChat's grading conversation for answer `turn` (1 or 2) of one question: the entry's
    system prompt, and its template filled with FastChat's field names."""
    with_reference = question.get("category") in REFERENCE_CATEGORIES
    entry = prompts[PROMPT_NAMES[turn, with_reference]]
    turns = question["turns"]
    if turn == 1:
        fields = {"question": turns[0], "answer": answers[0]}
    else:
        fields = {"question_1": turns[0], "question_2": turns[1], "answer_1": answers[0], "answer_2": answers[1]}
    if with_reference:
        fields.update({f"ref_answer_{t}": question["reference"][t - 1] for t in range(1, turn + 1)})
    return [{"role": "system", "content": entry["system_prompt"]},
            {"role": "user", "content": entry["prompt_template"].format(**fields)}]


def rating(reply: str) -> float:
    """FastChat's rating of a reply: the first "[[N]]", else the first "[N]"; NO_RATING (-1) without either."""
    match = ONE_SCORE.search(reply) or ONE_SCORE_BACKUP.search(reply)
    return float(ast.literal_eval(match.group(1))) if match else NO_RATING


def ask(judge, conversation: list[dict], cache_dir: Path | None) -> str:
    """The judge's reply, from the content-addressed cache when this exact request was answered before.
    A reply without a rating is cached too: FastChat keeps it (as -1) rather than asking again."""
    key = hashlib.sha256(json.dumps({"judge": judge.name, "messages": conversation}, sort_keys=True).encode()).hexdigest()
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.json"
    if path is not None and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["reply"]
    reply = judge(conversation)
    if path is not None:
        write_json(path, {"judge": judge.name, "reply": reply})
    return reply


def mt_bench_score(judge, prompts: dict[str, dict], questions: list[dict], answers: list[list[str]],
                   cache_dir: Path | None, turns=TURNS) -> Score:
    """Mean rating over the (question, turn) pairs of `turns` (1-based) whose reply holds one; the
    details give the turns, the replies, those without a rating, and each turn's mean."""
    check_questions(questions, turns)
    rated: dict[int, list[float]] = {turn: [] for turn in turns}
    unrated = []
    for question, answer in tqdm(list(zip(questions, answers)), desc=f"MT-Bench judge {judge.name}", mininterval=5.0):
        for turn in turns:
            reply = ask(judge, messages(prompts, question, answer, turn), cache_dir)
            value = rating(reply)
            if value == NO_RATING:
                unrated.append(reply)
            else:
                rated[turn].append(value)
    ratings = [value for turn in turns for value in rated[turn]]
    if not ratings:
        example = f", e.g. {unrated[0][:300]!r}" if unrated else ""
        raise JudgeError(f"judge {judge.name!r} gave no rating ([[N]] or [N]) in any of its {len(unrated)} replies{example}")
    details = {"metric": "mt_bench", "turns": list(turns), "replies": len(ratings) + len(unrated),
               "unrated": len(unrated),
               "turn_means": {str(t): round(sum(v) / len(v), 4) if v else None for t, v in rated.items()}}
    return Score(sum(ratings) / len(ratings), details)
