"""Tests of lorarepro.domain.data: determinism, disjointness, manifests, task rules, errors."""

import hashlib
import json
import re
from itertools import product

import numpy as np
import pytest

from lorarepro.domain.data import (
    load_manifest,
    load_split,
    prepare_pretext,
    prepare_task,
    vocabulary,
)
from lorarepro.domain.data import generation, nlu, vision
from lorarepro.domain.data.io import GENERATORS, fingerprint

SEED = 1234
TASKS = {  # the shape of params.yaml `tasks:` entries, smaller where it keeps the tests fast
    "sentiment": {"family": "nlu", "source": "synthetic", "generator": "sentiment",
                  "mirrors": "SST-2", "sizes": {"train": 600, "validation": 100, "test": 300}},
    "nli": {"family": "nlu", "source": "synthetic", "generator": "nli", "mirrors": "MNLI",
            "sizes": {"train": 600, "validation": 100, "test": 300}},
    "paraphrase": {"family": "nlu", "source": "synthetic", "generator": "paraphrase",
                   "sizes": {"train": 600, "validation": 100, "test": 300}},
    "digits": {"family": "vision", "source": "sklearn_digits", "generator": "digits",
               "sizes": {"train": 500, "validation": 100, "test": 400}},
    "digits_inverted": {"family": "vision", "source": "sklearn_digits",
                        "generator": "digits_inverted",
                        "sizes": {"train": 500, "validation": 100, "test": 400}},
    "arithmetic": {"family": "generation", "source": "synthetic", "generator": "arithmetic",
                   "sizes": {"train": 800, "validation": 100, "test": 300}},
}
KEY = {"nlu": "text", "vision": "pixels", "generation": "question"}
SPLITS = ["train", "validation", "test"]
OOD = [f"ood_s{s}" for s in range(1, 6)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    return {name: (root / name, prepare_task(name, cfg, SEED, root / name))
            for name, cfg in TASKS.items()}


@pytest.fixture(scope="module")
def pretext(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretext")
    sizes = {"nlu": 1500, "generation": 1500, "vision": 0}
    return {fam: (root / fam, prepare_pretext(fam, SEED, n, root / fam))
            for fam, n in sizes.items()}


def _keys(df, family):
    column = df[KEY[family]]
    return [np.asarray(v, dtype=np.float32).tobytes() for v in column] if family == "vision" \
        else list(column)


def _tokens(text):
    """Whitespace tokens with numbers split into digits, as the word-level tokenizer does."""
    return [t for w in text.split() for t in (list(w) if w.isdigit() else [w])]


# --- registry and determinism ------------------------------------------------------------------
def test_registry_holds_every_generator_and_refuses_duplicates():
    assert set(TASKS) <= set(GENERATORS)
    with pytest.raises(ValueError, match="sentiment"):
        GENERATORS.register("sentiment", lambda *a: None)


@pytest.mark.parametrize("name", ["sentiment", "nli", "paraphrase", "digits", "arithmetic"])
def test_same_inputs_give_identical_bytes(name, prepared, tmp_path):
    again = prepare_task(name, TASKS[name], SEED, tmp_path)
    task_dir, first = prepared[name]
    assert again["sha256"] == first["sha256"]
    for split, entry in first["splits"].items():
        assert (tmp_path / entry["file"]).read_bytes() == (task_dir / entry["file"]).read_bytes()


@pytest.mark.parametrize("name", ["sentiment", "digits", "arithmetic"])
def test_other_data_seed_gives_other_data(name, prepared, tmp_path):
    other = prepare_task(name, TASKS[name], SEED + 1, tmp_path)
    assert other["sha256"] != prepared[name][1]["sha256"]
    family = TASKS[name]["family"]
    ours = set(_keys(load_split(prepared[name][0], "train"), family))
    assert ours != set(_keys(load_split(tmp_path, "train"), family))


# --- sizes, disjointness, manifest -------------------------------------------------------------
@pytest.mark.parametrize("name", list(TASKS))
def test_sizes_honoured_and_splits_disjoint(name, prepared):
    task_dir, manifest = prepared[name]
    family = TASKS[name]["family"]
    seen = set()
    for split in SPLITS:
        keys = _keys(load_split(task_dir, split), family)
        assert len(keys) == TASKS[name]["sizes"][split] == manifest["splits"][split]["rows"]
        assert len(set(keys)) == len(keys) and not seen & set(keys)
        seen |= set(keys)


@pytest.mark.parametrize("name", list(TASKS))
def test_manifest_content_and_hashes(name, prepared):
    task_dir, manifest = prepared[name]
    assert load_manifest(task_dir) == json.loads(json.dumps(manifest))
    cfg, family = TASKS[name], TASKS[name]["family"]
    assert (manifest["task"], manifest["family"], manifest["data_seed"]) == (name, family, SEED)
    assert (manifest["source"], manifest["generator"]) == (cfg["source"], cfg["generator"])
    expected = SPLITS + (OOD if family == "vision" else [])
    assert sorted(manifest["splits"]) == sorted(expected)
    for split, entry in manifest["splits"].items():
        data = (task_dir / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["rows"] == len(load_split(task_dir, split))
    assert manifest["sha256"] == fingerprint(e["sha256"] for e in manifest["splits"].values())
    assert sorted(p.name for p in task_dir.iterdir()) == sorted(
        [f"{s}.parquet" for s in expected] + ["manifest.json"])  # no temp files left behind
    if family == "nlu":
        assert len(manifest["label_words"]) == manifest["num_labels"]
    if family == "vision":
        assert manifest["num_labels"] == 10 and manifest["image_size"] == 8
        assert manifest["ood_severities"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("name", ["sentiment", "nli", "paraphrase", "digits", "digits_inverted"])
def test_labels_not_degenerate(name, prepared):
    task_dir, manifest = prepared[name]
    labels = load_split(task_dir, "train")["label"]
    counts = labels.value_counts()
    assert sorted(counts.index) == list(range(manifest["num_labels"]))
    assert counts.min() > 0.4 * len(labels) / manifest["num_labels"]


# --- nlu ---------------------------------------------------------------------------------------
def test_nlu_rules():
    p = {"subj": "man", "verb": "eating", "obj": "apple", "color": "red", "loc": None,
         "neg": False, "extra": None}
    assert nlu.nli_label(p, dict(p, subj="person", color=None, obj="fruit")) == nlu.ENTAIL
    assert nlu.nli_label(p, dict(p, neg=True, obj="fruit")) == nlu.CONTRADICT
    assert nlu.nli_label(p, dict(p, color="green")) == nlu.CONTRADICT
    assert nlu.nli_label(p, dict(p, loc="park")) == nlu.NEUTRAL
    assert nlu.nli_label(p, dict(p, neg=True, loc="park")) == nlu.NEUTRAL
    assert nlu.nli_label(p, dict(p, subj="woman")) == nlu.NEUTRAL
    assert nlu.nli_label(p, dict(p, extra="for fun")) == nlu.NEUTRAL


def test_nlu_labels_follow_rules_without_noise(tmp_path):
    cfg = dict(TASKS["sentiment"], label_noise=0.0, hard_fraction=1.0)
    prepare_task("s", cfg, SEED, tmp_path)
    df = load_split(tmp_path, "test")
    polarity = {w: 1 for w in nlu.POSITIVE} | {w: 0 for w in nlu.NEGATIVE}
    for text, label in zip(df["text"], df["label"]):
        sentence = text.split(" : ", 1)[1].removesuffix(" result :")
        if "although" not in sentence and " but " not in sentence:
            words = sentence.split()
            assert label == polarity[words[-1]] ^ any(w in nlu.NEGATIONS for w in words)
        if " but " in sentence:  # the second clause decides
            words = sentence.split(" but ")[1].split()
            assert label == polarity[words[-1]] ^ any(w in nlu.NEGATIONS for w in words)


@pytest.mark.parametrize("name", ["nli", "digits"])
def test_train_label_noise_flips_the_training_split_only(tmp_path, name):
    clean = prepare_task(name, dict(TASKS[name], label_noise=0.0), SEED, tmp_path / "a")
    noisy = prepare_task(name, dict(TASKS[name], label_noise=0.0, train_label_noise=0.3), SEED, tmp_path / "b")
    assert noisy["train_label_noise"] == 0.3 and "train_label_noise" not in clean
    for split in ("validation", "test"):
        assert load_split(tmp_path / "a", split).equals(load_split(tmp_path / "b", split))
    a, b = load_split(tmp_path / "a", "train"), load_split(tmp_path / "b", "train")
    flipped = (a["label"] != b["label"]).mean()
    assert 0.2 < flipped < 0.4 and a.drop(columns="label").equals(b.drop(columns="label"))


def test_label_noise_rate(tmp_path):
    clean = prepare_task("nli", dict(TASKS["nli"], label_noise=0.0), SEED, tmp_path / "a")
    noisy = prepare_task("nli", dict(TASKS["nli"], label_noise=0.2), SEED, tmp_path / "b")
    assert clean["label_noise"] == 0.0 and noisy["label_noise"] == 0.2
    a, b = load_split(tmp_path / "a", "train"), load_split(tmp_path / "b", "train")
    assert list(a["text"]) == list(b["text"])
    assert 0.12 < (a["label"] != b["label"]).mean() < 0.28


@pytest.mark.parametrize("name", ["sentiment", "nli", "paraphrase"])
def test_nlu_prompts_are_short(name, prepared):
    for split in SPLITS:
        texts = load_split(prepared[name][0], split)["text"]
        assert max(len(t.split()) for t in texts) <= 40
        assert all(t.endswith(" result :") and t == t.lower() for t in texts)


def test_nlu_pretext_disjoint_from_tasks(prepared, pretext):
    frame = load_split(pretext["nlu"][0], "pretext")
    sentences = list(frame[frame["target"] == ""]["text"])
    assert len(set(sentences)) == len(sentences) == 1500 - round(nlu.LEXICAL_SHARE * 1500)
    assert not any("result" in s or ":" in s for s in sentences)
    lexical = frame[frame["target"] != ""]
    assert set(lexical["target"]) <= {w for ws in nlu.LABEL_WORDS.values() for w in ws}
    assert all(len(t.split()) <= 9 for t in lexical["text"])  # words and word pairs, no sentences
    # each prompt template as a regex whose groups are the sentences it holds
    prompts = {name: "^" + re.sub(r"\\\{\w\\\}", "(.*)", re.escape(p)) + "$"
               for name, p in nlu.PROMPTS.items()}
    task_sentences = set()
    for name in ["sentiment", "nli", "paraphrase"]:
        for split in SPLITS:
            for text in load_split(prepared[name][0], split)["text"]:
                task_sentences.update(re.match(prompts[name], text).groups())
    assert len(task_sentences) > 2000 and not task_sentences & set(sentences)


# --- vocabulary ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family,tasks,columns", [
    ("nlu", ["sentiment", "nli", "paraphrase"], ["text"]),
    ("generation", ["arithmetic"], ["question", "solution", "answer"])])
def test_vocabulary_covers_every_token(family, tasks, columns, prepared, pretext):
    vocab = vocabulary(family)
    assert vocab == sorted(set(vocab))
    texts = [t for name in tasks for split in SPLITS for col in columns
             for t in load_split(prepared[name][0], split)[col]]
    texts += list(load_split(pretext[family][0], "pretext")["text"])
    missing = {tok for text in texts for tok in _tokens(text)} - set(vocab)
    assert not missing
    assert set(nlu.LABEL_WORDS["nli"]) <= set(vocabulary("nlu"))
    if family == "generation":
        assert {str(d) for d in range(10)} <= set(vocab)
        assert not [w for w in vocab if w.isdigit() and len(w) > 1]


def test_vocabulary_rejects_vision_and_unknown():
    for family in ["vision", "audio"]:
        with pytest.raises(ValueError, match=family):
            vocabulary(family)


# --- generation ----------------------------------------------------------------------------------
def test_generation_answers_are_correct(prepared):
    step = re.compile(r"^(\d+) ([+-]) (\d+) = (\d+)$")
    for split in SPLITS:
        df = load_split(prepared["arithmetic"][0], split)
        for question, solution, answer in zip(df["question"], df["solution"], df["answer"]):
            assert question.startswith("question : ") and question.endswith(" ? answer :")
            *steps, final = solution.split(" . ")
            assert final == f"the answer is {answer}" and 1 <= len(steps) <= 2
            for s in steps:
                x, op, y, z = step.match(s).groups()
                assert int(z) == (int(x) + int(y) if op == "+" else int(x) - int(y)) >= 0
            assert steps[-1].endswith(f"= {answer}")


def test_generation_worst_case_fits_max_tokens():
    slots = {"n": "emma", "m": "lily", "p": "she", "obj": "balloons"}
    for kind, (sentence_keys, question, steps) in generation.PROBLEMS.items():
        b_range = generation.B_RANGE_TWO_STEP if len(steps) > 1 else generation.B_RANGE
        for a, b, c in product(range(*generation.A_RANGE), range(*b_range),
                               range(*generation.C_RANGE)):
            values = dict(slots, a=a, b=b, c=c)
            solved = generation.solve(steps, values)
            if solved is None:
                continue
            body = [generation.SENTENCES[k].format(**values) for k in sentence_keys]
            text = generation.QUESTION.format(body=" ".join(body + [question.format(**values)]))
            total = generation.token_count(text) + generation.token_count(solved[0])
            assert total <= generation.MAX_TOKENS, (kind, a, b, c)


def test_generation_mixes_one_and_two_step(prepared):
    steps = load_split(prepared["arithmetic"][0], "train")["solution"].str.count(" = ")
    assert 0.2 < (steps == 2).mean() < 0.8 and set(steps) == {1, 2}


def test_generation_pretext_has_no_word_problems(prepared, pretext):
    rows = list(load_split(pretext["generation"][0], "pretext")["text"])
    assert not any(w in r.split() for r in rows for w in ["question", "?", "many"])
    # "the answer is N" only restates the equation right before it (math text, not a Q/A pair)
    for r in rows:
        for before, after in zip(r.split(" . "), r.split(" . ")[1:]):
            if after.startswith("the answer is"):
                assert "=" in before and after.split()[3] == before.split()[-1]
    questions = " | ".join(load_split(prepared["arithmetic"][0], s)["question"].str.cat(sep=" | ")
                           for s in SPLITS)
    narrative = [s + " ." for r in rows for s in r.removesuffix(" .").split(" . ") if "=" not in s]
    assert narrative and not [s for s in narrative if f" {s}" in questions]
    equations = [s for r in rows for s in r.removesuffix(" .").split(" . ") if "=" in s]
    for eq in equations:
        x, op, y, _, z = eq.split()
        assert int(z) == (int(x) + int(y) if op == "+" else int(x) - int(y)) >= 0


# --- vision ------------------------------------------------------------------------------------
def test_vision_pretext_disjoint_from_downstream(prepared, pretext):
    pre = load_split(pretext["vision"][0], "pretext")
    pre_keys = set(_keys(pre, "vision"))
    assert sorted(pre["label"].value_counts()) == [len(pre) // 4] * 4
    assert len(pre) == 4 * len(vision.pools(SEED)[0])
    for name in ["digits", "digits_inverted"]:
        for split in SPLITS + ["ood_s1"]:
            images = vision.pixels_to_tensor(load_split(prepared[name][0], split))[:, 0].numpy()
            if name == "digits_inverted":
                images = vision.invert_transpose(images)  # its own inverse
            assert not pre_keys & {im.astype(np.float32).tobytes() for im in images}


def test_ood_is_corrupted_test_with_monotonic_severity(prepared):
    for name in ["digits", "digits_inverted"]:
        task_dir = prepared[name][0]
        test = load_split(task_dir, "test")
        clean = vision.pixels_to_tensor(test).numpy()
        damage = {}
        for s in range(1, 6):
            ood = load_split(task_dir, f"ood_s{s}")
            assert list(ood["label"]) == list(test["label"])
            x = vision.pixels_to_tensor(ood).numpy()
            assert x.min() >= 0 and x.max() <= 1
            diff = np.abs(x - clean).reshape(len(x), -1).mean(1)
            damage[s] = {k: diff[(ood["corruption"] == k).to_numpy()].mean()
                         for k in vision.CORRUPTIONS}
        assert set(ood["corruption"]) == set(vision.CORRUPTIONS)
        for kind in vision.CORRUPTIONS:
            curve = [damage[s][kind] for s in range(1, 6)]
            assert all(a < b for a, b in zip(curve, curve[1:])), (name, kind, curve)


def test_vision_sizes_beyond_pool_raise(tmp_path):
    cfg = dict(TASKS["digits"], sizes={"train": 1000, "validation": 100, "test": 400})
    available = len(vision.pools(SEED)[1])
    with pytest.raises(ValueError, match=rf"'big'.*{available}"):
        prepare_task("big", cfg, SEED, tmp_path)


def test_pixels_to_tensor(prepared):
    df = load_split(prepared["digits"][0], "validation")
    x = vision.pixels_to_tensor(df)
    assert tuple(x.shape) == (100, 1, 8, 8) and str(x.dtype) == "torch.float32"
    assert np.allclose(x[3].flatten().numpy(), df["pixels"][3])


# --- errors ------------------------------------------------------------------------------------
def test_unknown_generator_names_task_and_known(tmp_path):
    with pytest.raises(ValueError, match=r"'mytask'.*'nope'.*sentiment"):
        prepare_task("mytask", dict(TASKS["nli"], generator="nope"), SEED, tmp_path)


def test_family_mismatch_raises(tmp_path):
    with pytest.raises(ValueError, match="family"):
        prepare_task("nli", dict(TASKS["nli"], family="vision"), SEED, tmp_path)


def test_missing_split_and_manifest_name_the_file(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="ood_s9.parquet"):
        load_split(prepared["digits"][0], "ood_s9")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_manifest(tmp_path)


def test_corrupt_files_raise_value_error_naming_them(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"not a parquet file at all" * 10)
    with pytest.raises(ValueError, match="train.parquet"):
        load_split(tmp_path, "train")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="manifest.json"):
        load_manifest(tmp_path)
