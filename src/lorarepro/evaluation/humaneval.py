"""HumanEval pass@1 (Chen et al. 2021): greedy completions, each run against the problem's tests.

A problem is one row of the real HumanEval format (`openai/openai_humaneval`: task_id, prompt,
canonical_solution, test, entry_point), prepared as question (the prompt), solution, test,
entry_point, task_id. The completion is cut at the usual stop sequences, and the program
`prompt + completion + test + check(entry_point)` runs in lorarepro.evaluation.sandbox; pass@1 (%) is
passed / problems (greedy decoding, one sample each, so pass@1 needs no estimator).

Running model-written code is off unless the config sets `evaluation.execute_generated_code: true`;
otherwise nothing is generated or executed and the evaluation raises NotRun.
"""

import sys

from lorarepro.evaluation import NotRun, Score
from lorarepro.evaluation.sandbox import OUTCOMES, run_program

STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
OPT_IN = "evaluation.execute_generated_code"


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
    """The completion up to the first stop sequence (the end of the function body)."""
    cut = min((i for i in (completion.find(s) for s in STOP) if i >= 0), default=len(completion))
    return completion[:cut]


def program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    return f"{prompt}{truncate(completion)}\n\n{test}\n\ncheck({entry_point})\n"


def pass_at_1(df, completions: list[str], opts: dict) -> Score:
    """pass@1 (%) of one completion per problem; the details record each outcome and the isolation used."""
    outcomes, isolation = [], []
    for row, completion in zip(df.to_dict("records"), completions):
        ran = run_program(program(row["question"], completion, row["test"], row["entry_point"]),
                          timeout_s=opts["timeout_s"], memory_mb=opts["memory_mb"])
        outcomes.append({"task_id": str(row.get("task_id", len(outcomes))), "outcome": ran["outcome"]})
        if ran["isolation"] not in isolation:
            isolation.append(ran["isolation"])
    passed = sum(o["outcome"] == "passed" for o in outcomes)
    details = {"metric": "humaneval_pass_at_1", "problems": len(outcomes),
               "outcomes": {k: sum(o["outcome"] == k for o in outcomes) for k in OUTCOMES},
               "isolation": isolation, "per_problem": outcomes}
    return Score(100.0 * passed / len(outcomes), details)
