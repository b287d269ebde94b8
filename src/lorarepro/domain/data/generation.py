"""Synthetic arithmetic word problems mirroring GSM8K for a tiny Llama.

Numbers are written as plain digits separated by spaces because the tokenizer splits digits
individually; templates are kept short so question + solution fit `max_length` 48 together with
BOS/EOS (see MAX_TOKENS). The pretext corpus teaches arithmetic (bare equations) and the
narrative vocabulary, but never a question/answer pair; its narrative sentences come from a
seed-independent hash bucket that task questions never use.
"""

import numpy as np
import pandas as pd

from lorarepro.domain.data.io import (
    GENERATORS,
    cut_splits,
    rng_for,
    sample_unique,
    split_sizes,
    stable_bucket,
)

MAX_TOKENS = 46  # question + solution, digits counted one by one
PRETEXT_MAX_TOKENS = 40
A_RANGE, B_RANGE, B_RANGE_TWO_STEP, C_RANGE = (2, 21), (1, 21), (1, 10), (1, 10)  # [lo, hi)
PRETEXT_BUCKETS = 4  # a narrative sentence whose bucket is 0 belongs to the pretext corpus only

NAMES = {"tom": "he", "anna": "she", "sam": "he", "mia": "she", "ben": "he", "lily": "she",
         "max": "he", "emma": "she", "leo": "he", "zoe": "she", "jack": "he", "sara": "she"}
OBJECTS = ["apples", "pens", "books", "cards", "eggs", "coins", "stickers", "marbles", "cookies",
           "toys", "shells", "balloons"]

# narrative sentences, shared by task questions and the pretext corpus
SENTENCES = {
    "has": "{n} has {a} {obj} .",
    "buys": "{p} buys {b} more .",
    "gives": "{p} gives {b} to {m} .",
    "loses": "{p} loses {b} .",
    "more": "{m} has {b} more than {n} .",
    "fewer": "{m} has {b} fewer than {n} .",
    "both": "{n} has {a} {obj} and {m} has {b} .",
    "buys_gives": "{p} buys {b} and gives {c} away .",
    "gives_buys": "{p} gives {b} away and buys {c} .",
}
# problem -> (sentences, question, steps); a step (x, op, y) may use "t", the previous result
PROBLEMS = {
    "buy": (["has", "buys"], "how many {obj} does {p} have now ?", [("a", "+", "b")]),
    "give": (["has", "gives"], "how many {obj} does {p} have now ?", [("a", "-", "b")]),
    "lose": (["has", "loses"], "how many {obj} are left ?", [("a", "-", "b")]),
    "more": (["has", "more"], "how many {obj} does {m} have ?", [("a", "+", "b")]),
    "fewer": (["has", "fewer"], "how many {obj} does {m} have ?", [("a", "-", "b")]),
    "total": (["both"], "how many {obj} do they have in total ?", [("a", "+", "b")]),
    "buy_give": (["has", "buys_gives"], "how many does {p} have now ?",
                 [("a", "+", "b"), ("t", "-", "c")]),
    "give_buy": (["has", "gives_buys"], "how many does {p} have now ?",
                 [("a", "-", "b"), ("t", "+", "c")]),
    "more_together": (["has", "more"], "how many do they have together ?",
                      [("a", "+", "b"), ("a", "+", "t")]),
    "fewer_together": (["has", "fewer"], "how many do they have together ?",
                       [("a", "-", "b"), ("a", "+", "t")]),
}
QUESTION = "question : {body} answer :"
SOLUTION_END = "the answer is {r}"
SYMBOLS = ["+", "-", "=", ".", "?", ":"]


def token_count(text: str) -> int:
    """Tokens as the word-level tokenizer sees them: each digit of a number is its own token."""
    return sum(len(w) if w.isdigit() else 1 for w in text.split())


def is_pretext_sentence(sentence: str) -> bool:
    return stable_bucket(sentence, PRETEXT_BUCKETS) == 0


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _slots(rng: np.random.Generator, two_step: bool) -> dict:
    """Names, object and operands; second operands stay small in two-step problems."""
    n, m = rng.choice(list(NAMES), size=2, replace=False)
    return {"n": str(n), "m": str(m), "p": NAMES[str(n)], "obj": _pick(rng, OBJECTS),
            "a": int(rng.integers(*A_RANGE)),
            "b": int(rng.integers(*(B_RANGE_TWO_STEP if two_step else B_RANGE))),
            "c": int(rng.integers(*C_RANGE))}


