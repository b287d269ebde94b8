"""Figures of the reproduced runs: training-loss curves, accuracy under corruption severity, and
1-D loss-landscape slices of the merged weights (from lorarepro.sharpness).

Figures are drawn from whatever runs exist: a missing or unfinished run is skipped and named in
a note on the figure, so a partial pipeline still gives a figure that says what it lacks.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lorarepro import paths, records
from lorarepro.atomic import write_with
from lorarepro.config import spec_seeds, specs
from lorarepro.registry import Registry

FIGURES = Registry("figure")  # kind -> fn(config, figure_id) -> written paths; a `figures:` entry's kind (default: its id)
SEVERITIES = list(range(6))  # 0 = clean test set, 1..5 = ood_s1..ood_s5
_SAVE_METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
}


# ----------------------------------------------------------------------------- shared helpers


def _figure_spec(config: dict, figure_id: str) -> dict:
    figures = specs(config, "figures")
    if figure_id not in figures:
        raise KeyError(f"figure {figure_id!r} is not configured under `figures:`")
    return figures[figure_id]


def _label(config: dict, method: str) -> str:
    return (config.get("methods") or {}).get(method, {}).get("label", method)


def _color(spec: dict, method: str) -> str:
    """One color per method across every panel, so a line is recognisable without its legend."""
    return f"C{list(spec['methods']).index(method) % 10}"


def _new_figure(n_panels: int, caption: str):
    """A pyplot-free Figure, so nothing leaks between figures drawn in one process."""
    n_panels = max(1, n_panels)
    ncols = min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(textwrap.fill(caption, 60 * ncols), fontsize=10)
    return fig, list(axes[:n_panels])


def _add_missing_note(fig, missing: list[str]) -> None:
    """Say which runs the figure lacks instead of silently drawing fewer lines."""
    if missing:
        text = "not available (missing or not FINISHED): " + ", ".join(missing)
        fig.supxlabel(textwrap.fill(text, 150), fontsize=7, color="firebrick")


def _finish_panel(ax) -> None:
    """A legend where the panel has lines, else a note that none of its runs finished yet."""
    if ax.has_data():
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center",
                transform=ax.transAxes, color="firebrick")


def _save(fig, figure_id: str) -> list[Path]:
    """PNG and PDF, each written to a temp sibling then renamed, without volatile metadata."""
    written = []
    for ext, metadata in _SAVE_METADATA.items():
        path = paths.figure(figure_id, ext)
        write_with(path, lambda tmp: fig.savefig(tmp, format=ext, dpi=150, metadata=metadata))
        written.append(path)
    return written


# ----------------------------------------------------------------------------- training curves


def _smooth(loss: pd.Series) -> pd.Series:
    """Short trailing mean: per-step loss is noisy at small batch sizes; the trend matters."""
    window = max(1, len(loss) // 25)
    return loss.rolling(window, min_periods=1).mean()


def _lines_per_task(config: dict, figure_id: str, read, xlabel: str, ylabel: str, **style) -> list[Path]:
    """One panel per task, one line per method for the first seed; `read(task, method, seed)`
    returns (x, y) or None for a missing run, which is noted in the figure."""
    spec = _figure_spec(config, figure_id)
    seed = spec_seeds(config, spec)[0]
    fig, axes = _new_figure(len(spec["tasks"]), spec["caption"])
    missing = []
    for ax, task in zip(axes, spec["tasks"]):
        for method in spec["methods"]:
            curve = read(task, method, seed)
            if curve is None:
                missing.append(f"{task}/{method}/seed{seed}")
                continue
            ax.plot(*curve, label=_label(config, method), color=_color(spec, method), linewidth=1.2, **style)
        ax.set(title=task, xlabel=xlabel, ylabel=ylabel)
        _finish_panel(ax)
    _add_missing_note(fig, missing)
    return _save(fig, figure_id)


@FIGURES.register("training_curves")
def training_curves(config: dict, figure_id: str = "training_curves") -> list[Path]:
    """Loss vs optimizer step, one panel per task, one line per method, for the first seed."""

    def read(task, method, seed):
        history = records.read_history(task, method, seed)
        return None if history is None else (history["step"], _smooth(history["loss"]))

    return _lines_per_task(config, figure_id, read, "step", "training loss")


# ----------------------------------------------------------------------------- OOD curve


def _severity_values(run: dict, path: Path) -> list[float]:
    metrics = run.get("metrics") or {}
    keys = ["test"] + [f"ood_s{s}" for s in SEVERITIES[1:]]
    absent = [key for key in keys if key not in metrics]
    if absent:
        raise ValueError(f"{path}: no {absent} in metrics; ood_curve needs vision tasks")
    return [float(metrics[key]) for key in keys]


def ood_stats(task: str, method: str, seeds: list[int]) -> tuple[pd.Series, pd.Series, int] | None:
    """Mean and sample std per severity over the finished seeds (std 0 for one seed)."""
    rows = []
    for seed in seeds:
        path = paths.run_result(task, method, seed)
        run = records.load_finished(path)
        if run is not None:
            rows.append(_severity_values(run, path))
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=SEVERITIES)
    return frame.mean(), frame.std(ddof=1).fillna(0.0), len(rows)


def _plot_task(ax, config: dict, spec: dict, task: str, missing: list[str]) -> dict:
    """One task's panel; returns the per-method means of complete methods for the average panel."""
    seeds = spec_seeds(config, spec)
    complete = {}
    for method in spec["methods"]:
        stats = ood_stats(task, method, seeds)
        if stats is None:
            missing.append(f"{task}/{method}")
            continue
        mean, std, n = stats
        label = _label(config, method) + ("" if n == len(seeds) else f" ({n}/{len(seeds)} seeds)")
        ax.errorbar(SEVERITIES, mean, yerr=std, marker="o", markersize=3, capsize=3, label=label,
                    color=_color(spec, method))
        if n == len(seeds):
            complete[method] = mean
    ax.set(title=task, xlabel="corruption severity (0 = clean)", ylabel="accuracy (%)",
           xticks=SEVERITIES)
    _finish_panel(ax)
    return complete


