"""What a checkpoint directory may hold: weights from safetensors only (a pickle beside them, or their
absence, refuses the checkpoint before PEFT or transformers sees it); and a backbone's completion marker."""

from __future__ import annotations

import json
from pathlib import Path

from lorarepro.core import paths

PICKLE = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # weight files that unpickle when loaded


class UnsafeCheckpoint(ValueError):
    """A checkpoint whose weights are not (only) safetensors: it is never loaded."""


def pickle_files(ckpt: Path) -> list[str]:
    """The pickle weight files in a checkpoint directory, relative to it."""
    return sorted(str(p.relative_to(ckpt)) for p in Path(ckpt).rglob("*") if p.suffix in PICKLE)


def refuse_pickle(ckpt: Path, required: str | None = None) -> None:
    """Raise UnsafeCheckpoint when `ckpt` holds pickle weights (PEFT would load an adapter_model.bin,
    torch only with weights_only) or lacks its `required` safetensors file."""
    pickles = pickle_files(ckpt)
    if pickles:
        raise UnsafeCheckpoint(f"{ckpt}: pickle weights {pickles} present; weights load from safetensors only, so the "
                               "checkpoint is not loaded (restore it: `dvc checkout checkpoints`, or retrain it)")
    if required is not None and not (ckpt / required).is_file():
        raise FileNotFoundError(f"{ckpt}: no {required} (weights load from safetensors only)")


def backbone_marker(backbone: str) -> dict | None:
    """The completion marker lorarepro.stages.backbone wrote last into models/<backbone> (its content hash,
    how it was made), or None when the backbone was never finished."""
    marker = paths.backbone_done(backbone)
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
