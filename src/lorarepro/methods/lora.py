"""PEFT adapters: the LoRA family (LoRA, rsLoRA, DoRA, PiSSA, LoRA-GA, AdaLoRA, and LoRA+'s optimizer)
field by field, and any other PEFT tuner (VeRA, LoHa, LoKr, IA3, ...) by its name.

A method's `adapter:` entry (documented in workflow/schemas/params.schema.yaml) maps onto PEFT's own
config: for `type` lora and adalora, `use_rslora`, `use_dora`, `init` -> `init_lora_weights` ("pissa",
"lora_ga" with PEFT's `preprocess_loraga`), `type: adalora` -> `AdaLoraConfig`, `loraplus_lr_ratio` ->
`peft.optimizers.create_loraplus_optimizer` (see `lorarepro.training.loop.make_optimizer`). Any other
`type` is a PEFT method name (`peft.PeftType`, lower case) whose config class takes the entry's other
keys as its own fields, checked by PEFT (`tuner_config`). Nothing here re-implements a method PEFT has.

Targets are derived from the model, not hard-coded, because module names differ per architecture
(T5 q/k/v/o/wi/wo, Llama q_proj…down_proj, ViT its own): every nn.Linear but the family's heads,
unless the entry names PEFT `target_modules`.

PiSSA and LoRA-GA move part of W into the adapter at init (W_res = W - s·B0A0). Their checkpoints
are saved the PEFT way (`save_pretrained(path_initial_model_for_weight_conversion=...)`), which turns
them into a plain rank-2r LoRA delta against the ORIGINAL backbone, so `PeftModel.from_pretrained`
on the pristine backbone reproduces the evaluated model.

torch, PEFT and safetensors are imported inside the functions that use them ("deferred"): config
checks (lorarepro.experiment) import this module for `max_rank` and must not pay for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
import warnings
from pathlib import Path

LORA_TYPES = ("lora", "adalora")  # mapped field by field (peft_config); any other type is PEFT's config as given
MUTATING_INITS = ("pissa", "lora_ga")  # inits that rewrite the base weights (W_res = W - s·B0A0)
GA_BATCHES = 8  # LoRA-GA: default number of training steps whose batches estimate the gradient
_INIT = {"default": True, "pissa": "pissa", "lora_ga": "lora_ga"}


def linear_targets(model: torch.nn.Module, heads: list[str]) -> list[str]:
    """Full names of every nn.Linear not inside a head module."""
    import torch  # deferred (module docstring)

    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(name == h or name.startswith(h + ".") for h in heads):
            names.append(name)
    return names


def target_names(model: torch.nn.Module, heads: list[str], wanted: str | list[str] | None = None) -> list[str]:
    """Full names of the adapter's target modules: every nn.Linear not in a head, or the modules
    `wanted` names as PEFT's `target_modules` does (a list: a module's name or its last parts; a
    string: a regex the whole name matches)."""
    if wanted is None:
        return linear_targets(model, heads)
    if isinstance(wanted, str):
        names = [name for name, _ in model.named_modules() if re.fullmatch(wanted, name)]
    else:
        names = [name for name, _ in model.named_modules() if any(name == w or name.endswith("." + w) for w in wanted)]
    if not names:
        raise ValueError(f"adapter.target_modules: {wanted!r} matches no module of the model")
    return names


def wrapped_linears(model: torch.nn.Module, method: str):
    """(PEFT adapter layer, its base nn.Linear) for every adapter layer of any PEFT tuner (a
    BaseTunerLayer: LoRA's, VeRA's, LoHa's, ...); `method` names who refuses any other base layer
    (Flat-LoRA and SAM-W perturb linear weights only)."""
    import torch  # deferred (module docstring)
    from peft.tuners.tuners_utils import BaseTunerLayer  # deferred (module docstring)

    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        base = module.get_base_layer()
        if not isinstance(base, torch.nn.Linear):
            raise TypeError(f"{method} perturbs linear layers only; {name!r} wraps {type(base).__name__}")
        yield module, base


def smallest_dim(model: torch.nn.Module, targets: list[str]) -> int | None:
    """The smallest in/out size of the linear targets (None: no linear among them)."""
    modules = dict(model.named_modules())
    dims = [min(modules[n].in_features, modules[n].out_features) for n in targets if hasattr(modules[n], "in_features")]
    return min(dims, default=None)


def max_rank(adapter: dict) -> int | None:
    """The largest rank the adapter allocates (AdaLoRA starts at init_r and prunes down to r); None
    for other tuners, whose `r` is not a factor's size (VeRA's shared projections, LoHa's Hadamard
    product) or absent (IA3)."""
    if adapter["type"] == "adalora":
        return adapter.get("adalora", {}).get("init_r", default_init_r(adapter["r"]))
    return adapter["r"] if adapter["type"] == "lora" else None


def default_init_r(r: int) -> int:
    """AdaLoRA's starting rank when not given: 1.5 x the target (PEFT's default 12 for 8)."""
    return (3 * r + 1) // 2


def gradient_steps(adapter: dict | None) -> int:
    """How many of the run's first optimizer steps feed LoRA-GA's gradient estimate (0: not LoRA-GA)."""
    if adapter is None or adapter.get("init") != "lora_ga":
        return 0
    return adapter.get("init_batches", GA_BATCHES)


def config_class(adapter_type: str):
    """PEFT's config class of a method name (`peft.PeftType`, lower case: vera, loha, lokr, ia3, ...)."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftType, PromptLearningConfig  # deferred (module docstring)

    try:
        cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[adapter_type.upper()]]
    except KeyError:
        known = sorted(t.value.lower() for t in PEFT_TYPE_TO_CONFIG_MAPPING)
        raise ValueError(f"adapter.type: '{adapter_type}' is no PEFT method (known: {', '.join(known)})") from None
    if issubclass(cls, PromptLearningConfig):
        raise ValueError(f"adapter.type: '{adapter_type}' learns virtual tokens, not adapter layers; not supported")
    return cls


