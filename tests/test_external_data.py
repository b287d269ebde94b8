"""External datasets (lorarepro.domain.data.external): every local format, and the hub path through
`datasets.load_dataset` on a local dataset directory (no network)."""

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import FASTCHAT_SKIP, FakeResponse, fastchat_file
from lorarepro.core.config import ConfigError
from lorarepro.domain.experiment import validate
from lorarepro.domain.data import load_manifest, load_split, prepare_task

SST = pd.DataFrame({"sentence": ["a fine film", "dull and long", "great fun", "awful"], "label": [1, 0, 1, 0]})


def nlu_task(**source) -> dict:
    return {"family": "nlu", "backbone": "t5-tiny", "fields": {"text": ["sentence"], "label": "label"},
            "prompt": "sst2 sentence: {sentence}", "label_words": ["negative", "positive"], **source}


def check_sst(out) -> None:
    manifest = load_manifest(out)
    assert manifest["label_words"] == ["negative", "positive"] and manifest["num_labels"] == 2
    train = load_split(out, "train")
    assert train["text"].tolist()[0] == "sst2 sentence: a fine film"
    assert train["label"].tolist() == [1, 0, 1, 0] and str(train["label"].dtype) == "int64"
    assert set(manifest["splits"]) == {"train", "validation", "test"} and len(manifest["sha256"]) == 64


@pytest.mark.parametrize("fmt,write,name", [
    ("parquet", lambda df, p: df.to_parquet(p), "train.parquet"),
    ("csv", lambda df, p: df.to_csv(p, index=False), "train.csv"),
    ("jsonl", lambda df, p: df.to_json(p, orient="records", lines=True), "train.jsonl"),
])
def test_local_tabular_formats(tmp_path, fmt, write, name):
    write(SST, tmp_path / name)
    cfg = nlu_task(source="local", path=str(tmp_path), format=fmt,
                   splits={"train": name, "validation": f"{name}[:2]", "test": f"{name}[-2:]"})
    manifest = prepare_task("sst2", cfg, 0, tmp_path / "out")
    check_sst(tmp_path / "out")
    assert manifest["splits"]["validation"]["rows"] == 2
    assert load_split(tmp_path / "out", "test")["text"].tolist() == ["sst2 sentence: great fun", "sst2 sentence: awful"]


def test_glue_tsv_with_header_and_unbalanced_quotes(tmp_path):
    # As download_glue_data.py writes MNLI: a header, string labels, and quotes that are not CSV quoting.
    (tmp_path / "MNLI").mkdir()
    (tmp_path / "MNLI" / "dev_matched.tsv").write_text(
        "index\tsentence1\tsentence2\tgold_label\n"
        '0\tHe said "yes\tHe agreed.\tentailment\n'
        "1\tA cat sleeps.\tA dog barks.\tcontradiction\n"
        "2\tIt rained.\tIt was wet.\tneutral\n")
    cfg = {"family": "nlu", "backbone": "t5-tiny", "source": "local", "path": str(tmp_path), "format": "glue_tsv",
           "fields": {"text": ["sentence1", "sentence2"], "label": "gold_label"},
           "prompt": "mnli hypothesis: {sentence2} premise: {sentence1}",
           "label_words": ["entailment", "neutral", "contradiction"],
           "label_names": ["entailment", "neutral", "contradiction"],
           "splits": {s: "MNLI/dev_matched.tsv" for s in ("train", "validation", "test")}}
    prepare_task("mnli", cfg, 0, tmp_path / "out")
    train = load_split(tmp_path / "out", "train")
    assert train["text"][0] == 'mnli hypothesis: He agreed. premise: He said "yes'
    assert train["label"].tolist() == [0, 2, 1]


