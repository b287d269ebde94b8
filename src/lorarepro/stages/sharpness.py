"""Flatness of a trained run in the FULL weight space, measured on the merged model, no retraining.

Flat-LoRA claims that training the adapter under full-weight noise puts W + s·BA in a flatter region
of the full weight space than plain LoRA. This module measures that directly, for every method
alike: LoRA runs are merged (PEFT `merge_and_unload`, weights W + s·BA), full-FT runs are their saved
model, and the probed parameters are the weights of every linear layer LoRA targets
(`lora.linear_targets`: all nn.Linear but the family's head), so the numbers are comparable.

On a fixed batch set (the first n_eval training rows, the family's training loss: what the run
minimised, label noise included):
- expected sharpness E_ε[L(W+ε)] − L(W), with Flat-LoRA's filter-wise noise
  ε_ij ~ N(0, (ρ/√n·‖W_i,:‖)²) per output row i (n = in_features);
- the top Hessian eigenvalue λ_max, by power iteration with Hessian-vector products;
- a 1-D slice L(W + α·d) along a random filter-normalised direction d (Li et al., 2018).

Randomness comes only from private torch.Generators seeded from `seed` (never the global RNG); the
same seed gives the same draws for equally shaped models, so LoRA and Flat-LoRA runs of one task and
seed are probed with identical noise and direction (measure_run uses the run's seed). Perturbed
weights are copied back from a saved copy after every evaluation: bit-identical afterwards.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch.nn.attention import SDPBackend, sdpa_kernel

from lorarepro.core import numerics, paths, tracking
from lorarepro.domain import checkpoints, families, records
from lorarepro.core.atomic import write_json
from lorarepro.core.config import sharpness_runs
from lorarepro.domain.data import load_split
from lorarepro.domain.methods.lora import linear_targets

RADII = (0.01, 0.02, 0.05, 0.1)
ALPHAS = tuple(round(-1.0 + 0.1 * i, 10) for i in range(21))  # linspace(-1, 1, 21)
_NOISE, _HESSIAN, _DIRECTION = 0, 1, 2  # separate random streams per measure


# ----------------------------------------------------------------------------- building blocks


def _generator(seed: int, stream: int) -> torch.Generator:
    """A private CPU generator per (seed, measure), so measures do not share draws."""
    return torch.Generator().manual_seed((int(seed) & 0xFFFFFFFF) * 16 + stream)


def target_weights(model: torch.nn.Module, targets: list[str]) -> list[torch.nn.Parameter]:
    """Weight of each named module, each tied weight once (perturbing it twice would double ε)."""
    modules = dict(model.named_modules())
    missing = [name for name in targets if not hasattr(modules.get(name), "weight")]
    if missing:
        raise KeyError(f"target modules without a weight in the model: {missing[:5]}")
    seen, weights = set(), []
    for name in targets:
        weight = modules[name].weight
        if id(weight) not in seen:
            seen.add(id(weight))
            weights.append(weight)
    return weights


def _row_norms(weight: torch.Tensor) -> torch.Tensor:
    """‖W_i,:‖ per output row as an (m, 1) column (a 1-D weight is one row)."""
    return weight.detach().float().reshape(weight.shape[0], -1).norm(dim=1).view(-1, *[1] * (weight.dim() - 1))


def _loss_at(weights: list, saved: list, loss_fn, delta) -> float:
    """L(W + Δ) with Δ_k = delta(k, W_k) added in place; W is copied back bit-exactly afterwards.

    Deltas are made one layer at a time, so the transient memory stays within one layer.
    """
    try:
        with torch.no_grad():
            for k, weight in enumerate(weights):
                weight.add_(delta(k, saved[k]).to(weight.dtype))
            return float(loss_fn())
    finally:
        with torch.no_grad():
            for weight, original in zip(weights, saved):
                weight.copy_(original)


class EvalLoss:
    """The model's own loss (`model(**batch).loss`) averaged over a fixed batch list.

    Callable for the mean loss; `terms()` splits it per batch so a Hessian-vector product holds
    one batch's double-backward graph at a time.
    """

    def __init__(self, model: torch.nn.Module, batches: list[dict]):
        if not batches:
            raise ValueError("EvalLoss needs at least one batch")
        self.model, self.batches = model, list(batches)

    def _one(self, batch: dict) -> torch.Tensor:
        return self.model(**batch).loss

    def __call__(self) -> torch.Tensor:
        return sum(self._one(batch) for batch in self.batches) / len(self.batches)

    def terms(self) -> list[tuple[float, object]]:
        return [(1.0 / len(self.batches), functools.partial(self._one, b)) for b in self.batches]


def _terms(loss_fn) -> list:
    return loss_fn.terms() if hasattr(loss_fn, "terms") else [(1.0, loss_fn)]


# ----------------------------------------------------------------------------- the three measures


def expected_sharpness(model, loss_fn, targets: list[str], radii=RADII, draws: int = 8,
                       seed: int = 0) -> dict[float, list[float]]:
    """{ρ: [L(W+ε) − L(W) for each of `draws` draws]} under Flat-LoRA's filter-wise noise (the
    expected sharpness is their mean; their spread gives its uncertainty over draws).

    Every ρ reuses the same standard-normal draws z (ε = ρ/√n·‖W_i‖·z), so the curve over ρ is not
    blurred by fresh noise per radius. ρ = 0 gives exactly 0 (W + 0 == W bitwise). Cost: one
    forward pass over the batch set per (ρ, draw).
    """
    weights = target_weights(model, targets)
    saved = [w.detach().clone() for w in weights]
    with torch.no_grad():
        clean = float(loss_fn())
    out = {}
    for rho in radii:
        gen = _generator(seed, _NOISE)

        def noise(k, w, rho=rho, gen=gen):
            z = torch.randn(w.shape, generator=gen, dtype=torch.float32)
            return z * (rho / math.sqrt(w[0].numel())) * _row_norms(w)  # n = in_features

        out[rho] = [_loss_at(weights, saved, loss_fn, noise) - clean for _ in range(draws)]
    return out


def _filter_normalised(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A Gaussian direction whose every row i is rescaled to ‖W_i,:‖ (Li et al., 2018)."""
    d = torch.randn(w.shape, generator=gen, dtype=torch.float32)
    d_norms = d.reshape(w.shape[0], -1).norm(dim=1).clamp_min(1e-12).view_as(_row_norms(w))
    return d / d_norms * _row_norms(w)


