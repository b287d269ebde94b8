"""vision's task rules: a classification metric, and external images become `image` (the encoded
file's bytes, as stored) and `label`; the class names, where known, go to the manifest (CLIP's
zero-shot head is built from them)."""

import pandas as pd

from lorarepro.domain.families.rules import CLASSIFICATION_METRICS, labels

METRIC = "accuracy"
METRICS = CLASSIFICATION_METRICS
REQUIRED = ()
KEYS = ()


def needs(task_cfg: dict, split: str) -> tuple[str, list[str]]:
    return "family 'vision'", ["label", "image"]


def prompts(fields: dict) -> dict[str, list[str]]:
    return {"prompt": []}  # images: nothing to fill in


def check(task: str, task_cfg: dict, split: str, source: dict) -> None:
    """Nothing beyond the common rules and the declarations above."""


def convert(task: str, task_cfg: dict, split: str, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Label strings are ids through `label_names`; an image folder's class names, sorted, without them."""
    fields = source.get("fields") or {}
    label_col = fields.get("label", "label")
    names = task_cfg.get("label_names")
    if source.get("format") == "imagefolder" and names is None:
        names = sorted(frame[label_col].unique().tolist())
    count = len(names) if names is not None else int(pd.to_numeric(frame[label_col]).max()) + 1
    ids = labels(task, frame[label_col], names, count)
    return pd.DataFrame({"image": frame[fields.get("image", "image")].tolist(), "label": pd.Series(ids, dtype="int64")})


def header(task_cfg: dict, splits: dict[str, pd.DataFrame], class_names: dict) -> dict:
    """The number of classes, and their names from the config or the train split's source."""
    names = task_cfg.get("label_names") or class_names.get("train")
    out = {"num_labels": len(names) if names else int(splits["train"]["label"].max()) + 1}
    if names:
        out["class_names"] = list(names)
    return out