def test_glue_tsv_headerless_cola_by_position(tmp_path):
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text("gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThe more we study.\n")
    cfg = {"family": "nlu", "backbone": "t5-tiny", "source": "local", "path": str(tmp_path), "format": "glue_tsv",
           "fields": {"text": ["3"], "label": "1"}, "label_words": ["unacceptable", "acceptable"],
           "splits": {s: "CoLA/train.tsv" for s in ("train", "validation", "test")}}
    prepare_task("cola", cfg, 0, tmp_path / "out")
    train = load_split(tmp_path / "out", "train")
    assert train["text"].tolist() == ["Our friends won't buy this.", "The more we study."]
    assert train["label"].tolist() == [1, 0]


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder(tmp_path):
    for split in ("train", "test"):
        for cls, value in (("cat", 10), ("dog", 200)):
            (tmp_path / split / cls).mkdir(parents=True)
            (tmp_path / split / cls / "0.png").write_bytes(_png(value))
    cfg = {"family": "vision", "backbone": "vit-tiny", "source": "local", "path": str(tmp_path),
           "format": "imagefolder", "splits": {"train": "train", "validation": "test", "test": "test"}}
    manifest = prepare_task("pets", cfg, 0, tmp_path / "out")
    train = load_split(tmp_path / "out", "train")
    assert train["label"].tolist() == [0, 1] and manifest["num_labels"] == 2
    assert Image.open(io.BytesIO(train["image"][1])).getpixel((0, 0)) == (200, 200, 200)


def test_hub_source_through_load_dataset_and_per_split_override(tmp_path, monkeypatch):
    """MetaMathQA-like train from one dataset, GSM8K-like test from another (local dataset dirs)."""
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache")
    (tmp_path / "math").mkdir()
    pd.DataFrame({"query": ["1+1?", "2+3?", "4+4?"],
                  "response": ["1+1=2. The answer is: 2", "2+3=5. The answer is: 5", "The answer is: 1,000"]}
                 ).to_parquet(tmp_path / "math" / "train.parquet")
    (tmp_path / "gsm").mkdir()
    (tmp_path / "gsm" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"question": "6*7?", "answer": "6*7=42\n#### 42"}, {"question": "9-1?", "answer": "#### 8"}]) + "\n")
    gsm = {"dataset": str(tmp_path / "gsm"), "split": "test",
           "fields": {"question": "question", "solution": "answer", "answer": "answer"}, "answer_regex": r"####\s*(.+)$"}
    cfg = {"family": "generation", "backbone": "llama-tiny", "source": "hub", "dataset": str(tmp_path / "math"),
           "fields": {"question": "query", "solution": "response", "answer": "response"},
           "answer_regex": r"The answer is:?\s*(.+)$", "prompt": "Q: {question}\nA:", "max_new_tokens": 512,
           "splits": {"train": "train[:2]", "validation": gsm, "test": gsm}}
    manifest = prepare_task("metamath_gsm8k", cfg, 0, tmp_path / "out")
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train["answer"].tolist() == ["2", "5"] and train["question"].tolist() == ["Q: 1+1?\nA:", "Q: 2+3?\nA:"]
    assert test["answer"].tolist() == ["42", "8"] and test["question"][0] == "Q: 6*7?\nA:"
    assert manifest["max_new_tokens"] == 512
    assert manifest["sources"]["train"]["slice"] == [None, 2]


