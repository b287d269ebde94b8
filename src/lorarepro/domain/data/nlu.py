"""Synthetic prompted classification tasks mirroring GLUE (SST-2, MNLI, MRPC) for a tiny T5.

A `hard_fraction` of the examples needs a compositional rule (negation flips, the main clause of
"but"/"although" wins, hypernyms entail, conflicting details contradict, role swaps and passives
change or keep meaning); the rest are decided by one lexical cue, so a tiny model learns them in a
few epochs while the hard part separates methods. A small label-noise rate keeps the ceiling below
100%. Sentences are split between pretext and tasks by a seed-independent hash, so the backbone's
pretraining corpus never holds a task sentence.
"""

from functools import partial

import numpy as np
import pandas as pd

from lorarepro.domain.data.io import (
    GENERATORS,
    cut_splits,
    flip_labels,
    noisy_train_split,
    rng_for,
    sample_unique,
    split_sizes,
    stable_bucket,
)

DEFAULT_LABEL_NOISE = 0.05
# Share of examples that need a compositional rule; the rest are decided by one lexical cue, so
# a tiny model learns the easy part within a few epochs and the hard part separates methods.
DEFAULT_HARD_FRACTION = 0.4
PRETEXT_BUCKETS = 4  # a sentence whose bucket is 0 belongs to the pretext corpus only

# --- sentiment lexicon -------------------------------------------------------------------------
NOUNS = ["film", "movie", "show", "book", "album", "game", "meal", "hotel", "play", "song",
         "concert", "trip", "novel", "acting", "plot", "music", "ending", "cast", "dialogue",
         "pacing", "food", "service", "writing", "script"]
POSITIVE = ["good", "great", "wonderful", "fun", "charming", "brilliant", "pleasant", "lovely",
            "superb", "clever", "moving", "delightful"]
NEGATIVE = ["bad", "awful", "boring", "dull", "terrible", "poor", "weak", "messy", "bland",
            "tedious", "clumsy", "dreadful"]
INTENSIFIERS = ["very", "really", "quite", "truly", "extremely", "rather", "so", "incredibly"]
NEGATIONS = ["not", "never"]
NEGATION_P = 0.35  # chance that a clause of a hard sentiment example is negated

# --- nli lexicon: subject -> hypernym, verb -> {object: hypernym} ------------------------------
SUBJECTS = {"man": "person", "woman": "person", "teacher": "person", "doctor": "person",
            "chef": "person", "farmer": "person", "nurse": "person", "boy": "child",
            "girl": "child"}
VERB_OBJECTS = {
    "eating": {"apple": "fruit", "pear": "fruit", "cake": "food", "sandwich": "food"},
    "reading": {"book": "text", "letter": "text", "newspaper": "text", "magazine": "text"},
    "playing": {"guitar": "instrument", "piano": "instrument", "violin": "instrument"},
    "washing": {"car": "vehicle", "truck": "vehicle", "bike": "vehicle", "boat": "vehicle"},
    "carrying": {"box": "container", "bag": "container", "basket": "container"},
    "feeding": {"dog": "animal", "cat": "animal", "horse": "animal", "bird": "animal"},
}
EXTRAS = ["for fun", "for a friend", "after lunch", "with a smile", "before dinner"]
COLORS = ["red", "blue", "green", "yellow", "white", "black", "brown"]
PLACES = ["park", "kitchen", "garden", "office", "school", "library", "street", "yard"]
ENTAIL, NEUTRAL, CONTRADICT = 0, 1, 2

# --- paraphrase lexicon: groups of synonyms ----------------------------------------------------
PEOPLE = [["doctor", "physician"], ["teacher", "instructor"], ["lawyer", "attorney"],
          ["boss", "manager"], ["student", "pupil"], ["chef", "cook"], ["kid", "child"],
          ["officer", "policeman"], ["farmer"], ["nurse"], ["pilot"], ["singer"]]
ACTIONS = [
    [("help", "helped"), ("assist", "assisted")],
    [("call", "called"), ("phone", "phoned")],
    [("praise", "praised"), ("commend", "commended")],
    [("warn", "warned"), ("alert", "alerted")],
    [("watch", "watched"), ("observe", "observed")],
    [("hire", "hired"), ("employ", "employed")],
    [("visit", "visited")], [("thank", "thanked")], [("invite", "invited")], [("blame", "blamed")],
]
TRAITS = [["happy", "glad"], ["smart", "clever"], ["rich", "wealthy"], ["old", "elderly"],
          ["quiet", "silent"], ["famous", "renowned"], ["sad", "unhappy"], ["young"], ["tired"]]