def landscape_1d(model, loss_fn, targets: list[str], alphas=ALPHAS, seed: int = 0) -> list[float]:
    """L(W + α·d) for each α along one random filter-normalised direction d (same d for every α).

    The direction is regenerated from `seed` for each α instead of being stored (memory: one layer).
    α = 0 gives exactly the unperturbed loss. Cost: one forward pass over the batch set per α.
    """
    weights = target_weights(model, targets)
    saved = [w.detach().clone() for w in weights]
    losses = []
    for alpha in alphas:
        gen = _generator(seed, _DIRECTION)
        losses.append(_loss_at(weights, saved, loss_fn,
                               lambda k, w, a=alpha, g=gen: a * _filter_normalised(w, g)))
    return losses


class _GradOnly:
    """Context: only `weights` require grad (other parameters build no graph); flags restored after."""

    def __init__(self, model: torch.nn.Module, weights: list):
        self.model, self.weights = model, weights

    def __enter__(self):
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)
        for w in self.weights:
            w.requires_grad_(True)

    def __exit__(self, *exc):
        for p, flag in self.flags:
            p.requires_grad_(flag)


def _hvp(loss_fn, weights: list, v: list) -> list[torch.Tensor]:
    """H·v by double backprop (grad with create_graph, then the grad of g·v), summed over batches."""
    hv = [torch.zeros_like(w) for w in weights]
    for share, term in _terms(loss_fn):
        grads = torch.autograd.grad(term(), weights, create_graph=True, allow_unused=True)
        dot = sum((g * x).sum() for g, x in zip(grads, v) if g is not None)
        if not torch.is_tensor(dot) or not dot.requires_grad:
            continue  # the loss is linear in these weights: no curvature from this batch
        for acc, h in zip(hv, torch.autograd.grad(dot, weights, allow_unused=True)):
            if h is not None:
                acc.add_(h.detach(), alpha=share)
    return hv


