"""Flat-LoRA's perturbation (domain/methods/flat.py): sigma, schedule, noise, exactness, determinism, scope."""

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
import torch.nn.functional as F
from torch import nn

from lorarepro.domain.methods.flat import FlatLoRA, flat_factor, noise_seed

R, ALPHA = 4, 8
SCALE = ALPHA / R  # PEFT's s = lora_alpha / r


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(d_in=16, d_hidden=32, d_out=8, dtype=torch.float32, lora_init=False, seed=0):
    """PEFT model: layer "0" LoRA-adapted, layer "2" a plain (frozen) linear head."""
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh(), nn.Linear(d_hidden, d_out)).to(dtype)
    config = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["0"], lora_dropout=0.0, init_lora_weights=lora_init)
    return get_peft_model(base, config)


def lora_layer(model):
    return model.base_model.model[0]


def head(model):
    return model.base_model.model[2]


def adapter_params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def train(model, flat, steps, batch=4, lr=1e-2, accum=1, data_seed=123):
    """A real training loop: AdamW on the adapter, Flat-LoRA windows around each optimizer step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(data_seed)
    d_in = lora_layer(model).get_base_layer().in_features
    weight = lora_layer(model).get_base_layer().weight
    for step in range(steps):
        flat.begin_step(step)
        for _ in range(accum):
            x = torch.randn(batch, d_in, generator=gen).to(device=weight.device, dtype=weight.dtype)
            model(x).float().square().mean().backward()
        flat.end_step()
        opt.step()
        opt.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- 1-2: sigma, schedule, noise


def test_sigma_is_row_norm_of_base_plus_adapter():
    model = make_model()
    layer = lora_layer(model)
    T, t, rho = 10, 5, 0.3
    flat = FlatLoRA(model, rho=rho, total_steps=T, seed=0, scope="all")
    flat.begin_step(t)
    with torch.no_grad():
        w = layer.get_base_layer().weight
        w_full = w + SCALE * (layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
        assert not torch.equal(w_full, w)  # the adapter delta is non-zero, so it matters
        expected = flat_factor(t, T) * rho / math.sqrt(w.shape[1]) * w_full.norm(dim=1)
        expected_head = flat_factor(t, T) * rho / math.sqrt(32) * head(model).weight.norm(dim=1)
    torch.testing.assert_close(flat.sigma(0), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(flat.sigma(1), expected_head, rtol=1e-6, atol=0)  # non-LoRA: W itself
    flat.end_step()


def test_flat_factor_schedule():
    T = 100
    assert flat_factor(0, T) == 0.0
    assert flat_factor(T // 2, T) == pytest.approx(0.5, abs=1e-12)
    assert flat_factor(T, T) == pytest.approx(1.0, abs=1e-12)
    values = [flat_factor(t, T) for t in range(T + 1)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert flat_factor(T + 7, T) == flat_factor(T, T)  # overshoot keeps full noise
    with pytest.raises(ValueError, match="flat.total_steps"):
        flat_factor(0, 0)


def test_noise_rows_have_std_sigma():
    model = make_model(d_in=512, d_hidden=256)
    flat = FlatLoRA(model, rho=0.5, total_steps=100, seed=7)
    flat.begin_step(50)
    eps, sigma = flat.noise(0), flat.sigma(0)
    assert eps.shape == (256, 512)
    ratio = eps.std(dim=1) / sigma
    assert abs(ratio.mean().item() - 1) < 0.01  # aggregate over 256 rows
    assert (ratio - 1).abs().max().item() < 0.2  # each row (512 samples: ~3% std error)
    assert eps.mean(dim=1).abs().div(sigma).mean().item() < 0.1  # ~1/sqrt(512) = 0.044 expected
    assert torch.equal(flat.noise(0), eps)  # regenerated, not stored
    flat.end_step()


def test_applied_noise_scale_follows_schedule():
    """Probe the armed layer with the identity: (armed - plain) output is the applied eps^T."""
    n, m, T, rho = 512, 256, 100, 0.4
    model = make_model(d_in=n, d_hidden=m, lora_init=True)  # B = 0: the adapter path adds nothing
    base = lora_layer(model).get_base_layer()
    probe = torch.eye(n)
    with torch.no_grad():
        plain = base(probe)
        unit = rho / math.sqrt(n) * base.weight.norm(dim=1)  # sigma at f = 1
    flat = FlatLoRA(model, rho=rho, total_steps=T, seed=3)
    for t in (0, 25, 50, 75, 99):
        flat.begin_step(t)
        with torch.no_grad():
            applied = (base(probe) - plain).t()
        flat.end_step()
        if t == 0:
            assert torch.equal(applied, torch.zeros_like(applied))
            continue
        scale = (applied / unit.unsqueeze(1)).std().item()
        assert scale == pytest.approx(flat_factor(t, T), rel=0.02)


# --------------------------------------------------------------------------- 3: exact mode = loss at W + eps


def perturb_explicitly(ref, flat):
    """Set the target weights of ``ref`` (an unarmed copy of flat's model) to W + eps."""
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for idx, name in enumerate(flat.target_names):
            modules[name].weight.add_(flat.noise(idx))
    return ref


def test_exact_forward_and_adapter_grads_equal_explicit_perturbation():
    model = make_model()
    ref = copy.deepcopy(model)
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=1, scope="all")
    flat.begin_step(6)
    perturb_explicitly(ref, flat)
    x = torch.randn(5, 16)
    y, y_ref = model(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    flat.end_step()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    grads_ref = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    assert sorted(grads) == sorted(grads_ref) and all("lora_" in n for n in grads) and len(grads) == 2
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-5, atol=1e-6)
    assert lora_layer(model).get_base_layer().weight.grad is None
    assert head(model).weight.grad is None
    assert not torch.allclose(y, eval_output(model, x))  # the perturbation did something


