"""SAM baselines (domain/methods/sam.py) through the real training loop: perturbation, exact restore, two passes."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

from lorarepro.stages.training.loop import train_steps
from lorarepro.domain.methods.sam import SAM

D_IN, D_HID, D_OUT, N = 12, 24, 6, 32


pytestmark = pytest.mark.usefixtures("one_thread")


class Regressor(nn.Module):
    """Two linears around a tanh; ``forward(x, y)`` returns an object with ``.loss`` (as HF models)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D_IN, D_HID), nn.Tanh(), nn.Linear(D_HID, D_OUT))

    def forward(self, x, y):
        return SimpleNamespace(loss=F.mse_loss(self.net(x), y))


def make_model(dropout=0.0, dtype=torch.float32, seed=0):
    """Both linears LoRA-wrapped (so SAM-W's norm is global over two layers); B nonzero from the start."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["net.0", "net.2"], lora_dropout=dropout, init_lora_weights=False)
    return get_peft_model(Regressor().to(dtype), config)


def data(dtype=torch.float32):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(N, D_IN, generator=gen)
    return {"x": x.to(dtype), "y": torch.sin(x @ torch.randn(D_IN, D_OUT, generator=gen)).to(dtype)}


def batch_fn(dtype=torch.float32):
    d = data(dtype)
    return lambda idx: {"x": d["x"][idx], "y": d["y"][idx]}


def plan(steps=6, accum=2, batch=8):
    """Deterministic micro-batches: ``steps`` optimizer steps of ``accum`` micro-batches each."""
    size = batch // accum
    return [[[(s * batch + a * size + i) % N for i in range(size)] for a in range(accum)] for s in range(steps)]


def fit(model, hook=None, steps=6, accum=2, dtype=torch.float32):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    try:
        return train_steps(model, plan(steps, accum), batch_fn(dtype), opt, sched, hook=hook)
    finally:
        if hook is not None:
            hook.close()


def base_weights(model):
    return [model.base_model.model.net[i].base_layer.weight for i in (0, 2)]


def adapters(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def frozen(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def first_pass(model, sam, accum=2):
    """begin_step + the step's micro-batches at theta, as the loop does; returns the targets' grads."""
    fn = batch_fn()
    sam.begin_step(0)
    for mb in plan(1, accum)[0]:
        (model(**fn(mb)).loss / accum).backward()
    return [p.grad.detach().clone() for p in sam._targets]


@pytest.mark.parametrize("space", ["weight", "lora", "trainable"])
def test_perturbation_is_rho_times_normalised_gradient(space):
    model, rho = make_model(), 0.05
    sam = SAM(model, rho=rho, space=space)
    before = [p.detach().clone() for p in sam._targets]
    grads = first_pass(model, sam)
    sam.ascend()
    norm = math.sqrt(sum(g.double().square().sum().item() for g in grads))
    e = [p.detach() - b for p, b in zip(sam._targets, before)]
    for ei, g in zip(e, grads):
        torch.testing.assert_close(ei, rho * g / norm, atol=1e-7, rtol=1e-5)  # atol: rounding of theta + e
    assert math.sqrt(sum(x.double().square().sum().item() for x in e)) == pytest.approx(rho, rel=1e-5)
    assert sam.last_grad_norm == pytest.approx(norm, rel=1e-6)
    assert all(p.grad is None for p in model.parameters())  # pass 2 starts from clean gradients
    if space == "weight":
        assert len(sam._targets) == 2 and not any(w.requires_grad for w in base_weights(model))
    sam.end_step()
    assert all(torch.equal(p, b) for p, b in zip(sam._targets, before))


def test_second_pass_gradient_is_taken_at_the_perturbed_weights():
    """SAM-W's A/B gradient equals plain backprop on a model whose W was moved by e by hand."""
    model, ref = make_model(), make_model()
    sam = SAM(model, rho=0.1, space="weight")
    grads = first_pass(model, sam)
    norm = math.sqrt(sum(g.double().square().sum().item() for g in grads))
    sam.ascend()
    fn = batch_fn()
    for mb in plan(1)[0]:
        (model(**fn(mb)).loss / 2).backward()
    with torch.no_grad():
        for w, g in zip(base_weights(ref), grads):
            w.add_(g, alpha=0.1 / norm)
    for mb in plan(1)[0]:
        (ref(**fn(mb)).loss / 2).backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    want = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    assert set(got) == set(want) and all(n.count("lora_") for n in got)
    for n in got:
        torch.testing.assert_close(got[n], want[n], atol=1e-7, rtol=1e-5)
    sam.end_step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sam_w_restores_weights_bit_exactly_and_trains_only_the_adapter(dtype):
    model = make_model(dtype=dtype)
    w0, a0 = frozen(model), adapters(model)
    fit(model, SAM(model, rho=0.5, space="weight"), steps=25, dtype=dtype)
    assert all(torch.equal(p, w0[n]) for n, p in frozen(model).items())  # every frozen tensor, bit for bit
    assert all(not torch.equal(p, a0[n]) for n, p in adapters(model).items())
    assert not any(w.requires_grad or w.grad is not None for w in base_weights(model))


