"""Prepared datasets of the task families (nlu, vision, generation) and their pretext corpora.

`prepare_task` / `prepare_pretext` write parquet splits plus a manifest (written last, with sha256
fingerprints) into a directory; `load_split` / `load_manifest` read them back. Each family's data
module (its `data` in lorarepro.domain.families.FAMILIES) registers its generators and builds its pretext
corpus (`pretext`) and vocabulary (`vocabulary`).
"""

from importlib import import_module
from pathlib import Path

import pandas as pd

from lorarepro.domain.data import external, generation, nlu, vision  # noqa: F401  (their generators register)
from lorarepro.domain.data.io import (
    CAPACITY,
    GENERATORS,
    SPLITS,
    get_generator,
    load_manifest,
    load_split,
    verify_dataset,
    write_dataset,
)
from lorarepro.domain.families import FAMILIES

__all__ = ["CAPACITY", "GENERATED_SOURCES", "GENERATORS", "load_eval_splits", "load_manifest", "load_split", "prepare_pretext",
           "prepare_task", "verify_dataset", "vocabulary"]

GENERATED_SOURCES = ("synthetic", "sklearn_digits")  # the other sources are external (lorarepro.domain.data.external)


def _check_disjoint(task: str, splits: dict[str, pd.DataFrame], key: str) -> None:
    """Guard the generators' promise that train/validation/test share no example."""
    seen: dict = {}
    for split in SPLITS:
        for value in splits[split][key]:
            item = value.tobytes() if hasattr(value, "tobytes") else value
            if seen.setdefault(item, split) != split:
                raise AssertionError(f"task {task!r}: an example is in {seen[item]} and {split}")


def prepare_task(name: str, task_cfg: dict, data_seed: int, out_dir: Path, tokenizer=None) -> dict:
    """Generate (or, for hub/local sources, read) every split of one task into out_dir; returns its
    manifest. `tokenizer`: the backbone's, for external splits filtered by `max_tokens`."""
    if task_cfg.get("source") in external.SOURCES:
        return external.prepare_external(name, task_cfg, data_seed, out_dir, tokenizer)
    generator = get_generator(name, task_cfg.get("generator"))
    family = task_cfg.get("family")
    splits, meta = generator(name, task_cfg, int(data_seed))
    if family is not None and family != meta["family"]:
        raise ValueError(f"task {name!r}: family {family!r} does not match generator "
                         f"{task_cfg['generator']!r} (family {meta['family']!r})")
    _check_disjoint(name, splits, FAMILIES[meta["family"]].key)
    header = {"task": name, "source": task_cfg.get("source"), "generator": task_cfg["generator"],
              "data_seed": int(data_seed), **meta}
    if "mirrors" in task_cfg:
        header["mirrors"] = task_cfg["mirrors"]
    return write_dataset(out_dir, splits, header)


def _data_module(family: str):
    return import_module(FAMILIES[family].data)


def prepare_pretext(family: str, data_seed: int, examples: int, out_dir: Path) -> dict:
    """The backbone's pretraining corpus, disjoint from every downstream task's data.

    nlu and generation produce `examples` distinct text rows; vision ignores `examples` and
    uses the whole pretext pool in all four rotations.
    """
    frame, extra = _data_module(family).pretext(int(data_seed), int(examples))
    header = {"task": f"pretext_{family}", "family": family, "source": FAMILIES[family].pretext_source,
              "generator": "pretext", "data_seed": int(data_seed), **extra, "examples": int(len(frame))}
    return write_dataset(out_dir, {"pretext": frame}, header)


def vocabulary(family: str) -> list[str]:
    """Every word the family's generators emit (tasks and pretext), sorted; digits singly."""
    module = _data_module(family)
    if not hasattr(module, "vocabulary"):
        raise ValueError(f"the {family} family has no text, hence no vocabulary")
    return module.vocabulary()


def load_eval_splits(task_dir: Path, manifest: dict) -> dict[str, pd.DataFrame]:
    """Every split a run is evaluated on (all but train), in manifest order."""
    return {split: load_split(task_dir, split) for split in manifest["splits"] if split != "train"}
