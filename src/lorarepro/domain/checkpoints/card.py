"""A checkpoint's model card (README.md), as the Hub reads it: front matter, what the run was, its
metrics, how to load it. Deterministic (no dates), since the card is part of the checkpoint's hash."""

from __future__ import annotations

import json
from importlib import metadata

import yaml

from lorarepro.core import paths


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
        load = (f"# {cls.__name__} is lorarepro's (lorarepro.domain.families): load the run as lorarepro does\n"
                f"import json\nfrom lorarepro.domain import checkpoints\nrun = json.load(open({record!r}))['config']\n"
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