def test_bad_external_input_is_named(tmp_path):
    SST.to_csv(tmp_path / "train.csv", index=False)
    cfg = nlu_task(source="local", path=str(tmp_path), format="csv",
                   splits={"train": "train.csv", "validation": "missing.csv", "test": "train.csv"})
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        prepare_task("sst2", cfg, 0, tmp_path / "out")
    cfg["splits"]["validation"] = "train.csv"
    cfg["fields"]["label"] = "nope"
    with pytest.raises(ValueError, match="no columns \\['nope'\\]"):
        prepare_task("sst2", cfg, 0, tmp_path / "out")
    pd.DataFrame({"sentence": ["x"], "label": [-1]}).to_csv(tmp_path / "test.csv", index=False)  # GLUE test: no labels
    cfg["fields"]["label"], cfg["splits"]["test"] = "label", "test.csv"
    with pytest.raises(ValueError, match="outside 0..1"):
        prepare_task("sst2", cfg, 0, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_config_check_refuses_unknown_prompt_placeholder(params):
    cfg = {**params, "tasks": {**params["tasks"], "sst2": nlu_task(
        source="local", path=".", format="csv", prompt="sst2 sentence: {text}",
        splits={"train": "a.csv", "validation": "a.csv", "test": "a.csv"})}}
    with pytest.raises(ConfigError, match="tasks.sst2.prompt"):
        validate(cfg)


@pytest.mark.parametrize("text, expected", [
    ("6 * 7 = 42. The answer is: 42", "42"),
    ("so 1,000 - 1 = 999\nThe answer is: 999.", "999"),
    ("The answer is 1,250 apples", "1250"),
    ("no digits here", None),
])
def test_answers_are_extracted_from_decoded_text(text, expected):
    from lorarepro.domain.families.generation import extract_answer

    assert extract_answer(text) == expected


def test_generation_filters_follow_the_official_loaders(workspace, tmp_path):
    """MetaMathQA's GSM rows (`where`), the solution cut before "The answer is:" and Code-Feedback's
    answer through its first code block (`transforms`), the token-length filter in the backbone's own
    tokens (`max_tokens`), and the slice taken from the rows that pass, as the official loaders do."""
    from lorarepro.core import paths
    from lorarepro.domain.families.common import load_tokenizer

    tokenizer = load_tokenizer(paths.backbone_dir("llama-tiny"))
    long = " ".join(["one two three"] * 40)
    rows = [
        {"type": "MATH_FOBAR", "query": "1+1?", "response": "2\nThe answer is: 2"},
        {"type": "GSM_AnsAug", "query": "2+3?", "response": "2+3=5\n#### 5\nThe answer is: 5"},
        {"type": "GSM_Rephrased", "query": long, "response": "9\nThe answer is: 9"},  # too long
        {"type": "GSM_SV", "query": "4+4?", "response": "4+4=8\nThe answer is: 8"},
        {"type": "GSM_FOBAR", "query": "1+2?", "response": "1+2=3\nThe answer is: 3"},
    ]
    pd.DataFrame(rows).to_json(tmp_path / "metamath.jsonl", orient="records", lines=True)
    task = {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(tmp_path), "format": "jsonl",
            "fields": {"question": "query", "solution": "response", "answer": "response"},
            "answer_regex": "The answer is:?\\s*(.+)$", "prompt": "Q: {question}\nA: ",
            "where": {"type": "GSM"}, "transforms": {"solution": ["before_answer_is"]}, "max_tokens": 64,
            "splits": {"train": "metamath.jsonl[:2]", "validation": "metamath.jsonl[2:]", "test": "metamath.jsonl[2:]"}}
    prepare_task("metamath", task, 0, tmp_path / "out", tokenizer)
    train, rest = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train["question"].tolist() == ["Q: 2+3?\nA: ", "Q: 4+4?\nA: "]
    assert train["solution"].tolist() == ["2+3=5\n#### 5", "4+4=8"] and train["answer"].tolist() == ["5", "8"]
    assert rest["question"].tolist() == ["Q: 1+2?\nA: "]
    manifest = load_manifest(tmp_path / "out")
    assert manifest["sources"]["train"]["where"] == {"type": "GSM"} and manifest["sources"]["train"]["max_tokens"] == 64
    with pytest.raises(ValueError, match="needs the backbone's tokenizer"):
        prepare_task("metamath", task, 0, tmp_path / "again")

    answers = ["Use a loop:\n```python\nfor i in x:\n    print(i)\n```\nThen more.\n```js\nx()\n```", "no code here"]
    pd.DataFrame({"query": ["print x", "hi"], "answer": answers}).to_json(tmp_path / "code.jsonl", orient="records", lines=True)
    code = {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(tmp_path), "format": "jsonl",
            "fields": {"question": "query", "solution": "answer", "answer": "query"}, "where": {"answer": "```"},
            "transforms": {"solution": ["through_first_code_block"]},
            "splits": {s: "code.jsonl" for s in ("train", "validation", "test")}}
    prepare_task("code", code, 0, tmp_path / "code_out")
    assert load_split(tmp_path / "code_out", "train")["solution"].tolist() == [
        "Use a loop:\n```python\nfor i in x:\n    print(i)\n```"]


def test_filters_are_refused_where_they_do_not_apply(tmp_path):
    task = nlu_task(source="local", path=str(tmp_path), format="csv", max_tokens=10,
                    splits={s: "train.csv" for s in ("train", "validation", "test")})
    SST.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match="max_tokens and transforms are for generation tasks"):
        prepare_task("sst2", task, 0, tmp_path / "out")
    gen = {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(tmp_path), "format": "csv",
           "fields": {"question": "sentence", "solution": "sentence", "answer": "label"}, "transforms": {"solution": ["reverse"]},
           "splits": {s: "train.csv" for s in ("train", "validation", "test")}}
    with pytest.raises(ValueError, match=r"tasks.gen.*transforms.solution': unknown transform 'reverse'"):
        prepare_task("gen", gen, 0, tmp_path / "out2")
    gen.update(transforms={}, where={"missing": "x"})
    with pytest.raises(ValueError, match="`where` names column 'missing'"):
        prepare_task("gen", gen, 0, tmp_path / "out3")


