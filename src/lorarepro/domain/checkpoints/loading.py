"""Loading a saved run back (safetensors only) under the deterministic settings every job that trains
or evaluates runs under, and evaluating it again as training did."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from lorarepro.core import numerics, paths
from lorarepro.domain import families
from lorarepro.domain.checkpoints.files import refuse_pickle
from lorarepro.domain.data import load_eval_splits, load_manifest
from lorarepro.domain.evaluation import evaluate_splits
from lorarepro.domain.experiment import RunSpec
from lorarepro.domain.families.common import quiet_transformers
from lorarepro.domain.methods import lora


def deterministic(settings) -> None:
    """What every training or evaluating process sets first, from a RunSpec (or a record's `config`,
    or a config): its threads and numerics (lorarepro.core.numerics), deterministic algorithms. Results
    are then bit-identical on one machine, and under portable numerics on any x86-64 CPU."""
    quiet_transformers()
    if isinstance(settings, RunSpec):
        numerics.apply(settings.numerics, settings.threads)
    else:
        numerics.apply(settings.get("numerics", "portable"), settings.get("threads", 1))
    torch.use_deterministic_algorithms(True)


def load(run, seed: int, merged: bool = False):
    """(model in eval mode, tokenizer, manifest) of a saved run, `run` being its resolved settings.

    LoRA family: the backbone with the PEFT adapter, as training evaluated it (not merged: merging
    rounds differently), or with `merged` its weights W + s·BA in a plain model; full fine-tuning:
    the saved model. Loading may initialise a fresh head before the saved one replaces it: that
    runs under a forked RNG seeded with the run's seed, so the caller's RNG state is untouched.
    `run`: a RunSpec or its dict layout (a result record's `config`)."""
    run = RunSpec.of(run)
    family = families.get(run.family)
    manifest = load_manifest(paths.prepared_dir(run.task))
    ckpt = paths.checkpoint_dir(run.task, run.method, seed)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpt}: checkpoint of task={run.task} method={run.method} seed={seed} is missing")
    refuse_pickle(ckpt, "adapter_model.safetensors" if run.adapter is not None else None)
    if run.adapter is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, tokenizer = family.load_for_task(ckpt, manifest)
        return model.eval(), tokenizer, manifest
    from peft import PeftConfig, PeftModel  # deferred: peft's import is heavy and only adapter runs need it

    config = PeftConfig.from_pretrained(str(ckpt))
    config.task_type = None  # trained as a plain PeftModel (the saved task_type is for the Hub): evaluated as one
    with torch.random.fork_rng(devices=[]):
        base, tokenizer = load_backbone(run, seed, manifest)
        with lora.peft_quietly():
            model = PeftModel.from_pretrained(base, str(ckpt), config=config)
        model = model.merge_and_unload() if merged else model
    return model.eval(), tokenizer, manifest


def load_backbone(run, seed: int, manifest: dict):
    """(model, tokenizer) of the run's backbone for its task, as `load` starts from: seeded with the
    run's seed, so weights the backbone lacks (a new head) are initialised the same each time.
    `run`: a RunSpec or a result record's `config`."""
    run = RunSpec.of(run)
    torch.manual_seed(seed)
    return families.get(run.family).load_for_task(paths.backbone_dir(run.backbone), manifest)


def evaluate_saved(run, seed: int, evaluation: dict | None = None, details: dict | None = None):
    """A saved run evaluated again on every evaluation split, loaded and set up as training evaluated
    it (so the metrics come back bit-identical on the same machine): (metrics, not_run, model).
    `run`: a RunSpec or a result record's `config`."""
    run = RunSpec.of(run)
    deterministic(run)
    model, tokenizer, manifest = load(run, seed)
    splits = load_eval_splits(paths.prepared_dir(run.task), manifest)
    metrics, not_run = evaluate_splits(families.get(run.family), model, tokenizer, splits, manifest,
                                       run.training["max_length"], evaluation, details)
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
