"""MT-Bench through a judge (lorarepro.domain.evaluation.judge): FastChat's grading prompts verbatim (against the pinned
reference copy), their download and sha256 check, FastChat's rating parser, the turns that count, a real local
chat-completions server, the python-callable judge, "not run" without a key, and a tiny Llama answering two-turn
questions end to end. No test reaches the network: a download is faked or refused."""

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import FASTCHAT_SKIP, FakeResponse, fastchat_file
from lorarepro.core import paths
from lorarepro.domain.data import load_eval_splits
from lorarepro.domain.evaluation import NotRun, evaluate_splits, judge
from lorarepro.stages.reevaluate import evaluate_checkpoint

REPO = Path(__file__).resolve().parents[1]
# FastChat's judge_prompts.jsonl at the pinned commit, where $LORAREPRO_FASTCHAT_DATA names a local copy
REFERENCE_PROMPTS = fastchat_file("judge_prompts")
# Where the reference copy is absent: the four single-answer entries with FastChat's field names, so
# every test but the verbatim one still runs (turn-2 prompts hold "### User:", as FastChat's do).
STAND_IN = {
    "single-v1": ("judge turn 1", "[Question]\n{question}\n\n[Answer]\n{answer}"),
    "single-math-v1": ("judge turn 1 with reference", "[Question]\n{question}\n\n[Reference]\n{ref_answer_1}\n\n[Answer]\n{answer}"),
    "single-v1-multi-turn": ("judge turn 2", "### User:\n{question_1}\n### A:\n{answer_1}\n### User:\n{question_2}\n### A:\n{answer_2}"),
    "single-math-v1-multi-turn": ("judge turn 2 with reference",
                                  "[Reference]\n{ref_answer_1}\n{ref_answer_2}\n### User:\n{question_1}\n### A:\n{answer_1}"
                                  "\n### User:\n{question_2}\n### A:\n{answer_2}"),
}

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


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A download the test did not fake is a failure, never a request."""
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr("requests.get", refuse)


@pytest.fixture
def prompts_file(tmp_path_factory, monkeypatch) -> Path:
    """FastChat's judge prompts as `evaluation.judge.prompts` takes them: the reference copy, else the
    stand-in with its sha256 pinned for the test."""
    if REFERENCE_PROMPTS is not None:
        return REFERENCE_PROMPTS
    path = tmp_path_factory.mktemp("prompts") / "judge_prompts.jsonl"
    path.write_text("".join(json.dumps({"name": name, "type": "single", "system_prompt": system, "prompt_template": template,
                                        "output_format": "[[rating]]"}) + "\n" for name, (system, template) in STAND_IN.items()))
    monkeypatch.setattr(judge, "PROMPTS_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


@pytest.fixture
def prompts(prompts_file) -> dict:
    return judge.load_prompts({"kind": "python", "callable": "test_judge:turn_judge", "prompts": str(prompts_file)})


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.httpd.shutdown()


@pytest.fixture
def spec(server, monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret-123")
    return {"kind": "openai_chat", "model": "gpt-4-0613", "base_url": server.url, "api_key_env": "TEST_JUDGE_KEY", "retries": 0}


def test_http_judge_scores_and_sends_model_temperature_and_reference(server, spec, prompts, tmp_path):
    grader = judge.make_judge(spec)
    answers = [["anna has 4", "ben has 2"], ["toys are fun", "fun"]]
    assert judge.mt_bench_score(grader, prompts, [MATH, WRITING], answers, tmp_path) == 7.0
    assert len(server.requests) == 4  # 2 questions x 2 turns
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-secret-123"
    assert first["body"]["model"] == "gpt-4-0613" and first["body"]["temperature"] == 0 and first["body"]["max_tokens"] == 2048
    math_turn1, math_turn2, writing_turn1, _ = (r["body"]["messages"][-1]["content"] for r in server.requests)
    assert "anna has 4 apples" in math_turn1 and "anna has 4" in math_turn1
    assert "ben has 2 apples" in math_turn2 and "and how many does ben have ?" in math_turn2
    assert "reference" not in writing_turn1.lower()  # references only for math, reasoning and coding
    # cached by content: the same answers again cost no request; another answer does
    assert judge.mt_bench_score(grader, prompts, [MATH], [answers[0]], tmp_path) == 7.0 and len(server.requests) == 4
    judge.mt_bench_score(grader, prompts, [MATH], [["anna has 4", "ben has 3"]], tmp_path)  # turn 2 only
    assert len(server.requests) == 5
    assert "sk-secret" not in "".join(p.read_text() for p in tmp_path.iterdir())
    assert judge.describe(spec, {"test": 7.0}) == {"kind": "openai_chat", "model": "gpt-4-0613", "prompts": {
        "url": judge.PROMPTS_URL, "commit": judge.FASTCHAT_COMMIT, "sha256": judge.PROMPTS_SHA256}}
    assert judge.FASTCHAT_COMMIT in judge.PROMPTS_URL
    assert judge.describe(spec, {"test": None}) is None  # configured but not run (e.g. no key): no judge scored it


def test_unrated_replies_are_left_out_and_http_errors_are_clear(server, spec, prompts):
    grader = judge.make_judge(spec)
    # FastChat's show_result.py: a reply without a rating (-1) is left out of the mean; the details count it
    server.replies = [(200, "A good answer, I would say seven."), (200, "Rating: [[4]]")]
    score = judge.mt_bench_score(grader, prompts, [WRITING], [["a", "b"]], None)
    assert score == 4.0 and score.details == {"metric": "mt_bench", "turns": [1, 2], "replies": 2, "unrated": 1,
                                              "turn_means": {"1": None, "2": 4.0}}
    server.replies = [(200, "A good answer, I would say seven."), (200, "nine")]
    with pytest.raises(judge.JudgeError, match=r"gpt-4-0613.*no rating .* any of its 2 replies.*seven"):
        judge.mt_bench_score(grader, prompts, [WRITING], [["a", "b"]], None)
    server.replies = [(401, '{"error": "bad key sk-secret-123"}')]
    with pytest.raises(judge.JudgeError, match=r"\$TEST_JUDGE_KEY.*HTTP 401") as err:
        grader(judge.messages(prompts, WRITING, ["a"], 1))
    assert "sk-secret-123" not in str(err.value)  # the echoed key is scrubbed
    retrying = judge.OpenAIChat("gpt-4-0613", server.url, "TEST_JUDGE_KEY", retries=2, backoff=0.01)
    server.replies = [(503, "busy"), (429, "slow down"), (200, "[[3]]")]
    assert retrying(judge.messages(prompts, WRITING, ["a"], 1)) == "[[3]]"


@pytest.mark.parametrize("reply, value", [
    ("Fine. Rating: [[7]]", 7), ("Rating: [[8.5]]", 8.5), ("Rating: [6]", 6), ("[[7.]]", 7),
    ("[[2]] at first, then [[9]]", 2),  # the first match, as re.search
    ("see [3], then Rating: [[9]]", 9),  # "[N]" only where no "[[N]]" is
    ("I would say seven.", -1), ("Rating: [[-3]]", -1), ("[[ten]]", -1)])
def test_rating_is_fastchats(reply, value):
    assert judge.rating(reply) == value


@pytest.mark.skipif(REFERENCE_PROMPTS is None, reason=FASTCHAT_SKIP)
@pytest.mark.parametrize("category", ["math", "reasoning", "coding", "writing"])
def test_grading_messages_are_fastchats_verbatim(category):
    """Each of the four cases equals, character for character, FastChat's run_judge_single on its own prompts."""
    entries = {e["name"]: e for e in map(json.loads, REFERENCE_PROMPTS.read_text(encoding="utf-8").splitlines())}
    prompts = judge.load_prompts({"kind": "python", "callable": "test_judge:turn_judge", "prompts": str(REFERENCE_PROMPTS)})
    question = {"turns": ["What is 1 + {x}?", "And times 3?"], "category": category,
                "reference": ["1 + {x} is 1 more than x", "3(1 + x)"]}
    answers = ["It is {x} + 1.", "3x + 3, with \"quotes\" and [[brackets]]"]
    q1, q2 = question["turns"]
    r1, r2 = question["reference"]
    a1, a2 = answers
    if category in ("math", "reasoning", "coding"):  # FastChat's NEED_REF_CATS: the math judges, with references
        first, second = entries["single-math-v1"], entries["single-math-v1-multi-turn"]
        user1 = first["prompt_template"].format(question=q1, answer=a1, ref_answer_1=r1)
        user2 = second["prompt_template"].format(question_1=q1, question_2=q2, answer_1=a1, answer_2=a2, ref_answer_1=r1, ref_answer_2=r2)
    else:
        first, second = entries["single-v1"], entries["single-v1-multi-turn"]
        user1 = first["prompt_template"].format(question=q1, answer=a1)
        user2 = second["prompt_template"].format(question_1=q1, question_2=q2, answer_1=a1, answer_2=a2)
    assert judge.messages(prompts, question, answers, 1) == [{"role": "system", "content": first["system_prompt"]},
                                                             {"role": "user", "content": user1}]
    assert judge.messages(prompts, question, answers, 2) == [{"role": "system", "content": second["system_prompt"]},
                                                             {"role": "user", "content": user2}]
    assert "{x}" in user1 and r1 in user1 or category == "writing"  # the text is filled in, never formatted again


