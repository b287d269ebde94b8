"""The task rules of a toy family for the tests (test_family_rules.py): text regression, a number
predicted from a prompt. It shows what a new family brings to external data and the config check
(lorarepro.domain.families.rules), with no change to lorarepro.domain.data.external or lorarepro.domain.experiment."""

import pandas as pd

METRIC = "mean_absolute_error"
METRICS = ("mean_absolute_error", "mean_squared_error")
REQUIRED = ("target_range",)
KEYS = ()


def needs(task_cfg: dict, split: str) -> tuple[str, list[str]]:
    return "family 'regression'", ["text", "target"]


def prompts(fields: dict) -> dict[str, list[str]]:
    return {"prompt": fields.get("text", [])}


def check(task: str, task_cfg: dict, split: str, source: dict) -> None:
    low, high = task_cfg.get("target_range", (0, 1))
    if low >= high:
        raise ValueError(f"config key 'tasks.{task}.target_range': {low} is not below {high}")


def convert(task: str, task_cfg: dict, split: str, source: dict, frame: pd.DataFrame) -> pd.DataFrame:
    fields = source["fields"]
    texts = [source["prompt"].format_map({c: str(r[c]) for c in fields["text"]}) for r in frame.to_dict("records")]
    return pd.DataFrame({"text": texts, "target": frame[fields["target"]].astype("float64")})


def header(task_cfg: dict, splits: dict[str, pd.DataFrame], class_names: dict) -> dict:
    return {"target_range": list(task_cfg["target_range"])}