TIMES = ["yesterday", "today", "recently"]

PROMPTS = {
    "sentiment": "classify the sentiment of the text : {s} result :",
    "nli": "premise : {p} hypothesis : {h} does the premise entail the hypothesis ? result :",
    "paraphrase": "sentence1 : {a} sentence2 : {b} are the sentences equivalent ? result :",
}
LABEL_WORDS = {
    "sentiment": ["negative", "positive"],
    "nli": ["entailment", "neutral", "contradiction"],
    "paraphrase": ["not_equivalent", "equivalent"],
}
GLUE_WORDS = ["the", "is", "was", "and", "but", "although", ",", "in", "did", "by", "not"]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def is_pretext_sentence(sentence: str) -> bool:
    return stable_bucket(sentence, PRETEXT_BUCKETS) == 0


# --- sentiment ---------------------------------------------------------------------------------
def _clause(rng: np.random.Generator, label: int, negation_p: float) -> str:
    """One clause whose overall polarity is `label`; a negation flips the adjective's."""
    negated = rng.random() < negation_p
    adjective = _pick(rng, POSITIVE if label ^ negated else NEGATIVE)
    words = ["the", _pick(rng, NOUNS), _pick(rng, ["is", "was"])]
    words += [_pick(rng, NEGATIONS)] if negated else []
    words += [_pick(rng, INTENSIFIERS)] if rng.random() < 0.3 else []
    return " ".join(words + [adjective])


def sentiment_sentence(rng: np.random.Generator, hard: bool) -> tuple[str, int]:
    """A review sentence and its label.

    Easy: the adjectives agree and nothing is negated. Hard: a negation flips the clause, or
    the main clause of "but"/"although" decides against a (usually) disagreeing other clause.
    """
    label = int(rng.integers(2))
    if not hard:
        main = _clause(rng, label, 0.0)
        return (main if rng.random() < 0.7 else f"{_clause(rng, label, 0.0)} and {main}"), label
    form = _pick(rng, ["negated", "but", "although_first", "although_last"])
    if form == "negated":
        return _clause(rng, label, 1.0), label
    main = _clause(rng, label, NEGATION_P)
    other = _clause(rng, label if rng.random() < 0.2 else 1 - label, NEGATION_P)
    text = {"but": f"{other} but {main}", "although_first": f"although {other} , {main}",
            "although_last": f"{main} , although {other}"}[form]
    return text, label


def _sentiment_example(rng: np.random.Generator, hard_fraction: float) -> dict | None:
    sentence, label = sentiment_sentence(rng, rng.random() < hard_fraction)
    if is_pretext_sentence(sentence):
        return None
    return {"text": PROMPTS["sentiment"].format(s=sentence), "label": label}


# --- nli ---------------------------------------------------------------------------------------
def _premise(rng: np.random.Generator) -> dict:
    verb = _pick(rng, list(VERB_OBJECTS))
    return {"subj": _pick(rng, list(SUBJECTS)), "verb": verb,
            "obj": _pick(rng, list(VERB_OBJECTS[verb])), "neg": False, "extra": None,
            "color": _pick(rng, COLORS) if rng.random() < 0.6 else None,
            "loc": _pick(rng, PLACES) if rng.random() < 0.5 else None}


def _vary(rng: np.random.Generator, value, hyper, pool, p_keep, p_hyper):
    """Keep a slot, generalise it to its hypernym, or swap in a different specific word."""
    u = rng.random()
    if u < p_keep:
        return value
    if u < p_keep + p_hyper:
        return hyper
    return _pick(rng, [w for w in pool if w != value])


def _vary_detail(rng: np.random.Generator, value, pool):
    """Keep, drop or change an existing modifier; or maybe add one the premise lacks."""
    if value is None:
        return _pick(rng, pool) if rng.random() < 0.3 else None
    u = rng.random()
    return value if u < 0.35 else None if u < 0.75 else _pick(rng, [w for w in pool if w != value])