def hessian_top_eigenvalue(model, loss_fn, targets: list[str], iters: int = 20, tol: float = 1e-3,
                           seed: int = 0) -> dict:
    """λ_max, the largest (algebraic) eigenvalue of the Hessian of the loss w.r.t. the target weights.

    scipy.sparse.linalg.eigsh (ARPACK's implicitly restarted Lanczos, `which="LA"`) on a linear
    operator whose product is a Hessian-vector product, so λ_max is the largest eigenvalue itself,
    not the one of largest magnitude (power iteration's): a negative λ_max means the Hessian has no
    positive direction there, never a negative eigenvalue passed off as the top one. `iters` is the
    Lanczos basis size (each basis vector costs one product; at most 5 restarts); the start vector
    is seeded. Returns
    {"eigenvalue", "converged", "products", "seconds"}; unconverged, the best Ritz value with
    converged false.

    Cost: one Hessian-vector product ≈ one forward plus 2-3 backward passes over the batch set (the
    first backward keeps its graph); memory: the double-backward graph of one batch plus `iters`
    float64 copies of the target weights. Attention runs on SDPA's math backend here: the fused CPU
    kernel has no double backward.
    """
    weights = target_weights(model, targets)
    shapes = [w.shape for w in weights]
    sizes = [w.numel() for w in weights]
    gen = _generator(seed, _HESSIAN)
    v0 = torch.cat([torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes]).numpy()
    products = 0

    def matvec(x: np.ndarray) -> np.ndarray:
        nonlocal products
        products += 1
        parts = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).split(sizes)
        v = [p.reshape(shape).to(w.dtype) for p, shape, w in zip(parts, shapes, weights)]
        return torch.cat([h.reshape(-1).double() for h in _hvp(loss_fn, weights, v)]).numpy()

    start = time.perf_counter()
    operator = LinearOperator((sum(sizes), sum(sizes)), matvec=matvec, dtype=np.float64)
    with _GradOnly(model, weights), sdpa_kernel([SDPBackend.MATH]):
        try:
            value, converged = float(eigsh(operator, k=1, which="LA", v0=v0, ncv=min(iters, sum(sizes) - 1),
                                           maxiter=5, tol=tol, return_eigenvectors=False)[0]), True
        except ArpackNoConvergence as err:
            value, converged = (float(max(err.eigenvalues)) if len(err.eigenvalues) else math.nan), False
    return {"eigenvalue": value, "converged": converged, "products": products,
            "seconds": round(time.perf_counter() - start, 3)}


# ----------------------------------------------------------------------------- one trained run


def probe_batches(run: dict, tokenizer, manifest: dict, n_eval: int) -> list[dict]:
    """The first n_eval training rows (what the run minimised), encoded by the family, in
    training-sized batches: a fixed set, the same for every method of the task."""
    family = families.get(run["family"])
    df = load_split(paths.prepared_dir(run["task"]), "train").head(n_eval)
    encoded = family.encode(df, tokenizer, manifest, run["training"]["max_length"])
    size = run["training"]["batch_size"]
    return [encoded.batch(list(range(i, min(i + size, len(encoded))))) for i in range(0, len(encoded), size)]


