"""Figures of the reproduced runs: training-loss curves, accuracy under corruption severity, 1-D
loss-landscape slices of the merged weights (from lorarepro.stages.sharpness) and the rank and noise-radius
ablations.

Every figure reads every seed of its spec. A curve is the mean over seeds with a band from the lowest
to the highest seed (min-max); a point is the mean with error bars of ±1 sample std; `caption_note`
says which, for the report's caption, which also holds the figure's `caption` (no title is drawn).
A method keeps one colour and line style in every figure, from its position in the config's
`methods`. Figures are drawn from whatever runs exist: a missing or unfinished run is skipped and
named in a note on the figure, so a partial pipeline still gives a figure that says what it lacks.
Output is byte-identical for the same runs (no timestamps or software versions in the files).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.core.atomic import write_with
from lorarepro.core.config import spec_seeds, specs
from lorarepro.core.registry import Registry

FIGURES = Registry("figure")  # kind -> fn(config, figure_id) -> written paths; a `figures:` entry's kind (default: its id)
SEVERITIES = list(range(6))  # 0 = clean test set, 1..5 = ood_s1..ood_s5
DPI = 300
_LINESTYLES = ("-", "--", ":", "-.")  # after the ten colours of the cycle, the next style
_SAVE_METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
}
_BAND = "the band spans the lowest to the highest seed (min-max)"
_BARS = "error bars are ±1 sample std over seeds"
# What each kind draws, for the report's caption ({seeds}: the seeds it read)
NOTES = {
    "training_curves": "Lines: the training loss (a trailing mean over 4% of the steps), mean over seeds {seeds}; " + _BAND + ".",
    "loss_landscape": "Lines: mean over seeds {seeds} (those measured with a landscape, `sharpness.detail_seeds`); " + _BAND + ".",
    "ood_curve": "Points: mean over seeds {seeds}; " + _BARS + "; the last panel averages the methods complete on every task.",
    "rank_ablation": "Points: mean over seeds {seeds}; " + _BARS + "; ticks at the ranks measured.",
    "sigma_ablation": "Points: mean over seeds {seeds}; " + _BARS + "; ticks at the radii measured (0: LoRA).",
}


# ----------------------------------------------------------------------------- shared helpers


def _figure_spec(config: dict, figure_id: str) -> dict:
    figures = specs(config, "figures")
    if figure_id not in figures:
        raise KeyError(f"figure {figure_id!r} is not configured under `figures:`")
    return figures[figure_id]


def caption_note(config: dict, figure_id: str) -> str:
    """How the figure summarises its seeds (its kind's NOTES entry); empty for a kind without one."""
    spec = _figure_spec(config, figure_id)
    kind = spec.get("kind", figure_id)
    seeds = _landscape_seeds(config, spec) if kind == "loss_landscape" else spec_seeds(config, spec)
    note = NOTES.get(kind, "")
    return note.format(seeds=", ".join(map(str, seeds))) + (" A method has the same colour in every figure." if note else "")


def _label(config: dict, method: str) -> str:
    return (config.get("methods") or {}).get(method, {}).get("label", method)


def _position(config: dict, spec: dict, method: str) -> int:
    """The method's place in the config's `methods`; one the config lacks (a figure drawn outside a
    checked config) comes after them, in the figure's order."""
    names = list(config.get("methods") or {})
    return names.index(method) if method in names else len(names) + list(spec["methods"]).index(method)


def _style(config: dict, spec: dict, method: str) -> dict:
    """The method's colour and line style, the same in every figure."""
    index = _position(config, spec, method)
    return {"color": f"C{index % 10}", "linestyle": _LINESTYLES[index // 10 % len(_LINESTYLES)]}


def _new_figure(n_panels: int):
    """A pyplot-free Figure, so nothing leaks between figures drawn in one process."""
    n_panels = max(1, n_panels)
    ncols = min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _add_missing_note(fig, missing: list[str]) -> None:
    """Say which runs the figure lacks instead of silently drawing fewer lines."""
    if missing:
        text = "not available (missing or not FINISHED): " + ", ".join(missing)
        width = int(fig.get_figwidth() * 18)  # characters of 7-point text across the figure
        fig.supxlabel(textwrap.fill(text, width), fontsize=7, color="firebrick")


def _finish_panel(ax) -> None:
    """A legend where the panel has lines, else a note that none of its runs finished yet."""
    if ax.has_data():
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center",
                transform=ax.transAxes, color="firebrick")


def _seeds_label(label: str, n: int, seeds: list[int]) -> str:
    return label + ("" if n == len(seeds) else f" ({n}/{len(seeds)} seeds)")


def _save(fig, figure_id: str) -> list[Path]:
    """PNG and PDF, each written to a temp sibling then renamed, without volatile metadata."""
    written = []
    for ext, metadata in _SAVE_METADATA.items():
        path = paths.figure(figure_id, ext)
        write_with(path, lambda tmp: fig.savefig(tmp, format=ext, dpi=DPI, metadata=metadata))
        written.append(path)
    return written


# ----------------------------------------------------------------------------- curves over seeds


def _smooth(loss: pd.Series) -> pd.Series:
    """Short trailing mean: per-step loss is noisy at small batch sizes; the trend matters."""
    window = max(1, len(loss) // 25)
    return loss.rolling(window, min_periods=1).mean()


def _band(ax, curves: dict[int, pd.Series], label: str, style: dict, **extra) -> None:
    """The mean over seeds as a line, the min-max over seeds as a band around it (none for one seed)."""
    frame = pd.DataFrame(curves).sort_index()
    ax.plot(frame.index, frame.mean(axis=1), label=label, linewidth=1.2, **style, **extra)
    if frame.shape[1] > 1:
        ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=style["color"], alpha=0.2, linewidth=0)


def _curves_per_task(config: dict, figure_id: str, seeds: list[int], read, xlabel: str, ylabel: str, **extra) -> list[Path]:
    """One panel per task, one line (mean) and band (min-max) per method over `seeds`;
    `read(task, method, seed)` returns (x, y) or None for a missing run, which is noted in the figure."""
    spec = _figure_spec(config, figure_id)
    fig, axes = _new_figure(len(spec["tasks"]))
    missing = []
    for ax, task in zip(axes, spec["tasks"]):
        for method in spec["methods"]:
            curves = {}
            for seed in seeds:
                curve = read(task, method, seed)
                if curve is not None:
                    curves[seed] = pd.Series(list(curve[1]), index=list(curve[0]), dtype=float)
            if len(curves) < len(seeds):
                missing.append(f"{task}/{method} ({len(curves)}/{len(seeds)} seeds)")
            if curves:
                _band(ax, curves, _seeds_label(_label(config, method), len(curves), seeds),
                      _style(config, spec, method), **extra)
        ax.set(title=task, xlabel=xlabel, ylabel=ylabel)
        _finish_panel(ax)
    _add_missing_note(fig, missing)
    return _save(fig, figure_id)


@FIGURES.register("training_curves")
def training_curves(config: dict, figure_id: str = "training_curves") -> list[Path]:
    """Loss vs optimizer step, one panel per task, one line per method: mean over seeds, min-max band."""

    def read(task, method, seed):
        history = records.read_history(task, method, seed)
        return None if history is None else (history["step"], _smooth(history["loss"]))

    seeds = spec_seeds(config, _figure_spec(config, figure_id))
    return _curves_per_task(config, figure_id, seeds, read, "step", "training loss")


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
        ax.errorbar(SEVERITIES, mean, yerr=std, marker="o", markersize=3, capsize=3,
                    label=_seeds_label(_label(config, method), n, seeds), **_style(config, spec, method))
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
                    **_style(config, spec, method))
    ax.set(title="mean over tasks (complete methods only)",
           xlabel="corruption severity (0 = clean)", ylabel="accuracy (%)", xticks=SEVERITIES)
    _finish_panel(ax)


@FIGURES.register("ood_curve")
def ood_curve(config: dict, figure_id: str = "ood_curve") -> list[Path]:
    """Accuracy vs corruption severity with std error bars over seeds, one panel per task."""
    spec = _figure_spec(config, figure_id)
    tasks = list(spec["tasks"])
    with_average = len(tasks) > 1
    fig, axes = _new_figure(len(tasks) + with_average)
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


def _landscape_seeds(config: dict, spec: dict) -> list[int]:
    """The figure's seeds that get a landscape (`sharpness.detail_seeds`; every seed without it)."""
    detail = (config.get("sharpness") or {}).get("detail_seeds")
    return [seed for seed in spec_seeds(config, spec) if detail is None or seed in detail]


@FIGURES.register("loss_landscape")
def loss_landscape(config: dict, figure_id: str = "loss_landscape") -> list[Path]:
    """Eval loss along one random filter-normalised direction of the merged weights (drawn from the
    run's seed), one panel per task, one line per method: mean over the measured seeds, min-max band."""
    seeds = _landscape_seeds(config, _figure_spec(config, figure_id))
    return _curves_per_task(config, figure_id, seeds, _read_landscape, "α (filter-normalised direction)",
                            "eval loss L(W + αd)", marker="o", markersize=2)


# ----------------------------------------------------------------------------- ablations


def _ablation_points(config: dict, spec: dict, task: str, x_of, series_of, missing: list[str]) -> dict:
    """{series: sorted [(x, mean, std, method, flat)]} over the finished seeds of each method; x and
    series come from each run's own resolved config (its `config` key), so the figure plots what was
    trained; `flat`: the run used Flat-LoRA."""
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
        std = values.std(ddof=1) if len(runs) > 1 else 0.0
        points.setdefault(series_of(run_cfg), []).append((x_of(run_cfg), values.mean(), std, method, bool(run_cfg.get("flat"))))
    return {series: sorted(p) for series, p in points.items()}


def _series_style(config: dict, spec: dict, points: list[tuple]) -> dict:
    """A line of several methods takes the colour of its first method in the config's `methods`,
    a Flat-LoRA one where it has any (the σ ablation's ρ = 0 point is LoRA's run)."""
    method = min(points, key=lambda p: (not p[4], _position(config, spec, p[3])))[3]
    return _style(config, spec, method)


def _ablation(config: dict, figure_id: str, xlabel: str, x_of, series_of, log2_x: bool = False) -> list[Path]:
    """Test metric vs a hyper-parameter, one panel per task, one line per series, std error bars,
    ticks at the measured values only."""
    spec = _figure_spec(config, figure_id)
    fig, axes = _new_figure(len(spec["tasks"]))
    missing: list[str] = []
    for ax, task in zip(axes, spec["tasks"]):
        measured = set()
        for series, pts in _ablation_points(config, spec, task, x_of, series_of, missing).items():
            xs, means, stds = zip(*[p[:3] for p in pts])
            ax.errorbar(xs, means, yerr=stds, marker="o", markersize=3, capsize=3, label=series,
                        **_series_style(config, spec, pts))
            measured.update(xs)
        if log2_x:
            ax.set_xscale("log", base=2)
        if measured:
            ax.set_xticks(sorted(measured), labels=[f"{x:g}" for x in sorted(measured)])
            ax.xaxis.set_minor_locator(NullLocator())
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
