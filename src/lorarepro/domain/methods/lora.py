"""PEFT adapters: the LoRA family (LoRA, rsLoRA, DoRA, PiSSA, LoRA-GA, AdaLoRA, and LoRA+'s optimizer)
field by field, and any other PEFT tuner (VeRA, LoHa, LoKr, IA3, ...) by its name.

A method's `adapter:` entry (documented in workflow/schemas/params.schema.yaml) picks one adapter
*kind* (`kind`, through the registry ADAPTERS), an object that answers everything the trainer and
the config checks ask about that adapter, as PEFT's `LoraVariant` does for a layer: so nothing
outside this module names a variant. Its protocol:

    max_rank                           the largest rank it allocates (config checks, `wrap`)
    gradient_steps                     how many of the run's first optimizer steps feed its init
    resumable                          whether a step checkpoint holds all of its training state
    wrap(model, heads, train_heads, total_steps, gradient_batches)   `model` with the adapter
    initial_state(model)               what saving needs from the freshly initialised adapter
    param_groups(model, lr, weight_decay)  its optimizer's parameter groups (torch's)
    callbacks(model)                   loop callbacks (on_step_start / on_step_end)
    training_module(model)             the module the training loop calls

The entry selects a kind by its `init` when not default (pissa, lora_ga), else by its `type`
(lora: with `use_rslora`, `use_dora` and LoRA+'s `loraplus_lr_ratio`, which only regroups the
optimizer and so combines with any init; adalora); any other `type` is a PEFT method name
(`peft.PeftType`, lower case) whose config class takes the entry's other keys as its own fields,
checked by PEFT (`tuner_config`). No entry (full fine-tuning) is the base `Kind`: every weight
trains. Nothing here re-implements a method PEFT has.

Adding a LoRA-family variant: subclass the kind it differs least from, override only what differs
(its PEFT init fields, `prepare`, `param_groups`, `callbacks`, `resumable`, ...), register it under
the name an entry selects it by (a new `init` value; a new `type` also joins LORA_TYPES), and add
its keys to the adapter schema. The trainer, the loop and the checkpoints need no change.

Targets are derived from the model, not hard-coded, because module names differ per architecture
(T5 q/k/v/o/wi/wo, Llama q_proj…down_proj, ViT its own): every nn.Linear but the family's heads,
unless the entry names PEFT `target_modules`.

PiSSA and LoRA-GA move part of W into the adapter at init (W_res = W - s·B0A0). Their checkpoints
are saved the PEFT way (`save_pretrained(path_initial_model_for_weight_conversion=...)`), which turns
them into a plain rank-2r LoRA delta against the ORIGINAL backbone, so `PeftModel.from_pretrained`
on the pristine backbone reproduces the evaluated model.

torch, PEFT and safetensors are imported inside the functions that use them ("deferred"): config
checks (lorarepro.domain.experiment) import this module for `max_rank` and must not pay for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
import warnings
from pathlib import Path

from lorarepro.core.registry import Registry

LORA_TYPES = ("lora", "adalora")  # mapped field by field (their kinds); any other type is PEFT's config as given
GA_BATCHES = 8  # LoRA-GA: default number of training steps whose batches estimate the gradient


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


class Kind:
    """Full fine-tuning (no adapter entry): every weight trains. Its answers are the defaults every
    adapter kind overrides where it differs."""

    max_rank: int | None = None
    gradient_steps = 0
    resumable = True  # model, optimizer, scheduler and RNG states (a step checkpoint) are all it holds

    def __init__(self, adapter: dict | None = None) -> None:
        self.adapter = adapter

    def wrap(self, model, heads: list[str], train_heads: list[str], total_steps: int, gradient_batches):
        return model

    def initial_state(self, model) -> dict | None:
        return None

    def param_groups(self, model, lr: float, weight_decay: float) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def callbacks(self, model) -> list:
        return []

    def training_module(self, model):
        return model


class PeftKind(Kind):
    """An adapter PEFT builds from a config around the backbone's target layers."""

    def peft_config(self, targets: str | list[str], train_heads: list[str], total_steps: int):
        raise NotImplementedError

    def prepare(self, model, config, gradient_batches) -> None:
        """What runs on the bare backbone before PEFT wraps it (LoRA-GA's gradient); nothing by default."""

    def wrap(self, model, heads, train_heads, total_steps, gradient_batches):
        from peft import get_peft_model  # deferred (module docstring)

        wanted = self.adapter.get("target_modules")
        targets = target_names(model, heads, wanted)
        smallest = smallest_dim(model, targets)
        if self.max_rank is not None and smallest is not None and self.max_rank > smallest:
            raise ValueError(f"adapter.r = {self.max_rank} exceeds the smallest target layer dimension {smallest}")
        # PEFT matches the entry's own target_modules (other fields may name them, e.g. IA3's feedforward_modules)
        config = self.peft_config(wanted or targets, train_heads, total_steps)
        self.prepare(model, config, gradient_batches)
        with peft_quietly():
            return get_peft_model(model, config)