def eval_output(model, x):
    with torch.no_grad():
        return model(x)


def test_exact_mode_grads_for_trainable_linear_and_input():
    """scope="all" on a plain trainable linear: grad_W, grad_b and grad_x at W + eps."""
    torch.manual_seed(0)
    net = nn.Linear(12, 9)
    ref = copy.deepcopy(net)
    flat = FlatLoRA(net, rho=0.5, total_steps=4, seed=2, scope="all")
    flat.begin_step(3)
    with torch.no_grad():
        ref.weight.add_(flat.noise(0))
    x = torch.randn(2, 3, 12, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    net(x).sin().sum().backward()
    ref(x_ref).sin().sum().backward()
    flat.end_step()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-6)


def test_exact_mode_saves_no_perturbed_weight_for_backward():
    model = make_model(d_in=48, d_hidden=40)
    base = lora_layer(model).get_base_layer()
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=1)
    flat.begin_step(5)
    saved = []

    def pack(t):
        saved.append((tuple(t.shape), t.data_ptr()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(torch.randn(3, 48, requires_grad=True)).sum()  # grad_x needs W + eps
    loss.backward()
    flat.end_step()
    big = [ptr for shape, ptr in saved if shape == tuple(base.weight.shape)]
    assert big and all(ptr == base.weight.data_ptr() for ptr in big)  # only W itself, by reference


def test_exact_mode_keeps_no_input_alive_for_a_frozen_weight():
    """A frozen W needs no x for its backward: saving it would hold a tokens x n activation to the end."""
    torch.manual_seed(0)
    net = nn.Linear(12, 9).requires_grad_(False)
    flat = FlatLoRA(net, rho=0.5, total_steps=4, seed=2, scope="all")
    flat.begin_step(3)
    x = torch.randn(7, 12, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = net(x)
    y.square().sum().backward()
    flat.end_step()
    assert (7, 12) not in saved and (9, 12) in saved
    ref = x.detach().requires_grad_(True)
    F.linear(ref, net.weight + flat.noise(0), net.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-5, atol=1e-6)


def test_exact_mode_under_autocast_matches_explicit_perturbation():
    model = make_model()
    ref = copy.deepcopy(model)
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=4)
    flat.begin_step(7)
    perturb_explicitly(ref, flat)
    x = torch.randn(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = model(x), ref(x)
    assert y.dtype == y_ref.dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    y.float().square().sum().backward()
    y_ref.float().square().sum().backward()
    flat.end_step()
    a, a_ref = (lora_layer(m).lora_A["default"].weight.grad for m in (model, ref))
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, a_ref, rtol=5e-2, atol=5e-2)


def test_inplace_mode_perturbs_like_exact_mode():
    model_a, model_b = make_model(), make_model()
    exact = FlatLoRA(model_a, rho=0.5, total_steps=10, seed=9, mode="exact")
    inplace = FlatLoRA(model_b, rho=0.5, total_steps=10, seed=9, mode="inplace")
    x = torch.randn(4, 16)
    exact.begin_step(8)
    inplace.begin_step(8)
    torch.testing.assert_close(model_a(x), model_b(x), rtol=1e-5, atol=1e-6)
    exact.end_step()
    inplace.end_step()


# --------------------------------------------------------------------------- 4: bit-exact base weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_exact_mode_keeps_base_weights_bit_identical(dtype):
    steps = 1000
    model = make_model(d_in=64, d_hidden=64, d_out=4, dtype=dtype)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters_before = adapter_params(model)
    flat = FlatLoRA(model, rho=0.05, total_steps=steps, seed=0, mode="exact", scope="all")
    train(model, flat, steps, lr=1e-3)
    after = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    assert all(torch.equal(after[n], before[n]) for n in before)
    assert flat.drift(before_targets(flat, before))["max_abs"] == 0.0
    assert not all(torch.equal(p, adapters_before[n]) for n, p in adapter_params(model).items())


def before_targets(flat, before):
    return [before[name + ".weight"] for name in flat.target_names]


def test_inplace_mode_drifts_in_bf16_and_restore_undoes_it():
    """The official in-place add/subtract does not give W back in bf16: (W + eps) - eps != W."""
    steps = 1000
    model = make_model(d_in=64, d_hidden=64, d_out=4, dtype=torch.bfloat16)
    flat = FlatLoRA(model, rho=0.05, total_steps=steps, seed=0, mode="inplace", scope="all")
    pristine = flat.snapshot()
    train(model, flat, steps, lr=1e-3)
    drift = flat.drift(pristine)
    assert drift["max_abs"] > 0 and drift["rel_fro"] > 1e-3 and drift["frac_changed"] > 0.1  # measured: 1.6e-2, 0.47
    flat.restore(pristine)
    assert flat.drift(pristine) == {"max_abs": 0.0, "rel_fro": 0.0, "frac_changed": 0.0}


# --------------------------------------------------------------------------- 5-6: determinism, accumulation


def test_reruns_are_bit_identical_and_seed_matters():
    results = []
    for run_seed in (11, 11, 12):
        model = make_model()
        train(model, FlatLoRA(model, rho=0.5, total_steps=30, seed=run_seed), steps=30)
        results.append(adapter_params(model))
    assert all(torch.equal(results[0][n], results[1][n]) for n in results[0])
    assert not all(torch.equal(results[0][n], results[2][n]) for n in results[0])


def test_noise_depends_only_on_seed_step_layer():
    """Ranks visiting steps and layers in any order draw the same noise; other seeds differ."""
    model_a, model_b = make_model(), make_model()
    a = FlatLoRA(model_a, rho=0.5, total_steps=10, seed=5, scope="all")
    b = FlatLoRA(model_b, rho=0.5, total_steps=10, seed=5, scope="all")
    c = FlatLoRA(make_model(), rho=0.5, total_steps=10, seed=6, scope="all")
    a.begin_step(7)
    noise_a = [a.noise(0), a.noise(1)]
    for t in (3, 9):
        b.begin_step(t)
        b.noise(1)
        b.end_step()
    b.begin_step(7)
    noise_b = [b.noise(1), b.noise(0)][::-1]
    c.begin_step(7)
    assert all(torch.equal(x, y) for x, y in zip(noise_a, noise_b))
    assert not torch.equal(noise_a[0], c.noise(0))
    assert noise_seed(0, 0, 0) == 6472704175661875633  # pinned: old runs stay reproducible
    seeds = {noise_seed(s, t, i) for s in range(3) for t in range(20) for i in range(5)}
    assert len(seeds) == 300 and all(0 <= v < 2**63 for v in seeds)


def test_same_noise_for_all_micro_batches_of_a_step():
    model = make_model()
    ref = copy.deepcopy(model)
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=2)
    flat_ref = FlatLoRA(ref, rho=0.5, total_steps=10, seed=2)
    x = torch.randn(8, 16)
    flat.begin_step(6)
    draws_6 = flat.noise(0) / flat.sigma(0)[:, None]  # the standard-normal draws of step 6
    for part in x.chunk(2):  # two micro-batches, mean loss over the full batch
        (model(part).square().sum() / len(x)).backward()
    flat.end_step()
    flat_ref.begin_step(6)
    (ref(x).square().sum() / len(x)).backward()
    flat_ref.end_step()
    for (n, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-6)
    flat.begin_step(7)
    assert not torch.allclose(flat.noise(0) / flat.sigma(0)[:, None], draws_6)  # a new draw
    flat.end_step()


# --------------------------------------------------------------------------- 7: no side effects, validation


@pytest.mark.parametrize("mode", ["exact", "inplace"])
def test_global_rng_untouched(mode):
    model = make_model()
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=0, mode=mode)
    x = torch.randn(4, 16)
    state = torch.get_rng_state()
    flat.begin_step(5)
    model(x).sum().backward()
    flat.noise(0)
    flat.end_step()
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("mode", ["exact", "inplace"])
def test_rho_zero_window_outside_and_close_leave_plain_model(mode):
    model = make_model()
    x = torch.randn(4, 16)
    plain = eval_output(model, x)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    base = lora_layer(model).get_base_layer()

    zero = FlatLoRA(model, rho=0.0, total_steps=10, seed=0, mode=mode, scope="all")
    zero.begin_step(9)
    assert torch.equal(eval_output(model, x), plain)
    assert torch.equal(zero.noise(0), torch.zeros_like(base.weight))
    zero.end_step()
    zero.close()

    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=0, mode=mode, scope="all")
    assert torch.equal(eval_output(model, x), plain)  # before the first step
    flat.begin_step(9)
    assert not torch.allclose(eval_output(model, x), plain)
    flat.end_step()
    assert torch.allclose(eval_output(model, x), plain, rtol=1e-5, atol=1e-6)  # outside the window
    flat.begin_step(9)
    flat.close()  # closes the open step too
    assert "forward" not in base.__dict__ and "forward" not in head(model).__dict__
    assert torch.allclose(eval_output(model, x), plain, rtol=1e-5, atol=1e-6)
    if mode == "exact":  # exact mode never writes W: bit-identical outputs and weights
        assert torch.equal(eval_output(model, x), plain)
        assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    with pytest.raises(RuntimeError):
        flat.begin_step(0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rho": -0.1}, "flat.rho"),
        ({"rho": float("nan")}, "flat.rho"),
        ({"mode": "sam"}, "flat.mode"),
        ({"scope": "attention"}, "flat.scope"),
        ({"total_steps": 0}, "flat.total_steps"),
    ],
)
def test_invalid_config_names_the_key(kwargs, key):
    args = {"rho": 0.05, "total_steps": 10, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        FlatLoRA(make_model(), **args)


def test_no_target_layer_and_misuse_raise():
    with pytest.raises(ValueError, match="no target layer"):
        FlatLoRA(nn.Sequential(nn.Linear(4, 4)), rho=0.05, total_steps=10, seed=0)  # no LoRA layer
    flat = FlatLoRA(make_model(), rho=0.05, total_steps=10, seed=0)
    with pytest.raises(RuntimeError):
        flat.end_step()
    flat.begin_step(1)
    with pytest.raises(RuntimeError):
        flat.begin_step(2)
    flat.end_step()
    with pytest.raises(ValueError):
        flat.begin_step(-1)


# --------------------------------------------------------------------------- 8-9: scope, memory


def test_scope_all_perturbs_plain_linears_and_lora_does_not():
    model = make_model()
    lora_only = FlatLoRA(model, rho=0.5, total_steps=10, seed=0, scope="lora")
    assert lora_only.target_names == ["base_model.model.0.base_layer"]
    lora_only.close()
    everything = FlatLoRA(model, rho=0.5, total_steps=10, seed=0, scope="all")
    assert everything.target_names == ["base_model.model.0.base_layer", "base_model.model.2"]
    everything.close()

    hidden = torch.randn(3, 32)
    plain = head(model)(hidden).detach()
    for scope, perturbed in (("lora", False), ("all", True)):
        flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=0, scope=scope)
        flat.begin_step(5)
        out = head(model)(hidden).detach()
        flat.end_step()
        flat.close()
        assert torch.equal(out, plain) != perturbed


