"""Backbones: build a tiny model and pretrain it on its family's pretext corpus, copy a local one, or download one.

The result is a save_pretrained directory (safetensors, config, tokenizer) that fine-tuning loads
through the same from_pretrained path that loads hub models in the paper profile.
"""

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import snapshot_download

from lorarepro.core import numerics, paths
from lorarepro.domain import families
from lorarepro.core.atomic import atomic_dir, write_json
from lorarepro.core.config import backbone_seed
from lorarepro.domain.data import load_split, vocabulary
from lorarepro.domain.families.common import quiet_transformers
from lorarepro.core.hashing import sha256_dir
from lorarepro.stages.training.loop import make_optimizer, train_steps

# Pretraining's fixed AdamW settings (its lr, steps and batch come from the backbone's `pretrain:`)
PRETRAIN_WEIGHT_DECAY = 0.01
PRETRAIN_WARMUP_RATIO = 0.05


def pretrain(name: str, cfg: dict, pretext_dir: Path, out_dir: Path, seed: int) -> dict:
    """Build the backbone from `cfg['size']`, pretrain it, and save it to `out_dir` atomically."""
    family_name = families.of_arch(cfg["arch"])
    family = families.get(family_name)
    quiet_transformers()
    torch.manual_seed(seed)
    model, tokenizer = family.build_backbone(cfg["size"], vocabulary(family_name) if family.TEXT else [])
    rows = load_split(pretext_dir, "pretext")
    pre = cfg["pretrain"]
    rng = np.random.default_rng(seed)
    plan = [[rng.choice(len(rows), size=min(pre["batch_size"], len(rows)), replace=False).tolist()] for _ in range(pre["steps"])]
    optimizer, scheduler = make_optimizer(model, pre["lr"], PRETRAIN_WEIGHT_DECAY, pre["steps"], PRETRAIN_WARMUP_RATIO)
    start = time.perf_counter()
    history = train_steps(
        model, plan, lambda idx: family.pretext_batch(tokenizer, rows.iloc[idx], rng, pre["max_length"]),
        optimizer, scheduler, label=f"pretrain {name}",
    )
    info = {
        "backbone": name, "arch": cfg["arch"], "source": "pretrain", "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretrain": pre, "seconds": round(time.perf_counter() - start, 2),
        "numerics": numerics.fingerprint(), "cpu_model": numerics.cpu_model(),
        "first_loss": history.loss[0], "final_loss": float(np.mean(history.loss[-20:])),
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _finish(tmp, cfg, info)
    return info


def copy_local(name: str, cfg: dict, out_dir: Path) -> dict:
    """Bring a local save_pretrained directory in; refuses directories without safetensors weights."""
    src = Path(cfg["path"])
    if not src.is_dir():
        raise FileNotFoundError(f"backbones.{name}.path: directory not found: {src}")
    if not any(src.glob("*.safetensors")):
        raise FileNotFoundError(f"backbones.{name}.path: no *.safetensors in {src} (pickle weights are not loaded)")
    info = {"backbone": name, "arch": cfg["arch"], "source": "local", "path": str(src)}
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl"),
                        dirs_exist_ok=True)
        _finish(tmp, cfg, info)
    return info


# Weights as safetensors only (no pickle), plus configs, tokenizer files and processor settings.
HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.tiktoken"]


def download_hub(name: str, cfg: dict, out_dir: Path) -> dict:
    """Fetch a hub model (pinned `revision` if given) with its safetensors weights only.

    Gated models (Llama-2) need an accepted licence and a token in HF_TOKEN; HF_HUB_OFFLINE=1 with
    a filled cache works without network.
    """
    info = {"backbone": name, "arch": cfg["arch"], "source": "hub", "model": cfg["model"], "revision": cfg.get("revision")}
    with atomic_dir(out_dir) as tmp:
        snapshot_download(repo_id=cfg["model"], revision=cfg.get("revision"), local_dir=str(tmp), allow_patterns=HUB_PATTERNS)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # the hub client's bookkeeping, not part of the model
        if not any(tmp.glob("*.safetensors")):
            raise FileNotFoundError(f"backbones.{name}.model: {cfg['model']} has no *.safetensors weights (pickle weights are not loaded)")
        _finish(tmp, cfg, info)
    return info


def _finish(tmp: Path, cfg: dict, info: dict) -> None:
    """Hash, then write the completion marker last (atomic_dir moves the directory into place).

    The marker also carries the entry's trust_remote_code, which families.common.load_tokenizer
    passes to transformers (off unless the config's backbone entry turns it on)."""
    info["trust_remote_code"] = bool(cfg.get("trust_remote_code", False))
    info["sha256"] = sha256_dir(tmp)
    write_json(tmp / paths.BACKBONE_MARKER, info)


def build(name: str, config: dict) -> dict:
    """Make `models/<name>` from the config entry: pretrain it, or copy a local directory."""
    cfg = config["backbones"][name]
    numerics.apply(config.get("numerics", "portable"), config.get("threads", 1))
    out = paths.backbone_dir(name)
    if cfg["source"] == "local":
        return copy_local(name, cfg, out)
    if cfg["source"] == "hub":
        return download_hub(name, cfg, out)
    return pretrain(name, cfg, paths.pretext_dir(name), out, backbone_seed(config))