def tuner_config(adapter: dict, targets: str | list[str] | None, modules_to_save: list[str] | None):
    """PEFT's own config of a tuner outside the LoRA family: the entry's keys but `type` are the config
    class's fields, checked and validated by PEFT; targets and the trained heads are set here. Errors
    (ValueError) name the offending key under `adapter.`."""
    from peft import PeftConfig  # deferred (module docstring)

    cls = config_class(adapter["type"])
    own = {f.name for f in dataclasses.fields(cls) if f.init} - {f.name for f in dataclasses.fields(PeftConfig)}
    settable = sorted(own - {"target_modules", "modules_to_save"})
    fields = {key: value for key, value in adapter.items() if key not in ("type", "target_modules")}
    for key in fields:
        if key not in settable:
            why = ("set from the task family's trained heads" if key == "modules_to_save"
                   else f"not a field of PEFT's {cls.__name__} (fields: {', '.join(settable)})")
            raise ValueError(f"adapter.{key}: {why}")
    heads = {"modules_to_save": modules_to_save} if modules_to_save else {}
    if heads and "modules_to_save" not in own:
        raise ValueError(f"adapter.type: PEFT's {cls.__name__} cannot train the task's new head ({modules_to_save})")
    try:
        return cls(**fields, target_modules=targets, **heads)
    except (TypeError, ValueError) as err:
        raise ValueError(f"adapter: PEFT's {cls.__name__} refuses it: {err}") from None


def peft_config(adapter: dict, targets: str | list[str], modules_to_save: list[str] | None, total_steps: int):
    """The PEFT config of one `adapter:` entry (LoraConfig, AdaLoraConfig, or another tuner's own)."""
    if adapter["type"] not in LORA_TYPES:
        return tuner_config(adapter, targets, modules_to_save)
    from peft import AdaLoraConfig, LoraConfig, LoraGAConfig  # deferred (module docstring)

    common = dict(
        lora_alpha=adapter.get("alpha", adapter["r"]),
        lora_dropout=adapter.get("dropout", 0.0),
        target_modules=targets,
        modules_to_save=modules_to_save or None,
        use_rslora=adapter.get("use_rslora", False),
    )
    if adapter["type"] == "adalora":
        ada = adapter.get("adalora", {})
        return AdaLoraConfig(
            target_r=adapter["r"], init_r=max_rank(adapter), total_step=total_steps,
            tinit=int(ada.get("tinit", 0.0) * total_steps), tfinal=int(ada.get("tfinal", 0.0) * total_steps),
            deltaT=ada.get("delta_t", 1), orth_reg_weight=ada.get("orth_reg_weight", 0.5), **common,
        )
    init = adapter.get("init", "default")
    return LoraConfig(
        r=adapter["r"], use_dora=adapter.get("use_dora", False), init_lora_weights=_INIT[init],
        lora_ga_config=LoraGAConfig() if init == "lora_ga" else None, **common,
    )


