"""Real datasets for the paper profile: the Hugging Face hub (`datasets.load_dataset`) or local files.

Every split of an external task is read from its source (hub split, or a file/folder under the
task's `path`; MT-Bench from FastChat's pinned files: `{fastchat: mt_bench}`), its rows filtered as
the official loaders filter them (`where`, `exclude`, after mapping `transforms` and `max_tokens`),
optionally sliced after the filters (`train[:100000]`: the first rows that pass) and sampled (a split's
`sample: N`: N of those rows drawn with the data seed), and mapped onto
the family's prepared columns:
    nlu         text (the prompt filled from the source's text columns; without a prompt, two text
                columns stay a pair: text, text_pair), label (int)
    generation  question, solution, answer (the final answer, via `answer_regex`); for HumanEval
                (metric humaneval_pass_at_1) test, entry_point, task_id instead of answer; the
                evaluation splits of an mt_bench task: turns, prompts (turns in the task's prompt),
                category, reference (lists of strings), question_id (to_mt_bench)
    vision      image (encoded image bytes, as stored), label (int)
The result is written like a generated task (parquet splits + manifest with sha256), so everything
downstream is the same code for both profiles. A split entry may override the task's source keys
(train on MetaMathQA, test on GSM8K). A field `column[role]` reads a chat-message column (a list of
{role, content}, as Code-Feedback's `messages`): the content of the first turn with that role.
"""

import csv
import json
import re
import string
from pathlib import Path

import pandas as pd

from lorarepro import paths, pinned
from lorarepro.data.io import write_dataset
from lorarepro.registry import Registry

