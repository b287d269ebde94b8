"""Checkpoints: saving a trained run, loading it back (safetensors only), and the deterministic
settings every job that trains or evaluates runs under.

A LoRA-family run is saved in PEFT's format (adapter_config.json + adapter_model.safetensors; PiSSA
and LoRA-GA as a plain LoRA delta against the original backbone, see methods.lora.save) and loaded
as `PeftModel.from_pretrained(backbone, checkpoint)`; full fine-tuning with `save_pretrained`.
Weights never come from a pickle: PEFT ignores `use_safetensors` and falls back to a `.bin`
adapter, so `load` refuses a checkpoint without its safetensors file first.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from lorarepro import families, paths
from lorarepro.atomic import atomic_dir, write_text
from lorarepro.data import load_eval_splits, load_manifest
from lorarepro.evaluation import evaluate_splits
from lorarepro.families.common import quiet_transformers
from lorarepro.hashing import sha256_dir
from lorarepro.methods import lora


def deterministic(threads: int) -> None:
    """What every training or evaluating process sets first: results are then bit-identical on one machine."""
    quiet_transformers()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def save(model, tokenizer, out_dir: Path, initial: dict | None = None) -> str:
    """PEFT adapter or full save_pretrained, written atomically; returns the checkpoint's hash.

    `initial`: the adapter at init when the init rewrote the base weights (PiSSA, LoRA-GA); the
    adapter is then saved as a LoRA delta against the original backbone (`lora.save`)."""
    with atomic_dir(out_dir) as tmp:
        if hasattr(model, "peft_config"):
            lora.save(model, tmp, initial)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None and not hasattr(model, "peft_config"):
            tokenizer.save_pretrained(tmp)
        _canonical_adapter_config(tmp / "adapter_config.json")
        digest = sha256_dir(tmp)
    return digest


def _canonical_adapter_config(path: Path) -> None:
    """PEFT keeps target_modules as a set, so its JSON order follows Python's per-process hash seed;
    a sorted list makes identical adapters hash identically (PEFT reads either)."""
    if path.is_file():
        config = json.loads(path.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
            write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def load(run: dict, seed: int, merged: bool = False):
    """(model in eval mode, tokenizer, manifest) of a saved run, `run` being its resolved settings.

    LoRA family: the backbone with the PEFT adapter, as training evaluated it (not merged: merging
    rounds differently), or with `merged` its weights W + s·BA in a plain model; full fine-tuning:
    the saved model. Loading may initialise a fresh head before the saved one replaces it: that
    runs under a forked RNG seeded with the run's seed, so the caller's RNG state is untouched."""
    family = families.get(run["family"])
    manifest = load_manifest(paths.prepared_dir(run["task"]))
    ckpt = paths.checkpoint_dir(run["task"], run["method"], seed)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpt}: checkpoint of task={run['task']} method={run['method']} seed={seed} is missing")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if run["adapter"] is None:
            model, tokenizer = family.load_for_task(ckpt, manifest)
        else:
            from peft import PeftModel  # deferred: peft's import is heavy and only adapter runs need it

            if not (ckpt / "adapter_model.safetensors").is_file():
                raise FileNotFoundError(f"{ckpt}: no adapter_model.safetensors (pickle weights are not loaded)")
            base, tokenizer = family.load_for_task(paths.backbone_dir(run["backbone"]), manifest)
            model = PeftModel.from_pretrained(base, str(ckpt))
            model = model.merge_and_unload() if merged else model
    return model.eval(), tokenizer, manifest


def evaluate_saved(run: dict, seed: int, evaluation: dict | None = None, details: dict | None = None):
    """A saved run evaluated again on every evaluation split, loaded and set up as training evaluated
    it (so the metrics come back bit-identical on the same machine): (metrics, not_run, model)."""
    deterministic(run.get("threads", 1))
    model, tokenizer, manifest = load(run, seed)
    splits = load_eval_splits(paths.prepared_dir(run["task"]), manifest)
    metrics, not_run = evaluate_splits(families.get(run["family"]), model, tokenizer, splits, manifest,
                                       run["training"]["max_length"], evaluation, details)
    return metrics, not_run, model


def backbone_weights(target_names: list[str], backbone_dir: Path, reload=None) -> dict:
    """The saved backbone's weights of the named (PEFT-wrapped) layers, keyed by those names.

    Read straight from the safetensors shards where the file uses the module names (T5, Llama: no
    second model in memory). transformers renames some architectures' keys on load (ViT, CLIP in
    v5), so weights missing from the files come from `reload()`, a fresh load of the same backbone
    by the loader training used."""
    keys = {name: name.removeprefix("base_model.model.").removesuffix(".base_layer") + ".weight" for name in target_names}
    found = {}
    for shard in sorted(Path(backbone_dir).glob("*.safetensors")):  # hub models of 7B come in shards
        with safe_open(str(shard), framework="pt") as fh:
            found.update({k: fh.get_tensor(k) for k in set(fh.keys()) & set(keys.values())})
    if reload is not None and not set(keys.values()) <= found.keys():
        loaded = dict(reload().named_parameters())
        found.update({k: loaded[k].detach() for k in set(keys.values()) - found.keys() if k in loaded})
    out = {}
    for name, key in keys.items():
        if key not in found:
            raise KeyError(f"{backbone_dir}/*.safetensors has no weight '{key}' for perturbed layer '{name}'")
        out[name] = found[key]
    return out


def backbone_marker(backbone: str) -> dict | None:
    """The completion marker lorarepro.backbone wrote last into models/<backbone> (its content hash,
    how it was made), or None when the backbone was never finished."""
    marker = paths.backbone_done(backbone)
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
