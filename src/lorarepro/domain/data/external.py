"""Real datasets for the paper profile: the Hugging Face hub (`datasets.load_dataset`) or local files.

Every split of an external task is read from its source (hub split, or a file/folder under the
task's `path`; MT-Bench from FastChat's pinned files: `{fastchat: mt_bench}`), its rows filtered as
the official loaders filter them (`where`, `exclude`; after the mapping onto the family's prepared
columns, `max_tokens`), optionally sliced after the filters (`train[:100000]`: the first rows that
pass) and sampled (a split's `sample: N`: N of those rows drawn with the data seed). Which fields and
keys a task needs, what its prepared columns are and what its manifest records beyond the common
entries is its family's to say (the family's rules, lorarepro.domain.families.rules): a new family needs
no change here. The result is written like a generated task (parquet splits + manifest with
sha256), so everything downstream is the same code for both profiles. A split entry may override the task's source keys
(train on MetaMathQA, test on GSM8K). A field `column[role]` reads a chat-message column (a list of
{role, content}, as Code-Feedback's `messages`): the content of the first turn with that role.
"""

import csv
import json
import re
import string
from pathlib import Path

import pandas as pd

from lorarepro.core import paths, pinned
from lorarepro.domain.data.io import write_dataset
from lorarepro.domain.families import FAMILIES
from lorarepro.domain.families.rules import column_name