def stored_numel(obj, seen=None):
    """Total numel of tensors reachable from obj's attributes, not descending into modules."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, nn.Module):
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(stored_numel(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(stored_numel(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not callable(obj):
        return sum(stored_numel(v, seen) for v in vars(obj).values())
    return 0


@pytest.mark.parametrize("mode", ["exact", "inplace"])
def test_persistent_memory_is_o_of_rows(mode):
    model = make_model(d_in=64, d_hidden=48)
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=0, mode=mode, scope="all")
    flat.begin_step(5)
    assert stored_numel(vars(flat)) == 48 + 8  # one sigma per output row of each target
    flat.end_step()
    assert stored_numel(vars(flat)) == 48 + 8


# --------------------------------------------------------------------------- a real transformer


def test_tiny_llama_exact_mode_matches_explicit_perturbation():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4,
    )
    lora = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(transformers.LlamaForCausalLM(config), lora)
    ref = copy.deepcopy(model)
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=0, scope="all")
    assert len(flat.target_names) == 8  # q, k, v, o, gate, up, down, lm_head
    assert FlatLoRA(model, rho=0.5, total_steps=10, seed=0).target_names == [
        n for n in flat.target_names if n.endswith(("q_proj.base_layer", "v_proj.base_layer"))
    ]
    ids = torch.randint(0, 50, (2, 7))
    flat.begin_step(5)
    perturb_explicitly(ref, flat)
    out, out_ref = model(input_ids=ids, labels=ids), ref(input_ids=ids, labels=ids)
    torch.testing.assert_close(out.logits, out_ref.logits, rtol=1e-5, atol=1e-5)
    out.loss.backward()
    out_ref.loss.backward()
    grads_ref = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads_ref[name], rtol=1e-4, atol=1e-6)

    clone = copy.deepcopy(model)  # a copy taken while armed perturbs its own weights
    clone_modules = dict(clone.named_modules())
    assert all(clone_modules[n].forward.layer is clone_modules[n] for n in flat.target_names)
    with torch.no_grad():
        assert torch.equal(clone(input_ids=ids).logits, model(input_ids=ids).logits)
    flat.end_step()
    flat.close()


def _rank_noise(rank: int, world: int, init_file: str, out: dict) -> None:
    """One data-parallel rank: its own global RNG state and data, the run's shared seed."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(1000 + rank)  # ranks' global RNGs differ (dropout, data order)
    model = make_model()
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=5, scope="all")
    flat.begin_step(7)
    noise = torch.cat([flat.noise(0).flatten(), flat.noise(1).flatten()])
    gathered = [torch.empty_like(noise) for _ in range(world)]
    dist.all_gather(gathered, noise)
    out[rank] = all(torch.equal(gathered[0], g) for g in gathered)
    flat.end_step()
    dist.destroy_process_group()