def test_prompts_copy_must_have_the_pinned_sha256(prompts_file, tmp_path):
    tampered = tmp_path / "judge_prompts.jsonl"
    tampered.write_bytes(prompts_file.read_bytes().replace(b"[[rating]]", b"[[score]]", 1))
    with pytest.raises(judge.JudgeError, match=rf"{tampered}.*evaluation.judge.prompts.*sha256 .*expected {judge.PROMPTS_SHA256}"):
        judge.load_prompts({"kind": "python", "prompts": str(tampered)})
    with pytest.raises(judge.JudgeError, match=r"evaluation.judge.prompts.*cannot read .*missing.jsonl"):
        judge.load_prompts({"kind": "python", "prompts": str(tmp_path / "missing.jsonl")})


def test_prompts_are_downloaded_once_checked_and_cached(prompts_file, tmp_path, monkeypatch):
    import requests

    monkeypatch.chdir(tmp_path)
    spec = {"kind": "python", "callable": "test_judge:turn_judge"}
    fetched = []

    def serve(content: bytes, status: int = 200):
        monkeypatch.setattr(requests, "get", lambda url, timeout: fetched.append(url) or FakeResponse(content, status))

    serve(prompts_file.read_bytes())
    assert set(judge.load_prompts(spec)) >= set(judge.PROMPT_NAMES.values())
    assert fetched == [judge.PROMPTS_URL] and paths.JUDGE_PROMPTS.read_bytes() == prompts_file.read_bytes()
    assert judge.load_prompts(spec) and len(fetched) == 1  # from the cache
    paths.JUDGE_PROMPTS.write_text("stale")
    assert judge.load_prompts(spec) and len(fetched) == 2  # a cache that fails the check is fetched again
    serve(b"<html>moved</html>")
    paths.JUDGE_PROMPTS.unlink()
    with pytest.raises(judge.JudgeError, match=rf"{judge.PROMPTS_URL}.*evaluation.judge.prompts.*sha256"):
        judge.load_prompts(spec)
    assert not paths.JUDGE_PROMPTS.exists()  # nothing unverified is cached
    serve(b"", 404)
    with pytest.raises(judge.JudgeError, match=rf"cannot download .*{judge.PROMPTS_URL}.*404.*evaluation.judge.prompts"):
        judge.load_prompts(spec)

    def unreachable(url, timeout):
        raise requests.ConnectionError("Name or service not known")

    monkeypatch.setattr(requests, "get", unreachable)
    with pytest.raises(judge.JudgeError, match=rf"{judge.PROMPTS_URL}.*ConnectionError.*evaluation.judge.prompts"):
        judge.load_prompts(spec)