SOURCES = ("hub", "local")
SLICE = re.compile(r"^(?P<name>[A-Za-z0-9_./-]+?)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TURN = re.compile(r"^(?P<column>.+)\[(?P<role>[A-Za-z_]+)\]$")  # messages[user]: the first user turn
SOURCE_KEYS = ("dataset", "subset", "revision", "path", "format", "fields", "prompt", "prompt_with_input",
               "answer_regex", "where", "exclude", "transforms", "max_tokens")

# Field transforms (`transforms: {column: [name, ...]}`), applied to a prepared column in order; each
# is one line of an official loader (github nblt/Flat-LoRA, data.py).
TRANSFORMS = Registry("field transform")
# load_codefeedback: the answer up to the end of its first ``` block (the prose before it, the block)
TRANSFORMS.register("through_first_code_block", lambda text: "```".join(text.split("```")[:2]) + "```")
# load_meta_math: the solution without its closing "The answer is: ..." line
TRANSFORMS.register("before_answer_is", lambda text: text.split("\nThe answer is:")[0])


def split_source(task: str, task_cfg: dict, split: str) -> dict:
    """The task's source keys with this split's overrides on top (`sample` among them), plus `split`
    (name), `slice` and `config_key` (where the split is configured, for messages). A split
    `{fastchat: mt_bench}` is FastChat's own MT-Bench files at the pinned commit (`_read_fastchat`): of
    the task's keys only `prompt` carries over; `fastchat` becomes what the manifest records of them."""
    spec = task_cfg["splits"][split]
    spec = {"split": spec} if isinstance(spec, str) else dict(spec)
    if "fastchat" in spec:
        source = {k: task_cfg[k] for k in ("prompt",) if k in task_cfg}
        source.update(spec, split=spec["fastchat"], slice=[None, None], config_key=f"tasks.{task}.splits.{split}",
                      fields={c: c for c in ("turns", "category", "reference", "question_id")},
                      fastchat={"benchmark": spec["fastchat"], "repo": pinned.FASTCHAT_REPO, "commit": pinned.FASTCHAT_COMMIT,
                                "files": {name: pin.record() for name, pin in pinned.MT_BENCH.items()}})
        return source
    source = {k: task_cfg[k] for k in SOURCE_KEYS if k in task_cfg}
    source.update(spec)
    match = SLICE.match(source["split"])
    if match is None:
        raise ValueError(f"task {task!r}: splits.{split}: cannot parse {source['split']!r} (name or name[start:stop])")
    source["split"] = match["name"]
    source["slice"] = [int(match["start"]) if match["start"] else None, int(match["stop"]) if match["stop"] else None]
    source["config_key"] = f"tasks.{task}.splits.{split}"
    return source


def check_task(task: str, task_cfg: dict) -> None:
    """What the schema cannot see: prompt placeholders, field names per family, label words."""
    family = task_cfg["family"]
    if ("test" in task_cfg["splits"]) == (task_cfg.get("metric") == "lm_eval"):
        raise ValueError(f"config key 'tasks.{task}.splits.test': required, except with metric lm_eval "
                         "(its `lm_eval` benchmarks are the evaluation; name one `test`)")
    for split in task_cfg["splits"]:
        source = split_source(task, task_cfg, split)
        key = f"tasks.{task}.splits.{split}"
        if "fastchat" in source and (split == "train" or task_cfg.get("metric") != "mt_bench"):
            raise ValueError(f"config key '{key}.fastchat': FastChat's MT-Bench questions are an evaluation split "
                             "of a task with metric mt_bench")
        elif "fastchat" not in source and task_cfg["source"] == "hub" and "dataset" not in source:
            raise ValueError(f"config key '{key}': no hub `dataset` for this split")
        elif "fastchat" not in source and task_cfg["source"] == "local" and not {"path", "format"} <= source.keys():
            raise ValueError(f"config key '{key}': local data needs `path` and `format`")
        fields = source.get("fields") or {}
        need = {"nlu": ["text", "label"], "generation": _generation_fields(task_cfg, split),
                "vision": ["label"] + (["image"] if source.get("format") != "imagefolder" else [])}[family]
        missing = [f for f in need if f not in fields and not (f == "label" and source.get("format") == "imagefolder")]
        if missing:
            needs = "an MT-Bench split" if "turns" in need else f"family {family!r}"
            raise ValueError(f"config key '{key}': {needs} needs fields {missing}")
        if "prompt" in source and split != "train" and task_cfg.get("metric") == "humaneval_pass_at_1":
            raise ValueError(f"config key 'tasks.{task}.prompt': HumanEval's prompts are completed and run as code "
                             "unchanged; give the template to the train split only")
        for prompt_key, allowed in (("prompt", ["question"] if family == "generation" else fields.get("text", [])),
                                    ("prompt_with_input", ["question", "input"])):
            if prompt_key not in source:
                continue
            names = [n for _, n, _, _ in string.Formatter().parse(source[prompt_key]) if n is not None]
            bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_ #.-]+", n) or n not in allowed]
            if bad:
                raise ValueError(f"config key 'tasks.{task}.{prompt_key}': placeholders {bad} are not among {allowed}")
        if "prompt_with_input" in source and ("input" not in fields or "prompt" not in source):
            raise ValueError(f"config key 'tasks.{task}.prompt_with_input': needs `prompt` and an `input` field")
        if "answer_regex" in source and re.compile(source["answer_regex"]).groups < 1:
            raise ValueError(f"config key 'tasks.{task}.answer_regex': needs one capture group")
        if (source.get("max_tokens") or source.get("transforms")) and family != "generation":
            raise ValueError(f"config key '{key}': max_tokens and transforms are for generation tasks")
        for column, names in (source.get("transforms") or {}).items():
            for name in names:
                if name not in TRANSFORMS:
                    raise ValueError(f"config key '{key}.transforms.{column}': unknown transform '{name}' "
                                     f"(known: {sorted(TRANSFORMS)})")
    if family == "nlu" and "label_words" not in task_cfg:
        raise ValueError(f"config key 'tasks.{task}.label_words': required for an external nlu task")


def _generation_fields(task_cfg: dict, split: str) -> list[str]:
    """Fields a generation split needs. Evaluation splits: MT-Bench's are questions of one or more
    turns, HumanEval's carry tests instead of an answer; a task scored otherwise than by exact match
    needs no answer column."""
    metric = task_cfg.get("metric", "exact_match")
    if split != "train" and metric == "mt_bench":
        return ["turns", "category"]
    if split != "train" and metric == "humaneval_pass_at_1":
        return ["question", "test", "entry_point"]
    return ["question", "solution"] + (["answer"] if metric == "exact_match" else [])


def _column(frame: pd.DataFrame, spec: str) -> pd.Series:
    """A source column, or with `column[role]` the first `role` turn of a chat-message column."""
    turn = TURN.match(spec)
    if spec in frame.columns or turn is None:
        return frame[spec]
    role = turn["role"]
    return pd.Series([next((m["content"] for m in messages if m["role"] == role), "") for messages in frame[turn["column"]]])


def _column_name(spec: str) -> str:
    turn = TURN.match(spec)
    return turn["column"] if turn else spec


def to_mt_bench(task: str, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """MT-Bench questions (FastChat's files through `_read_fastchat`, or a source in the
    HuggingFaceH4/mt_bench_prompts layout): the user turns as written (for the judge) and wrapped in the
    task's prompt (for the model), the category, the reference answers, and FastChat's question_id."""
    fields = source["fields"]
    missing = [c for c in fields.values() if c not in frame.columns]
    if missing:
        raise ValueError(f"task {task!r}: split {source['split']!r} has no columns {missing} (has {list(frame.columns)})")

    def strings(value, what: str, row: int) -> list[str]:
        if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
            return []
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ValueError(f"task {task!r}: row {row}: {what} must be a list of strings, got {value!r}")
        return [str(v) for v in value]

    turns = [strings(v, f"fields.turns ({fields['turns']!r})", i) for i, v in enumerate(frame[fields["turns"]])]
    if any(not t for t in turns):
        raise ValueError(f"task {task!r}: split {source['split']!r}: a question without turns")
    prompt = source.get("prompt")
    references = ([strings(v, f"fields.reference ({fields['reference']!r})", i) for i, v in enumerate(frame[fields["reference"]])]
                  if "reference" in fields else [[] for _ in turns])
    out = pd.DataFrame({"turns": turns, "prompts": [[prompt.format_map({"question": q}) if prompt else q for q in t] for t in turns],
                        "category": frame[fields["category"]].astype(str).tolist(), "reference": references})
    if "question_id" in fields:
        out["question_id"] = frame[fields["question_id"]].astype("int64").tolist()
    return out


def _read_fastchat(task: str, source: dict) -> pd.DataFrame:
    """MT-Bench as FastChat's gen_judgment.py reads it, from the pinned commit (lorarepro.pinned.MT_BENCH):
    question.jsonl's questions (question_id, category, turns), each with the turns of its answer in
    reference_answer/gpt-4.jsonl (choices[0].turns) as its reference answers, none without one; a
    question's own `reference` field is not what FastChat grades against and is not read. The files come
    from the split's `path` (a folder in FastChat's repository layout) when set, else from the cache
    paths.FASTCHAT, else downloaded there; each must have its pinned sha256."""
    key = f"{source['config_key']}.path"
    hint = (f"set config key '{key}' to a folder holding FastChat's files in its repository layout "
            f"(a checkout of {pinned.FASTCHAT_REPO} at commit {pinned.FASTCHAT_COMMIT})")
    rows = {}
    for name, pin in pinned.MT_BENCH.items():
        local = Path(source["path"]) / pin.path if source.get("path") else None
        try:
            data = pinned.read(pin, paths.FASTCHAT / pin.path, local, key, hint)
        except pinned.PinnedError as err:
            raise pinned.PinnedError(f"task {task!r}: {err}") from None
        rows[name] = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    references = {r["question_id"]: r["choices"][0]["turns"] for r in rows["references"]}
    return pd.DataFrame({"question_id": [q["question_id"] for q in rows["questions"]],
                         "category": [q["category"] for q in rows["questions"]],
                         "turns": [list(q["turns"]) for q in rows["questions"]],
                         "reference": [list(references.get(q["question_id"], [])) for q in rows["questions"]]})


def read_source(task: str, source: dict) -> pd.DataFrame:
    """One split as a raw DataFrame (source columns), its rows kept by `where` (each named column
    contains the given text: MetaMathQA's type "GSM_...") and dropped by `exclude`. The slice comes later (`slice_rows`), after
    every filter, as the official loaders take the first N rows that pass."""
    if "fastchat" in source:
        frame = _read_fastchat(task, source)
    elif "dataset" in source and "path" not in source:
        frame = _read_hub(source)
    else:
        frame = _read_local(task, source)
    for column, text in (source.get("where") or {}).items():
        if column not in frame.columns:
            raise ValueError(f"task {task!r}: `where` names column {column!r}, not in split {source['split']!r} "
                             f"(has {list(frame.columns)})")
        frame = frame[frame[column].astype(str).str.contains(text, regex=False)]
    for column, texts in (source.get("exclude") or {}).items():
        if column not in frame.columns:
            raise ValueError(f"task {task!r}: `exclude` names column {column!r}, not in split {source['split']!r} "
                             f"(has {list(frame.columns)})")
        lowered = frame[column].astype(str).str.lower()
        frame = frame[~lowered.apply(lambda value: any(t.lower() in value for t in texts))]
    return frame.reset_index(drop=True)


def slice_rows(frame: pd.DataFrame, source: dict, tokenizer=None, seed: int | None = None) -> pd.DataFrame:
    """The prepared rows a split keeps: those under `max_tokens` (`question + " " + solution` in the
    task backbone's tokens, special tokens included, as the official loaders count), then
    `name[start:stop]`, then with `sample: N` N of them drawn without replacement with `seed` (the data
    seed), kept in their source order. Splits sampled from one file overlap unless sliced apart first."""
    if source.get("max_tokens"):
        text = frame["question"] + (" " + frame["solution"] if "solution" in frame else "")
        lengths = [len(ids) for ids in tokenizer(text.tolist(), add_special_tokens=True)["input_ids"]]
        frame = frame[[n < source["max_tokens"] for n in lengths]]
    start, stop = source["slice"]
    frame = frame.iloc[start:stop]
    if source.get("sample") is not None:
        if source["sample"] > len(frame):
            raise ValueError(f"config key '{source['config_key']}.sample': {source['sample']} rows asked, "
                             f"{len(frame)} available after the filters and the slice")
        frame = frame.sample(n=source["sample"], random_state=seed).sort_index()
    return frame.reset_index(drop=True)


def _read_hub(source: dict) -> pd.DataFrame:
    import datasets  # deferred: its import takes ~1 s; only hub sources need it

    ds = datasets.load_dataset(source["dataset"], source.get("subset"), split=source["split"],
                               revision=source.get("revision"))
    image = (source.get("fields") or {}).get("image")
    if image is not None:
        ds = ds.cast_column(image, datasets.Image(decode=False))  # keep the file's own bytes
    frame = ds.to_pandas()
    label = (source.get("fields") or {}).get("label")
    if label in ds.features and hasattr(ds.features[label], "names"):
        frame.attrs["class_names"] = list(ds.features[label].names)
    if image is not None:
        frame[image] = [cell["bytes"] for cell in frame[image]]
    return frame


def _read_local(task: str, source: dict) -> pd.DataFrame:
    target = Path(source["path"]) / source["split"]
    fmt = source["format"]
    if not target.exists():
        raise FileNotFoundError(f"task {task!r}: {fmt} data not found: {target}")
    if fmt == "imagefolder":
        return _read_imagefolder(task, target)
    if not target.is_file():
        raise FileNotFoundError(f"task {task!r}: not a file: {target}")
    try:
        if fmt == "parquet":
            return pd.read_parquet(target)
        if fmt == "csv":
            return pd.read_csv(target, keep_default_na=False)
        if fmt == "jsonl":
            return pd.read_json(target, lines=True, dtype=False)
        # GLUE's TSVs contain unbalanced quotes: quoting must be off. CoLA's have no header; its
        # columns are then addressed by position ("0", "1", ...).
        fields = source.get("fields") or {}
        names = [n for v in fields.values() for n in (v if isinstance(v, list) else [v])]
        headerless = bool(names) and all(n.isdigit() for n in names)
        frame = pd.read_csv(target, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False,
                            header=None if headerless else 0, dtype=str)
        if headerless:
            frame.columns = [str(c) for c in frame.columns]
        return frame
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise ValueError(f"task {task!r}: cannot read {fmt} file {target}: {err}") from err


GLUE_HEADERLESS = ("; a GLUE TSV without a header row (CoLA's) is read by position: name its fields by column "
                   "number, counting from 0 (CoLA: fields: {text: ['3'], label: '1'})")


def _read_imagefolder(task: str, root: Path) -> pd.DataFrame:
    """root/<class>/<image>: one row per image, `label` the class's index in sorted class order."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"task {task!r}: image folder {root} has no class sub-folders")
    rows = [{"image": f.read_bytes(), "label": classes[i], "file": str(f.relative_to(root))}
            for i, _ in enumerate(classes) for f in sorted((root / classes[i]).iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES]
    frame = pd.DataFrame(rows, columns=["image", "label", "file"])
    frame.attrs["class_names"] = classes
    return frame


def _labels(task: str, values: pd.Series, names: list[str] | None, count: int) -> list[int]:
    """Integer label ids: numbers as they are, strings through `label_names`; range-checked."""
    out = []
    for value in values:
        if names is not None and str(value) in names:
            out.append(names.index(str(value)))
            continue
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            raise ValueError(f"task {task!r}: label {value!r} is neither an integer nor in label_names {names}") from None
    bad = sorted({y for y in out if not 0 <= y < count})
    if bad:
        raise ValueError(f"task {task!r}: labels {bad[:5]} outside 0..{count - 1} (unlabelled test split? map it to the dev set)")
    return out


def to_family(task: str, task_cfg: dict, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Map a raw split onto the family's prepared columns."""
    family, fields = task_cfg["family"], dict(source.get("fields") or {})
    missing = [c for v in fields.values() for c in (v if isinstance(v, list) else [v])
               if c not in frame.columns and _column_name(c) not in frame.columns]
    if missing:
        raise ValueError(f"task {task!r}: split {source['split']!r} has no columns {missing} (has {list(frame.columns)})"
                         + (GLUE_HEADERLESS if source.get("format") == "glue_tsv" else ""))
    if family == "nlu":
        cols, prompt = fields["text"], source.get("prompt")
        labels = pd.Series(_labels(task, frame[fields["label"]], task_cfg.get("label_names"), len(task_cfg["label_words"])), dtype="int64")
        if prompt is None and len(cols) == 2:  # a sentence pair: encoders pair it with their own separator
            return pd.DataFrame({"text": frame[cols[0]].astype(str).tolist(), "text_pair": frame[cols[1]].astype(str).tolist(), "label": labels})
        texts = [prompt.format_map({c: str(r[c]) for c in cols}) if prompt else " ".join(str(r[c]) for c in cols)
                 for r in frame[cols].to_dict("records")]
        return pd.DataFrame({"text": texts, "label": labels})
    if family == "generation":
        return _transformed(_generation_frame(task, source, frame, fields), source)
    label_col = fields.get("label", "label")
    names = task_cfg.get("label_names")
    if source.get("format") == "imagefolder" and names is None:
        names = sorted(frame[label_col].unique().tolist())
    count = len(names) if names is not None else int(pd.to_numeric(frame[label_col]).max()) + 1
    labels = _labels(task, frame[label_col], names, count)
    return pd.DataFrame({"image": frame[fields.get("image", "image")].tolist(), "label": pd.Series(labels, dtype="int64")})


def _generation_frame(task: str, source: dict, frame: pd.DataFrame, fields: dict) -> pd.DataFrame:
    questions = _column(frame, fields["question"]).astype(str).tolist()
    inputs = _column(frame, fields["input"]).fillna("").astype(str).tolist() if "input" in fields else [""] * len(questions)
    if source.get("prompt"):  # Alpaca: its second template where the row has an input
        questions = [source["prompt_with_input"].format_map({"question": q, "input": i})
                     if i and source.get("prompt_with_input") else source["prompt"].format_map({"question": q})
                     for q, i in zip(questions, inputs)]
    out = {"question": questions}
    if "solution" in fields:
        out["solution"] = _column(frame, fields["solution"]).astype(str).tolist()
    if "answer" in fields:
        answers = _column(frame, fields["answer"]).astype(str)
        if source.get("answer_regex"):
            pattern = re.compile(source["answer_regex"], re.S | re.M)
            found = [pattern.search(a) for a in answers]
            if any(m is None for m in found):
                raise ValueError(f"task {task!r}: answer_regex finds no answer in {sum(m is None for m in found)} rows")
            answers = pd.Series([m.group(1).strip().replace(",", "") for m in found])
        out["answer"] = answers.tolist()
    for name in ("test", "entry_point", "task_id"):  # HumanEval's problems
        if name in fields:
            out[name] = _column(frame, fields[name]).astype(str).tolist()
    return pd.DataFrame(out)


def _transformed(frame: pd.DataFrame, source: dict) -> pd.DataFrame:
    for column, names in (source.get("transforms") or {}).items():
        for name in names:
            frame[column] = [TRANSFORMS[name](str(v)) for v in frame[column]]
    return frame


def prepare_external(task: str, task_cfg: dict, data_seed: int, out_dir: Path, tokenizer=None) -> dict:
    """Read, map and write every split of an external task; returns its manifest. `tokenizer`: the
    task backbone's, for splits with `max_tokens`."""
    check_task(task, task_cfg)
    splits, sources, class_names = {}, {}, {}
    for split in task_cfg["splits"]:
        source = split_source(task, task_cfg, split)
        if source.get("max_tokens") and tokenizer is None:
            raise ValueError(f"task {task!r}: splits.{split} has max_tokens, which needs the backbone's tokenizer")
        frame = read_source(task, source)
        class_names[split] = frame.attrs.get("class_names")
        mt_bench = task_cfg.get("metric") == "mt_bench" and split != "train"
        frame = to_mt_bench(task, source, frame) if mt_bench else to_family(task, task_cfg, source, frame)
        splits[split] = slice_rows(frame, source, tokenizer, int(data_seed))
        sources[split] = {k: v for k, v in source.items()
                          if k in ("dataset", "subset", "revision", "path", "format", "split", "slice", "sample", "where",
                                   "exclude", "transforms", "max_tokens", "fastchat")}
    header = {"task": task, "source": task_cfg["source"], "generator": None, "data_seed": int(data_seed),
              "family": task_cfg["family"], "sources": sources}
    if task_cfg["family"] == "nlu":
        header.update(num_labels=len(task_cfg["label_words"]), label_words=list(task_cfg["label_words"]))
    elif task_cfg["family"] == "generation":
        if "max_new_tokens" in task_cfg:
            header["max_new_tokens"] = int(task_cfg["max_new_tokens"])
        if "mt_bench_turns" in task_cfg:
            header["mt_bench_turns"] = [int(t) for t in task_cfg["mt_bench_turns"]]
        if task_cfg.get("metric", "exact_match") != "exact_match":  # absent: exact match (manifests unchanged)
            header["metric"] = task_cfg["metric"]
        if task_cfg.get("metric") == "lm_eval":
            header["lm_eval"] = task_cfg["lm_eval"]  # the benchmarks the run is scored on
    elif task_cfg["family"] == "vision":
        names = task_cfg.get("label_names") or class_names.get("train")
        header["num_labels"] = len(names) if names else int(splits["train"]["label"].max()) + 1
        if names:
            header["class_names"] = list(names)  # CLIP's zero-shot head is built from them
    if task_cfg["family"] != "generation" and task_cfg.get("metric", "accuracy") != "accuracy":  # the scorer reads it
        header["metric"] = task_cfg["metric"]
    if "mirrors" in task_cfg:
        header["mirrors"] = task_cfg["mirrors"]
    return write_dataset(out_dir, splits, header)
