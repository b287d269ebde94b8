"""Figures: PNG+PDF written (also with missing runs), deterministic output, registry errors; every
seed drawn (mean with a band or error bars), one colour per method across figures, no drawn title,
ticks at measured values only, 300 dpi."""

import json

import pytest

import pandas as pd

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.reporting import figures

SEEDS = [0, 1, 2]


def make_config():
    return {
        "seeds": list(SEEDS),
        "methods": {"lora_r8": {"label": "LoRA (r=8)"}, "flat_lora_r8": {"label": "Flat-LoRA (r=8)"}},
        "figures": [
            {"id": "training_curves", "caption": "Training loss (seed 0)", "tasks": ["sentiment", "digits"],
             "methods": ["lora_r8", "flat_lora_r8"]},
            {"id": "ood_curve", "caption": "Accuracy under corruption", "tasks": ["digits", "digits_inv"],
             "methods": ["lora_r8", "flat_lora_r8"]},
        ],
    }


def write_run(task, method, seed, base=90.0, status="FINISHED", steps=40):
    metrics = {"test": base, **{f"ood_s{s}": base - 8 * s for s in range(1, 6)}}
    result = paths.run_result(task, method, seed)
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps({"task": task, "method": method, "seed": seed,
                                  "status": status, "metrics": metrics}))
    rows = "\n".join(f"{i},{2.0 / (i + 1) + 0.01 * (i % 3)},0.001" for i in range(1, steps + 1))
    paths.run_history(task, method, seed).write_text("step,loss,lr\n" + rows + "\n")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_all():
    for task in ("sentiment", "digits", "digits_inv"):
        for method, offset in (("lora_r8", 0.0), ("flat_lora_r8", 1.5)):
            for seed in SEEDS:
                write_run(task, method, seed, base=85.0 + offset + seed)


def assert_png_pdf(written, figure_id):
    expected = [paths.figure(figure_id, "png"), paths.figure(figure_id, "pdf")]
    assert written == expected
    assert expected[0].read_bytes().startswith(b"\x89PNG") and expected[0].stat().st_size > 1000
    assert expected[1].read_bytes().startswith(b"%PDF") and expected[1].stat().st_size > 1000


def test_training_curves_written(workdir):
    write_all()
    assert_png_pdf(figures.training_curves(make_config()), "training_curves")


def test_ood_curve_written(workdir):
    write_all()
    assert_png_pdf(figures.ood_curve(make_config()), "ood_curve")


def test_ood_stats_mean_and_std(workdir):
    write_all()
    mean, std, n = figures.ood_stats("digits", "lora_r8", SEEDS)
    assert n == 3
    assert list(mean) == [86.0, 78.0, 70.0, 62.0, 54.0, 46.0]
    assert list(std) == pytest.approx([1.0] * 6)


def test_missing_and_failed_runs_are_skipped(workdir):
    write_run("digits", "lora_r8", 0)
    write_run("digits", "flat_lora_r8", 0, status="FAILED")
    assert figures.ood_stats("digits", "flat_lora_r8", SEEDS) is None
    config = make_config()
    assert_png_pdf(figures.training_curves(config), "training_curves")
    assert_png_pdf(figures.ood_curve(config), "ood_curve")


def test_output_is_deterministic(workdir):
    write_all()
    config = make_config()
    first = [p.read_bytes() for p in figures.build_all_figures(config)]
    second = [p.read_bytes() for p in figures.build_all_figures(config)]
    assert first == second
    assert not list(paths.figure("x", "png").parent.glob(".*tmp*"))  # no temp files left


def test_build_all_figures_dispatches(workdir):
    write_all()
    written = figures.build_all_figures(make_config())
    assert {p.name for p in written} == {"training_curves.png", "training_curves.pdf",
                                         "ood_curve.png", "ood_curve.pdf"}


def test_unknown_figure_id_is_named(workdir):
    config = make_config()
    config["figures"].append({"id": "no_such_figure", "caption": "", "tasks": [], "methods": []})
    with pytest.raises(ValueError, match="no_such_figure"):
        figures.build_all_figures(config)
    assert not paths.figure("training_curves", "png").exists()  # failed before drawing


# ----------------------------------------------------------------------------- loss landscape


def landscape_config():
    config = make_config()
    config["figures"] = [{"id": "loss_landscape", "caption": "Loss along a random direction",
                          "tasks": ["sentiment", "digits"], "methods": ["lora_r8", "flat_lora_r8"]}]
    return config


def write_landscape(task, method, seed=0, curvature=1.0, landscape=None):
    write_run(task, method, seed)
    alphas = [i / 10 for i in range(-10, 11)]
    landscape = landscape or {"alphas": alphas, "loss": [0.5 + curvature * a * a for a in alphas]}
    paths.run_sharpness(task, method, seed).write_text(json.dumps({"landscape": landscape}))


