"""A family owns its task rules (lorarepro.domain.families.rules): a toy family (toy_family.py), registered
like the real ones, gets its external data prepared and its metric checked with no change to
lorarepro.domain.data.external or lorarepro.domain.experiment, which name no family."""

import inspect
import re

import pandas as pd
import pytest

from lorarepro.core.config import ConfigError
from lorarepro.domain.data import external, load_manifest, load_split, prepare_task
from lorarepro.domain.experiment import _check_metric
from lorarepro.domain.families import FAMILIES, Family

ROWS = pd.DataFrame({"sentence": ["a fine film", "dull", "great fun", "awful"], "score": [4.5, 1.0, 5.0, 0.5]})


@pytest.fixture
def regression(monkeypatch):
    """The toy family, registered for one test (its model and data sides are never imported here)."""
    monkeypatch.setattr(FAMILIES, "_entries", dict(FAMILIES._entries))
    FAMILIES.register("regression", Family(("toy",), "toy_family", "toy_family", "text", "synthetic", "toy_family"))


def task(tmp_path, **extra) -> dict:
    ROWS.to_csv(tmp_path / "rows.csv", index=False)
    return {"family": "regression", "backbone": "toy", "source": "local", "path": str(tmp_path), "format": "csv",
            "fields": {"text": ["sentence"], "target": "score"}, "prompt": "rate: {sentence}", "target_range": [0, 5],
            "splits": {"train": "rows.csv", "validation": "rows.csv[:2]", "test": "rows.csv[2:]"}, **extra}


def test_a_new_familys_external_data_is_prepared_by_its_rules(regression, tmp_path):
    manifest = prepare_task("reviews", task(tmp_path, metric="mean_squared_error"), 0, tmp_path / "out")
    assert manifest["family"] == "regression" and manifest["target_range"] == [0, 5]
    assert manifest["metric"] == "mean_squared_error"  # not the family's default: the scorer reads it
    assert "metric" not in prepare_task("reviews", task(tmp_path), 0, tmp_path / "default")
    test = load_split(tmp_path / "out", "test")
    assert test["text"].tolist() == ["rate: great fun", "rate: awful"] and test["target"].tolist() == [5.0, 0.5]
    assert load_manifest(tmp_path / "out")["splits"]["validation"]["rows"] == 2


@pytest.mark.parametrize("change, message", [
    (lambda t: t["fields"].pop("target"), r"splits.train': family 'regression' needs fields \['target'\]"),
    (lambda t: t.pop("target_range"), r"tasks.reviews.target_range': required for an external regression task"),
    (lambda t: t.update(target_range=[5, 0]), r"tasks.reviews.target_range': 5 is not below 0"),
    (lambda t: t.update(prompt="rate: {review}"), r"tasks.reviews.prompt': placeholders \['review'\]"),
    (lambda t: t.update(max_tokens=8), r"splits.train': max_tokens and transforms are for generation tasks"),
])
def test_a_new_familys_config_rules_are_checked(regression, tmp_path, change, message):
    cfg = task(tmp_path)
    change(cfg)
    with pytest.raises(ValueError, match=message):
        external.check_task("reviews", cfg)


def test_a_new_familys_metrics_are_checked(regression, tmp_path):
    _check_metric("reviews", task(tmp_path, metric="mean_squared_error"))
    with pytest.raises(ConfigError, match="tasks.reviews.metric': family regression scores one of mean_absolute_error"):
        _check_metric("reviews", task(tmp_path, metric="accuracy"))
    with pytest.raises(ConfigError, match="tasks.reviews.metric': 'mean_squared_error' is for tasks with hub or local data"):
        _check_metric("reviews", task(tmp_path, metric="mean_squared_error", source="synthetic"))


@pytest.mark.parametrize("code", [external, _check_metric], ids=["data.external", "experiment._check_metric"])
def test_no_family_is_named_outside_the_families(code):
    source = inspect.getsource(code)
    assert not [name for name in FAMILIES if re.search(rf"\b{name}\b", source)]
