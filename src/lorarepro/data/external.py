"""Real datasets for the paper profile: the Hugging Face hub (`datasets.load_dataset`) or local files.

Every split of an external task is read from its source (hub split, or a file/folder under the
task's `path`), optionally sliced (`train[:100000]`), and mapped onto the family's prepared columns:
    nlu         text (the prompt filled from the source's text columns; without a prompt, two text
                columns stay a pair: text, text_pair), label (int)
    generation  question, solution, answer (the final answer, via `answer_regex`); for HumanEval
                (metric humaneval_pass_at_1) test, entry_point, task_id instead of answer; the
                evaluation splits of an mt_bench task: turns, prompts (turns in the task's prompt),
                category, reference (lists of strings: to_mt_bench)
    vision      image (encoded image bytes, as stored), label (int)
The result is written like a generated task (parquet splits + manifest with sha256), so everything
downstream is the same code for both profiles. A split entry may override the task's source keys
(train on MetaMathQA, test on GSM8K). A field `column[role]` reads a chat-message column (a list of
{role, content}, as Code-Feedback's `messages`): the content of the first turn with that role.
"""

import csv
import re
import string
from pathlib import Path

import pandas as pd

from lorarepro.data.io import write_dataset

SOURCES = ("hub", "local")
SLICE = re.compile(r"^(?P<name>[A-Za-z0-9_./-]+?)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TURN = re.compile(r"^(?P<column>.+)\[(?P<role>[A-Za-z_]+)\]$")  # messages[user]: the first user turn
SOURCE_KEYS = ("dataset", "subset", "revision", "path", "format", "fields", "prompt", "answer_regex")


def split_source(task: str, task_cfg: dict, split: str) -> dict:
    """The task's source keys with this split's overrides on top, plus `split` (name) and `slice`."""
    spec = task_cfg["splits"][split]
    spec = {"split": spec} if isinstance(spec, str) else dict(spec)
    source = {k: task_cfg[k] for k in SOURCE_KEYS if k in task_cfg}
    source.update(spec)
    match = SLICE.match(source["split"])
    if match is None:
        raise ValueError(f"task {task!r}: splits.{split}: cannot parse {source['split']!r} (name or name[start:stop])")
    source["split"] = match["name"]
    source["slice"] = [int(match["start"]) if match["start"] else None, int(match["stop"]) if match["stop"] else None]
    return source


def check_task(task: str, task_cfg: dict) -> None:
    """What the schema cannot see: prompt placeholders, field names per family, label words."""
    family = task_cfg["family"]
    for split in task_cfg["splits"]:
        source = split_source(task, task_cfg, split)
        key = f"tasks.{task}.splits.{split}"
        if task_cfg["source"] == "hub" and "dataset" not in source:
            raise ValueError(f"config key '{key}': no hub `dataset` for this split")
        if task_cfg["source"] == "local" and not {"path", "format"} <= source.keys():
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
        if "prompt" in source:
            names = [n for _, n, _, _ in string.Formatter().parse(source["prompt"]) if n is not None]
            allowed = ["question"] if family == "generation" else fields.get("text", [])
            bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_ #.-]+", n) or n not in allowed]
            if bad:
                raise ValueError(f"config key 'tasks.{task}.prompt': placeholders {bad} are not among {allowed}")
        if "answer_regex" in source and re.compile(source["answer_regex"]).groups < 1:
            raise ValueError(f"config key 'tasks.{task}.answer_regex': needs one capture group")
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
    """MT-Bench questions (HuggingFaceH4/mt_bench_prompts layout): the user turns as written (for the
    judge) and wrapped in the task's prompt (for the model), the category, the reference answers."""
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
    return pd.DataFrame({"turns": turns, "prompts": [[prompt.format_map({"question": q}) if prompt else q for q in t] for t in turns],
                         "category": frame[fields["category"]].astype(str).tolist(), "reference": references})


def read_source(task: str, source: dict) -> pd.DataFrame:
    """One split as a raw DataFrame (source columns), sliced."""
    if "dataset" in source and "path" not in source:
        frame = _read_hub(source)
    else:
        frame = _read_local(task, source)
    start, stop = source["slice"]
    return frame.iloc[start:stop].reset_index(drop=True)


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
        raise ValueError(f"task {task!r}: split {source['split']!r} has no columns {missing} (has {list(frame.columns)})")
    if family == "nlu":
        cols, prompt = fields["text"], source.get("prompt")
        labels = pd.Series(_labels(task, frame[fields["label"]], task_cfg.get("label_names"), len(task_cfg["label_words"])), dtype="int64")
        if prompt is None and len(cols) == 2:  # a sentence pair: encoders pair it with their own separator
            return pd.DataFrame({"text": frame[cols[0]].astype(str).tolist(), "text_pair": frame[cols[1]].astype(str).tolist(), "label": labels})
        texts = [prompt.format_map({c: str(r[c]) for c in cols}) if prompt else " ".join(str(r[c]) for c in cols)
                 for r in frame[cols].to_dict("records")]
        return pd.DataFrame({"text": texts, "label": labels})
    if family == "generation":
        return _generation_frame(task, source, frame, fields)
    label_col = fields.get("label", "label")
    names = task_cfg.get("label_names")
    if source.get("format") == "imagefolder" and names is None:
        names = sorted(frame[label_col].unique().tolist())
    count = len(names) if names is not None else int(pd.to_numeric(frame[label_col]).max()) + 1
    labels = _labels(task, frame[label_col], names, count)
    return pd.DataFrame({"image": frame[fields.get("image", "image")].tolist(), "label": pd.Series(labels, dtype="int64")})


def _generation_frame(task: str, source: dict, frame: pd.DataFrame, fields: dict) -> pd.DataFrame:
    questions = _column(frame, fields["question"]).astype(str).tolist()
    if source.get("prompt"):
        questions = [source["prompt"].format_map({"question": q}) for q in questions]
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


def prepare_external(task: str, task_cfg: dict, data_seed: int, out_dir: Path) -> dict:
    """Read, map and write every split of an external task; returns its manifest."""
    check_task(task, task_cfg)
    splits, sources, class_names = {}, {}, {}
    for split in task_cfg["splits"]:
        source = split_source(task, task_cfg, split)
        frame = read_source(task, source)
        class_names[split] = frame.attrs.get("class_names")
        mt_bench = task_cfg.get("metric") == "mt_bench" and split != "train"
        splits[split] = to_mt_bench(task, source, frame) if mt_bench else to_family(task, task_cfg, source, frame)
        sources[split] = {k: v for k, v in source.items() if k in ("dataset", "subset", "revision", "path", "format", "split", "slice")}
    header = {"task": task, "source": task_cfg["source"], "generator": None, "data_seed": int(data_seed),
              "family": task_cfg["family"], "sources": sources}
    if task_cfg["family"] == "nlu":
        header.update(num_labels=len(task_cfg["label_words"]), label_words=list(task_cfg["label_words"]))
    elif task_cfg["family"] == "generation":
        if "max_new_tokens" in task_cfg:
            header["max_new_tokens"] = int(task_cfg["max_new_tokens"])
        if task_cfg.get("metric", "exact_match") != "exact_match":  # absent: exact match (manifests unchanged)
            header["metric"] = task_cfg["metric"]
    elif task_cfg["family"] == "vision":
        names = task_cfg.get("label_names") or class_names.get("train")
        header["num_labels"] = len(names) if names else int(splits["train"]["label"].max()) + 1
        if names:
            header["class_names"] = list(names)  # CLIP's zero-shot head is built from them
    if "mirrors" in task_cfg:
        header["mirrors"] = task_cfg["mirrors"]
    return write_dataset(out_dir, splits, header)
