"""LoRA through PEFT: target every nn.Linear of the backbone except the family's head modules.

Targets are derived from the model, not hard-coded, because module names differ per architecture
(T5 q/k/v/o/wi/wo, Llama q_proj…down_proj, ViT its own).
"""

import torch


def linear_targets(model: torch.nn.Module, heads: list[str]) -> list[str]:
    """Full names of every nn.Linear not inside a head module."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(name == h or name.startswith(h + ".") for h in heads):
            names.append(name)
    return names


def smallest_dim(model: torch.nn.Module, targets: list[str]) -> int:
    modules = dict(model.named_modules())
    return min(min(modules[n].in_features, modules[n].out_features) for n in targets)


def apply(model: torch.nn.Module, adapter: dict, heads: list[str], train_heads: list[str]):
    """Wrap `model` with a PEFT LoRA adapter; `train_heads` are trained in full and saved with it."""
    from peft import LoraConfig, get_peft_model

    targets = linear_targets(model, heads)
    if adapter["r"] > smallest_dim(model, targets):
        raise ValueError(f"adapter.r = {adapter['r']} exceeds the smallest target layer dimension {smallest_dim(model, targets)}")
    config = LoraConfig(
        r=adapter["r"],
        lora_alpha=adapter.get("alpha", adapter["r"]),
        lora_dropout=adapter.get("dropout", 0.0),
        target_modules=targets,
        modules_to_save=train_heads or None,
    )
    return get_peft_model(model, config)
