"""Flatness measures: a planted quadratic with known Hessian, exact restore, determinism, the RNG
left alone, and measure_run / measure_pair on real tiny runs of the reduced workspace."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from lorarepro.core import paths
from lorarepro.stages import sharpness
from lorarepro.domain.experiment import resolve_run
from lorarepro.stages.training.train import train_one

SHAPE = (2, 3)  # W is 2 x 3: two output rows, n = 3


class Quadratic(torch.nn.Module):
    """loss = ½ vec(W)ᵀ A vec(W) for W = lin.weight, returned as `.loss` like a transformers model."""

    def __init__(self, eigenvalues, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
        self.register_buffer("A", q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T)
        self.lin = torch.nn.Linear(SHAPE[1], SHAPE[0], bias=False).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.1, 0.2, -0.3]], dtype=torch.float64))

    def forward(self, **batch):
        x = self.lin.weight.reshape(-1)
        return SimpleNamespace(loss=0.5 * x @ self.A @ x)


def quadratic(eigenvalues=(5.0, 2.0, 1.0, 0.5, -1.0, 0.1)):
    model = Quadratic(eigenvalues)
    return model, sharpness.EvalLoss(model, [{}, {}]), ["lin"]


@pytest.mark.parametrize("eigenvalues, top", [((5.0, 2.0, 1.0, 0.5, -1.0, 0.1), 5.0),
                                               ((-8.0, 3.0, 1.0, 0.5, -1.0, 0.1), 3.0),      # not the dominant -8
                                               ((-3.0, -2.0, -1.0, -0.5, -4.0, -0.1), -0.1)])  # no positive direction
def test_lanczos_finds_the_largest_eigenvalue_never_the_dominant_one(eigenvalues, top):
    model, loss_fn, targets = quadratic(eigenvalues)
    out = sharpness.hessian_top_eigenvalue(model, loss_fn, targets, iters=5, tol=1e-9)
    assert out["eigenvalue"] == pytest.approx(top, rel=1e-6) and out["converged"]
    assert 1 <= out["products"] and out["seconds"] >= 0


def test_requires_grad_flags_are_restored():
    model, loss_fn, targets = quadratic()
    model.lin.weight.requires_grad_(False)
    sharpness.hessian_top_eigenvalue(model, loss_fn, targets, iters=3)
    assert model.lin.weight.requires_grad is False


def test_expected_sharpness_matches_the_quadratic_formula():
    # E[½(x+ε)ᵀA(x+ε)] − ½xᵀAx = ½ Σ_k A_kk σ_k², σ = ρ/√n·‖W_i,:‖ for every entry of row i
    model, loss_fn, targets = quadratic()
    rho = 0.1
    sigma2 = (rho ** 2 / SHAPE[1]) * model.lin.weight.detach().pow(2).sum(dim=1, keepdim=True).expand(SHAPE)
    expected = 0.5 * float((torch.diagonal(model.A) * sigma2.reshape(-1)).sum())
    draws = sharpness.expected_sharpness(model, loss_fn, targets, radii=(rho,), draws=3000, seed=3)[rho]
    assert len(draws) == 3000 and sum(draws) / len(draws) == pytest.approx(expected, rel=0.1)


def test_rho_zero_is_exactly_zero_and_weights_restored_bit_exactly():
    model, loss_fn, targets = quadratic()
    before = model.lin.weight.detach().clone()
    out = sharpness.expected_sharpness(model, loss_fn, targets, radii=(0.0, 0.5), draws=3, seed=1)
    assert out[0.0] == [0.0] * 3 and all(d != 0.0 for d in out[0.5])
    assert torch.equal(model.lin.weight, before)
    sharpness.landscape_1d(model, loss_fn, targets, alphas=[-1.0, 0.3, 1.0], seed=1)
    assert torch.equal(model.lin.weight, before)


def test_weights_restored_even_when_the_loss_fails():
    model, _, targets = quadratic()
    before = model.lin.weight.detach().clone()

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        sharpness.landscape_1d(model, broken, targets, alphas=[0.5])
    assert torch.equal(model.lin.weight, before)


def test_fixed_seed_is_deterministic_and_other_seed_differs():
    model, loss_fn, targets = quadratic()
    run = lambda seed: (sharpness.expected_sharpness(model, loss_fn, targets, radii=(0.1,), draws=4, seed=seed),  # noqa: E731
                        sharpness.landscape_1d(model, loss_fn, targets, alphas=[0.5], seed=seed),
                        sharpness.hessian_top_eigenvalue(model, loss_fn, targets, iters=2, seed=seed)["eigenvalue"])
    assert run(7) == run(7)
    assert run(7)[:2] != run(8)[:2]


def test_landscape_at_zero_is_the_clean_loss_and_a_parabola_on_a_quadratic():
    model, loss_fn, targets = quadratic()
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    losses = sharpness.landscape_1d(model, loss_fn, targets, alphas=alphas, seed=2)
    with torch.no_grad():
        assert losses[2] == float(loss_fn())
    # L(α) = L0 + α·b + α²·c exactly: the second difference is constant
    second = [losses[i - 1] - 2 * losses[i] + losses[i + 1] for i in (1, 2, 3)]
    assert second == pytest.approx([second[0]] * 3, rel=1e-9)


def test_direction_is_filter_normalised():
    w = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.5]])
    d = sharpness._filter_normalised(w, torch.Generator().manual_seed(0))
    assert d.norm(dim=1).tolist() == pytest.approx([5.0, 0.5], rel=1e-6)


def test_global_rng_is_untouched():
    model, loss_fn, targets = quadratic()
    state = torch.random.get_rng_state()
    sharpness.expected_sharpness(model, loss_fn, targets, draws=2)
    sharpness.hessian_top_eigenvalue(model, loss_fn, targets, iters=2)
    sharpness.landscape_1d(model, loss_fn, targets, alphas=[0.5])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unknown_target_is_named():
    model, loss_fn, _ = quadratic()
    with pytest.raises(KeyError, match="nope"):
        sharpness.expected_sharpness(model, loss_fn, ["nope"])


# ----------------------------------------------------------------------------- real tiny runs

FAST = {"n_eval": 16, "draws": 2, "hessian_iters": 8, "radii": (0.0, 0.05), "alphas": (-0.5, 0.0, 0.5)}


def _check(out: dict, task: str, method: str, seed: int) -> None:
    on_disk = json.loads(paths.run_sharpness(task, method, seed).read_text())
    assert on_disk == json.loads(json.dumps(out))
    assert {"expected_sharpness", "hessian_top", "landscape", "n_eval", "draws", "base_loss"} <= out.keys()
    assert out["expected_sharpness"]["0.0"] == 0.0
    assert {"eigenvalue", "converged", "products", "seconds"} <= out["hessian_top"].keys()
    assert out["split"] == "train" and len(out["expected_sharpness_draws"]["0.05"]) == 2
    assert out["landscape"]["alphas"] == [-0.5, 0.0, 0.5]
    assert out["landscape"]["loss"][1] == out["base_loss"]
    numbers = [*out["expected_sharpness"].values(), out["hessian_top"]["eigenvalue"], *out["landscape"]["loss"]]
    assert all(math.isfinite(x) for x in numbers)
    assert out["n_eval"] == 16 and out["draws"] == 2 and out["targets"] > 0


@pytest.mark.parametrize("task, method", [("sentiment", "lora_r8"), ("sentiment", "full_ft")])
def test_measure_run_on_a_trained_run(workspace, task, method):
    train_one(workspace, resolve_run(workspace, task, method), seed=0)
    state = torch.random.get_rng_state()
    out = sharpness.measure_run(workspace, task, method, 0, **FAST)
    assert torch.equal(torch.random.get_rng_state(), state)  # loading a head re-init used a forked RNG
    _check(out, task, method, 0)


def test_measure_pair_measures_every_finished_run_and_details_some(workspace):
    for seed in (0, 1):
        train_one(workspace, resolve_run(workspace, "digits", "flat_lora_r8"), seed=seed)
    results = sharpness.measure_pair(workspace, "digits", "flat_lora_r8", detail_seeds=[0], **FAST)
    assert [r["seed"] for r in results] == [0, 1]
    _check(results[0], "digits", "flat_lora_r8", 0)
    assert results[1]["hessian_top"] is None and results[1]["landscape"] is None  # not a detail seed
    assert results[1]["expected_sharpness"]["0.05"] > 0
    index = json.loads(paths.pair_sharpness("digits", "flat_lora_r8").read_text())
    assert index["measured"] == [str(paths.run_sharpness("digits", "flat_lora_r8", s)) for s in (0, 1)]


def test_measure_run_without_a_finished_result_names_the_file(workspace):
    with pytest.raises(FileNotFoundError, match="seed9.json"):
        sharpness.measure_run(workspace, "sentiment", "lora_r8", 9, **FAST)