def test_first_turn_only_and_questions_without_references(prompts, tmp_path):
    SEEN.clear()
    grader = judge.make_judge({"kind": "python", "callable": "test_judge:turn_judge"})
    score = judge.mt_bench_score(grader, prompts, [MATH, WRITING], [["x"], ["z"]], tmp_path, turns=[1])
    assert score == 8.0 and len(SEEN) == 2 and score.details["turn_means"] == {"1": 8.0}
    with pytest.raises(NotRun, match=r"question 1 \(math: .*no reference answer for turn 2.*fields.reference"):
        judge.mt_bench_score(grader, prompts, [{**MATH, "reference": MATH["reference"][:1]}], [["x", "y"]], tmp_path)
    assert judge.mt_bench_score(grader, prompts, [{**MATH, "reference": MATH["reference"][:1]}], [["x"]], tmp_path, [1]) == 8.0
    with pytest.raises(NotRun, match=r"question 1 \(writing: .*has 1 turn\(s\); mt_bench_turns grades turn 2"):
        judge.mt_bench_score(grader, prompts, [{**WRITING, "turns": WRITING["turns"][:1]}], [["x"]], tmp_path)


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
    return "[[6]]" if "### User:" in messages[-1]["content"] else "[[8]]"


def test_python_callable_judge(prompts, tmp_path):
    SEEN.clear()
    grader = judge.make_judge({"kind": "python", "callable": "test_judge:turn_judge"})
    assert grader.name == "test_judge:turn_judge"
    assert judge.mt_bench_score(grader, prompts, [MATH, WRITING], [["x", "y"], ["z", "w"]], tmp_path) == 7.0
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