def test_lora_sam_restores_adapter_before_the_optimizer_step():
    """LoRA-SAM perturbs A/B; the optimizer must step from theta, not theta + e."""
    model, ref = make_model(), make_model()
    sam = SAM(model, rho=0.3, space="lora")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    first_pass(model, sam)
    sam.ascend()
    fn = batch_fn()
    for mb in plan(1)[0]:
        (model(**fn(mb)).loss / 2).backward()
    sam.end_step()
    opt.step()  # lr 0: parameters must be exactly where they started
    assert all(torch.equal(p, adapters(ref)[n]) for n, p in adapters(model).items())


def test_two_passes_per_step_and_first_pass_loss_recorded():
    model, plain = make_model(), make_model()
    calls = []
    model.base_model.model.register_forward_hook(lambda *_: calls.append(1))
    history = fit(model, SAM(model, rho=0.05, space="weight"), steps=3, accum=2)
    assert len(calls) == 3 * 2 * 2  # steps x micro-batches x passes
    assert history.loss[0] == fit(plain, None, steps=1, accum=2).loss[0]  # unperturbed loss at step 0


@pytest.mark.parametrize("space", ["weight", "lora"])
def test_rho_zero_is_exactly_the_lora_update(space):
    """With dropout on: the RNG is rewound for pass 2, so even the masks match plain LoRA."""
    model, plain = make_model(dropout=0.2), make_model(dropout=0.2)
    torch.manual_seed(1)
    h_sam = fit(model, SAM(model, rho=0.0, space=space), steps=5)
    torch.manual_seed(1)
    h_plain = fit(plain, None, steps=5)
    assert h_sam.loss == h_plain.loss
    assert all(torch.equal(p, adapters(plain)[n]) for n, p in adapters(model).items())


def test_sam_changes_the_update_and_is_deterministic():
    runs = []
    for _ in range(2):
        model = make_model(dropout=0.1)
        torch.manual_seed(3)
        fit(model, SAM(model, rho=0.2, space="weight"), steps=4)
        runs.append(adapters(model))
    plain = make_model(dropout=0.1)
    torch.manual_seed(3)
    fit(plain, None, steps=4)
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
    assert any(not torch.equal(runs[0][n], p) for n, p in adapters(plain).items())


def test_full_fine_tuning_sam_over_trainable_parameters():
    torch.manual_seed(0)
    model = Regressor()
    sam = SAM(model, rho=0.05, space="trainable")
    assert len(sam._targets) == 4  # two weights, two biases
    fit(model, sam, steps=2)
    with pytest.raises(ValueError, match="sam.space='weight': no PEFT LoraLayer"):
        SAM(model, rho=0.05, space="weight")


@pytest.mark.parametrize("rho", [-0.1, float("nan"), float("inf"), True, "0.05", None])
def test_bad_rho_is_rejected(rho):
    with pytest.raises(ValueError, match="sam.rho must be a finite number >= 0"):
        SAM(make_model(), rho=rho)


def test_bad_space_and_protocol_misuse():
    model = make_model()
    with pytest.raises(ValueError, match="sam.space must be one of"):
        SAM(model, rho=0.1, space="adapter")
    sam = SAM(model, rho=0.1)
    with pytest.raises(RuntimeError, match="ascend must follow begin_step"):
        sam.ascend()
    sam.begin_step(0)
    with pytest.raises(RuntimeError, match="before ascend"):
        sam.end_step()
    sam.close()
    assert not any(w.requires_grad for w in base_weights(model))