class PeftTuner(PeftKind):
    """Any PEFT tuner outside the LoRA family, by PEFT's name: its config is the entry as given."""

    def __init__(self, adapter: dict) -> None:
        config_class(adapter["type"])  # an unknown type is refused when the kind is chosen, naming it
        super().__init__(adapter)

    def peft_config(self, targets, train_heads, total_steps):
        return tuner_config(self.adapter, targets, train_heads)


class Lora(PeftKind):
    """LoRA, with rsLoRA (`use_rslora`), DoRA (`use_dora`) and LoRA+ (`loraplus_lr_ratio`) as fields."""

    @property
    def max_rank(self) -> int:
        return self.adapter["r"]

    def init_fields(self) -> dict:
        """LoraConfig's fields of the kind's init (PEFT's default: A random, B = 0)."""
        return {"init_lora_weights": True}

    def shared_fields(self, targets, train_heads) -> dict:
        """The fields LoraConfig and AdaLoraConfig share."""
        adapter = self.adapter
        return dict(lora_alpha=adapter.get("alpha", adapter["r"]), lora_dropout=adapter.get("dropout", 0.0),
                    target_modules=targets, modules_to_save=train_heads or None,
                    use_rslora=adapter.get("use_rslora", False))

    def peft_config(self, targets, train_heads, total_steps):
        from peft import LoraConfig  # deferred (module docstring)

        return LoraConfig(r=self.adapter["r"], use_dora=self.adapter.get("use_dora", False), **self.init_fields(),
                          **self.shared_fields(targets, train_heads))

    def param_groups(self, model, lr, weight_decay):
        ratio = self.adapter.get("loraplus_lr_ratio")
        if ratio is None:
            return super().param_groups(model, lr, weight_decay)
        from peft.optimizers import create_loraplus_optimizer  # deferred (module docstring)

        # PEFT's LoRA+ grouping (lora_B and every 1-D parameter, e.g. DoRA's magnitude or a head's
        # bias, at lr x ratio), without its optimizer: the training loop builds the one for every kind.
        return create_loraplus_optimizer(model, _groups_only, lr=lr, loraplus_lr_ratio=ratio,
                                         loraplus_weight_decay=weight_decay)


def _groups_only(param_groups: list[dict], **_) -> list[dict]:
    """An "optimizer class" for create_loraplus_optimizer that keeps the groups it is given."""
    return param_groups


class RewritingInit(Lora):
    """An init that moves part of W into the adapter (W_res = W - s·B0A0): saved as a LoRA delta
    against the original backbone, for which `save` needs the adapter as initialised."""

    def initial_state(self, model):
        from peft import get_peft_model_state_dict  # deferred (module docstring)

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


class Pissa(RewritingInit):
    """PiSSA: A and B from the principal singular vectors of W."""

    def init_fields(self):
        return {"init_lora_weights": "pissa"}


class LoraGA(RewritingInit):
    """LoRA-GA: A and B from the SVD of W's gradient, averaged over the batches of the run's first
    `init_batches` optimizer steps (PEFT's `preprocess_loraga`)."""

    @property
    def gradient_steps(self) -> int:
        return self.adapter.get("init_batches", GA_BATCHES)

    def init_fields(self):
        from peft import LoraGAConfig  # deferred (module docstring)

        return {"init_lora_weights": "lora_ga", "lora_ga_config": LoraGAConfig()}

    def prepare(self, model, config, gradient_batches):
        from peft import preprocess_loraga  # deferred (module docstring)

        if gradient_batches is None:
            raise ValueError("adapter.init = lora_ga needs training batches to estimate the gradient")

        def train_step():
            batches = list(gradient_batches())
            for batch in batches:
                (model(**batch).loss / len(batches)).backward()

        preprocess_loraga(model, config, train_step)


