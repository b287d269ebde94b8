"""MT-Bench through a judge (lorarepro.evaluation.judge): a real local chat-completions server, the python-callable
judge, "not run" without a key, and a tiny Llama answering two-turn questions end to end."""

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lorarepro import paths
from lorarepro.data import load_eval_splits
from lorarepro.evaluation import NotRun, evaluate_splits, judge
from lorarepro.reevaluate import evaluate_checkpoint

REPO = Path(__file__).resolve().parents[1]

MATH = {"turns": ["how many apples does anna have ?", "and how many does ben have ?"], "category": "math",
        "reference": ["anna has 4 apples", "ben has 2 apples"]}
WRITING = {"turns": ["write about toys", "now shorter"], "category": "writing", "reference": []}


class ChatServer:
    """A chat-completions endpoint on localhost: records each request, replies from a queue."""

    def __init__(self):
        self.requests, self.replies = [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, content = server.replies.pop(0) if server.replies else (200, "Fine. Rating: [[7]]")
                text = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}) if status == 200 else content
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.httpd.shutdown()


@pytest.fixture
def spec(server, monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret-123")
    return {"kind": "openai_chat", "model": "gpt-4-0613", "base_url": server.url, "api_key_env": "TEST_JUDGE_KEY", "retries": 0}


def test_http_judge_scores_and_sends_model_temperature_and_reference(server, spec, tmp_path):
    grader = judge.make_judge(spec)
    answers = [["anna has 4", "ben has 2"], ["toys are fun", "fun"]]
    assert judge.mt_bench_score(grader, [MATH, WRITING], answers, tmp_path) == 7.0
    assert len(server.requests) == 4  # 2 questions x 2 turns
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-secret-123"
    assert first["body"]["model"] == "gpt-4-0613" and first["body"]["temperature"] == 0
    math_turn1, math_turn2, writing_turn1, _ = (r["body"]["messages"][-1]["content"] for r in server.requests)
    assert "anna has 4 apples" in math_turn1 and "Reference" in math_turn1 and "anna has 4" in math_turn1
    assert "ben has 2 apples" in math_turn2 and "and how many does ben have ?" in math_turn2
    assert "Reference" not in writing_turn1  # references only for math, reasoning and coding
    # cached by content: the same answers again cost no request; another answer does
    assert judge.mt_bench_score(grader, [MATH], [answers[0]], tmp_path) == 7.0 and len(server.requests) == 4
    judge.mt_bench_score(grader, [MATH], [["anna has 4", "ben has 3"]], tmp_path)  # turn 2 only
    assert len(server.requests) == 5
    assert "sk-secret" not in "".join(p.read_text() for p in tmp_path.iterdir())
    assert judge.describe(spec, {"test": 7.0}) == {"kind": "openai_chat", "model": "gpt-4-0613", "prompt_sha256": judge.PROMPT_SHA256}
    assert judge.describe(spec, {"test": None}) is None  # configured but not run (e.g. no key): no judge scored it


def test_unparsable_reply_and_http_errors_are_clear(server, spec):
    grader = judge.make_judge(spec)
    server.replies = [(200, "A good answer, I would say seven.")]
    with pytest.raises(judge.JudgeError, match=r"gpt-4-0613.*no rating \[\[1-10\]\].*seven"):
        judge.mt_bench_score(grader, [WRITING], [["a", "b"]], None)
    server.replies = [(401, '{"error": "bad key sk-secret-123"}')]
    with pytest.raises(judge.JudgeError, match=r"\$TEST_JUDGE_KEY.*HTTP 401") as err:
        grader(judge.messages(WRITING, ["a"], 0))
    assert "sk-secret-123" not in str(err.value)  # the echoed key is scrubbed
    retrying = judge.OpenAIChat("gpt-4-0613", server.url, "TEST_JUDGE_KEY", retries=2, backoff=0.01)
    server.replies = [(503, "busy"), (429, "slow down"), (200, "[[3]]")]
    assert retrying(judge.messages(WRITING, ["a"], 0)) == "[[3]]"


def test_no_judge_or_empty_key_is_not_run(spec, monkeypatch):
    with pytest.raises(NotRun, match="no MT-Bench judge"):
        judge.make_judge(None)
    monkeypatch.setenv("TEST_JUDGE_KEY", "")
    with pytest.raises(NotRun, match=r"\$TEST_JUDGE_KEY is empty"):
        judge.make_judge(spec)
    with pytest.raises(ValueError, match="evaluation.judge.model"):
        judge.make_judge({"kind": "openai_chat"})


SEEN = []


def turn_judge(messages):
    """A python judge: rates turn 1 with 8 and turn 2 with 6 (a turn-2 prompt holds the conversation)."""
    SEEN.append(messages)
    return "[[6]]" if "[The Start of the Conversation]" in messages[-1]["content"] else "[[8]]"


def test_python_callable_judge(tmp_path):
    SEEN.clear()
    grader = judge.make_judge({"kind": "python", "callable": "test_judge:turn_judge"})
    assert grader.name == "test_judge:turn_judge"
    assert judge.mt_bench_score(grader, [MATH, WRITING], [["x", "y"], ["z", "w"]], tmp_path) == 7.0
    assert len(SEEN) == 4
    with pytest.raises(ValueError, match="evaluation.judge.callable"):
        judge.make_judge({"kind": "python", "callable": "test_judge:nope"})


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def chat_task(root) -> dict:
    """A local chat task: arithmetic-like train rows, two MT-Bench questions (HF mt_bench_prompts layout)."""
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "train.jsonl", [{"instruction": f"how many apples does anna have ? {i}", "output": f"anna has {i} apples"}
                                       for i in range(8)])
    write_jsonl(root / "mt_bench.jsonl", [
        {"prompt_id": 1, "category": "math", "prompt": MATH["turns"], "reference": MATH["reference"]},
        {"prompt_id": 2, "category": "writing", "prompt": WRITING["turns"], "reference": []}])
    mt = {"split": "mt_bench.jsonl", "fields": {"turns": "prompt", "category": "category", "reference": "reference"}}
    return {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(root), "format": "jsonl",
            "metric": "mt_bench", "fields": {"question": "instruction", "solution": "output"},
            "prompt": "question : {question} answer :", "max_new_tokens": 4,
            "splits": {"train": "train.jsonl", "validation": mt, "test": mt}}


