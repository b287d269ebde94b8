"""LLM benchmarks through lm-evaluation-harness (`lm-eval`), the evaluator LLM papers are scored with:
a generation task with `metric: lm_eval` is scored by the harness's own tasks on the trained model,
in process, instead of by the family's metric on its prepared splits.

Task config:
    metric: lm_eval
    lm_eval:                      # {name: one benchmark}; each name is a metric of the run
      mmlu: {task: mmlu, metric: "acc,none", num_fewshot: 5}
      test: {task: gsm8k, metric: "exact_match,strict-match"}   # named `test`: the tables' column
Keys of a benchmark: `task` (an lm-eval task or group), `metric` (a key of its results, e.g.
"acc,none"), and optionally `num_fewshot`, `limit` (the first N documents: smoke runs), `batch_size`,
`include_path` (a folder of the user's own task YAML files, e.g. local data for an offline machine),
`mirrors` (the paper's column it stands in for). A table reads a benchmark as the column
`task:name` (lorarepro.core.config.column).

The harness's numbers (fractions) are reported as percentages, like every other metric here. Tasks
the harness marks unsafe (HumanEval: it executes the model's code) run only with
`evaluation.execute_generated_code: true`; without it the benchmark is recorded as not run.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from lorarepro.domain.evaluation.outcome import NotRun, Score

KEYS = {"task", "metric", "num_fewshot", "limit", "batch_size", "include_path", "mirrors"}
NO_CODE = ("lm-eval task {task!r} executes model-written code: set evaluation.execute_generated_code: true "
           "to run it (on a machine where that is acceptable)")


def check(task: str, benchmarks: dict) -> None:
    """What the schema cannot see; a ValueError names the key."""
    for name, spec in (benchmarks or {}).items():
        key = f"tasks.{task}.lm_eval.{name}"
        if not isinstance(spec, dict) or not {"task", "metric"} <= spec.keys():
            raise ValueError(f"config key '{key}': needs `task` (an lm-eval task) and `metric` (e.g. 'acc,none')")
        unknown = sorted(set(spec) - KEYS)
        if unknown:
            raise ValueError(f"config key '{key}': unknown keys {unknown} (known: {sorted(KEYS)})")


def evaluate(model, tokenizer, name: str, spec: dict, evaluation: dict | None) -> Score:
    """One benchmark's metric (%) on the model as it is (an adapter stays unmerged)."""
    import lm_eval  # deferred: a heavy import, needed only by lm_eval tasks
    from lm_eval.models.huggingface import HFLM  # deferred: as above
    from lm_eval.tasks import TaskManager  # deferred: as above

    execute = bool((evaluation or {}).get("execute_generated_code"))
    manager = TaskManager(include_path=spec.get("include_path"))
    # batch_size and max_length from the run; the harness's own device and dtype handling is skipped
    # for a model object, which stays where training left it
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.get("batch_size", 8))
    with _code_eval(execute):
        try:
            out = lm_eval.simple_evaluate(
                model=lm, tasks=[spec["task"]], num_fewshot=spec.get("num_fewshot"), limit=spec.get("limit"),
                task_manager=manager, log_samples=False, bootstrap_iters=0, confirm_run_unsafe_code=execute,
            )
        except ValueError as err:
            if "unsafe" in str(err) and not execute:
                raise NotRun(NO_CODE.format(task=spec["task"])) from None
            raise
    results = out["results"].get(spec["task"]) or {}
    if spec["metric"] not in results:
        known = sorted(k for k in results if not k.endswith("_stderr,none") and k != "alias")
        raise ValueError(f"config key 'lm_eval.{name}.metric': lm-eval task {spec['task']!r} reports no "
                         f"{spec['metric']!r} (it reports {known})")
    details = {
        "lm_eval": {
            "version": lm_eval.__version__, "task": spec["task"], "metric": spec["metric"],
            "num_fewshot": spec.get("num_fewshot"), "limit": spec.get("limit"),
            "n_samples": out.get("n-samples", {}).get(spec["task"]),
            "task_versions": {t: v for t, v in (out.get("versions") or {}).items()},
        }
    }
    return Score(100.0 * float(results[spec["metric"]]), details)


@contextmanager
def _code_eval(allowed: bool):
    """The `evaluate` library's code_eval metric (lm-eval's HumanEval) refuses to run unless
    HF_ALLOW_CODE_EVAL=1: set it for the call the user opted in to, and only for that call."""
    previous = os.environ.get("HF_ALLOW_CODE_EVAL")
    if allowed:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_ALLOW_CODE_EVAL", None)
        else:
            os.environ["HF_ALLOW_CODE_EVAL"] = previous