class AdaLora(Lora):
    """AdaLoRA: every layer starts at `init_r` and is pruned to an average `r` on a budget schedule
    (fractions of the run's optimizer steps)."""

    # Its rank allocator keeps importance averages outside the model and optimizer, which a step
    # checkpoint does not hold: it always trains from the start.
    resumable = False

    @property
    def max_rank(self) -> int:
        return self.adapter.get("adalora", {}).get("init_r", (3 * self.adapter["r"] + 1) // 2)  # PEFT's 12 for r 8

    def peft_config(self, targets, train_heads, total_steps):
        from peft import AdaLoraConfig  # deferred (module docstring)

        ada = self.adapter.get("adalora", {})
        return AdaLoraConfig(
            target_r=self.adapter["r"], init_r=self.max_rank, total_step=total_steps,
            tinit=int(ada.get("tinit", 0.0) * total_steps), tfinal=int(ada.get("tfinal", 0.0) * total_steps),
            deltaT=ada.get("delta_t", 1), orth_reg_weight=ada.get("orth_reg_weight", 0.5),
            **self.shared_fields(targets, train_heads),
        )

    def callbacks(self, model):
        return [AdaLoraBudget(model)]

    def training_module(self, model):
        """AdaLoraModel.forward adds the orthogonality penalty to the loss, which a plain PeftModel
        (no task_type) bypasses: the loop calls that one directly."""
        return model.base_model


class AdaLoraBudget:
    """Loop callback: AdaLoRA's rank allocation after each optimizer step, before zero_grad (it reads
    the gradients), as PEFT documents for `update_and_allocate`."""

    def __init__(self, model) -> None:
        self.model = model

    def on_step_start(self, step: int) -> None:
        pass

    def on_step_end(self, step: int) -> None:
        self.model.base_model.update_and_allocate(step)


ADAPTERS = Registry("adapter kind")
ADAPTERS.register("full", Kind)
ADAPTERS.register("lora", Lora)
ADAPTERS.register("pissa", Pissa)
ADAPTERS.register("lora_ga", LoraGA)
ADAPTERS.register("adalora", AdaLora)
ADAPTERS.register("tuner", PeftTuner)
MUTATING_INITS = tuple(name for name, cls in ADAPTERS.items() if issubclass(cls, RewritingInit))  # rewrite W at init


def kind_name(adapter: dict | None) -> str:
    """The ADAPTERS name an `adapter:` entry selects (module docstring)."""
    if adapter is None:
        return "full"
    if adapter["type"] not in LORA_TYPES:
        return "tuner"
    init = adapter.get("init", "default")
    return adapter["type"] if init == "default" else init


def kind(adapter: dict | None) -> Kind:
    """The kind object of a run's `adapter:` entry (None: full fine-tuning)."""
    return ADAPTERS[kind_name(adapter)](adapter)


def max_rank(adapter: dict) -> int | None:
    """The largest rank the adapter allocates (AdaLoRA starts at init_r and prunes down to r); None
    for other tuners, whose `r` is not a factor's size (VeRA's shared projections, LoHa's Hadamard
    product) or absent (IA3)."""
    return kind(adapter).max_rank


def apply(model: torch.nn.Module, adapter: dict | None, heads: list[str], train_heads: list[str], *,
          total_steps: int = 1, gradient_batches=None, device=None):
    """`model` with the entry's adapter (as it is for full fine-tuning), then on `device`.

    `train_heads` are trained in full and saved with the adapter; `total_steps` is AdaLoRA's
    rank-budget horizon; `gradient_batches()` yields the training batches whose averaged gradient
    LoRA-GA's init decomposes. The init runs on the host, where the backbone was loaded and the
    batches are built, and only the initialised model moves to `device`.
    """
    model = kind(adapter).wrap(model, heads, train_heads, total_steps, gradient_batches)
    return model if device is None else model.to(device)


@contextlib.contextmanager
def peft_quietly():
    """PeftModel.__init__ reads transformers' deprecated `is_gradient_checkpointing` (PEFT 0.21,
    transformers 5): a FutureWarning per adapter in every job log, about PEFT's code, not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


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