def test_tiny_llama_answers_two_turns_end_to_end(tmp_path, monkeypatch, prompts_file):
    import torch

    from lorarepro.domain import families
    from lorarepro.domain.data import prepare_task, vocabulary

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
    evaluation = {"judge": {"kind": "python", "callable": "test_judge:turn_judge", "prompts": str(prompts_file)}}
    details = {}
    metrics, not_run = evaluate_splits(family, model, tokenizer, load_eval_splits(tmp_path / "chat", manifest), manifest, 32,
                                       evaluation, details)
    assert metrics == {"validation": 7.0, "test": 7.0} and not_run == {}
    assert details["test"] == {"metric": "mt_bench", "turns": [1, 2], "replies": 4, "unrated": 0, "turn_means": {"1": 8.0, "2": 6.0}}
    assert len(SEEN) == 4  # the test split's requests were all cached from the validation split's
    turn2 = SEEN[1][-1]["content"]  # the math question's second turn: the whole conversation so far
    assert turn2.index(MATH["turns"][0]) < turn2.index(MATH["turns"][1])
    # the paper's first-turn score: mt_bench_turns flows from the task config through the manifest
    first = prepare_task("chat_first", {**chat_task(tmp_path / "src"), "mt_bench_turns": [1]}, 0, tmp_path / "chat_first")
    assert first["mt_bench_turns"] == [1] and "mt_bench_turns" not in manifest
    SEEN.clear()
    metrics, _ = evaluate_splits(family, model, tokenizer, {"test": load_eval_splits(tmp_path / "chat_first", first)["test"]},
                                 first, 32, evaluation)
    assert metrics == {"test": 8.0} and len(SEEN) == 0  # turn 1 only, each reply cached above
    answers = family.chat_answers(model, tokenizer, [["question : how many apples answer :", "question : and ben answer :"]],
                                  manifest, 32)
    assert len(answers[0]) == 2 and all(len(a.split()) <= 4 for a in answers[0])
    assert any(paths.JUDGE_CACHE.iterdir())


@pytest.fixture
def chat_workspace(workspace):
    """The shared workspace plus the local chat task; its outputs are removed afterwards."""
    from lorarepro.domain.experiment import validate
    from lorarepro.domain.data import prepare_task

    cfg = dict(workspace, seeds=[0], tasks={**workspace["tasks"], "chat_tiny": chat_task(paths.DATA / "external" / "chat_tiny")},
               tables=[{"id": "table_chat", "caption": "chat", "tasks": ["chat_tiny"], "methods": ["lora_r8"]}], figures=[])
    cfg["claims"]["comparisons"] = []  # no claims under test (the claims file's relative path does not resolve here)
    validate(cfg)
    prepare_task("chat_tiny", cfg["tasks"]["chat_tiny"], cfg["data_seed"], paths.prepared_dir("chat_tiny"))
    yield cfg
    for path in (paths.DATA / "external" / "chat_tiny", paths.prepared_dir("chat_tiny"), paths.CHECKPOINTS / "chat_tiny",
                 paths.RESULTS / "runs" / "chat_tiny", paths.RESULTS / "tables", paths.JUDGE_CACHE):
        shutil.rmtree(path, ignore_errors=True)