def _hard_hypothesis(rng: np.random.Generator, p: dict) -> dict:
    objects = VERB_OBJECTS[p["verb"]]
    return {"subj": _vary(rng, p["subj"], SUBJECTS[p["subj"]], list(SUBJECTS), 0.55, 0.2),
            "verb": p["verb"], "extra": None,
            "obj": _vary(rng, p["obj"], objects[p["obj"]], list(objects), 0.55, 0.2),
            "neg": bool(rng.random() < 0.3),
            "color": _vary_detail(rng, p["color"], COLORS),
            "loc": _vary_detail(rng, p["loc"], PLACES)}


def _easy_hypothesis(rng: np.random.Generator, p: dict, target: int) -> dict:
    """A generalisation of the premise; "not" makes it a contradiction, an extra phrase neutral."""
    h = dict(p, neg=target == CONTRADICT, extra=_pick(rng, EXTRAS) if target == NEUTRAL else None)
    h["subj"] = SUBJECTS[p["subj"]] if rng.random() < 0.3 else p["subj"]
    h["obj"] = VERB_OBJECTS[p["verb"]][p["obj"]] if rng.random() < 0.3 else p["obj"]
    h["color"] = p["color"] if rng.random() < 0.5 else None
    h["loc"] = p["loc"] if rng.random() < 0.5 else None
    return h


def _detail(premise_value, hypothesis_value) -> str:
    if hypothesis_value is None or hypothesis_value == premise_value:
        return "covered"
    return "extra" if premise_value is None else "conflict"


def nli_label(p: dict, h: dict) -> int | None:
    """Entailment rules for an affirmative premise; None where the rules would be ambiguous."""
    same_subj = h["subj"] in (p["subj"], SUBJECTS[p["subj"]])
    same_obj = h["obj"] in (p["obj"], VERB_OBJECTS[p["verb"]][p["obj"]])
    if not (same_subj and same_obj) or h["extra"]:
        return NEUTRAL
    details = {_detail(p["color"], h["color"]), _detail(p["loc"], h["loc"])}
    if h["neg"]:
        return None if "conflict" in details else NEUTRAL if "extra" in details else CONTRADICT
    if "conflict" in details:
        return CONTRADICT
    return NEUTRAL if "extra" in details else ENTAIL


def nli_sentence(f: dict) -> str:
    words = ["the", f["subj"], "is"] + (["not"] if f["neg"] else []) + [f["verb"], "the"]
    words += ([f["color"]] if f["color"] else []) + [f["obj"]]
    words += ["in", "the", f["loc"]] if f["loc"] else []
    return " ".join(words + ([f["extra"]] if f["extra"] else []))


def _nli_pair(rng: np.random.Generator, hard: bool) -> tuple[dict, dict, int] | None:
    target, p = int(rng.integers(3)), _premise(rng)
    for _ in range(100):  # rejection sampling keeps the three labels balanced
        h = _hard_hypothesis(rng, p) if hard else _easy_hypothesis(rng, p, target)
        if h != p and nli_label(p, h) == target:
            return p, h, target
    return None


def _nli_example(rng: np.random.Generator, hard_fraction: float) -> dict | None:
    pair = _nli_pair(rng, rng.random() < hard_fraction)
    if pair is None:
        return None
    premise, hypothesis = nli_sentence(pair[0]), nli_sentence(pair[1])
    if is_pretext_sentence(premise) or is_pretext_sentence(hypothesis):
        return None
    return {"text": PROMPTS["nli"].format(p=premise, h=hypothesis), "label": pair[2]}


# --- paraphrase --------------------------------------------------------------------------------
def _maybe_trait(rng: np.random.Generator) -> int | None:
    return int(rng.integers(len(TRAITS))) if rng.random() < 0.4 else None


def _event(rng: np.random.Generator) -> dict:
    agent, patient = rng.choice(len(PEOPLE), size=2, replace=False)
    return {"agent": int(agent), "patient": int(patient), "agent_trait": _maybe_trait(rng),
            "patient_trait": _maybe_trait(rng), "action": int(rng.integers(len(ACTIONS))),
            "neg": False, "time": _pick(rng, TIMES) if rng.random() < 0.4 else None}


def _other(rng: np.random.Generator, n: int, current: int) -> int:
    return int(_pick(rng, [i for i in range(n) if i != current]))


