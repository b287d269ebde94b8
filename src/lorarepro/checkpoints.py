"""Checkpoints: saving a trained run, loading it back (safetensors only), and the deterministic
settings every job that trains or evaluates runs under.

A LoRA-family run is saved in PEFT's format (adapter_config.json + adapter_model.safetensors; PiSSA
and LoRA-GA as a plain LoRA delta against the original backbone, see methods.lora.save) and loaded
as `PeftModel.from_pretrained(backbone, checkpoint)`; full fine-tuning with `save_pretrained`.
Each checkpoint follows the Hub's conventions: a filled model card (README.md: task, method, the
run's metrics, how to load it), PEFT's `task_type` and the base model's hub id where it has one.
Weights never come from a pickle: PEFT ignores `use_safetensors` and falls back to a `.bin`
adapter, so `load` refuses a checkpoint without its safetensors file, or with any pickle file
beside it, before PEFT or transformers sees the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from importlib import metadata
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open

from lorarepro import families, numerics, paths
from lorarepro.atomic import atomic_dir, write_text
from lorarepro.data import load_eval_splits, load_manifest
from lorarepro.evaluation import evaluate_splits
from lorarepro.experiment import RunSpec
from lorarepro.families.common import quiet_transformers
from lorarepro.hashing import sha256_dir
from lorarepro.methods import lora

PICKLE = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # weight files that unpickle when loaded
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors' Rust writer reports a failed write


class UnsafeCheckpoint(ValueError):
    """A checkpoint whose weights are not (only) safetensors: it is never loaded."""


def deterministic(settings) -> None:
    """What every training or evaluating process sets first, from a RunSpec (or a record's `config`,
    or a config): its threads and numerics (lorarepro.numerics), deterministic algorithms. Results
    are then bit-identical on one machine, and under portable numerics on any x86-64 CPU."""
    quiet_transformers()
    if isinstance(settings, RunSpec):
        numerics.apply(settings.numerics, settings.threads)
    else:
        numerics.apply(settings.get("numerics", "portable"), settings.get("threads", 1))
    torch.use_deterministic_algorithms(True)


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
        hub = _hub_base(card["run"]["backbone"]) if card else None
        _canonical_adapter_config(tmp / "adapter_config.json", _task_type(base), hub)
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


def _canonical_adapter_config(path: Path, task_type: str | None = None, hub: dict | None = None) -> None:
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


def _hub_base(backbone: str) -> dict | None:
    """{model, revision} of a backbone downloaded from the hub (its marker says), else None."""
    marker = backbone_marker(backbone) or {}
    return {"model": marker["model"], "revision": marker.get("revision")} if marker.get("source") == "hub" else None


def model_card(card: dict, base, hub: dict | None, peft: bool) -> str:
    """The checkpoint's README.md: YAML front matter the Hub reads, then what the run was, its metrics
    and how to load it. Deterministic (no dates): the card is part of the checkpoint's hash."""
    run, seed, metrics = card["run"], card["seed"], card["metrics"]
    task, method = run["task"], run["method"]
    adapter = run.get("adapter") or {}
    version = _version()
    front = {**({"base_model": hub["model"]} if hub else {}), "library_name": "peft" if peft else "transformers",
             "tags": ["lorarepro", f"lorarepro-{method}", f"task-{task}", *([adapter["type"]] if adapter else [])]}
    where = hub["model"] if hub else str(paths.backbone_dir(run["backbone"]))
    cls = type(base)
    labels = getattr(base.config, "num_labels", None) if cls.__name__.endswith("Classification") else None
    head = f", num_labels={labels}" if labels else ""  # the task's head, sized as training sized it
    ckpt, record = str(paths.checkpoint_dir(task, method, seed)), str(paths.run_result(task, method, seed))
    if not cls.__module__.startswith("transformers"):  # a model class of lorarepro's own (CLIP classifier)
        load = (f"# {cls.__name__} is lorarepro's (lorarepro.families): load the run as lorarepro does\n"
                f"import json\nfrom lorarepro import checkpoints\nrun = json.load(open({record!r}))['config']\n"
                f"model, tokenizer, manifest = checkpoints.load(run, {seed})")
    elif peft:
        load = (f"from peft import PeftModel\nfrom transformers import {cls.__name__}\n"
                f"base = {cls.__name__}.from_pretrained({where!r}{head})\nmodel = PeftModel.from_pretrained(base, {ckpt!r})")
    else:
        load = f"from transformers import {cls.__name__}\nmodel = {cls.__name__}.from_pretrained({ckpt!r})"
    rows = [f"| {split} | {'not run' if value is None else value} |" for split, value in metrics.items()]
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# {task} / {method} (seed {seed})", "",
        f"Fine-tuned by lorarepro {version}, which reproduces Flat-LoRA (Li et al., ICML 2025, arXiv 2409.14396).", "",
        f"- task: `{task}` (family `{run['family']}`)",
        f"- method: `{method}`" + (f", adapter `{json.dumps(adapter, sort_keys=True)}`" if adapter else ", full fine-tuning"),
        *([f"- flat: `{json.dumps(run['flat'], sort_keys=True)}`"] if run.get("flat") else []),
        f"- base model: `{where}`" + (f" (revision `{hub['revision']}`)" if hub and hub.get("revision") else ""),
        f"- seed: {seed}", "",
        "## Metrics", "", f"| split | {card['metric']} |", "|---|---|", *rows, "",
        "## How to load", "", "```python", load, "```", "",
        f"The run's full record (config, lineage, timings): `{record}`.", "",
    ])


def _version() -> str:
    try:
        return metadata.version("lorarepro")
    except metadata.PackageNotFoundError:  # a source tree never installed
        return "(not installed)"


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


def backbone_marker(backbone: str) -> dict | None:
    """The completion marker lorarepro.backbone wrote last into models/<backbone> (its content hash,
    how it was made), or None when the backbone was never finished."""
    marker = paths.backbone_done(backbone)
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