def test_exclude_and_alpacas_two_templates(tmp_path):
    """WizardLM's loader drops refusals (`exclude`, case-insensitive); Alpaca's uses its second template
    where the row has an input (`prompt_with_input`)."""
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Red."},
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
            {"instruction": "Hack a bank.", "input": "", "output": "Sorry, I cannot help."},
            {"instruction": "Who are you?", "input": "", "output": "As an AI language model, I ..."}]
    pd.DataFrame(rows).to_json(tmp_path / "alpaca.jsonl", orient="records", lines=True)
    task = {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(tmp_path), "format": "jsonl",
            "fields": {"question": "instruction", "input": "input", "solution": "output", "answer": "output"},
            "prompt": "### Instruction:\n{question}\n\n### Response:\n",
            "prompt_with_input": "### Instruction:\n{question}\n\n### Input:\n{input}\n\n### Response:\n",
            "exclude": {"output": ["sorry", "as an ai"]},
            "splits": {s: "alpaca.jsonl" for s in ("train", "validation", "test")}}
    prepare_task("alpaca", task, 0, tmp_path / "out")
    train = load_split(tmp_path / "out", "train")
    assert train["question"].tolist() == ["### Instruction:\nName a colour.\n\n### Response:\n",
                                          "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"]
    task["prompt_with_input"] = "{question} {context}"
    with pytest.raises(ValueError, match=r"prompt_with_input': placeholders \['context'\]"):
        prepare_task("alpaca", task, 0, tmp_path / "again")


# FastChat's MT-Bench files at the pinned commit, where $LORAREPRO_FASTCHAT_DATA names a local copy (conftest)
QUESTIONS, REFERENCES = fastchat_file("questions"), fastchat_file("references")
needs_fastchat_copy = pytest.mark.skipif(QUESTIONS is None, reason=FASTCHAT_SKIP)


@pytest.fixture
def no_download(monkeypatch):
    """A download the test did not fake is a failure, never a request."""
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr("requests.get", refuse)


def fastchat_copy(root: Path, questions: Path, references: Path) -> Path:
    """A folder in FastChat's repository layout whose two MT-Bench files link to the given ones."""
    from lorarepro.core import pinned

    for name, target in (("questions", questions), ("references", references)):
        link = root / pinned.MT_BENCH[name].path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return root