def test_loss_landscape_written(workdir):
    for task in ("sentiment", "digits"):
        write_landscape(task, "lora_r8", curvature=2.0)
        write_landscape(task, "flat_lora_r8", curvature=0.5)
    assert_png_pdf(figures.loss_landscape(landscape_config()), "loss_landscape")
    assert figures._read_landscape("digits", "lora_r8", 0)[1][10] == 0.5


def test_loss_landscape_with_missing_measures(workdir):
    write_landscape("sentiment", "lora_r8")
    write_run("digits", "flat_lora_r8", 0)  # finished but not measured
    write_landscape("digits", "lora_r8")
    write_run("digits", "lora_r8", 0, status="FAILED")  # measured, but the run no longer counts
    assert figures._read_landscape("digits", "flat_lora_r8", 0) is None
    assert figures._read_landscape("digits", "lora_r8", 0) is None
    assert_png_pdf(figures.build_all_figures(landscape_config()), "loss_landscape")


def test_malformed_landscape_names_the_file(workdir):
    write_landscape("sentiment", "lora_r8", landscape={"alphas": [0.0, 1.0], "loss": [1.0]})
    with pytest.raises(ValueError, match=r"seed0\.sharpness\.json"):
        figures.loss_landscape(landscape_config())


# ----------------------------------------------------------------------------- ablations


def write_ablation_run(task, method, seed, test, r=8, rho=None):
    write_run(task, method, seed, base=test)
    path = paths.run_result(task, method, seed)
    run = json.loads(path.read_text())
    run["config"] = {"adapter": {"type": "lora", "r": r}, "flat": None if rho is None else {"rho": rho}}
    path.write_text(json.dumps(run))


def ablation_config():
    return {
        "seeds": list(SEEDS),
        "methods": {},
        "figures": [
            {"id": "rank_ablation", "caption": "rank", "tasks": ["sentiment"],
             "methods": ["lora_r1", "flat_lora_r1", "lora_r4", "flat_lora_r4"]},
            {"id": "sigma_ablation", "caption": "sigma", "tasks": ["sentiment"],
             "methods": ["lora_r8", "flat_lora_r8", "flat_rho020"]},
        ],
    }


def test_ablation_points_come_from_each_runs_config(workdir):
    for seed in SEEDS:
        write_ablation_run("sentiment", "lora_r1", seed, 70.0 + seed, r=1)
        write_ablation_run("sentiment", "flat_lora_r1", seed, 72.0, r=1, rho=0.05)
        write_ablation_run("sentiment", "lora_r4", seed, 75.0, r=4)
    missing = []
    spec = {"methods": ["lora_r1", "flat_lora_r1", "lora_r4", "flat_lora_r4"]}
    points = figures._ablation_points(ablation_config(), spec, "sentiment",
                                      lambda c: c["adapter"]["r"], lambda c: "Flat" if c["flat"] else "LoRA", missing)
    assert points == {"LoRA": [(1, 71.0, 1.0, "lora_r1", False), (4, 75.0, 0.0, "lora_r4", False)],
                      "Flat": [(1, 72.0, 0.0, "flat_lora_r1", True)]}
    assert missing == ["sentiment/flat_lora_r4 (0/3 seeds)"]


def test_ablation_figures_written(workdir):
    for seed in SEEDS:
        for method, r in (("lora_r1", 1), ("flat_lora_r1", 1), ("lora_r4", 4)):
            write_ablation_run("sentiment", method, seed, 70.0 + r, r=r, rho=0.05 if "flat" in method else None)
        write_ablation_run("sentiment", "lora_r8", seed, 80.0)
        write_ablation_run("sentiment", "flat_lora_r8", seed, 81.0, rho=0.05)
        write_ablation_run("sentiment", "flat_rho020", seed, 79.0, rho=0.2)
    assert_png_pdf(figures.rank_ablation(ablation_config()), "rank_ablation")
    assert_png_pdf(figures.sigma_ablation(ablation_config()), "sigma_ablation")


# ----------------------------------------------------------------------------- look: colours, seeds, ticks, titles


@pytest.fixture
def drawn(monkeypatch):
    """{figure_id: the Figure} of every figure drawn, still written to disk."""
    figs, save = {}, figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, figure_id: figs.setdefault(figure_id, fig) and save(fig, figure_id))
    return figs


