"""A family's task rules: the metrics its tasks may score, what an external (hub/local) task of it
must configure, and how a split read from such a source becomes its prepared columns.

Kept apart from the family's model module (lorarepro.domain.families.<name>, which imports torch and
transformers) so the config check, run while Snakemake builds the DAG, and the data jobs stay light.
lorarepro.domain.data.external reads, filters, slices and writes the sources and asks these rules for
everything a family decides; a family's module is its `rules` in lorarepro.domain.families.FAMILIES.

Each rules module provides:
    METRIC        the default metric (a task's `metric` may choose another of METRICS)
    METRICS       every metric a task of the family may score
    REQUIRED      task keys an external task must give (nlu: label_words)
    KEYS          split keys only this family reads (refused in another family's task, which would ignore them)
    needs(task_cfg, split) -> (who, fields)   the `fields` an external split must name; `who` needs them (messages)
    prompts(fields) -> {key: placeholders}    the prompt templates it reads and what each may name
    check(task, task_cfg, split, source)      its own rules for one external split; raises ValueError
    convert(task, task_cfg, split, source, frame) -> DataFrame   source columns -> prepared columns
    header(task_cfg, splits, class_names) -> dict                its entries of the prepared manifest
    token_text(frame) -> Series   with `max_tokens` among KEYS: the text a row's length is counted on

The helpers below are shared by the families' conversions.
"""

import re

import pandas as pd

# nlu and vision score predicted labels with scikit-learn (lorarepro.domain.families.nlu.METRICS)
CLASSIFICATION_METRICS = ("accuracy", "f1", "f1_macro", "matthews_corrcoef")
TURN = re.compile(r"^(?P<column>.+)\[(?P<role>[A-Za-z_]+)\]$")  # messages[user]: the first user turn


def column(frame: pd.DataFrame, spec: str) -> pd.Series:
    """A source column, or with `column[role]` the first `role` turn of a chat-message column (a list
    of {role, content}, as Code-Feedback's `messages`)."""
    turn = TURN.match(spec)
    if spec in frame.columns or turn is None:
        return frame[spec]
    role = turn["role"]
    return pd.Series([next((m["content"] for m in messages if m["role"] == role), "") for messages in frame[turn["column"]]])


def column_name(spec: str) -> str:
    """The source column a field reads (`messages[user]` reads `messages`)."""
    turn = TURN.match(spec)
    return turn["column"] if turn else spec


def labels(task: str, values: pd.Series, names: list[str] | None, count: int) -> list[int]:
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
