"""External datasets (lorarepro.data.external): every local format, and the hub path through
`datasets.load_dataset` on a local dataset directory (no network)."""

import io
import json

import pandas as pd
import pytest
from PIL import Image

from lorarepro.config import ConfigError
from lorarepro.experiment import validate
from lorarepro.data import load_manifest, load_split, prepare_task

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
    from lorarepro.families.generation import extract_answer

    assert extract_answer(text) == expected
