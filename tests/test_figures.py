"""Figures: PNG+PDF written (also with missing runs), deterministic output, registry errors."""

import json

import pytest

from lorarepro import figures, paths

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
    config["figures"].append({"id": "loss_landscape", "caption": "", "tasks": [], "methods": []})
    with pytest.raises(ValueError, match="loss_landscape"):
        figures.build_all_figures(config)
    assert not paths.figure("training_curves", "png").exists()  # failed before drawing
