"""Adapter kinds (lorarepro.domain.methods.lora): which kind an `adapter:` entry selects through the one
registry, and what each kind answers the trainer (resumable, init gradient steps, optimizer groups,
callbacks, the module the loop calls, what saving needs), on tiny models without training."""

import pytest
import torch

from lorarepro.domain.methods import lora
from lorarepro.core.registry import UnknownName
from lorarepro.stages.training.loop import make_optimizer

LORA = {"type": "lora", "r": 2, "alpha": 4}
ENTRIES = {
    "full": (None, lora.Kind),
    "lora": (LORA, lora.Lora),
    "rslora": ({**LORA, "use_rslora": True}, lora.Lora),
    "dora": ({**LORA, "use_dora": True}, lora.Lora),
    "loraplus": ({**LORA, "loraplus_lr_ratio": 16}, lora.Lora),
    "pissa": ({**LORA, "init": "pissa"}, lora.Pissa),
    "lora_ga": ({**LORA, "init": "lora_ga", "init_batches": 3}, lora.LoraGA),
    "adalora": ({"type": "adalora", "r": 2, "adalora": {"init_r": 3}}, lora.AdaLora),
    "vera": ({"type": "vera", "r": 4}, lora.PeftTuner),
}


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 8))


@pytest.mark.parametrize("name", list(ENTRIES))
def test_an_entry_selects_its_kind(name):
    adapter, cls = ENTRIES[name]
    assert type(lora.kind(adapter)) is cls


def test_an_unknown_type_is_refused_naming_it():
    with pytest.raises(ValueError, match="adapter.type: 'nope' is no PEFT method"):
        lora.kind({"type": "nope", "r": 8})


def test_an_unregistered_kind_is_refused_naming_it_and_the_known_ones():
    with pytest.raises(UnknownName, match=r"unknown adapter kind 'olora' \(known: adalora, full, lora, lora_ga, pissa, tuner\)"):
        lora.kind({**LORA, "init": "olora"})


def test_a_kind_registers_once():
    with pytest.raises(ValueError, match="adapter kind 'lora' is already registered"):
        lora.ADAPTERS.register("lora", lora.Lora)
    assert lora.ADAPTERS["lora"] is lora.Lora


def test_the_weight_rewriting_inits_are_the_rewriting_kinds():
    assert lora.MUTATING_INITS == ("pissa", "lora_ga")


@pytest.mark.parametrize("name, expected", [("full", None), ("lora", 2), ("adalora", 3), ("vera", None)])
def test_max_rank(name, expected):
    assert lora.max_rank(ENTRIES[name][0]) == expected


def test_adalora_starts_at_one_and_a_half_its_target_rank_by_default():
    assert lora.max_rank({"type": "adalora", "r": 8}) == 12  # PEFT's default init_r for target_r 8


@pytest.mark.parametrize("name", list(ENTRIES))
def test_only_adalora_cannot_resume_from_a_step_checkpoint(name):
    assert lora.kind(ENTRIES[name][0]).resumable == (name != "adalora")


@pytest.mark.parametrize("name", list(ENTRIES))
def test_only_lora_ga_reads_gradient_batches(name):
    assert lora.kind(ENTRIES[name][0]).gradient_steps == (3 if name == "lora_ga" else 0)


def test_lora_ga_reads_eight_steps_by_default():
    assert lora.kind({**LORA, "init": "lora_ga"}).gradient_steps == lora.GA_BATCHES == 8


def test_full_fine_tuning_leaves_the_model_as_it_is_and_trains_it_all():
    model = tiny()
    assert lora.apply(model, None, [], []) is model
    full = lora.kind(None)
    (group,) = full.param_groups(model, 1e-3, 0.1)
    assert group["params"] == list(model.parameters())
    assert full.callbacks(model) == [] and full.training_module(model) is model and full.initial_state(model) is None


@pytest.mark.parametrize("name", ["lora", "rslora", "dora", "pissa", "vera"])
def test_a_plain_kind_trains_every_trainable_parameter_in_one_group(name):
    adapter = ENTRIES[name][0]
    model = lora.apply(tiny(), adapter, [], [])
    (group,) = lora.kind(adapter).param_groups(model, 1e-3, 0.1)
    assert group["params"] == [p for p in model.parameters() if p.requires_grad] and len(group["params"]) > 0


def test_loraplus_groups_are_pefts_and_give_b_ratio_times_the_learning_rate():
    """The loop's AdamW over the kind's groups is the optimizer PEFT's create_loraplus_optimizer builds."""
    from peft.optimizers import create_loraplus_optimizer

    adapter = ENTRIES["loraplus"][0]
    model = lora.apply(tiny(), adapter, [], [])
    optimizer, _ = make_optimizer(model, 1e-3, 0.1, 10, 0.0, lora.kind(adapter).param_groups(model, 1e-3, 0.1))
    pefts = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16, loraplus_weight_decay=0.1)
    groups = [{k: v for k, v in g.items() if k != "initial_lr"} for g in optimizer.state_dict()["param_groups"]]
    assert groups == pefts.state_dict()["param_groups"]  # the scheduler adds initial_lr
    lr_of = {id(p): g["lr"] for g in pefts.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if "lora_A" in name:
            assert lr_of[id(p)] == pytest.approx(1e-3)
        if "lora_B" in name:
            assert lr_of[id(p)] == pytest.approx(16e-3)


def test_adalora_allocates_its_budget_from_a_callback_and_trains_through_its_own_model():
    adapter = ENTRIES["adalora"][0]
    model = lora.apply(tiny(), adapter, [], [], total_steps=10)
    ada = lora.kind(adapter)
    (budget,) = ada.callbacks(model)
    assert isinstance(budget, lora.AdaLoraBudget)
    assert ada.training_module(model) is model.base_model  # AdaLoraModel.forward adds the orthogonality penalty
    assert model.peft_config["default"].init_r == 3 and model.peft_config["default"].total_step == 10


@pytest.mark.parametrize("name", ["lora", "pissa", "vera"])
def test_other_kinds_have_no_callbacks_and_train_the_model_itself(name):
    adapter = ENTRIES[name][0]
    model = lora.apply(tiny(), adapter, [], [])
    assert lora.kind(adapter).callbacks(model) == [] and lora.kind(adapter).training_module(model) is model


def test_pissa_keeps_its_initial_adapter_for_a_delta_against_the_original_backbone():
    from peft import get_peft_model_state_dict

    adapter = ENTRIES["pissa"][0]
    model = lora.apply(tiny(), adapter, [], [])
    initial = lora.kind(adapter).initial_state(model)
    assert initial.keys() == get_peft_model_state_dict(model).keys()
    assert all(torch.equal(initial[k], v) for k, v in get_peft_model_state_dict(model).items())
    assert lora.kind(LORA).initial_state(model) is None


def test_the_rank_is_checked_against_the_smallest_target():
    with pytest.raises(ValueError, match="adapter.r = 13 exceeds the smallest target layer dimension 8"):
        lora.apply(tiny(), {**LORA, "r": 13}, [], [])


def test_apply_moves_the_initialised_model_to_the_device():
    model = lora.apply(tiny(), ENTRIES["pissa"][0], [], [], device=torch.device("meta"))
    assert {p.device.type for p in model.parameters()} == {"meta"}