def test_every_data_parallel_rank_draws_the_same_noise(tmp_path):
    """Two real torch.distributed (gloo) ranks with different global RNG states gather identical noise."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_noise, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
        assert dict(out) == {0: True, 1: True}


# --------------------------------------------------------------------------- 10: sigma without an m x n temporary


def _adapted(kind: str, dtype=torch.float32):
    """A PEFT model whose layer "0" (40 -> 24) carries a nonzero adapter delta of the given kind."""
    from peft import AdaLoraConfig

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(40, 24), nn.Tanh(), nn.Linear(24, 8)).to(dtype)
    common = dict(lora_alpha=ALPHA, target_modules=["0"])
    if kind == "adalora":
        config = AdaLoraConfig(init_r=6, target_r=R, total_step=10, **common)
    else:
        config = LoraConfig(r=R, use_rslora=kind == "rslora", use_dora=kind == "dora", **common)
    model = get_peft_model(base, config)
    if kind == "two adapters":
        model.add_adapter("other", LoraConfig(r=2, **common))
        model.base_model.set_adapter(["default", "other"])
    with torch.no_grad():  # every factor nonzero (B and AdaLoRA's E start at 0)
        for name, p in model.named_parameters():
            if "lora_" in name and "magnitude" not in name:
                p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["lora", "rslora", "dora", "adalora", "two adapters"])
def test_sigma_from_gram_terms_matches_the_direct_formula_in_fp64(kind, dtype):
    """||W_i + s(BA)_i||^2 = ||W_i||^2 + 2s B_i.(W A^T)_i + s^2 B_i (A A^T) B_i^T against W + PEFT's own
    get_delta_weight summed in fp64, for every adapter kind Flat-LoRA is combined with."""
    model = _adapted(kind, dtype)
    layer = lora_layer(model)
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=0)
    flat.begin_step(7)
    with torch.no_grad():
        w_full = layer.get_base_layer().weight.double()
        for adapter in layer.active_adapters:
            w_full = w_full + layer.get_delta_weight(adapter).double()
    expected = flat_factor(7, 10) * 0.5 / math.sqrt(40) * w_full.norm(dim=1)
    assert flat.sigma(0).dtype == torch.float32
    torch.testing.assert_close(flat.sigma(0).double(), expected, rtol=2e-6, atol=0)
    flat.end_step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sigma_of_rows_the_adapter_cancels_stays_finite_and_bounded(dtype):
    """Where W_i ~ -s(BA)_i the Gram sum cancels: its fp32 error is relative to ||W_i||^2 + ||s(BA)_i||^2,
    so sigma_i keeps a small absolute error (clamped at 0: never NaN); other rows stay exact."""
    model = make_model(d_in=64, d_hidden=16, dtype=dtype)
    layer = lora_layer(model)
    base = layer.get_base_layer()
    with torch.no_grad():
        delta = layer.get_delta_weight("default")
        base.weight[:8] = (-delta[:8]).to(dtype)
    flat = FlatLoRA(model, rho=0.5, total_steps=1, seed=0)
    flat.begin_step(1)
    with torch.no_grad():
        w, d = base.weight.double(), layer.get_delta_weight("default").double()
    unit = 0.5 / math.sqrt(64)
    expected = unit * (w + d).norm(dim=1)
    sigma = flat.sigma(0).double()
    flat.end_step()
    assert torch.isfinite(sigma).all() and (sigma >= 0).all()
    bound = unit * (64 * torch.finfo(torch.float32).eps * (w.square().sum(1) + d.square().sum(1))).sqrt()
    assert ((sigma - expected).abs()[:8] <= bound[:8]).all()
    assert (expected[:8] < 0.01 * expected[8:].min()).all()  # the first rows really cancel
    torch.testing.assert_close(sigma[8:], expected[8:], rtol=2e-6, atol=0)


# --------------------------------------------------------------------------- 11: the fused Triton kernels


@pytest.fixture
def kernels():
    """(flat_kernels, device) where the kernels run: CUDA, or CPU under Triton's interpreter
    (TRITON_INTERPRET=1 in a venv with Triton); skipped with torch's CPU wheels (no Triton)."""
    from lorarepro.domain.methods import flat as flat_module

    fk = flat_module.flat_kernels
    if fk is None:
        pytest.skip("Triton is not importable (torch's CPU wheels)")
    if torch.cuda.is_available():
        return fk, "cuda"
    if fk.runs_on(torch.zeros(1, 1)):
        return fk, "cpu"
    pytest.skip("no GPU, and TRITON_INTERPRET is not set")


