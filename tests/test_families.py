"""Family pieces that need no training: answer extraction, tokenizers, batching."""

import pandas as pd
import pytest
import torch

from lorarepro.domain import families
from lorarepro.domain.families.common import build_tokenizer, pad
from lorarepro.domain.families.generation import extract_answer
from lorarepro.stages.training.loop import step_plan


@pytest.mark.parametrize(
    "tokens, expected",
    [
        ("1 9 - 1 = 1 8 . 1 8 + 3 = 2 1 . the answer is 2 1".split(), "21"),
        ("the answer is 7 . then 9".split(), "7"),
        ("3 + 4 = 7".split(), "7"),  # no 'answer is': last number
        ("the answer is".split(), None),
        ([], None),
    ],
)
def test_extract_answer(tokens, expected):
    assert extract_answer(tokens) == expected


def test_word_tokenizer_splits_digits_and_round_trips(tmp_path):
    tok = build_tokenizer(["tom", "has", "apples", "."] + [str(d) for d in range(10)])
    ids = tok("tom has 12 apples .", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["tom", "has", "1", "2", "apples", "."]
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path)("tom has 12 apples .", add_special_tokens=False)["input_ids"] == ids


def test_pad_left_and_right():
    assert pad([[1, 2, 3], [4]], 0).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad([[1, 2, 3], [4]], 0, left=True).tolist() == [[1, 2, 3], [0, 0, 4]]


def test_step_plan_is_seeded_and_covers_each_epoch():
    plan = step_plan(10, 4, 2, 2, seed=3)
    assert plan == step_plan(10, 4, 2, 2, seed=3)
    assert plan != step_plan(10, 4, 2, 2, seed=4)
    assert len(plan) == 6  # ceil(10/4) steps x 2 epochs
    first_epoch = [i for step in plan[:3] for micro in step for i in micro]
    assert sorted(first_epoch) == list(range(10))
    assert [len(m) for m in plan[0]] == [2, 2]  # 4 examples in 2 micro-batches


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="audio"):
        families.get("audio")


def test_vision_batches_are_normalized():
    from lorarepro.domain.families import vision

    df = pd.DataFrame({"pixels": [[0.0] * 64, [1.0] * 64], "label": [0, 1]})
    batch = vision.encode(df, None, {"num_labels": 2}, 0).batch([0, 1])
    assert batch["pixel_values"].shape == (2, 1, 8, 8)
    assert torch.equal(batch["pixel_values"][0], -torch.ones(1, 8, 8))
    assert batch["labels"].tolist() == [0, 1]
