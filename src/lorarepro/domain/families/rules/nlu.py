"""nlu's task rules: a classification metric, and external text columns become `text` (the task's
prompt filled from them; without a prompt, two columns stay a pair: text, text_pair) and `label`."""

import pandas as pd

from lorarepro.domain.families.rules import CLASSIFICATION_METRICS, labels

METRIC = "accuracy"
METRICS = CLASSIFICATION_METRICS
REQUIRED = ("label_words",)  # the prepared manifest records them: a text-to-text model's targets
KEYS = ()


def needs(task_cfg: dict, split: str) -> tuple[str, list[str]]:
    return "family 'nlu'", ["text", "label"]


def prompts(fields: dict) -> dict[str, list[str]]:
    return {"prompt": fields.get("text", [])}  # the source's text columns, by name


def check(task: str, task_cfg: dict, split: str, source: dict) -> None:
    """Nothing beyond the common rules and the declarations above."""


def convert(task: str, task_cfg: dict, split: str, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    fields = source["fields"]
    cols, prompt = fields["text"], source.get("prompt")
    ids = pd.Series(labels(task, frame[fields["label"]], task_cfg.get("label_names"), len(task_cfg["label_words"])), dtype="int64")
    if prompt is None and len(cols) == 2:  # a sentence pair: encoders pair it with their own separator
        return pd.DataFrame({"text": frame[cols[0]].astype(str).tolist(), "text_pair": frame[cols[1]].astype(str).tolist(), "label": ids})
    texts = [prompt.format_map({c: str(r[c]) for c in cols}) if prompt else " ".join(str(r[c]) for c in cols)
             for r in frame[cols].to_dict("records")]
    return pd.DataFrame({"text": texts, "label": ids})


def header(task_cfg: dict, splits: dict[str, pd.DataFrame], class_names: dict) -> dict:
    return {"num_labels": len(task_cfg["label_words"]), "label_words": list(task_cfg["label_words"])}