def _change_meaning(rng: np.random.Generator, e: dict) -> dict:
    """One edit that changes who did what: a role swap or another person, action or trait."""
    e = dict(e)
    kind = _pick(rng, ["swap", "swap", "person", "action", "trait"])
    if kind == "trait" and e["agent_trait"] is None and e["patient_trait"] is None:
        kind = "action"
    if kind == "swap":
        e["agent"], e["patient"] = e["patient"], e["agent"]
        e["agent_trait"], e["patient_trait"] = e["patient_trait"], e["agent_trait"]
    elif kind == "person":
        role = _pick(rng, ["agent", "patient"])
        taken = {e["agent"], e["patient"]}
        e[role] = int(_pick(rng, [i for i in range(len(PEOPLE)) if i not in taken]))
    elif kind == "action":
        e["action"] = _other(rng, len(ACTIONS), e["action"])
    else:
        role = "agent_trait" if e["agent_trait"] is not None else "patient_trait"
        e[role] = _other(rng, len(TRAITS), e[role])
    return e


def _person(rng: np.random.Generator, person: int, trait: int | None) -> list[str]:
    adjective = [_pick(rng, TRAITS[trait])] if trait is not None else []
    return ["the"] + adjective + [_pick(rng, PEOPLE[person])]


def event_sentence(rng: np.random.Generator, e: dict, passive: bool) -> str:
    """Realise an event in active or passive voice with randomly chosen synonyms."""
    base, past = _pick(rng, ACTIONS[e["action"]])
    agent = _person(rng, e["agent"], e["agent_trait"])
    patient = _person(rng, e["patient"], e["patient_trait"])
    if passive:
        words = patient + ["was"] + (["not"] if e["neg"] else []) + [past, "by"] + agent
    else:
        words = agent + (["did", "not", base] if e["neg"] else [past]) + patient
    return " ".join(words + ([e["time"]] if e["time"] else []))


def _paraphrase_pair(rng: np.random.Generator, hard: bool) -> tuple[str, str, int]:
    """Easy: same voice, synonyms vs an added negation. Hard: voices vary, roles swap."""
    event, label = _event(rng), int(rng.integers(2))
    voice = bool(rng.random() < 0.5)
    first = event_sentence(rng, event, voice)
    if hard:
        second_event, voice = (event if label else _change_meaning(rng, event)), rng.random() < 0.5
    else:
        second_event = event if label else dict(event, neg=True)
    return first, event_sentence(rng, second_event, bool(voice)), label


def _paraphrase_example(rng: np.random.Generator, hard_fraction: float) -> dict | None:
    first, second, label = _paraphrase_pair(rng, rng.random() < hard_fraction)
    if first == second or is_pretext_sentence(first) or is_pretext_sentence(second):
        return None
    return {"text": PROMPTS["paraphrase"].format(a=first, b=second), "label": label}


# --- tasks, pretext, vocabulary ----------------------------------------------------------------
def _prepare(task: str, task_cfg: dict, data_seed: int, kind: str, make) -> tuple[dict, dict]:
    sizes = split_sizes(task, task_cfg)
    rng = rng_for(data_seed, "nlu", task)
    hard = float(task_cfg.get("hard_fraction", DEFAULT_HARD_FRACTION))
    rows = sample_unique(task, rng, partial(make, hard_fraction=hard), "text", sum(sizes.values()))
    noise = float(task_cfg.get("label_noise", DEFAULT_LABEL_NOISE))
    words = LABEL_WORDS[kind]
    labels = flip_labels(rng, [r["label"] for r in rows], len(words), noise)
    rows = [{"text": r["text"], "label": int(y)} for r, y in zip(rows, labels)]
    splits = cut_splits(rows, sizes)
    meta = {"family": "nlu", "num_labels": len(words), "label_words": words,
            "label_noise": noise, "hard_fraction": hard,
            **noisy_train_split(task, task_cfg, data_seed, splits, len(words))}
    return splits, meta


@GENERATORS.register("sentiment")
def sentiment(task: str, task_cfg: dict, data_seed: int) -> tuple[dict, dict]:
    return _prepare(task, task_cfg, data_seed, "sentiment", _sentiment_example)


@GENERATORS.register("nli")
def nli(task: str, task_cfg: dict, data_seed: int) -> tuple[dict, dict]:
    return _prepare(task, task_cfg, data_seed, "nli", _nli_example)


@GENERATORS.register("paraphrase")
def paraphrase(task: str, task_cfg: dict, data_seed: int) -> tuple[dict, dict]:
    return _prepare(task, task_cfg, data_seed, "paraphrase", _paraphrase_example)


