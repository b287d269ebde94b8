"""Saving a trained run: PEFT's adapter format or `save_pretrained`, written atomically, in the Hub's
conventions (PEFT's task_type, the base model's hub id, a model card), hashed as written."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from safetensors import SafetensorError

from lorarepro.core.atomic import atomic_dir, write_text
from lorarepro.domain.checkpoints.card import model_card
from lorarepro.domain.checkpoints.files import backbone_marker
from lorarepro.core.hashing import sha256_dir
from lorarepro.domain.methods import lora

_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors' Rust writer reports a failed write


def save(model, tokenizer, out_dir: Path, initial: dict | None = None, card: dict | None = None) -> str:
    """PEFT adapter or full save_pretrained, written atomically; returns the checkpoint's hash.

    `initial`: the adapter at init when the init rewrote the base weights (PiSSA, LoRA-GA); the
    adapter is then saved as a LoRA delta against the original backbone (`lora.save`).
    `card`: {run, seed, metric, metrics} of the run, for its model card (README.md); written before
    the hash is taken, so the hash covers it."""
    with atomic_dir(out_dir) as tmp, _as_os_error():
        if hasattr(model, "peft_config"):
            lora.save(model, tmp, initial)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None and not hasattr(model, "peft_config"):
            tokenizer.save_pretrained(tmp)
        base = model.get_base_model() if hasattr(model, "peft_config") else model
        hub = hub_base(card["run"]["backbone"]) if card else None
        canonical_adapter_config(tmp / "adapter_config.json", _task_type(base), hub)
        if card is not None:
            write_text(tmp / "README.md", model_card(card, base, hub, peft=hasattr(model, "peft_config")))
        digest = sha256_dir(tmp)
    return digest


@contextlib.contextmanager
def _as_os_error():
    """safetensors reports a failed write (a full disk) as SafetensorError "… (os error 28)": raised
    as the OSError it is, atomic_dir names the checkpoint and the reason (`cannot write <path>: …`)."""
    try:
        yield
    except SafetensorError as err:
        found = _OS_ERROR.search(str(err))
        if found is None:
            raise
        raise OSError(int(found[1]), os.strerror(int(found[1]))) from err


def canonical_adapter_config(path: Path, task_type: str | None = None, hub: dict | None = None) -> None:
    """PEFT keeps target_modules as a set, so its JSON order follows Python's per-process hash seed;
    a sorted list makes identical adapters hash identically (PEFT reads either). Training wraps a plain
    PeftModel (no task_type); the saved task_type lets AutoPeftModel and the Hub pick the task's class.
    base_model_name_or_path becomes the hub id where there is one (else the repository-relative
    backbone: an absolute path would differ per clone and change the checkpoint's hash)."""
    if path.is_file():
        config = json.loads(path.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        # Not for AdaLoRA: a task class routes forward through AdaLoraModel.forward, which fails on a
        # loaded adapter given labels (PEFT 0.21: no trainable_adapter_name in inference mode).
        config["task_type"] = config.get("task_type") or (task_type if config.get("peft_type") != "ADALORA" else None)
        if hub is not None:
            config.update(base_model_name_or_path=hub["model"], revision=hub.get("revision") or config.get("revision"))
        write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _task_type(base) -> str | None:
    """PEFT's TaskType of a backbone: T5 family SEQ_2_SEQ_LM, encoder classifiers SEQ_CLS, decoders
    CAUSAL_LM; vision models have none in PEFT (None)."""
    name = type(base).__name__
    if getattr(getattr(base, "config", None), "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    return "CAUSAL_LM" if name.endswith("ForCausalLM") else None


def hub_base(backbone: str) -> dict | None:
    """{model, revision} of a backbone downloaded from the hub (its marker says), else None."""
    marker = backbone_marker(backbone) or {}
    return {"model": marker["model"], "revision": marker.get("revision")} if marker.get("source") == "hub" else None