def solve(steps: list[tuple[str, str, str]], slots: dict) -> tuple[str, int] | None:
    """Chain-of-thought solution and final answer; None if a step goes negative."""
    values, lines, result = dict(slots), [], None
    for x, op, y in steps:
        result = values[x] + values[y] if op == "+" else values[x] - values[y]
        if result < 0:
            return None
        lines.append(f"{values[x]} {op} {values[y]} = {result}")
        values["t"] = result
    return " . ".join(lines + [SOLUTION_END.format(r=result)]), result


def _problem(rng: np.random.Generator) -> dict | None:
    kind = _pick(rng, list(PROBLEMS))
    sentence_keys, question, steps = PROBLEMS[kind]
    slots = _slots(rng, two_step=len(steps) > 1)
    solved = solve(steps, slots)
    sentences = [SENTENCES[k].format(**slots) for k in sentence_keys]
    if solved is None or any(is_pretext_sentence(s) for s in sentences):
        return None
    body = " ".join(sentences + [question.format(**slots)])
    row = {"question": QUESTION.format(body=body), "solution": solved[0], "answer": str(solved[1])}
    if token_count(row["question"]) + token_count(row["solution"]) > MAX_TOKENS:
        raise AssertionError(f"template {kind!r} is longer than {MAX_TOKENS} tokens: {row}")
    return row


@GENERATORS.register("arithmetic")
def arithmetic(task: str, task_cfg: dict, data_seed: int) -> tuple[dict, dict]:
    sizes = split_sizes(task, task_cfg)
    rng = rng_for(data_seed, "generation", task)
    rows = sample_unique(task, rng, _problem, "question", sum(sizes.values()))
    return cut_splits(rows, sizes), {"family": "generation", "max_tokens": MAX_TOKENS}


def _equation(rng: np.random.Generator) -> str:
    x, y = (int(v) for v in rng.integers(0, 31, size=2))
    if rng.random() < 0.5:
        return f"{x} + {y} = {x + y} ."
    x, y = max(x, y), min(x, y)
    return f"{x} - {y} = {x - y} ."


def _narrative(rng: np.random.Generator) -> str:
    """A pretext-bucket narrative sentence (retries until the hash bucket allows it)."""
    while True:
        sentence = SENTENCES[_pick(rng, list(SENTENCES))].format(**_slots(rng, False))
        if is_pretext_sentence(sentence):
            return sentence


def _linked(rng: np.random.Generator) -> str:
    """Math text as pretraining corpora hold it: a number from the narrative reused in an
    equation, or an equation whose result is restated. Never a question with its answer."""
    if rng.random() < 0.5:
        equation = _equation(rng)
        return f"{equation} the answer is {equation.split()[-2]} ."
    while True:
        slots = _slots(rng, False)
        sentence = SENTENCES["has"].format(**slots)
        if is_pretext_sentence(sentence):
            y = int(rng.integers(1, 21))
            return f"{sentence} {slots['a']} + {y} = {slots['a'] + y} ."


def _pretext_row(rng: np.random.Generator) -> dict:
    segments: list[str] = []
    for _ in range(int(rng.integers(2, 5))):
        u = rng.random()
        segment = _equation(rng) if u < 0.4 else _narrative(rng) if u < 0.65 else _linked(rng)
        if token_count(" ".join(segments + [segment])) > PRETEXT_MAX_TOKENS:
            break
        segments.append(segment)
    return {"text": " ".join(segments)}


def pretext_rows(data_seed: int, examples: int) -> list[dict]:
    """Equations and narrative sentences, no questions or answers; distinct rows."""
    rng = rng_for(data_seed, "generation", "pretext")
    return sample_unique("pretext_generation", rng, _pretext_row, "text", int(examples))


def pretext(data_seed: int, examples: int) -> tuple[pd.DataFrame, dict]:
    """The pretext corpus (pretext_rows) and what its manifest adds (nothing)."""
    return pd.DataFrame(pretext_rows(data_seed, examples)), {}


def vocabulary() -> list[str]:
    templates = list(SENTENCES.values()) + [q for _, q, _ in PROBLEMS.values()]
    templates += [QUESTION, SOLUTION_END]
    words = {w for t in templates for w in t.split() if not w.startswith("{")}
    words |= set(NAMES) | set(NAMES.values()) | set(OBJECTS) | set(SYMBOLS)
    words |= {str(d) for d in range(10)}
    return sorted(words)