def apply(model: torch.nn.Module, adapter: dict, heads: list[str], train_heads: list[str], *,
          total_steps: int = 1, gradient_batches=None):
    """Wrap `model` with the PEFT adapter; `train_heads` are trained in full and saved with it.

    `total_steps` is AdaLoRA's rank-budget horizon; `gradient_batches()` yields the training batches
    whose averaged gradient LoRA-GA's init decomposes (PEFT's `preprocess_loraga`).
    """
    from peft import get_peft_model, preprocess_loraga  # deferred (module docstring)

    targets = target_names(model, heads, adapter.get("target_modules"))
    smallest = smallest_dim(model, targets)
    if max_rank(adapter) is not None and smallest is not None and max_rank(adapter) > smallest:
        raise ValueError(f"adapter.r = {max_rank(adapter)} exceeds the smallest target layer dimension {smallest}")
    # PEFT matches the entry's own target_modules (other fields may name them, e.g. IA3's feedforward_modules)
    config = peft_config(adapter, adapter.get("target_modules") or targets, train_heads, total_steps)
    if adapter.get("init") == "lora_ga":
        if gradient_batches is None:
            raise ValueError("adapter.init = lora_ga needs training batches to estimate the gradient")

        def train_step():
            batches = list(gradient_batches())
            for batch in batches:
                (model(**batch).loss / len(batches)).backward()

        preprocess_loraga(model, config, train_step)
    with peft_quietly():
        return get_peft_model(model, config)


@contextlib.contextmanager
def peft_quietly():
    """PeftModel.__init__ reads transformers' deprecated `is_gradient_checkpointing` (PEFT 0.21,
    transformers 5): a FutureWarning per adapter in every job log, about PEFT's code, not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def training_module(model, adapter: dict | None):
    """The module the training loop calls. AdaLoRA adds its orthogonality penalty to the loss in
    AdaLoraModel.forward, which a plain PeftModel (no task_type) bypasses: call that one directly."""
    if adapter is not None and adapter["type"] == "adalora":
        return model.base_model
    return model


class AdaLoraBudget:
    """Loop callback: AdaLoRA's rank allocation after each optimizer step, before zero_grad (it reads
    the gradients), as PEFT documents for `update_and_allocate`."""

    def __init__(self, model) -> None:
        self.model = model

    def on_step_start(self, step: int) -> None:
        pass

    def on_step_end(self, step: int) -> None:
        self.model.base_model.update_and_allocate(step)


def callbacks(model, adapter: dict | None) -> list:
    return [AdaLoraBudget(model)] if adapter is not None and adapter["type"] == "adalora" else []


def initial_state(model, adapter: dict | None) -> dict | None:
    """A copy of the freshly initialised adapter when its init rewrote the base weights (needed to
    save a delta against the original backbone); None otherwise."""
    if adapter is None or adapter.get("init", "default") not in MUTATING_INITS:
        return None
    from peft import get_peft_model_state_dict  # deferred (module docstring)

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def save(model, out_dir: Path, initial: dict | None) -> None:
    """PEFT format (adapter_config.json + adapter_model.safetensors); PiSSA/LoRA-GA converted to a
    LoRA delta against the original backbone with PEFT's `path_initial_model_for_weight_conversion`."""
    if initial is None:
        model.save_pretrained(out_dir, safe_serialization=True)
        return
    from safetensors.torch import save_file  # deferred (module docstring)

    with tempfile.TemporaryDirectory() as scratch:
        init_dir = Path(scratch) / "initial"
        init_dir.mkdir()
        save_file(initial, str(init_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
        model.save_pretrained(out_dir, safe_serialization=True, path_initial_model_for_weight_conversion=str(init_dir))
    _restore_non_lora_weights(model, Path(out_dir))


def _restore_non_lora_weights(model, out_dir: Path) -> None:
    """PEFT's conversion keeps only lora_A/lora_B tensors (PEFT 0.21): the fully trained heads
    (modules_to_save, e.g. a ViT classifier) would be lost; put them back from the trained model."""
    from peft import get_peft_model_state_dict  # deferred (module docstring)
    from safetensors.torch import load_file, save_file  # deferred (module docstring)

    path = out_dir / "adapter_model.safetensors"
    saved = load_file(str(path))
    extra = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()
             if k not in saved and "lora_A" not in k and "lora_B" not in k}
    if extra:
        save_file({**saved, **extra}, str(path), metadata={"format": "pt"})