def test_tiny_llama_answers_two_turns_end_to_end(tmp_path, monkeypatch):
    import torch

    from lorarepro import families
    from lorarepro.data import prepare_task, vocabulary

    monkeypatch.chdir(tmp_path)
    family = families.get("generation")
    torch.manual_seed(0)
    model, tokenizer = family.build_backbone({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                              "num_attention_heads": 2, "num_key_value_heads": 2}, vocabulary("generation"))
    model.save_pretrained(tmp_path / "llama", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "llama")
    model, tokenizer = family.load_for_task(tmp_path / "llama", {})
    manifest = prepare_task("chat", chat_task(tmp_path / "src"), 0, tmp_path / "chat")
    assert manifest["metric"] == "mt_bench" and manifest["max_new_tokens"] == 4
    metrics, not_run = evaluate_splits(family, model, tokenizer, load_eval_splits(tmp_path / "chat", manifest), manifest, 32)
    assert metrics == {"validation": None, "test": None} and set(not_run) == {"validation", "test"}
    assert "no MT-Bench judge" in not_run["test"]
    SEEN.clear()
    evaluation = {"judge": {"kind": "python", "callable": "test_judge:turn_judge"}}
    metrics, not_run = evaluate_splits(family, model, tokenizer, load_eval_splits(tmp_path / "chat", manifest), manifest, 32, evaluation)
    assert metrics == {"validation": 7.0, "test": 7.0} and not_run == {}
    assert len(SEEN) == 4  # the test split's requests were all cached from the validation split's
    turn2 = SEEN[1][-1]["content"]  # the math question's second turn: the whole conversation so far
    assert turn2.index(MATH["turns"][0]) < turn2.index(MATH["turns"][1])
    answers = family.chat_answers(model, tokenizer, [["question : how many apples answer :", "question : and ben answer :"]],
                                  manifest, 32)
    assert len(answers[0]) == 2 and all(len(a.split()) <= 4 for a in answers[0])
    assert any(paths.JUDGE_CACHE.iterdir())


@pytest.fixture
def chat_workspace(workspace):
    """The shared workspace plus the local chat task; its outputs are removed afterwards."""
    from lorarepro.experiment import validate
    from lorarepro.data import prepare_task

    cfg = dict(workspace, seeds=[0], tasks={**workspace["tasks"], "chat_tiny": chat_task(paths.DATA / "external" / "chat_tiny")},
               tables=[{"id": "table_chat", "caption": "chat", "tasks": ["chat_tiny"], "methods": ["lora_r8"]}], figures=[])
    validate(cfg)
    prepare_task("chat_tiny", cfg["tasks"]["chat_tiny"], cfg["data_seed"], paths.prepared_dir("chat_tiny"))
    yield cfg
    for path in (paths.DATA / "external" / "chat_tiny", paths.prepared_dir("chat_tiny"), paths.CHECKPOINTS / "chat_tiny",
                 paths.RESULTS / "runs" / "chat_tiny", paths.RESULTS / "tables", paths.JUDGE_CACHE):
        shutil.rmtree(path, ignore_errors=True)