def test_run_without_judge_finishes_with_not_run_and_the_table_says_so(chat_workspace, prompts_file):
    from lorarepro.core import tracking
    from lorarepro.reporting import tables
    from lorarepro.audit import artifacts, mlflow_runs, rerun
    from lorarepro.domain.experiment import resolve_run
    from lorarepro.stages.training.train import train_task_method

    cfg = chat_workspace
    (result,) = train_task_method(cfg, resolve_run(cfg, "chat_tiny", "lora_r8"))
    assert result["status"] == "FINISHED" and result["metric"] == "mt_bench"
    assert result["metrics"] == {"validation": None, "test": None}
    assert set(result["not_run"]) == {"validation", "test"} and result["judge"] is None
    assert json.loads(paths.run_result("chat_tiny", "lora_r8", 0).read_text())["not_run"] == result["not_run"]
    assert (paths.checkpoint_dir("chat_tiny", "lora_r8", 0) / "adapter_model.safetensors").is_file()  # judge it later
    tracked = tracking.mlflow_client(cfg)[0].get_run(result["lineage"]["mlflow_run_id"]).data
    assert "test_mt_bench" not in tracked.metrics and tracked.tags["not_run.test"] == result["not_run"]["test"]
    files, entry = tables.table_files("table_chat", cfg, {})
    md = files[paths.table("table_chat", "md")]
    row = next(line for line in md.splitlines() if line.startswith("| LoRA"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["LoRA (r=8)", "not run"]  # no number; the empty paper and Avg columns are dropped
    assert f"Not run: chat_tiny (LoRA (r=8)): {result['not_run']['test']}." in md
    assert entry["runs"] == [str(paths.run_result("chat_tiny", "lora_r8", 0))]
    run = artifacts.Run("chat_tiny", "lora_r8", 0, result)
    assert [r["status"] for r in artifacts.check_metrics([run])] == ["info"]
    assert [r["status"] for r in mlflow_runs.check(cfg, [run])[0]] == ["pass"], mlflow_runs.check(cfg, [run])[0]
    assert [r["status"] for r in rerun.reevaluate([run])] == ["pass"]  # not run again, for the same reason
    # with a judge set later, the saved checkpoint is scored without training again; the result records
    # the judge (never a key), MLflow gets the metrics and loses the not-run tags
    cfg = dict(cfg, evaluation={"judge": {"kind": "python", "callable": "test_judge:turn_judge", "prompts": str(prompts_file)}})
    judged = evaluate_checkpoint(cfg, "chat_tiny", "lora_r8", 0)
    assert judged["metrics"] == {"validation": 7.0, "test": 7.0} and "not_run" not in judged
    assert judged["judge"] == {"kind": "python", "model": "test_judge:turn_judge", "prompts": {
        "url": judge.PROMPTS_URL, "commit": judge.FASTCHAT_COMMIT, "sha256": judge.PROMPTS_SHA256}}
    assert judged["evaluation"]["test"]["unrated"] == 0
    assert json.loads(paths.run_result("chat_tiny", "lora_r8", 0).read_text()) == judged
    assert set(judged) == set(result) - {"not_run"} | {"evaluation"} and judged["train"] == result["train"]
    run = artifacts.Run("chat_tiny", "lora_r8", 0, judged)
    assert [r["status"] for r in mlflow_runs.check(cfg, [run])[0]] == ["pass"], mlflow_runs.check(cfg, [run])[0]
    assert not any(k.startswith("not_run") for k in tracking.mlflow_client(cfg)[0].get_run(judged["lineage"]["mlflow_run_id"]).data.tags)
    assert [r["status"] for r in rerun.reevaluate([run], cfg["evaluation"])] == ["pass"]
    assert [r["status"] for r in artifacts.check_metrics([run])] == ["pass"]


def test_config_refuses_misplaced_metric_and_missing_mt_bench_fields(params, tmp_path):
    from lorarepro.core.config import ConfigError
    from lorarepro.domain.experiment import validate

    def check(task, **extra):
        validate({**params, "tasks": {**params["tasks"], "chat": task}, **extra})

    with pytest.raises(ConfigError, match="tasks.chat.metric"):
        check({**params["tasks"]["sentiment"], "metric": "mt_bench"})  # an nlu task
    task = chat_task(tmp_path)
    check(task)
    check({**task, "mt_bench_turns": [1]}, evaluation={"judge": {"kind": "python", "callable": "m:f", "prompts": "prompts.jsonl"}})
    with pytest.raises(ConfigError, match="mt_bench_turns"):
        check({**task, "mt_bench_turns": [3]})  # FastChat's prompts grade two turns
    del task["splits"]["test"]["fields"]["category"]
    with pytest.raises(ConfigError, match=r"tasks.chat.splits.validation': an MT-Bench split needs fields \['category'\]"):
        check(task)
    with pytest.raises(ConfigError, match="evaluation.judge.callable"):
        check(chat_task(tmp_path), evaluation={"judge": {"kind": "python"}})


def test_evaluate_command_names_what_is_missing(tmp_path, monkeypatch, capsys, params):
    import yaml

    from lorarepro.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "arithmetic", "lora_r8"]) == 2
    assert "params.yaml" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "workflow" / "configs").mkdir(parents=True)  # the claims file params.yaml names
    shutil.copy(REPO / "workflow" / "configs" / "claims.yaml", tmp_path / "workflow" / "configs")
    assert main(["evaluate", "arithmetic", "lora_r8", "--seeds", "0"]) == 1
    assert "no result to evaluate again: results/runs/arithmetic/lora_r8/seed0.json" in capsys.readouterr().err