def _pretext_sentence(rng: np.random.Generator) -> dict | None:
    kind, hard = _pick(rng, ["sentiment", "premise", "hypothesis", "event"]), rng.random() < 0.5
    if kind == "sentiment":
        text = sentiment_sentence(rng, hard)[0]
    elif kind == "event":
        text = event_sentence(rng, _event(rng), hard)
    else:
        pair = _nli_pair(rng, hard)
        if pair is None:
            return None
        text = nli_sentence(pair[0] if kind == "premise" else pair[1])
    return {"text": text} if is_pretext_sentence(text) else None


# Word-level knowledge a real pretrained T5 brings (its pretraining mixed supervised tasks into
# span corruption): polarity of single words, synonymy, hypernymy. No sentence, no task prompt.
LEXICAL_SHARE = 0.3
LEXICAL_PROMPTS = {
    "polarity": "word polarity : {a} result :",
    "synonym": "same meaning : {a} {b} result :",
    "hypernym": "is a kind of : {a} {b} result :",
}


def _lexical_example(rng: np.random.Generator) -> dict:
    kind = _pick(rng, list(LEXICAL_PROMPTS))
    if kind == "polarity":
        positive = bool(rng.random() < 0.5)
        word = _pick(rng, POSITIVE if positive else NEGATIVE)
        return {"text": LEXICAL_PROMPTS[kind].format(a=word), "target": "positive" if positive else "negative"}
    if kind == "synonym":
        groups = [g for g in PEOPLE + TRAITS if len(g) > 1] + [[b for b, _ in g] for g in ACTIONS if len(g) > 1]
        group = _pick(rng, groups)
        same = bool(rng.random() < 0.5)
        if same:
            a, b = rng.permutation(group)[:2]
        else:
            a, b = _pick(rng, group), _pick(rng, _pick(rng, [g for g in groups if g is not group]))
        return {"text": LEXICAL_PROMPTS[kind].format(a=a, b=b), "target": "equivalent" if same else "not_equivalent"}
    pairs = list(SUBJECTS.items()) + [pair for objs in VERB_OBJECTS.values() for pair in objs.items()]
    word, hyper = _pick(rng, pairs)
    holds = bool(rng.random() < 0.5)
    if not holds:
        hyper = _pick(rng, sorted({h for _, h in pairs} - {hyper}))
    return {"text": LEXICAL_PROMPTS[kind].format(a=word, b=hyper), "target": "entailment" if holds else "neutral"}


def pretext_rows(data_seed: int, examples: int) -> list[dict]:
    """Plain sentences for span corruption (empty `target`) plus a lexical share with targets.

    Sentences come from the pretext share of the sentence space only; lexical rows hold single
    words or word pairs, never a task sentence.
    """
    rng = rng_for(data_seed, "nlu", "pretext")
    n_lexical = int(round(LEXICAL_SHARE * examples))
    sentences = sample_unique("pretext_nlu", rng, _pretext_sentence, "text", int(examples) - n_lexical)
    lexical = [_lexical_example(rng) for _ in range(n_lexical)]
    return [dict(r, target="") for r in sentences] + lexical


def pretext(data_seed: int, examples: int) -> tuple[pd.DataFrame, dict]:
    """The pretext corpus (pretext_rows) and what its manifest adds (nothing)."""
    return pd.DataFrame(pretext_rows(data_seed, examples)), {}


def vocabulary() -> list[str]:
    words = set(GLUE_WORDS) | set(NOUNS + POSITIVE + NEGATIVE + INTENSIFIERS + NEGATIONS)
    words |= set(SUBJECTS) | set(SUBJECTS.values()) | set(VERB_OBJECTS) | set(COLORS)
    words |= {w for objs in VERB_OBJECTS.values() for pair in objs.items() for w in pair}
    words |= set(PLACES) | set(TIMES) | {w for g in PEOPLE + TRAITS for w in g}
    words |= {w for g in ACTIONS for pair in g for w in pair}
    words |= {w for phrase in EXTRAS for w in phrase.split()}
    words |= {w for p in list(PROMPTS.values()) + list(LEXICAL_PROMPTS.values()) for w in p.split() if not w.startswith("{")}
    words |= {w for ws in LABEL_WORDS.values() for w in ws}
    return sorted(words)