def test_run_without_judge_finishes_with_not_run_and_the_table_says_so(chat_workspace):
    from lorarepro import tracking
    from lorarepro.reporting import tables
    from lorarepro.audit import artifacts, mlflow_runs, rerun
    from lorarepro.training.train import train_task_method

    cfg = chat_workspace
    (result,) = train_task_method(cfg, "chat_tiny", "lora_r8")
    assert result["status"] == "FINISHED" and result["metric"] == "mt_bench"
    assert result["metrics"] == {"validation": None, "test": None}
    assert set(result["not_run"]) == {"validation", "test"} and result["judge"] is None
    assert json.loads(paths.run_result("chat_tiny", "lora_r8", 0).read_text())["not_run"] == result["not_run"]
    assert (paths.checkpoint_dir("chat_tiny", "lora_r8", 0) / "adapter_model.safetensors").is_file()  # judge it later
    tracked = tracking.mlflow_client(cfg)[0].get_run(result["lineage"]["mlflow_run_id"]).data
    assert "test" not in tracked.metrics and tracked.tags["not_run.test"] == result["not_run"]["test"]
    files, entry = tables.table_files("table_chat", cfg, {})
    md = files[paths.table("table_chat", "md")]
    row = next(line for line in md.splitlines() if line.startswith("| LoRA"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["LoRA (r=8)", "not run", "", ""]  # no number, no Avg
    assert f"Not run: chat_tiny (LoRA (r=8)): {result['not_run']['test']}." in md
    assert entry["runs"] == [str(paths.run_result("chat_tiny", "lora_r8", 0))]
    run = artifacts.Run("chat_tiny", "lora_r8", 0, result)
    assert [r["status"] for r in artifacts.check_metrics([run])] == ["info"]
    assert [r["status"] for r in mlflow_runs.check(cfg, [run])] == ["pass"]
    assert [r["status"] for r in rerun.reevaluate([run])] == ["pass"]  # not run again, for the same reason
    # with a judge set later, the saved checkpoint is scored without training again; the result records
    # the judge (never a key), MLflow gets the metrics and loses the not-run tags
    cfg = dict(cfg, evaluation={"judge": {"kind": "python", "callable": "test_judge:turn_judge"}})
    judged = evaluate_checkpoint(cfg, "chat_tiny", "lora_r8", 0)
    assert judged["metrics"] == {"validation": 7.0, "test": 7.0} and "not_run" not in judged
    assert judged["judge"] == {"kind": "python", "model": "test_judge:turn_judge", "prompt_sha256": judge.PROMPT_SHA256}
    assert json.loads(paths.run_result("chat_tiny", "lora_r8", 0).read_text()) == judged
    assert set(judged) == set(result) - {"not_run"} and judged["train"] == result["train"]
    run = artifacts.Run("chat_tiny", "lora_r8", 0, judged)
    assert [r["status"] for r in mlflow_runs.check(cfg, [run])] == ["pass"]
    assert not any(k.startswith("not_run") for k in tracking.mlflow_client(cfg)[0].get_run(judged["lineage"]["mlflow_run_id"]).data.tags)
    assert [r["status"] for r in rerun.reevaluate([run], cfg["evaluation"])] == ["pass"]
    assert [r["status"] for r in artifacts.check_metrics([run])] == ["pass"]


def test_config_refuses_misplaced_metric_and_missing_mt_bench_fields(params, tmp_path):
    from lorarepro.config import ConfigError
    from lorarepro.experiment import validate

    def check(task, **extra):
        validate({**params, "tasks": {**params["tasks"], "chat": task}, **extra})

    with pytest.raises(ConfigError, match="tasks.chat.metric"):
        check({**params["tasks"]["sentiment"], "metric": "mt_bench"})  # an nlu task
    task = chat_task(tmp_path)
    check(task)
    del task["splits"]["test"]["fields"]["category"]
    with pytest.raises(ConfigError, match=r"tasks.chat.splits.validation': an MT-Bench split needs fields \['category'\]"):
        check(task)
    with pytest.raises(ConfigError, match="evaluation.judge.callable"):
        check(chat_task(tmp_path), evaluation={"judge": {"kind": "python"}})


def test_evaluate_command_names_what_is_missing(tmp_path, monkeypatch, capsys, params):
    import yaml

    from lorarepro.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "arithmetic", "lora_r8"]) == 2
    assert "params.yaml" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "workflow" / "configs").mkdir(parents=True)  # the claims file params.yaml names
    shutil.copy(REPO / "workflow" / "configs" / "claims.yaml", tmp_path / "workflow" / "configs")
    assert main(["evaluate", "arithmetic", "lora_r8", "--seeds", "0"]) == 1
    assert "no result to evaluate again: results/runs/arithmetic/lora_r8/seed0.json" in capsys.readouterr().err
