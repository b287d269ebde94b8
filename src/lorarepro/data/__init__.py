"""Prepared datasets of the three task families (nlu, vision, generation) and their pretext corpora.

`prepare_task` / `prepare_pretext` write parquet splits plus a manifest (written last, with sha256
fingerprints) into a directory; `load_split` / `load_manifest` read them back.
"""

from pathlib import Path

import pandas as pd

from lorarepro.data import external, generation, nlu, vision
from lorarepro.data.io import (
    GENERATORS,
    SPLITS,
    get_generator,
    load_manifest,
    load_split,
    register,
    verify_dataset,
    write_dataset,
)

__all__ = ["GENERATORS", "load_manifest", "load_split", "prepare_pretext", "prepare_task",
           "register", "verify_dataset", "vocabulary"]

FAMILIES = ("nlu", "vision", "generation")
KEY_COLUMN = {"nlu": "text", "vision": "pixels", "generation": "question"}
PRETEXT_SOURCE = {"nlu": "synthetic", "vision": "sklearn_digits", "generation": "synthetic"}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")


def _check_disjoint(task: str, splits: dict[str, pd.DataFrame], key: str) -> None:
    """Guard the generators' promise that train/validation/test share no example."""
    seen: dict = {}
    for split in SPLITS:
        for value in splits[split][key]:
            item = value.tobytes() if hasattr(value, "tobytes") else value
            if seen.setdefault(item, split) != split:
                raise AssertionError(f"task {task!r}: an example is in {seen[item]} and {split}")


def prepare_task(name: str, task_cfg: dict, data_seed: int, out_dir: Path) -> dict:
    """Generate (or, for hub/local sources, read) every split of one task into out_dir; returns its manifest."""
    if task_cfg.get("source") in external.SOURCES:
        return external.prepare_external(name, task_cfg, data_seed, out_dir)
    generator = get_generator(name, task_cfg.get("generator"))
    family = task_cfg.get("family")
    splits, meta = generator(name, task_cfg, int(data_seed))
    if family is not None and family != meta["family"]:
        raise ValueError(f"task {name!r}: family {family!r} does not match generator "
                         f"{task_cfg['generator']!r} (family {meta['family']!r})")
    _check_disjoint(name, splits, KEY_COLUMN[meta["family"]])
    header = {"task": name, "source": task_cfg.get("source"), "generator": task_cfg["generator"],
              "data_seed": int(data_seed), **meta}
    if "mirrors" in task_cfg:
        header["mirrors"] = task_cfg["mirrors"]
    return write_dataset(out_dir, splits, header)


def prepare_pretext(family: str, data_seed: int, examples: int, out_dir: Path) -> dict:
    """The backbone's pretraining corpus, disjoint from every downstream task's data.

    nlu and generation produce `examples` distinct text rows; vision ignores `examples` and
    uses the whole pretext pool in all four rotations.
    """
    _check_family(family)
    header = {"task": f"pretext_{family}", "family": family, "source": PRETEXT_SOURCE[family],
              "generator": "pretext", "data_seed": int(data_seed)}
    if family == "vision":
        frame = vision.pretext_frame(int(data_seed))
        header.update(num_labels=4, image_size=vision.IMAGE_SIZE)
    else:
        module = nlu if family == "nlu" else generation
        frame = pd.DataFrame(module.pretext_rows(int(data_seed), int(examples)))
    header["examples"] = int(len(frame))
    return write_dataset(out_dir, {"pretext": frame}, header)


def vocabulary(family: str) -> list[str]:
    """Every word the family's generators emit (tasks and pretext), sorted; digits singly."""
    _check_family(family)
    if family == "vision":
        raise ValueError("the vision family has no text, hence no vocabulary")
    return (nlu if family == "nlu" else generation).vocabulary()