def look_config():
    methods = ["lora_r8", "flat_lora_r8", "lora_r1", "flat_lora_r1", "flat_rho020"]
    return {
        "seeds": list(SEEDS),
        "methods": {m: {"label": m} for m in methods},
        "sharpness": {"detail_seeds": [0, 1]},
        "figures": [
            {"id": "training_curves", "caption": "c", "tasks": ["sentiment"], "methods": ["lora_r8", "flat_lora_r8"]},
            {"id": "ood_curve", "caption": "c", "tasks": ["digits"], "methods": ["flat_lora_r8", "lora_r8"]},
            {"id": "rank_ablation", "caption": "c", "tasks": ["sentiment"],
             "methods": ["lora_r1", "flat_lora_r1", "lora_r8", "flat_lora_r8"]},
            {"id": "sigma_ablation", "caption": "c", "tasks": ["sentiment"], "methods": ["lora_r8", "flat_lora_r8", "flat_rho020"]},
            {"id": "loss_landscape", "caption": "c", "tasks": ["sentiment"], "methods": ["lora_r8", "flat_lora_r8"]},
        ],
    }


def write_look_runs():
    for seed in SEEDS:
        for task in ("sentiment", "digits"):
            write_ablation_run(task, "lora_r8", seed, 80.0 + seed)
            write_ablation_run(task, "flat_lora_r8", seed, 81.0 + seed, rho=0.05)
        write_ablation_run("sentiment", "lora_r1", seed, 70.0, r=1)
        write_ablation_run("sentiment", "flat_lora_r1", seed, 71.0, r=1, rho=0.05)
        write_ablation_run("sentiment", "flat_rho020", seed, 79.0, rho=0.2)
        for method, curvature in (("lora_r8", 2.0), ("flat_lora_r8", 0.5)):
            alphas = [i / 10 for i in range(-10, 11)]
            paths.run_sharpness("sentiment", method, seed).write_text(
                json.dumps({"landscape": {"alphas": alphas, "loss": [curvature * (1 + seed) * a * a for a in alphas]}}))


def colours(fig) -> dict[str, str]:
    """Legend label -> colour of each line or error-bar series of the figure's first panel."""
    from matplotlib.colors import to_hex

    handles, labels = fig.axes[0].get_legend_handles_labels()
    # an error-bar container's first line is its data line
    return {label: to_hex((h.lines[0] if hasattr(h, "lines") else h).get_color()) for h, label in zip(handles, labels)}


def test_a_method_has_one_colour_in_every_figure(workdir, drawn):
    write_look_runs()
    figures.build_all_figures(look_config())
    flat = {colours(drawn["training_curves"])["flat_lora_r8"], colours(drawn["ood_curve"])["flat_lora_r8"],
            colours(drawn["loss_landscape"])["flat_lora_r8"], colours(drawn["rank_ablation"])["Flat-LoRA"],
            colours(drawn["sigma_ablation"])["Flat-LoRA"]}
    lora = {colours(drawn["training_curves"])["lora_r8"], colours(drawn["ood_curve"])["lora_r8"],
            colours(drawn["rank_ablation"])["LoRA"]}
    assert len(flat) == 1 and len(lora) == 1 and flat != lora


def test_every_seed_is_drawn_as_mean_and_band(workdir, drawn):
    write_look_runs()
    config = look_config()
    figures.build_all_figures(config)
    ax = drawn["training_curves"].axes[0]
    assert len(ax.collections) == 2  # one min-max band per method
    expected = pd.concat([figures._smooth(records.read_history("sentiment", "lora_r8", s)["loss"]) for s in SEEDS], axis=1)
    line = next(line for line in ax.get_lines() if line.get_label() == "lora_r8")
    assert list(line.get_ydata()) == pytest.approx(list(expected.mean(axis=1)))
    landscape = next(line for line in drawn["loss_landscape"].axes[0].get_lines() if line.get_label() == "lora_r8")
    assert landscape.get_ydata()[0] == pytest.approx(2.0 * 1.5)  # the mean over the detail seeds 0 and 1 at alpha -1
    assert "min-max" in figures.caption_note(config, "training_curves") and "0, 1, 2" in figures.caption_note(config, "training_curves")
    assert "0, 1 " in figures.caption_note(config, "loss_landscape")
    assert "±1 sample std" in figures.caption_note(config, "ood_curve")


def test_no_title_ticks_at_measured_values_and_300_dpi(workdir, drawn):
    from PIL import Image

    write_look_runs()
    written = figures.build_all_figures(look_config())
    assert all(fig.get_suptitle() == "" for fig in drawn.values())  # the caption goes into the report's caption
    assert list(drawn["rank_ablation"].axes[0].get_xticks()) == [1, 8]
    assert not list(drawn["rank_ablation"].axes[0].xaxis.get_minorticklocs())
    assert list(drawn["sigma_ablation"].axes[0].get_xticks()) == pytest.approx([0.0, 0.05, 0.2])
    png = next(p for p in written if p.suffix == ".png")
    assert Image.open(png).info["dpi"] == pytest.approx((300, 300), abs=0.1)