def _plot_average(ax, config: dict, spec: dict, per_task: list[dict]) -> None:
    """Mean over tasks, only for methods complete on every task, as the paper averages."""
    for method in spec["methods"]:
        if all(method in task_means for task_means in per_task):
            mean = sum(task_means[method] for task_means in per_task) / len(per_task)
            ax.plot(SEVERITIES, mean, marker="o", markersize=3, label=_label(config, method),
                    color=_color(spec, method))
    ax.set(title="mean over tasks (complete methods only)",
           xlabel="corruption severity (0 = clean)", ylabel="accuracy (%)", xticks=SEVERITIES)
    _finish_panel(ax)


@FIGURES.register("ood_curve")
def ood_curve(config: dict, figure_id: str = "ood_curve") -> list[Path]:
    """Accuracy vs corruption severity with std error bars over seeds, one panel per task."""
    spec = _figure_spec(config, figure_id)
    tasks = list(spec["tasks"])
    with_average = len(tasks) > 1
    fig, axes = _new_figure(len(tasks) + with_average, spec["caption"])
    missing: list[str] = []
    per_task = [_plot_task(ax, config, spec, task, missing) for ax, task in zip(axes, tasks)]
    if with_average:
        _plot_average(axes[-1], config, spec, per_task)
    _add_missing_note(fig, missing)
    return _save(fig, figure_id)


# ----------------------------------------------------------------------------- loss landscape


def _read_landscape(task: str, method: str, seed: int) -> tuple[list, list] | None:
    """(alphas, losses) of a measured run, only beside a FINISHED result, like the other figures."""
    measures = records.read_sharpness(task, method, seed)
    if measures is None:
        return None
    landscape = measures.get("landscape")
    if landscape is None:
        return None  # measured without the landscape (not a detail seed)
    if not {"alphas", "loss"} <= landscape.keys() or len(landscape["alphas"]) != len(landscape["loss"]):
        raise ValueError(f"{paths.run_sharpness(task, method, seed)}: `landscape` needs equally long `alphas` and `loss` lists")
    return landscape["alphas"], landscape["loss"]


