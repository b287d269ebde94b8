"""Run identity end to end: the path, the result JSON (its task, method, seed and config), the
checkpoint's model card (README.md) and MLflow (params, tags, run name: mlflow_runs) name the same
task, method and seed; the checkpoint's hash is the lineage check's (artifacts.check_lineage). Two
seeds' checkpoints swapped together with their records fail here even though every hash agrees with
its own record."""

from __future__ import annotations

import re

from lorarepro.audit.inputs import BadInput, read_text
from lorarepro.audit.report import record

FIX = ("the run's files belong to another run: restore them (`dvc checkout`, `git checkout -- results/runs`) "
       "or retrain: rerun `snakemake --cores 2`")
_TITLE = re.compile(r"^# (?P<task>\S+) / (?P<method>\S+) \(seed (?P<seed>-?\d+)\)$", re.M)
_SEED = re.compile(r"^- seed: (?P<seed>-?\d+)$", re.M)


def record_problems(result: dict, task: str, method: str, seed: int) -> list[str]:
    """What the result JSON says of its identity that differs from its path."""
    want = {"task": task, "method": method, "seed": seed}
    problems = [f"result JSON {k} {result.get(k)!r}, path says {v!r}" for k, v in want.items() if result.get(k) != v]
    config = result.get("config") or {}
    problems += [f"result JSON config.{k} {config.get(k)!r}, path says {want[k]!r}" for k in ("task", "method")
                 if config.get(k) != want[k]]
    return problems


def card_problems(card_path, task: str, method: str, seed: int) -> list[str]:
    """The model card's title, seed line and tags against the path; a missing card is a problem."""
    try:
        text = read_text(card_path)
    except BadInput as bad:
        return [f"model card {bad.problem}"]
    title, line = _TITLE.search(text), _SEED.search(text)
    if title is None or line is None:
        return [f"model card {card_path} names no task, method and seed (no '# task / method (seed k)' title)"]
    said = {"task": title["task"], "method": title["method"], "seed": int(title["seed"])}
    want = {"task": task, "method": method, "seed": seed}
    problems = [f"model card {k} {said[k]!r}, path says {v!r}" for k, v in want.items() if said[k] != v]
    if int(line["seed"]) != seed:
        problems.append(f"model card seed line {line['seed']}, path says {seed}")
    for tag in (f"lorarepro-{method}", f"task-{task}"):
        if f"- {tag}\n" not in text:
            problems.append(f"model card lacks the tag {tag}")
    return problems


def check(runs: list) -> list[dict]:
    out = []
    for run in runs:
        problems = record_problems(run.result, run.task, run.method, run.seed)
        problems += card_problems(run.checkpoint / "README.md", run.task, run.method, run.seed)
        out.append(record("identity", "fail", run.path, "; ".join(problems), FIX) if problems else
                   record("identity", "pass", run.path, "path, result JSON and model card name the same run"))
    return out