def _unit_noise(fk, m, n, seed, device):
    zeros = torch.zeros(m, n, device=device)
    return fk.perturb(zeros, torch.ones(m, device=device), seed, out=zeros)


def test_fused_noise_has_mean_zero_and_row_variance_sigma_squared(kernels, monkeypatch):
    fk, device = kernels
    m, n = 256, 1001  # n not a multiple of 4: the last quarter of each row is short
    sigma = torch.linspace(0.5, 2.0, m, device=device)
    zeros = torch.zeros(m, n, device=device)
    eps = fk.perturb(zeros, sigma, 12345, out=zeros).double().cpu()
    s = sigma.double().cpu()
    ratio = eps.std(dim=1) / s
    assert abs(ratio.mean().item() - 1) < 0.01 and (ratio - 1).abs().max().item() < 0.15
    assert (eps.mean(dim=1) / s).abs().mean().item() < 0.05  # ~ 0.8 / sqrt(1001) = 0.025 expected
    z = eps / s[:, None]
    assert abs(z.mean().item()) < 0.01
    quarters = [z[:, k * 251:(k + 1) * 251] for k in range(4)]  # each normal of randn4x fills a quarter
    assert all(abs(q.std().item() - 1) < 0.03 for q in quarters)
    assert abs(torch.corrcoef(torch.stack([quarters[0].flatten(), quarters[1].flatten()]))[0, 1].item()) < 0.02
    assert torch.equal(_unit_noise(fk, m, n, 12345, device), _unit_noise(fk, m, n, 12345, device))
    assert not torch.equal(_unit_noise(fk, m, n, 12345, device), _unit_noise(fk, m, n, 12346, device))
    reference = _unit_noise(fk, m, n, 7, device)
    monkeypatch.setattr(fk, "_NOISE_BLOCK", 64)  # the noise does not depend on the launch grid
    assert torch.equal(_unit_noise(fk, m, n, 7, device), reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fused_perturbation_rounds_w_plus_eps_once(kernels, dtype):
    """W + eps formed in fp32 and rounded once to W's dtype, out of place or in place (and back)."""
    fk, device = kernels
    torch.manual_seed(0)
    w = torch.randn(48, 70, device=device).to(dtype)
    sigma = torch.rand(48, device=device) + 0.1
    z = _unit_noise(fk, 48, 70, 99, device)
    plus, minus = (w.float() + sigma[:, None] * z).to(dtype), (w.float() - sigma[:, None] * z).to(dtype)
    out = fk.perturb(w, sigma, 99)
    assert out.dtype == dtype and out.data_ptr() != w.data_ptr()
    if dtype == torch.bfloat16 and device == "cpu":  # the interpreter truncates fp32 -> bf16 (GPUs round)
        torch.testing.assert_close(out, plus, rtol=2**-7, atol=0)
    else:
        assert torch.equal(out, plus)
    inplace = w.clone()
    fk.perturb(inplace, sigma, 99, out=inplace)
    assert torch.equal(inplace, out)
    back = w.clone()
    fk.perturb(back, sigma, 99, out=back, subtract=True)
    if not (dtype == torch.bfloat16 and device == "cpu"):
        assert torch.equal(back, minus)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rank", [0, 1, 8, 20])
def test_fused_sigma_rows_match_the_direct_formula_in_fp64(kernels, dtype, rank):
    fk, device = kernels
    torch.manual_seed(0)
    m, n = 75, 300
    w = (0.1 * torch.randn(m, n, device=device)).to(dtype)
    a = 0.1 * torch.randn(rank, n, device=device) if rank else None
    b = torch.randn(m, rank, device=device) if rank else None
    got = fk.sigma_rows(w, a, b, 1.5, 0.25)
    full = w.double() + (1.5 * b.double() @ a.double() if rank else 0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), 0.25 * full.norm(dim=1), rtol=2e-6, atol=0)
    if rank:
        big = torch.randn(fk.MAX_RANK + 1, n, device=device)
        with pytest.raises(ValueError, match="rank"):
            fk.sigma_rows(w, big, torch.randn(m, fk.MAX_RANK + 1, device=device), 1.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_exact_mode_gradients_match_explicit_perturbation(kernels, dtype):
    """Flat-LoRA end to end on the fused path: forward, backward (eps regenerated), W untouched, reruns."""
    from lorarepro.domain.methods import flat as flat_module

    _, device = kernels
    model = make_model(dtype=dtype).to(device)
    ref = copy.deepcopy(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    flat = FlatLoRA(model, rho=0.5, total_steps=10, seed=1, scope="all")
    assert all(flat_module._fused(layer.weight) for layer in flat._layers)
    flat.begin_step(6)
    perturb_explicitly(ref, flat)
    x = torch.randn(5, 16, device=device).to(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    y, y_ref = model(x), ref(x)
    torch.testing.assert_close(y, y_ref, **tol)  # the same W + eps (noise() is the kernel's)
    y.float().square().sum().backward()
    y_ref.float().square().sum().backward()
    flat.end_step()
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, p_ref.grad, **tol)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if not p.requires_grad)
    runs = []
    for _ in range(2):
        fresh = make_model(dtype=dtype).to(device)
        train(fresh, FlatLoRA(fresh, rho=0.5, total_steps=5, seed=3), steps=5)
        runs.append(adapter_params(fresh))
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