def measure_run(config: dict, task: str, method: str, seed: int, *, n_eval: int = 128, draws: int = 8,
                hessian_iters: int = 20, radii=RADII, alphas=ALPHAS, detail: bool = True, write: bool = True) -> dict:
    """The measures of one finished run, written to its sharpness record (lorarepro.domain.records) unless
    `write` is false (the audit measures again and compares): the expected sharpness always, λ_max
    and the landscape with `detail`.

    The run's own result JSON supplies its resolved config (family, backbone, adapter, batch size),
    so the checkpoint is loaded exactly as it was trained. Seeded with the run's seed.
    """
    for section, key in (("tasks", task), ("methods", method)):
        if key not in (config.get(section) or {}):
            raise KeyError(f"{section}: no entry {key!r} in the config")
    start = time.perf_counter()
    result = records.finished(task, method, seed)
    if result is None:
        raise FileNotFoundError(f"{paths.run_result(task, method, seed)}: no FINISHED result for task={task} "
                                f"method={method} seed={seed}")
    run = result["config"]
    model, tokenizer, manifest = checkpoints.load(run, seed, merged=True)
    targets = linear_targets(model, families.get(run["family"]).head_modules())
    batches = probe_batches(run, tokenizer, manifest, n_eval)
    loss_fn = EvalLoss(model, batches)
    with torch.no_grad():
        clean = float(loss_fn())
    draws_by_rho = expected_sharpness(model, loss_fn, targets, radii, draws, seed)
    hessian = hessian_top_eigenvalue(model, loss_fn, targets, iters=hessian_iters, seed=seed) if detail else None
    losses = landscape_1d(model, loss_fn, targets, alphas, seed=seed) if detail else None
    weights = target_weights(model, targets)
    out = {
        "task": task, "method": method, "seed": seed, "split": "train", "base_loss": clean,
        "expected_sharpness": {str(rho): float(np.mean(v)) for rho, v in draws_by_rho.items()},
        "expected_sharpness_se": {str(rho): float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
                                  for rho, v in draws_by_rho.items()},
        "expected_sharpness_draws": {str(rho): v for rho, v in draws_by_rho.items()},
        "hessian_top": hessian, "landscape": None if losses is None else {"alphas": list(alphas), "loss": losses},
        "n_eval": sum(len(next(iter(b.values()))) for b in batches), "draws": draws,
        "targets": len(weights), "target_params": sum(w.numel() for w in weights),
        "numerics": numerics.fingerprint(), "seconds": round(time.perf_counter() - start, 3),
    }
    if write:
        records.write_sharpness(out)
    return out


def measure_pair(config: dict, task: str, method: str, detail_seeds: list[int] | None = None, **options) -> list[dict]:
    """Every run of (task, method) whose flatness is measured (config.sharpness_runs) and whose result
    is FINISHED, in one process; λ_max and the landscape only for `detail_seeds` (default: all).
    Also writes paths.pair_sharpness(task, method), a fixed output naming what was measured, for the
    workflow, with each record's sha256 as written (also tagged on the run's MLflow run): the
    audit holds the records against both. `options` go to measure_run."""
    seeds = sharpness_runs(config).get((task, method))
    if seeds is None:
        raise KeyError(f"no table with sharpness: true has task {task!r} and method {method!r}")
    checkpoints.deterministic(config)
    done, skipped, hashes = [], [], {}
    for seed in seeds:
        result = records.finished(task, method, seed)
        if result is None:
            skipped.append(f"seed{seed}")
            continue
        detail = detail_seeds is None or seed in detail_seeds
        done.append(measure_run(config, task, method, seed, detail=detail, **options))
        written = records.sharpness_digest(done[-1])  # timings aside: the pair file stays deterministic
        hashes[str(paths.run_sharpness(task, method, seed))] = written
        _log_to_mlflow(config, result, done[-1], written)
    write_json(paths.pair_sharpness(task, method), {
        "task": task, "method": method, "skipped_not_finished": skipped,
        "measured": [str(paths.run_sharpness(task, method, r["seed"])) for r in done], "sha256": hashes,
    })
    return done


SHARPNESS_SHA256 = "lorarepro.sharpness_sha256"  # the run's MLflow tag: its sharpness record's hash as written


def _log_to_mlflow(config: dict, result: dict, measures: dict, sha256: str) -> None:
    """Attach the flatness numbers, and the hash of the record they were written to, to the
    training run's MLflow run."""
    run_id = result["lineage"].get("mlflow_run_id")
    if run_id and tracking.log_metrics(config, run_id, tracking.run_metrics(sharpness=measures)):
        tracking.Tracker(tracking.mlflow_client(config)[0], run_id).tags({SHARPNESS_SHA256: sha256})