SOURCES = ("hub", "local")
SLICE = re.compile(r"^(?P<name>[A-Za-z0-9_./-]+?)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
# columns a format supplies itself, each named as the field it fills (so the task need not name it)
FORMAT_COLUMNS = {"imagefolder": ("image", "label", "file")}
SOURCE_KEYS = ("dataset", "subset", "revision", "path", "format", "fields", "prompt", "prompt_with_input",
               "answer_regex", "where", "exclude", "transforms", "max_tokens")


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


def _rules(task_cfg: dict):
    """The task family's rules module (lorarepro.domain.families.rules)."""
    return FAMILIES[task_cfg["family"]].load_rules()


def check_task(task: str, task_cfg: dict) -> None:
    """What the schema cannot see: each split's source, then what the task's family asks for (its
    fields, prompt placeholders, keys, own rules)."""
    rules = _rules(task_cfg)
    if ("test" in task_cfg["splits"]) == (task_cfg.get("metric") == "lm_eval"):
        raise ValueError(f"config key 'tasks.{task}.splits.test': required, except with metric lm_eval "
                         "(its `lm_eval` benchmarks are the evaluation; name one `test`)")
    for split in task_cfg["splits"]:
        source = split_source(task, task_cfg, split)
        _check_source(task_cfg, split, source)
        _check_fields(rules, task_cfg, split, source)
        _check_prompts(task, rules, source)
        _check_foreign_keys(task_cfg, source)
        rules.check(task, task_cfg, split, source)
    for name in rules.REQUIRED:
        if name not in task_cfg:
            raise ValueError(f"config key 'tasks.{task}.{name}': required for an external {task_cfg['family']} task")


def _check_source(task_cfg: dict, split: str, source: dict) -> None:
    key = source["config_key"]
    if "fastchat" in source and (split == "train" or task_cfg.get("metric") != "mt_bench"):
        raise ValueError(f"config key '{key}.fastchat': FastChat's MT-Bench questions are an evaluation split "
                         "of a task with metric mt_bench")
    elif "fastchat" not in source and task_cfg["source"] == "hub" and "dataset" not in source:
        raise ValueError(f"config key '{key}': no hub `dataset` for this split")
    elif "fastchat" not in source and task_cfg["source"] == "local" and not {"path", "format"} <= source.keys():
        raise ValueError(f"config key '{key}': local data needs `path` and `format`")


def _check_fields(rules, task_cfg: dict, split: str, source: dict) -> None:
    who, need = rules.needs(task_cfg, split)
    given = set(source.get("fields") or {}) | set(FORMAT_COLUMNS.get(source.get("format"), ()))
    missing = [f for f in need if f not in given]
    if missing:
        raise ValueError(f"config key '{source['config_key']}': {who} needs fields {missing}")


def _check_prompts(task: str, rules, source: dict) -> None:
    """A prompt template the family reads may name only the placeholders it fills."""
    for prompt_key, allowed in rules.prompts(source.get("fields") or {}).items():
        if prompt_key not in source:
            continue
        names = [n for _, n, _, _ in string.Formatter().parse(source[prompt_key]) if n is not None]
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_ #.-]+", n) or n not in allowed]
        if bad:
            raise ValueError(f"config key 'tasks.{task}.{prompt_key}': placeholders {bad} are not among {allowed}")


def _check_foreign_keys(task_cfg: dict, source: dict) -> None:
    """A key only another family reads (its rules' KEYS) would be ignored here: refuse it."""
    for name, family in FAMILIES.items():
        keys = family.load_rules().KEYS
        if name != task_cfg["family"] and any(source.get(k) for k in keys):
            raise ValueError(f"config key '{source['config_key']}': {' and '.join(keys)} are for {name} tasks")


def _read_fastchat(task: str, source: dict) -> pd.DataFrame:
    """MT-Bench as FastChat's gen_judgment.py reads it, from the pinned commit (lorarepro.core.pinned.MT_BENCH):
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


def shorter_than(frame: pd.DataFrame, text: pd.Series, max_tokens: int, tokenizer) -> pd.DataFrame:
    """The rows whose `text` (the family's `token_text`) has fewer than `max_tokens` of the task
    backbone's tokens, special tokens included, as the official loaders count."""
    lengths = [len(ids) for ids in tokenizer(text.tolist(), add_special_tokens=True)["input_ids"]]
    return frame[[n < max_tokens for n in lengths]]


def slice_rows(frame: pd.DataFrame, source: dict, seed: int | None = None) -> pd.DataFrame:
    """The prepared rows a split keeps: `name[start:stop]` of those that passed the filters, then with
    `sample: N` N of them drawn without replacement with `seed` (the data seed), kept in their source
    order. Splits sampled from one file overlap unless sliced apart first."""
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
    frame = pd.DataFrame(rows, columns=list(FORMAT_COLUMNS["imagefolder"]))
    frame.attrs["class_names"] = classes
    return frame


def _check_columns(task: str, source: dict, frame: pd.DataFrame) -> None:
    """Every source column the split's fields name is there."""
    fields = source.get("fields") or {}
    missing = [c for v in fields.values() for c in (v if isinstance(v, list) else [v])
               if c not in frame.columns and column_name(c) not in frame.columns]
    if missing:
        raise ValueError(f"task {task!r}: split {source['split']!r} has no columns {missing} (has {list(frame.columns)})"
                         + (GLUE_HEADERLESS if source.get("format") == "glue_tsv" else ""))


def prepare_external(task: str, task_cfg: dict, data_seed: int, out_dir: Path, tokenizer=None) -> dict:
    """Read, map and write every split of an external task; returns its manifest. `tokenizer`: the
    task backbone's, for splits with `max_tokens`."""
    check_task(task, task_cfg)
    rules = _rules(task_cfg)
    splits, sources, class_names = {}, {}, {}
    for split in task_cfg["splits"]:
        source = split_source(task, task_cfg, split)
        if source.get("max_tokens") and tokenizer is None:
            raise ValueError(f"task {task!r}: splits.{split} has max_tokens, which needs the backbone's tokenizer")
        frame = read_source(task, source)
        class_names[split] = frame.attrs.get("class_names")
        _check_columns(task, source, frame)
        frame = rules.convert(task, task_cfg, split, source, frame)  # the family's prepared columns
        if source.get("max_tokens"):
            frame = shorter_than(frame, rules.token_text(frame), source["max_tokens"], tokenizer)
        splits[split] = slice_rows(frame, source, int(data_seed))
        sources[split] = {k: v for k, v in source.items()
                          if k in ("dataset", "subset", "revision", "path", "format", "split", "slice", "sample", "where",
                                   "exclude", "transforms", "max_tokens", "fastchat")}
    header = {"task": task, "source": task_cfg["source"], "generator": None, "data_seed": int(data_seed),
              "family": task_cfg["family"], "sources": sources, **rules.header(task_cfg, splits, class_names)}
    if task_cfg.get("metric", rules.METRIC) != rules.METRIC:  # absent or the default: manifests unchanged
        header["metric"] = task_cfg["metric"]  # the scorer reads it
    if "mirrors" in task_cfg:
        header["mirrors"] = task_cfg["mirrors"]
    return write_dataset(out_dir, splits, header)