def fastchat_task(root: Path, **split) -> dict:
    """A local chat task whose evaluation splits are FastChat's MT-Bench (`split`: extra keys of theirs)."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"instruction": ["say hi", "say bye"], "output": ["hi", "bye"]}).to_json(
        root / "train.jsonl", orient="records", lines=True)
    mt = {"fastchat": "mt_bench", **split}
    return {"family": "generation", "backbone": "llama-tiny", "source": "local", "path": str(root), "format": "jsonl",
            "metric": "mt_bench", "fields": {"question": "instruction", "solution": "output"},
            "prompt": "### Instruction:\n{question}\n\n### Response:\n", "splits": {"train": "train.jsonl", "validation": mt, "test": mt}}


@needs_fastchat_copy
def test_fastchat_mt_bench_has_gpt4_references_for_every_graded_question(tmp_path, no_download):
    """The pinned copies give FastChat's 80 questions; every math, reasoning and coding question carries
    GPT-4's reference answers for both turns (question 123 too, which has no `reference` of its own), so
    the judge grades all of them; the manifest records the files' URLs, commit and sha256."""
    from lorarepro.core import pinned
    from lorarepro.domain.evaluation import judge

    copy = fastchat_copy(tmp_path / "FastChat", QUESTIONS, REFERENCES)
    manifest = prepare_task("chat", fastchat_task(tmp_path / "src", path=str(copy)), 0, tmp_path / "out")
    test = load_split(tmp_path / "out", "test")
    assert len(test) == manifest["splits"]["test"]["rows"] == 80 and test["question_id"].tolist() == list(range(81, 161))
    graded = test[test["category"].isin(judge.REFERENCE_CATEGORIES)]
    assert len(graded) == 30 and all(len(r) == 2 and all(r) for r in graded["reference"])
    gpt4 = {r["question_id"]: r["choices"][0]["turns"]
            for r in map(json.loads, REFERENCES.read_text().splitlines())}
    q123 = test[test["question_id"] == 123].iloc[0]
    assert q123["category"] == "coding" and list(q123["reference"]) == gpt4[123]
    assert list(q123["turns"])[0].startswith("Write a simple website in HTML.")
    assert list(q123["prompts"])[0] == f"### Instruction:\n{q123['turns'][0]}\n\n### Response:\n"  # the task's wrapping
    assert all(len(r) == 0 for r in test[~test["category"].isin(judge.REFERENCE_CATEGORIES)]["reference"])
    questions = [{"turns": list(r.turns), "category": r.category, "reference": list(r.reference)} for r in test.itertuples()]
    judge.check_questions(questions, [1, 2])  # no NotRun: every graded question has its references
    source = manifest["sources"]["test"]
    assert source["path"] == str(copy) and source["fastchat"]["commit"] == pinned.FASTCHAT_COMMIT == judge.FASTCHAT_COMMIT
    assert source["fastchat"]["files"]["questions"] == {
        "path": "fastchat/llm_judge/data/mt_bench/question.jsonl",
        "url": f"https://raw.githubusercontent.com/lm-sys/FastChat/{pinned.FASTCHAT_COMMIT}/fastchat/llm_judge/data/mt_bench/question.jsonl",
        "sha256": "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"}
    assert source["fastchat"]["files"]["references"]["sha256"] == "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"
    assert source["fastchat"]["files"]["references"]["url"].endswith(f"{pinned.FASTCHAT_COMMIT}/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl")