@FIGURES.register("loss_landscape")
def loss_landscape(config: dict, figure_id: str = "loss_landscape") -> list[Path]:
    """Eval loss along one random filter-normalised direction of the merged weights, one panel per
    task, one line per method, first seed (the direction is drawn from the seed, so it is shared)."""
    return _lines_per_task(config, figure_id, _read_landscape, "α (filter-normalised direction)",
                           "eval loss L(W + αd)", marker="o", markersize=2)


# ----------------------------------------------------------------------------- ablations


def _ablation_points(config: dict, spec: dict, task: str, x_of, series_of, missing: list[str]) -> dict:
    """{series: sorted [(x, mean, std)]} over the finished seeds of each method; x and series come
    from each run's own resolved config (its `config` key), so the figure plots what was trained."""
    seeds, methods = spec_seeds(config, spec), spec["methods"]
    points: dict[str, list] = {}
    for method in methods:
        runs = [r for r in (records.finished(task, method, s) for s in seeds)
                if r is not None and (r.get("metrics") or {}).get("test") is not None]  # not run: no point
        if len(runs) < len(seeds):
            missing.append(f"{task}/{method} ({len(runs)}/{len(seeds)} seeds)")
        if not runs:
            continue
        values = pd.Series([float(r["metrics"]["test"]) for r in runs])
        run_cfg = runs[0]["config"]
        points.setdefault(series_of(run_cfg), []).append((x_of(run_cfg), values.mean(), values.std(ddof=1) if len(runs) > 1 else 0.0))
    return {series: sorted(p) for series, p in points.items()}


def _ablation(config: dict, figure_id: str, xlabel: str, x_of, series_of, log2_x: bool = False) -> list[Path]:
    """Test metric vs a hyper-parameter, one panel per task, one line per series, std error bars."""
    spec = _figure_spec(config, figure_id)
    fig, axes = _new_figure(len(spec["tasks"]), spec["caption"])
    missing: list[str] = []
    for ax, task in zip(axes, spec["tasks"]):
        for i, (series, pts) in enumerate(_ablation_points(config, spec, task, x_of, series_of, missing).items()):
            xs, means, stds = zip(*pts)
            ax.errorbar(xs, means, yerr=stds, marker="o", markersize=3, capsize=3, label=series, color=f"C{i}")
        if log2_x:
            ax.set_xscale("log", base=2)
        ax.set(title=task, xlabel=xlabel, ylabel="test metric (%)")
        _finish_panel(ax)
    _add_missing_note(fig, missing)
    return _save(fig, figure_id)


@FIGURES.register("rank_ablation")
def rank_ablation(config: dict, figure_id: str = "rank_ablation") -> list[Path]:
    """Test metric vs LoRA rank (log2 axis), LoRA and Flat-LoRA as two lines (the paper's Fig. 5)."""
    return _ablation(config, figure_id, "rank r", lambda c: c["adapter"]["r"],
                     lambda c: "Flat-LoRA" if c.get("flat") else "LoRA", log2_x=True)


@FIGURES.register("sigma_ablation")
def sigma_ablation(config: dict, figure_id: str = "sigma_ablation") -> list[Path]:
    """Test metric vs Flat-LoRA's noise radius rho; a run without Flat is the rho = 0 point."""
    return _ablation(config, figure_id, "noise radius ρ (0 = LoRA)",
                     lambda c: c["flat"]["rho"] if c.get("flat") else 0.0, lambda c: "Flat-LoRA")


def build_all_figures(config: dict) -> list[Path]:
    """Every configured figure, each drawn by its `kind` (default: its id); unknown kinds fail before
    anything is drawn."""
    kinds = {figure_id: spec.get("kind", figure_id) for figure_id, spec in specs(config, "figures").items()}
    unknown = sorted({kind for kind in kinds.values() if kind not in FIGURES})
    if unknown:
        raise ValueError(f"unknown figure kind(s) {unknown}; known: {sorted(FIGURES)}")
    written = []
    for figure_id, kind in kinds.items():
        written += FIGURES[kind](config, figure_id)
    return written