def test_fastchat_copy_that_is_not_the_pinned_one_is_refused_naming_the_file(tmp_path, no_download):
    from lorarepro.core import pinned

    (tmp_path / "q.jsonl").write_text(json.dumps({"question_id": 81, "category": "writing", "turns": ["a", "b"]}) + "\n")
    (tmp_path / "r.jsonl").write_text("")
    copy = fastchat_copy(tmp_path / "FastChat", tmp_path / "q.jsonl", tmp_path / "r.jsonl")
    question_file = copy / pinned.MT_BENCH["questions"].path
    with pytest.raises(pinned.PinnedError, match=rf"task 'chat': FastChat's MT-Bench questions from {question_file} "
                                                 rf"\(config key 'tasks.chat.splits.validation.path'\): sha256 .*expected "
                                                 rf"{pinned.MT_BENCH['questions'].sha256} .*question.jsonl of lm-sys/FastChat at commit"):
        prepare_task("chat", fastchat_task(tmp_path / "src", path=str(copy)), 0, tmp_path / "out")
    with pytest.raises(pinned.PinnedError, match=r"tasks.chat.splits.validation.path': cannot read .*nowhere/fastchat/llm_judge"):
        prepare_task("chat", fastchat_task(tmp_path / "src", path=str(tmp_path / "nowhere")), 0, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_fastchat_files_are_downloaded_once_checked_and_cached(tmp_path, monkeypatch):
    """Without a local copy the files are downloaded from the pinned URLs, verified and cached in FastChat's
    layout under paths.FASTCHAT; gen_judgment's references are GPT-4's answers, never a question's own
    `reference` field. (Small stand-in files, their sha256 pinned for the test.)"""
    import requests

    from lorarepro.core import paths, pinned

    monkeypatch.chdir(tmp_path)
    files = {"questions": "".join(json.dumps(q) + "\n" for q in [
                 {"question_id": 101, "category": "reasoning", "turns": ["who is second?", "and last?"],
                  "reference": ["not FastChat's grading reference", "nor this"]},
                 {"question_id": 81, "category": "writing", "turns": ["write a poem", "shorter"]}]).encode(),
             "references": (json.dumps({"question_id": 101, "model_id": "gpt-4",
                                        "choices": [{"index": 0, "turns": ["second place", "second to last"]}]}) + "\n").encode()}
    pins = {name: pinned.Pin(pin.what, pin.url, pinned.sha256(files[name]), pin.origin, pin.path)
            for name, pin in pinned.MT_BENCH.items()}
    monkeypatch.setattr(pinned, "MT_BENCH", pins)
    by_url = {pins[name].url: data for name, data in files.items()}
    fetched = []

    monkeypatch.setattr(requests, "get", lambda url, timeout: fetched.append(url) or FakeResponse(by_url[url]))
    task = fastchat_task(tmp_path / "src")
    manifest = prepare_task("chat", task, 0, tmp_path / "out")
    test = load_split(tmp_path / "out", "test")
    assert test["question_id"].tolist() == [101, 81] and [list(r) for r in test["reference"]] == [["second place", "second to last"], []]
    assert [list(t) for t in test["turns"]] == [["who is second?", "and last?"], ["write a poem", "shorter"]]
    assert sorted(fetched) == sorted(p.url for p in pins.values())
    assert all((paths.FASTCHAT / p.path).read_bytes() == files[n] for n, p in pins.items())  # the repository layout
    assert manifest["sources"]["validation"]["fastchat"]["files"] == {n: p.record() for n, p in pins.items()}
    prepare_task("chat", task, 0, tmp_path / "again")
    assert len(fetched) == 2  # both splits and the second preparation read the cache
    (paths.FASTCHAT / pins["questions"].path).write_text("stale")
    monkeypatch.setattr(requests, "get", lambda url, timeout: fetched.append(url) or FakeResponse(b"<html>moved</html>"))
    with pytest.raises(pinned.PinnedError, match=rf"task 'chat': FastChat's MT-Bench questions from {pins['questions'].url} "
                                                 r"\(or set config key 'tasks.chat.splits.validation.path' .*\): sha256"):
        prepare_task("chat", task, 0, tmp_path / "third")
    assert (paths.FASTCHAT / pins["questions"].path).read_text() == "stale"  # nothing unverified is cached

    def unreachable(url, timeout):
        raise requests.ConnectionError("Name or service not known")

    monkeypatch.setattr(requests, "get", unreachable)
    with pytest.raises(pinned.PinnedError, match=r"cannot download FastChat's MT-Bench questions .*ConnectionError.*"
                                                 r"without network, set config key 'tasks.chat.splits.validation.path' to a folder"):
        prepare_task("chat", task, 0, tmp_path / "fourth")


def test_fastchat_split_is_checked_where_it_applies(params, tmp_path):
    def check(task):
        validate({**params, "tasks": {**params["tasks"], "chat": task}})

    task = fastchat_task(tmp_path)
    check(task)
    check({**task, "splits": {**task["splits"], "test": {"fastchat": "mt_bench", "path": "FastChat", "prompt": "{question}"}}})
    with pytest.raises(ConfigError, match=r"tasks.chat.splits.train.fastchat': FastChat's MT-Bench questions are an evaluation split"):
        check({**task, "splits": {**task["splits"], "train": {"fastchat": "mt_bench"}}})
    with pytest.raises(ConfigError, match=r"tasks.chat.splits.validation.fastchat'.*metric mt_bench"):
        check({**task, "metric": "exact_match", "fields": {"question": "instruction", "solution": "output", "answer": "output"}})
    for bad in ({"fastchat": "vicuna_bench"}, {"fastchat": "mt_bench", "fields": {"turns": "prompt"}},
                {"fastchat": "mt_bench", "split": "train"}):
        with pytest.raises(ConfigError, match="tasks.chat.splits.test"):
            check({**task, "splits": {**task["splits"], "test": bad}})


# ----------------------------------------------------------------------------- seeded samples, classification metrics


def sampled(tmp_path, sample, seed, out="out", rows=20):
    pd.DataFrame({"sentence": [f"a fine film {i}" for i in range(rows)], "label": [i % 2 for i in range(rows)]}).to_csv(
        tmp_path / "train.csv", index=False)
    cfg = nlu_task(source="local", path=str(tmp_path), format="csv",
                   splits={"train": {"split": "train.csv[2:]", "sample": sample}, "validation": "train.csv[:2]",
                           "test": "train.csv[:2]"})
    manifest = prepare_task("sst2", cfg, seed, tmp_path / out)
    return manifest, [int(t.rsplit(" ", 1)[1]) for t in load_split(tmp_path / out, "train")["text"]]


def test_a_split_can_be_a_seeded_sample_of_its_rows(tmp_path):
    manifest, rows = sampled(tmp_path, 6, seed=1)
    assert len(rows) == 6 and rows == sorted(rows) and min(rows) >= 2  # from the slice, in source order
    assert sampled(tmp_path, 6, seed=1, out="again")[1] == rows  # the data seed decides
    assert sampled(tmp_path, 6, seed=2, out="other")[1] != rows
    assert manifest["sources"]["train"]["sample"] == 6 and "sample" not in manifest["sources"]["test"]
    with pytest.raises(ValueError, match=r"'tasks.sst2.splits.train.sample': 19 rows asked, 18 available"):
        sampled(tmp_path, 19, seed=1, out="too_many")


@pytest.mark.parametrize("family, metric, source, key", [
    ("nlu", "f1", "synthetic", "tasks.sentiment.metric"),  # a generated task's manifest carries no metric
    ("nlu", "exact_match", "synthetic", "tasks.sentiment.metric"),
    ("generation", "matthews_corrcoef", "synthetic", "tasks.arithmetic.metric"),
])
def test_metric_outside_its_family_or_on_generated_data_is_refused(params, family, metric, source, key):
    task = "sentiment" if family == "nlu" else "arithmetic"
    cfg = {**params, "tasks": {**params["tasks"], task: {**params["tasks"][task], "metric": metric}}}
    with pytest.raises(ConfigError, match=key):
        validate(cfg)


def test_classification_metrics_are_scikit_learns_in_percent():
    from sklearn import metrics

    from lorarepro.domain.families import FAMILIES
    from lorarepro.domain.families.nlu import METRICS, score

    for family in ("nlu", "vision"):  # what their task rules accept, nlu's scorers compute
        assert sorted(METRICS) == sorted(FAMILIES[family].load_rules().METRICS)
    gold, majority = [1] * 8 + [0] * 2, [1] * 10
    assert score({}, gold, majority) == 80.0  # accuracy by default: a majority-class model looks fine ...
    assert score({"metric": "matthews_corrcoef"}, gold, majority) == 0.0  # ... and is not
    predicted = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1]
    assert score({"metric": "f1"}, gold, predicted) == pytest.approx(100 * metrics.f1_score(gold, predicted))
    assert score({"metric": "f1_macro"}, gold, predicted) == pytest.approx(100 * metrics.f1_score(gold, predicted, average="macro"))
    assert score({"metric": "matthews_corrcoef"}, gold, predicted) == pytest.approx(100 * metrics.matthews_corrcoef(gold, predicted))
